import type { Migration } from '../../platform/db/index.ts';

/**
 * Monitored sources and their check history. A source's pending check lives on its own row
 * (`check_due_at`): the schedule's firing sets it, a checker claims it with a lease, and a firing that
 * arrives while a check is still pending merges into it instead of piling up.
 */
export const monitoringMigrations: Migration[] = [
  {
    version: 900,
    name: 'monitor_sources',
    sql: `
      CREATE TABLE monitor_sources (
        id text PRIMARY KEY,
        owner_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        name text NOT NULL,
        url text NOT NULL,
        method text NOT NULL DEFAULT 'GET',
        headers jsonb NOT NULL DEFAULT '{}',
        request_body text,
        schedule text NOT NULL,
        extractors jsonb NOT NULL,
        webhook_url text,
        webhook_events text[] NOT NULL DEFAULT '{}',
        webhook_subscription_id text,
        retry_attempts integer NOT NULL DEFAULT 3,
        timeout_ms integer NOT NULL DEFAULT 30000,
        tags text[] NOT NULL DEFAULT '{}',
        fetcher text NOT NULL DEFAULT 'http' CHECK (fetcher IN ('http', 'browser')),
        status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'error')),
        consecutive_failures integer NOT NULL DEFAULT 0,
        last_check timestamptz,
        last_success timestamptz,
        last_error text,
        -- Values of the last successful check, {extractor name: value}; the baseline for changes.
        last_values jsonb,
        etag text,
        last_modified text,
        check_due_at timestamptz,
        check_lease_until timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE INDEX monitor_sources_owner ON monitor_sources (owner_id, created_at);
      CREATE INDEX monitor_sources_due ON monitor_sources (check_due_at) WHERE check_due_at IS NOT NULL;

      CREATE TABLE monitor_checks (
        id bigserial PRIMARY KEY,
        source_id text NOT NULL REFERENCES monitor_sources (id) ON DELETE CASCADE,
        trigger text NOT NULL CHECK (trigger IN ('schedule', 'manual')),
        -- When a scheduled check was due (NULL for manual checks): its start lag is started_at minus this.
        due_at timestamptz,
        started_at timestamptz NOT NULL,
        checked_at timestamptz NOT NULL DEFAULT now(),
        ok boolean NOT NULL,
        http_status integer,
        duration_ms integer NOT NULL,
        attempts integer NOT NULL,
        not_modified boolean NOT NULL DEFAULT false,
        "values" jsonb,
        changes jsonb NOT NULL DEFAULT '[]',
        changed boolean NOT NULL DEFAULT false,
        warnings jsonb NOT NULL DEFAULT '[]',
        error text
      );
      CREATE INDEX monitor_checks_source ON monitor_checks (source_id, id DESC);

      -- A subscription may belong to one entity (a monitored source): it then receives only that
      -- entity's events. Subscriptions without one receive all of their owner's matching events.
      ALTER TABLE webhook_subscriptions ADD COLUMN entity_id text;
      ALTER TABLE events ADD COLUMN entity_id text;
    `,
  },
  {
    version: 901,
    name: 'monitor_sources_claimed_due',
    sql: `
      -- The due time a scheduled check claimed, kept in the row so the check clears exactly that one
      -- (a newer firing that arrived meanwhile stays pending), whatever the client's clock precision.
      ALTER TABLE monitor_sources ADD COLUMN check_claimed_due timestamptz;
    `,
  },
];
