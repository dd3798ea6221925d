import type { Migration } from '../db/index.ts';

/**
 * The schedules' own due-time tables. pg-boss installs and migrates its own schema (`pgboss`) when
 * `Jobs.start()` runs, so only the tables this folder owns are listed here.
 */
export const jobsMigrations: Migration[] = [
  {
    version: 300,
    name: 'schedules',
    sql: `
      CREATE TABLE schedules (
        id text PRIMARY KEY,
        entity_type text NOT NULL,
        entity_id text NOT NULL,
        owner_id text NOT NULL,
        kind text NOT NULL CHECK (kind IN ('interval', 'cron', 'named', 'once')),
        -- The normalized spec as given (seconds, expression + timezone, name, or at).
        spec jsonb NOT NULL,
        jitter_seconds integer NOT NULL DEFAULT 0 CHECK (jitter_seconds >= 0),
        status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'done')),
        -- The nominal slot the schedule is waiting for; kept while paused so resuming keeps the phase.
        next_slot_at timestamptz,
        -- When the scheduler may fire it: the slot plus jitter. NULL while paused or done.
        next_run_at timestamptz,
        last_due_at timestamptz,
        last_fired_at timestamptz,
        run_count bigint NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (entity_type, entity_id)
      );
      -- The claim reads only active rows in due order; a partial index keeps it small and hot.
      CREATE INDEX schedules_due ON schedules (next_run_at) WHERE status = 'active';
      CREATE INDEX schedules_owner ON schedules (owner_id, entity_type);

      -- One row per firing. The primary key is what makes "each due time fires once" checkable.
      CREATE TABLE schedule_runs (
        schedule_id text NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
        due_at timestamptz NOT NULL,
        fired_at timestamptz NOT NULL,
        error text,
        PRIMARY KEY (schedule_id, due_at)
      );
      -- Retention deletes by age.
      CREATE INDEX schedule_runs_due ON schedule_runs (due_at);
    `,
  },
];
