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
  {
    version: 501,
    name: 'tasks_hot_path_functions',
    sql: `
      -- The queue's three hot statements (create, claim, finish), each with its event row, as
      -- PL/pgSQL functions: one round trip and one commit per call, and PL/pgSQL keeps their plans
      -- between calls (parsing and planning these statements cost more than running them).
      -- Event payloads follow the catalogue (src/domains/events/catalogue.ts).
      -- (reserved_for comes with the cluster migrations; PL/pgSQL resolves columns at the first call.)

      -- The task a report with claim_next handed to its worker: a retried report (its answer was
      -- lost) gets that task again instead of a second one.
      ALTER TABLE tasks ADD COLUMN handed_next text;

      CREATE FUNCTION tasks_create(
        p_id text, p_owner text, p_title text, p_description text, p_type text, p_priority text, p_priority_rank smallint,
        p_project_id text, p_payload jsonb, p_required_capabilities text[], p_depends_on text[], p_max_retries integer,
        p_timeout_seconds integer, p_event_id text)
      RETURNS SETOF tasks LANGUAGE plpgsql AS $fn$
      DECLARE
        created tasks%ROWTYPE;
      BEGIN
        INSERT INTO tasks (id, owner_id, title, description, type, priority, priority_rank, project_id, payload, required_capabilities, depends_on, max_retries, timeout_seconds)
        VALUES (p_id, p_owner, p_title, p_description, p_type, p_priority, p_priority_rank, p_project_id, p_payload, p_required_capabilities, p_depends_on, p_max_retries, p_timeout_seconds)
        RETURNING * INTO created;
        INSERT INTO events (id, owner_id, type, data)
        VALUES (p_event_id, p_owner, 'task.created', jsonb_build_object('task_id', p_id, 'title', p_title, 'priority', p_priority));
        RETURN NEXT created;
      END
      $fn$;

      -- The claim: the worker's next task (if the worker is the caller's), the worker marked busy,
      -- task.started. FOR UPDATE SKIP LOCKED: no task goes to two workers. The planner cannot
      -- estimate the array-containment filter and, expecting few matches, would read and sort every
      -- pending task (3.4 ms at 5,000 pending, growing with the queue); with sorting off it walks the
      -- pending index in priority order and stops at the first claimable task (0.1 ms).
      -- p_after: the task whose final report asked for this claim (recorded as its handed_next).
      CREATE FUNCTION tasks_claim(p_worker text, p_caller text, p_lease_seconds double precision, p_event_id text, p_after text)
      RETURNS SETOF tasks LANGUAGE plpgsql SET enable_sort = off AS $fn$
      DECLARE
        w workers%ROWTYPE;
        claimed tasks%ROWTYPE;
      BEGIN
        SELECT * INTO w FROM workers WHERE id = p_worker AND owner_id = p_caller;
        IF NOT FOUND THEN
          RETURN;
        END IF;
        UPDATE tasks SET status = 'running', assigned_worker = w.id, started_at = COALESCE(started_at, clock_timestamp()),
               lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds), updated_at = clock_timestamp()
        WHERE id = (
          SELECT t.id FROM tasks t
          WHERE t.status = 'pending' AND (w.shared OR t.owner_id = w.owner_id) AND (t.reserved_for IS NULL OR t.reserved_for = w.id)
            AND t.type = ANY(w.capabilities) AND t.required_capabilities <@ w.capabilities
            AND NOT EXISTS (SELECT 1 FROM tasks d WHERE d.id = ANY(t.depends_on) AND d.status <> 'completed')
          ORDER BY t.priority_rank DESC, t.created_at, t.id
          LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING * INTO claimed;
        IF NOT FOUND THEN
          RETURN;
        END IF;
        UPDATE workers SET status = 'busy', current_task = claimed.id WHERE id = w.id;
        IF p_after IS NOT NULL THEN
          UPDATE tasks SET handed_next = claimed.id WHERE id = p_after;
        END IF;
        INSERT INTO events (id, owner_id, type, data)
        VALUES (p_event_id, claimed.owner_id, 'task.started', jsonb_build_object('task_id', claimed.id, 'worker_id', w.id));
        RETURN NEXT claimed;
      END
      $fn$;

      -- The common report: the worker holding a running task completes or fails it. Nothing happens
      -- (no row) when the task is not running under that worker; the caller then takes the checked
      -- path, which gives the right answer or error. p_touch: the report stands for a heartbeat.
      CREATE FUNCTION tasks_finish(
        p_id text, p_admin boolean, p_caller text, p_status text, p_progress smallint, p_result jsonb, p_error text,
        p_worker text, p_event_id text, p_touch boolean)
      RETURNS SETOF tasks LANGUAGE plpgsql AS $fn$
      DECLARE
        finished tasks%ROWTYPE;
      BEGIN
        UPDATE tasks SET
          status = p_status,
          progress = COALESCE(p_progress, CASE WHEN p_status = 'completed' THEN 100 ELSE progress END),
          result = COALESCE(p_result, result),
          error = COALESCE(p_error, error),
          completed_at = clock_timestamp(), lease_expires_at = NULL, updated_at = clock_timestamp()
        WHERE id = p_id AND (p_admin OR owner_id = p_caller) AND status = 'running' AND assigned_worker = p_worker
          AND p_status IN ('completed', 'failed')
        RETURNING * INTO finished;
        IF NOT FOUND THEN
          RETURN;
        END IF;
        UPDATE workers SET current_task = NULL,
               status = CASE WHEN (p_touch AND owner_id = p_caller) OR status <> 'offline' THEN 'idle' ELSE status END,
               last_heartbeat = CASE WHEN p_touch AND owner_id = p_caller THEN now() ELSE last_heartbeat END,
               tasks_completed = tasks_completed + CASE WHEN p_status = 'completed' THEN 1 ELSE 0 END
        WHERE id = p_worker;
        INSERT INTO events (id, owner_id, type, data)
        VALUES (p_event_id, finished.owner_id, 'task.' || p_status,
                jsonb_build_object('task_id', finished.id, 'status', p_status) || CASE
                  WHEN p_status = 'completed' AND finished.result IS NOT NULL AND finished.result <> 'null'::jsonb THEN jsonb_build_object('result', finished.result)
                  WHEN p_status = 'failed' AND finished.error IS NOT NULL THEN jsonb_build_object('error', finished.error)
                  ELSE '{}'::jsonb END);
        RETURN NEXT finished;
      END
      $fn$;
    `,
  },
  {
    version: 502,
    name: 'tasks_fewer_writes',
    sql: `
      -- Fewer writes per task on the hot path:
      -- * an event row only for an owner with an active webhook subscription (nobody else can
      --   receive it): the outbox insert, its dispatch update and the dispatcher's wake-up are
      --   skipped for the rest. Each function says whether it wrote one (emitted), so the caller
      --   wakes the dispatcher only then.
      -- * the task a claim_next report handed out is recorded on that task itself (claimed_after,
      --   in the claim's own UPDATE) instead of by a second UPDATE of the finished task.
      -- * a final report with claim_next finishes and claims in one call (tasks_finish_and_claim).
      -- * concurrent creations share one call (tasks_create_batch).
      ALTER TABLE tasks DROP COLUMN handed_next;
      ALTER TABLE tasks ADD COLUMN claimed_after text;

      CREATE FUNCTION events_wanted(p_owner text) RETURNS boolean LANGUAGE sql STABLE AS $fn$
        SELECT EXISTS (SELECT 1 FROM webhook_subscriptions WHERE owner_id = p_owner AND active)
      $fn$;

      DROP FUNCTION tasks_create(text, text, text, text, text, text, smallint, text, jsonb, text[], text[], integer, integer, text);
      CREATE FUNCTION tasks_create(
        p_id text, p_owner text, p_title text, p_description text, p_type text, p_priority text, p_priority_rank smallint,
        p_project_id text, p_payload jsonb, p_required_capabilities text[], p_depends_on text[], p_max_retries integer,
        p_timeout_seconds integer, p_event_id text)
      RETURNS TABLE (task tasks, emitted boolean) LANGUAGE plpgsql AS $fn$
      BEGIN
        INSERT INTO tasks (id, owner_id, title, description, type, priority, priority_rank, project_id, payload, required_capabilities, depends_on, max_retries, timeout_seconds)
        VALUES (p_id, p_owner, p_title, p_description, p_type, p_priority, p_priority_rank, p_project_id, p_payload, p_required_capabilities, p_depends_on, p_max_retries, p_timeout_seconds)
        RETURNING * INTO task;
        emitted := events_wanted(p_owner);
        IF emitted THEN
          INSERT INTO events (id, owner_id, type, data)
          VALUES (p_event_id, p_owner, 'task.created', jsonb_build_object('task_id', p_id, 'title', p_title, 'priority', p_priority));
        END IF;
        RETURN NEXT;
      END
      $fn$;

      -- See migration 501 for the claim's plan (enable_sort = off).
      DROP FUNCTION tasks_claim(text, text, double precision, text, text);
      CREATE FUNCTION tasks_claim(p_worker text, p_caller text, p_lease_seconds double precision, p_event_id text, p_after text)
      RETURNS TABLE (task tasks, emitted boolean) LANGUAGE plpgsql SET enable_sort = off AS $fn$
      DECLARE
        w workers%ROWTYPE;
      BEGIN
        SELECT * INTO w FROM workers WHERE id = p_worker AND owner_id = p_caller;
        IF NOT FOUND THEN
          RETURN;
        END IF;
        UPDATE tasks SET status = 'running', assigned_worker = w.id, started_at = COALESCE(started_at, clock_timestamp()),
               lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds), updated_at = clock_timestamp(),
               claimed_after = p_after
        WHERE id = (
          SELECT t.id FROM tasks t
          WHERE t.status = 'pending' AND (w.shared OR t.owner_id = w.owner_id) AND (t.reserved_for IS NULL OR t.reserved_for = w.id)
            AND t.type = ANY(w.capabilities) AND t.required_capabilities <@ w.capabilities
            AND NOT EXISTS (SELECT 1 FROM tasks d WHERE d.id = ANY(t.depends_on) AND d.status <> 'completed')
          ORDER BY t.priority_rank DESC, t.created_at, t.id
          LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING * INTO task;
        IF NOT FOUND THEN
          RETURN;
        END IF;
        UPDATE workers SET status = 'busy', current_task = (task).id WHERE id = w.id;
        emitted := events_wanted((task).owner_id);
        IF emitted THEN
          INSERT INTO events (id, owner_id, type, data)
          VALUES (p_event_id, (task).owner_id, 'task.started', jsonb_build_object('task_id', (task).id, 'worker_id', w.id));
        END IF;
        RETURN NEXT;
      END
      $fn$;

      DROP FUNCTION tasks_finish(text, boolean, text, text, smallint, jsonb, text, text, text, boolean);
      CREATE FUNCTION tasks_finish(
        p_id text, p_admin boolean, p_caller text, p_status text, p_progress smallint, p_result jsonb, p_error text,
        p_worker text, p_event_id text, p_touch boolean)
      RETURNS TABLE (task tasks, emitted boolean) LANGUAGE plpgsql AS $fn$
      BEGIN
        UPDATE tasks SET
          status = p_status,
          progress = COALESCE(p_progress, CASE WHEN p_status = 'completed' THEN 100 ELSE progress END),
          result = COALESCE(p_result, result),
          error = COALESCE(p_error, error),
          completed_at = clock_timestamp(), lease_expires_at = NULL, updated_at = clock_timestamp()
        WHERE id = p_id AND (p_admin OR owner_id = p_caller) AND status = 'running' AND assigned_worker = p_worker
          AND p_status IN ('completed', 'failed')
        RETURNING * INTO task;
        IF NOT FOUND THEN
          RETURN;
        END IF;
        UPDATE workers SET current_task = NULL,
               status = CASE WHEN (p_touch AND owner_id = p_caller) OR status <> 'offline' THEN 'idle' ELSE status END,
               last_heartbeat = CASE WHEN p_touch AND owner_id = p_caller THEN now() ELSE last_heartbeat END,
               tasks_completed = tasks_completed + CASE WHEN p_status = 'completed' THEN 1 ELSE 0 END
        WHERE id = p_worker;
        emitted := events_wanted((task).owner_id);
        IF emitted THEN
          INSERT INTO events (id, owner_id, type, data)
          VALUES (p_event_id, (task).owner_id, 'task.' || p_status,
                  jsonb_build_object('task_id', (task).id, 'status', p_status) || CASE
                    WHEN p_status = 'completed' AND (task).result IS NOT NULL AND (task).result <> 'null'::jsonb THEN jsonb_build_object('result', (task).result)
                    WHEN p_status = 'failed' AND (task).error IS NOT NULL THEN jsonb_build_object('error', (task).error)
                    ELSE '{}'::jsonb END);
        END IF;
        RETURN NEXT;
      END
      $fn$;

      -- Creations that arrive together (concurrent requests) in one call: one round trip and one
      -- commit for the batch. Items are objects with the arguments of tasks_create; rows come back
      -- in the batch's order.
      CREATE FUNCTION tasks_create_batch(p_batch jsonb)
      RETURNS TABLE (task tasks, emitted boolean) LANGUAGE plpgsql AS $fn$
      DECLARE
        item jsonb;
      BEGIN
        FOR item IN SELECT value FROM jsonb_array_elements(p_batch) LOOP
          RETURN QUERY SELECT c.task, c.emitted FROM tasks_create(
            item->>'id', item->>'owner', item->>'title', item->>'description', item->>'type', item->>'priority',
            (item->>'priority_rank')::smallint, item->>'project_id', item->'payload',
            ARRAY(SELECT jsonb_array_elements_text(item->'required_capabilities')), '{}'::text[],
            (item->>'max_retries')::integer, (item->>'timeout_seconds')::integer, item->>'event_id') c;
        END LOOP;
      END
      $fn$;

      -- Rows: the finished task, then the worker's next task if there is one. No row: the task was
      -- not running under this worker.
      CREATE FUNCTION tasks_finish_and_claim(
        p_id text, p_admin boolean, p_caller text, p_status text, p_progress smallint, p_result jsonb, p_error text,
        p_worker text, p_event_id text, p_lease_seconds double precision, p_claim_event_id text)
      RETURNS TABLE (task tasks, emitted boolean) LANGUAGE plpgsql AS $fn$
      DECLARE
        f record;
      BEGIN
        SELECT * INTO f FROM tasks_finish(p_id, p_admin, p_caller, p_status, p_progress, p_result, p_error, p_worker, p_event_id, true);
        IF NOT FOUND THEN
          RETURN;
        END IF;
        task := f.task;
        emitted := f.emitted;
        RETURN NEXT;
        RETURN QUERY SELECT c.task, c.emitted FROM tasks_claim(p_worker, p_caller, p_lease_seconds, p_claim_event_id, p_id) c;
      END
      $fn$;
    `,
  },
  {
    version: 503,
    name: 'tasks_report_batch',
    sql: `
      -- Final reports with claim_next that arrive together (several workers) in one call. Items are
      -- objects with the arguments of tasks_finish_and_claim; n is the item's position (from 1), so
      -- each report gets its own rows back (none: the task was not running under that worker).
      CREATE FUNCTION tasks_finish_and_claim_batch(p_batch jsonb, p_lease_seconds double precision)
      RETURNS TABLE (n integer, task tasks, emitted boolean) LANGUAGE plpgsql AS $fn$
      DECLARE
        item jsonb;
        pos bigint;
        r record;
      BEGIN
        FOR item, pos IN SELECT value, ordinality FROM jsonb_array_elements(p_batch) WITH ORDINALITY LOOP
          FOR r IN SELECT * FROM tasks_finish_and_claim(
              item->>'id', (item->>'admin')::boolean, item->>'caller', item->>'status', (item->>'progress')::smallint,
              item->'result', item->>'error', item->>'worker', item->>'event_id', p_lease_seconds, item->>'claim_event_id') LOOP
            n := pos;
            task := r.task;
            emitted := r.emitted;
            RETURN NEXT;
          END LOOP;
        END LOOP;
      END
      $fn$;
    `,
  },
];
