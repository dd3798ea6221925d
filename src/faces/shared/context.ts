import type { Config } from '../../config.ts';
import type { ClusterService } from '../../domains/cluster/service.ts';
import type { DeliveryEngine } from '../../domains/events/delivery.ts';
import type { WebhookService } from '../../domains/events/webhooks.ts';
import type { ConversationService } from '../../domains/conversations/service.ts';
import type { EnrichmentService } from '../../domains/enrichment/service.ts';
import type { IdentityService } from '../../domains/identity/service.ts';
import type { BrowserFetcher } from '../../domains/monitoring/browser.ts';
import type { MonitorEngine } from '../../domains/monitoring/engine.ts';
import type { MonitoringService } from '../../domains/monitoring/service.ts';
import type { TaskService } from '../../domains/tasks/service.ts';
import type { AiService } from '../../platform/ai/index.ts';
import type { Db, InvalidationBus } from '../../platform/db/index.ts';
import type { HttpOut } from '../../platform/http-out/index.ts';
import type { Jobs, Scheduler } from '../../platform/jobs/index.ts';
import type { Mailer } from '../../platform/mail/index.ts';
import type { Metrics } from '../../platform/metrics/index.ts';
import type { RateLimits } from '../../platform/ratelimit/index.ts';

/** Job names and their payloads, filled in as domains add background work. */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- no domain defines a job yet
export interface AppJobs {}

/** Everything a face needs, passed in explicitly when the server is built. */
export interface AppContext {
  config: Config;
  db: Db;
  /** Cross-process cache invalidation (NOTIFY on PostgreSQL). */
  invalidation: InvalidationBus;
  identity: IdentityService;
  /** The task queue; its lease reaper is started by `serve`. */
  tasks: TaskService;
  /** Server-node heartbeat and leader election; started by `serve`. */
  cluster: ClusterService;
  webhooks: WebhookService;
  /** Background webhook delivery; started by `serve` (and by tests that need it). */
  deliveries: DeliveryEngine;
  /** Background jobs (pg-boss on the same database); started by `serve`. */
  jobs: Jobs<AppJobs>;
  /** Due-time schedules owned by entities (monitors, agents); started by `serve`. */
  scheduler: Scheduler;
  limits: RateLimits;
  metrics: Metrics;
  mailer: Mailer;
  /** Model providers (chat, tools, structured output, embeddings) with per-user usage records. */
  ai: AiService;
  /** The SSRF-guarded client for requests made on users' behalf (pages, enrichment); not webhooks. */
  outbound: HttpOut;
  /** Monitored sources (Helomatic). */
  monitoring: MonitoringService;
  /** Runs due checks; started by `serve` (and by tests that need scheduled checks). */
  monitorEngine: MonitorEngine;
  /** Chromium for `fetcher: browser` (launched on first use, closed when idle). */
  browser: BrowserFetcher;
  /** Helomatic AI chat conversations. */
  conversations: ConversationService;
  /** Helomatic data enrichment (website, DNS, model inference); tests may replace it. */
  enrichment: EnrichmentService;
  version: string;
  startedAt: Date;
}
