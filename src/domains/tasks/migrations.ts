import type { Migration } from '../../platform/db/index.ts';

export const tasksMigrations: Migration[] = [
  {
    version: 500,
    name: 'tasks_and_workers',
    sql: `
      CREATE TABLE workers (
        id text PRIMARY KEY,
        owner_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        -- Registered by an admin: serves every user's tasks; otherwise only its owner's.
        shared boolean NOT NULL,
        hostname text NOT NULL,
        capabilities text[] NOT NULL,
        resources jsonb NOT NULL DEFAULT '{}'::jsonb,
        status text NOT NULL DEFAULT 'idle' CHECK (status IN ('idle', 'busy', 'offline')),
        current_task text,
        cpu_usage double precision,
        memory_usage double precision,
        tasks_completed integer NOT NULL DEFAULT 0,
        registered_at timestamptz NOT NULL DEFAULT now(),
        last_heartbeat timestamptz NOT NULL DEFAULT now(),
        UNIQUE (owner_id, hostname)
      );

      CREATE TABLE tasks (
        id text PRIMARY KEY,
        owner_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        title text NOT NULL,
        description text,
        type text NOT NULL,
        priority text NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'critical')),
        priority_rank smallint NOT NULL,
        status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
        project_id text,
        payload jsonb,
        required_capabilities text[] NOT NULL DEFAULT '{}',
        depends_on text[] NOT NULL DEFAULT '{}',
        max_retries integer NOT NULL DEFAULT 3,
        retry_count integer NOT NULL DEFAULT 0,
        timeout_seconds integer,
        assigned_worker text,
        lease_expires_at timestamptz,
        progress smallint NOT NULL DEFAULT 0,
        result jsonb,
        error text,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        started_at timestamptz,
        completed_at timestamptz
      );
      -- The claim: highest priority, oldest first, among pending tasks.
      CREATE INDEX tasks_pending ON tasks (priority_rank DESC, created_at, id) WHERE status = 'pending';
      CREATE INDEX tasks_owner ON tasks (owner_id, created_at DESC);
      CREATE INDEX tasks_leases ON tasks (lease_expires_at) WHERE status = 'running';
    `,
  },
];
