import type { Config } from '../../config.ts';
import type { IdentityService } from '../../domains/identity/service.ts';
import type { Db } from '../../platform/db/index.ts';
import type { Mailer } from '../../platform/mail/index.ts';
import type { Metrics } from '../../platform/metrics/index.ts';
import type { RateLimits } from '../../platform/ratelimit/index.ts';

/** Everything a face needs, passed in explicitly when the server is built. */
export interface AppContext {
  config: Config;
  db: Db;
  identity: IdentityService;
  limits: RateLimits;
  metrics: Metrics;
  mailer: Mailer;
  version: string;
  startedAt: Date;
}
