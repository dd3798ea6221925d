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
  {
    version: 11,
    name: 'rate_limits_unlogged',
    // Counters are worth less than the WAL flush each write would wait for; after a crash they restart from zero.
    sql: `ALTER TABLE rate_limits SET UNLOGGED`,
  },
];
