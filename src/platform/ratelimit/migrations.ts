import type { Migration } from '../db/index.ts';

export const rateLimitMigrations: Migration[] = [
  {
    version: 10,
    name: 'rate_limits',
    // rate-limiter-flexible's PostgreSQL layout: shared request counters for server mode.
    sql: `CREATE TABLE rate_limits (
      key varchar(255) PRIMARY KEY,
      points integer NOT NULL DEFAULT 0,
      expire bigint
    )`,
  },
];
