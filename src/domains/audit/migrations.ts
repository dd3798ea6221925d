import type { Migration } from '../../platform/db/index.ts';

export const auditMigrations: Migration[] = [
  {
    version: 200,
    name: 'audit_events',
    sql: `
      CREATE TABLE audit_events (
        id text PRIMARY KEY,
        occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        event_type text NOT NULL CHECK (event_type IN ('authentication', 'authorization', 'data_access', 'config_change')),
        action text NOT NULL,
        result text NOT NULL CHECK (result IN ('success', 'failure')),
        user_id text,
        ip_address text,
        user_agent text,
        metadata jsonb NOT NULL DEFAULT '{}'::jsonb
      );
      CREATE INDEX audit_events_time ON audit_events (occurred_at DESC, id DESC);
      CREATE INDEX audit_events_user_time ON audit_events (user_id, occurred_at DESC);
    `,
  },
];
