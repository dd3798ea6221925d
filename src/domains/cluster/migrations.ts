import type { Migration } from '../../platform/db/index.ts';

export const clusterMigrations: Migration[] = [
  {
    version: 600,
    name: 'cluster_nodes_leader_devices',
    sql: `
      -- One row per server process; heartbeats keep last_heartbeat fresh.
      CREATE TABLE cluster_nodes (
        id text PRIMARY KEY,
        hostname text NOT NULL,
        pid integer NOT NULL,
        version text NOT NULL,
        started_at timestamptz NOT NULL,
        last_heartbeat timestamptz NOT NULL DEFAULT clock_timestamp(),
        stopped_at timestamptz
      );

      -- The single leadership lease: taken only when it is free or expired, renewed by its holder.
      CREATE TABLE cluster_leader (
        id smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
        node_id text,
        acquired_at timestamptz,
        lease_expires_at timestamptz NOT NULL DEFAULT '-infinity'
      );
      INSERT INTO cluster_leader (id) VALUES (1);

      -- A task distributed to one worker: only that worker may claim it.
      ALTER TABLE tasks ADD COLUMN reserved_for text REFERENCES workers (id) ON DELETE SET NULL;
      CREATE INDEX tasks_owner_updated ON tasks (owner_id, updated_at, id);

      -- Where round-robin distribution resumes, per task owner.
      CREATE TABLE distribution_cursors (
        owner_id text PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
        last_worker text NOT NULL
      );

      -- Devices that synchronise a user's tasks.
      CREATE TABLE devices (
        owner_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        id text NOT NULL,
        device_type text NOT NULL,
        first_seen timestamptz NOT NULL DEFAULT clock_timestamp(),
        last_sync timestamptz NOT NULL,
        PRIMARY KEY (owner_id, id)
      );
    `,
  },
];
