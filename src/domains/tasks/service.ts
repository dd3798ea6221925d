/**
 * The task queue served to remote workers: tasks owned by users, workers that claim them on
 * heartbeat with FOR UPDATE SKIP LOCKED (no task ever goes to two workers), leases that return a
 * silent worker's task to the queue, and events for every change, written in the same transaction.
 */
import { newId } from '../../platform/crypto/index.ts';
import type { Db, InvalidationBus, Queryable } from '../../platform/db/index.ts';
import { AppError } from '../../platform/errors.ts';
import { emitEvent, eventsEmitted, newEventId } from '../events/outbox.ts';
import { InFlightBatcher } from '../../platform/batch/index.ts';

export const TASK_TYPES = ['planning', 'building', 'testing', 'refactoring', 'debugging', 'design', 'diagram', 'deployment', 'porting'] as const;
export const TASK_PRIORITIES = ['low', 'normal', 'high', 'critical'] as const;
export const TASK_STATUSES = ['pending', 'running', 'completed', 'failed', 'cancelled'] as const;
export type TaskType = (typeof TASK_TYPES)[number];
export type TaskPriority = (typeof TASK_PRIORITIES)[number];
export type TaskStatus = (typeof TASK_STATUSES)[number];

const PRIORITY_RANK: Record<TaskPriority, number> = { low: 1, normal: 2, high: 3, critical: 4 };
const TERMINAL: readonly TaskStatus[] = ['completed', 'failed', 'cancelled'];
/** Published when a task becomes claimable, so long-polling heartbeats wake at once. */
export const TASKS_PENDING_TAG = 'tasks:pending';

export interface Task {
  id: string;
  ownerId: string;
  title: string;
  description: string | null;
  type: TaskType;
  priority: TaskPriority;
  status: TaskStatus;
  projectId: string | null;
  payload: unknown;
  requiredCapabilities: string[];
  dependsOn: string[];
  maxRetries: number;
  retryCount: number;
  timeoutSeconds: number | null;
  assignedWorker: string | null;
  progress: number;
  result: unknown;
  error: string | null;
  createdAt: Date;
  updatedAt: Date;
  startedAt: Date | null;
  completedAt: Date | null;
}

export interface Worker {
  id: string;
  ownerId: string;
  shared: boolean;
  hostname: string;
  capabilities: string[];
  resources: Record<string, unknown>;
  status: 'idle' | 'busy' | 'offline';
  currentTask: string | null;
  tasksCompleted: number;
  registeredAt: Date;
  lastHeartbeat: Date;
}

/** The caller, as the task domain needs it. */
export interface Actor {
  userId: string;
  admin: boolean;
}

export interface CreateTaskInput {
  title: string;
  description?: string;
  type?: TaskType;
  priority?: TaskPriority;
  projectId?: string;
  payload?: unknown;
  requiredCapabilities?: string[];
  maxRetries?: number;
  timeoutSeconds?: number;
  dependsOn?: string[];
}

export interface TaskFilter {
  status?: TaskStatus;
  priority?: TaskPriority;
  type?: TaskType;
  projectId?: string;
  limit: number;
  offset: number;
}

export interface TaskUpdate {
  status?: TaskStatus;
  progress?: number;
  result?: unknown;
  error?: string;
  /** When a worker reports, it must be the one holding the task. */
  workerId?: string;
}

interface TaskRow {
  id: string;
  owner_id: string;
  title: string;
  description: string | null;
  type: TaskType;
  priority: TaskPriority;
  status: TaskStatus;
  project_id: string | null;
  payload: unknown;
  required_capabilities: string[];
  depends_on: string[];
  max_retries: number;
  retry_count: number;
  timeout_seconds: number | null;
  assigned_worker: string | null;
  progress: number;
  result: unknown;
  error: string | null;
  created_at: Date;
  updated_at: Date;
  started_at: Date | null;
  completed_at: Date | null;
}

/** What `tasks_create` takes, as one item of `tasks_create_batch` (JSON). */
interface CreateItem {
  id: string;
  owner: string;
  title: string;
  description: string | null;
  type: TaskType;
  priority: TaskPriority;
  priority_rank: number;
  project_id: string | null;
  payload?: unknown;
  required_capabilities: string[];
  max_retries: number;
  timeout_seconds: number | null;
  event_id: string;
}

/** A final report with claim_next, as one item of `tasks_finish_and_claim_batch` (JSON). */
interface ReportItem {
  id: string;
  admin: boolean;
  caller: string;
  status: TaskStatus;
  progress: number | null;
  result?: unknown;
  error: string | null;
  worker: string;
  event_id: string;
  claim_event_id: string;
}

/** The queue's table is vacuumed after this many claims (see `claimed`), at most this often. */
const VACUUM_AFTER_CLAIMS = 1000;
const VACUUM_MIN_INTERVAL_MS = 2000;

/** Creations or reports sent in one call at most. */
const BATCH_MAX = 200;
/**
 * Calls of each kind in flight at once. Two: a batch being written does not hold up the next one
 * (the database works on both), and while both are busy newcomers gather into bigger batches.
 */
const BATCH_CONCURRENCY = 2;

/** The queue's hot statements stay prepared on each connection (their text never changes). */
const PREPARED = { prepared: true } as const;

/** A row of the hot-path functions: the task, and whether an event row was written with it. */
interface EmittingRow extends TaskRow {
  emitted: boolean;
}

function toTask(r: TaskRow): Task {
  return {
    id: r.id,
    ownerId: r.owner_id,
    title: r.title,
    description: r.description,
    type: r.type,
    priority: r.priority,
    status: r.status,
    projectId: r.project_id,
    payload: r.payload,
    requiredCapabilities: r.required_capabilities,
    dependsOn: r.depends_on,
    maxRetries: r.max_retries,
    retryCount: r.retry_count,
    timeoutSeconds: r.timeout_seconds,
    assignedWorker: r.assigned_worker,
    progress: r.progress,
    result: r.result,
    error: r.error,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    startedAt: r.started_at,
    completedAt: r.completed_at,
  };
}

interface WorkerRow {
  id: string;
  owner_id: string;
  shared: boolean;
  hostname: string;
  capabilities: string[];
  resources: Record<string, unknown>;
  status: Worker['status'];
  current_task: string | null;
  tasks_completed: number;
  registered_at: Date;
  last_heartbeat: Date;
}

function toWorker(r: WorkerRow): Worker {
  return {
    id: r.id,
    ownerId: r.owner_id,
    shared: r.shared,
    hostname: r.hostname,
    capabilities: r.capabilities,
    resources: r.resources,
    status: r.status,
    currentTask: r.current_task,
    tasksCompleted: r.tasks_completed,
    registeredAt: r.registered_at,
    lastHeartbeat: r.last_heartbeat,
  };
}

/** Which status changes a report may make (the same status again is accepted and changes nothing). */
const TRANSITIONS: Record<TaskStatus, readonly TaskStatus[]> = {
  pending: ['running', 'cancelled'],
  running: ['completed', 'failed', 'cancelled', 'pending'],
  completed: [],
  failed: ['pending'],
  cancelled: [],
};

/** A status report's outcome; `next` is the reporting worker's next task when one was asked for. */
export interface ReportOutcome {
  task: Task;
  next: Task | null;
}

export interface TaskOptions {
  /** A worker silent this long goes offline and its task returns to the queue. */
  workerTimeoutSeconds: number;
  reapIntervalMs: number;
}

export class TaskService {
  private readonly db: Db;
  private readonly bus: InvalidationBus;
  private readonly opts: TaskOptions;
  private readonly waiters = new Set<() => void>();
  private reaper: NodeJS.Timeout | null = null;
  private stopped = false;
  /** A NOTIFY for new tasks is in flight; `republish`: more tasks arrived meanwhile. */
  private publishing = false;
  private republish = false;
  private readonly log: { error(obj: unknown, msg: string): void };
  private readonly peers: () => boolean;
  private claimsSinceVacuum = 0;
  private lastVacuumAt = 0;
  private vacuuming = false;
  /** Concurrent creations share one call (`tasks_create_batch`). */
  private readonly creations: InFlightBatcher<CreateItem, EmittingRow>;
  /** Concurrent final reports with claim_next share one call (`tasks_finish_and_claim_batch`). */
  private readonly reports: InFlightBatcher<ReportItem, EmittingRow[]>;

  constructor(deps: {
    db: Db;
    invalidation: InvalidationBus;
    options: TaskOptions;
    log: { error(obj: unknown, msg: string): void };
    /** Whether other server processes may have long-polls waiting on this queue (default: assume so). */
    peers?: () => boolean;
  }) {
    this.db = deps.db;
    this.peers = deps.peers ?? (() => true);
    this.creations = new InFlightBatcher({
      max: BATCH_MAX,
      concurrency: BATCH_CONCURRENCY,
      runOne: (item) => this.insertOne(this.db, item),
      runBatch: async (items) => {
        const { rows } = await this.db.query<EmittingRow>(`SELECT (r.task).*, r.emitted FROM tasks_create_batch($1::jsonb) r`, [JSON.stringify(items)], PREPARED);
        const byId = new Map(rows.map((r) => [r.id, r]));
        return items.flatMap((i) => byId.get(i.id) ?? []);
      },
      afterBatch: (rows) => this.created(rows),
    });
    this.reports = new InFlightBatcher({
      max: BATCH_MAX,
      concurrency: BATCH_CONCURRENCY,
      // One spelling of a report: alone it is a batch of one.
      runOne: async (item) => (await this.writeReports([item]))[0]!,
      runBatch: (items) => this.writeReports(items),
      afterBatch: (results) => {
        if (results.some((rows) => rows.some((r) => r.emitted))) eventsEmitted();
        this.claimed(results.reduce((n, rows) => n + Math.max(0, rows.length - 1), 0));
      },
    });
    this.bus = deps.invalidation;
    this.opts = deps.options;
    this.log = deps.log;
    this.bus.subscribe((tag) => {
      if (tag === null) for (const w of [...this.waiters]) w();
      // One new task wakes one long-poll, not all of them (the others would only race for it).
      else if (tag === TASKS_PENDING_TAG) this.wakeOne();
    });
  }

  /**
   * Creates a pending task for its owner; dependencies must be the owner's tasks. The task and its
   * `task.created` event (when the owner has a webhook to hear it) are one statement.
   */
  async create(actor: Actor, input: CreateTaskInput): Promise<Task> {
    const dependsOn = [...new Set(input.dependsOn ?? [])];
    const priority = input.priority ?? 'normal';
    const item: CreateItem = {
      id: newId('task'),
      owner: actor.userId,
      title: input.title.trim(),
      description: input.description ?? null,
      type: input.type ?? 'planning',
      priority,
      priority_rank: PRIORITY_RANK[priority],
      project_id: input.projectId ?? null,
      ...(input.payload === undefined ? {} : { payload: input.payload }),
      required_capabilities: [...new Set(input.requiredCapabilities ?? [])],
      max_retries: input.maxRetries ?? 3,
      timeout_seconds: input.timeoutSeconds ?? null,
      event_id: newEventId(),
    };
    if (!dependsOn.length) return toTask(await this.creations.submit(item));
    const row = await this.db.transaction(async (tx) => {
      const found = await tx.query<{ id: string }>(`SELECT id FROM tasks WHERE id = ANY($1::text[]) AND owner_id = $2`, [dependsOn, actor.userId]);
      const missing = dependsOn.filter((d) => !found.rows.some((r) => r.id === d));
      if (missing.length) throw new AppError('VALIDATION_ERROR', `Unknown task in depends_on: ${missing.join(', ')}`, { details: { field: 'depends_on', invalid: missing } });
      return this.insertOne(tx, item, dependsOn);
    });
    this.created([row]);
    return toTask(row);
  }

  /** Final reports with claim_next in one call; per report its rows (finished task, then next task). */
  private async writeReports(items: ReportItem[]): Promise<EmittingRow[][]> {
    const { rows } = await this.db.query<EmittingRow & { n: number }>(
      `SELECT r.n, (r.task).*, r.emitted FROM tasks_finish_and_claim_batch($1::jsonb, $2) r`,
      [JSON.stringify(items), this.opts.workerTimeoutSeconds],
      PREPARED,
    );
    const out: EmittingRow[][] = items.map(() => []);
    for (const r of rows) out[r.n - 1]!.push(r);
    return out;
  }

  /** One task and its event (`tasks_create`). */
  private async insertOne(q: Queryable, item: CreateItem, dependsOn: string[] = []): Promise<EmittingRow> {
    const { rows } = await q.query<EmittingRow>(
      `SELECT (r.task).*, r.emitted FROM tasks_create($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12, $13, $14) r`,
      [
        item.id,
        item.owner,
        item.title,
        item.description,
        item.type,
        item.priority,
        item.priority_rank,
        item.project_id,
        item.payload === undefined ? null : JSON.stringify(item.payload),
        item.required_capabilities,
        dependsOn,
        item.max_retries,
        item.timeout_seconds,
        item.event_id,
      ],
      PREPARED,
    );
    return rows[0]!;
  }

  /** After new tasks committed: the dispatcher (when events were written) and long-polls learn of them. */
  private created(rows: EmittingRow[]): void {
    if (!rows.length) return;
    if (rows.some((r) => r.emitted)) eventsEmitted();
    this.announcePending();
  }

  /**
   * Tells long-polls (this process's and, by NOTIFY, other processes') that a task became claimable.
   * Sent after the commit, so a woken long-poll finds the task. A process alone on its database
   * wakes its own long-poll directly. Tasks created while a NOTIFY is in
   * flight share the next one: under load that is one NOTIFY per round trip, not one per task (a
   * woken long-poll that claims a task wakes the next one, so one wake-up serves a burst).
   */
  private announcePending(): void {
    // Alone on the database: this process's long-polls are all there is, woken without a round trip.
    if (!this.peers()) {
      this.wakeOne();
      return;
    }
    if (this.publishing) {
      this.republish = true;
      return;
    }
    this.publishing = true;
    void (async () => {
      try {
        do {
          this.republish = false;
          await this.bus.publish(this.db, TASKS_PENDING_TAG);
        } while (this.republish && !this.stopped);
      } catch (err) {
        // Long-polls also poll every second: a lost wake-up delays a pickup, it loses nothing.
        if (!this.stopped) this.log.error({ err }, 'could not announce new tasks');
      } finally {
        this.publishing = false;
      }
    })();
  }

  async get(actor: Actor, id: string, q: Queryable = this.db): Promise<Task> {
    const { rows } = await q.query<TaskRow>(`SELECT * FROM tasks WHERE id = $1 AND ($2::boolean OR owner_id = $3)`, [id, actor.admin, actor.userId]);
    if (!rows[0]) throw new AppError('NOT_FOUND', 'Task not found');
    return toTask(rows[0]);
  }

  async list(actor: Actor, f: TaskFilter): Promise<{ tasks: Task[]; total: number }> {
    const params = [actor.admin, actor.userId, f.status ?? null, f.priority ?? null, f.type ?? null, f.projectId ?? null];
    const where = `($1::boolean OR owner_id = $2) AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR priority = $4)
                   AND ($5::text IS NULL OR type = $5) AND ($6::text IS NULL OR project_id = $6)`;
    const { rows } = await this.db.query<TaskRow>(`SELECT * FROM tasks WHERE ${where} ORDER BY created_at DESC, id LIMIT $7 OFFSET $8`, [...params, f.limit, f.offset]);
    const count = await this.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM tasks WHERE ${where}`, params);
    return { tasks: rows.map(toTask), total: count.rows[0]?.n ?? 0 };
  }

  /**
   * Applies a status/progress/result report. Only valid transitions; a report naming a worker must
   * come from the worker holding the task; reporting a terminal status again is a no-op.
   */
  async update(actor: Actor, id: string, u: TaskUpdate): Promise<Task> {
    return (await this.report(actor, id, u, { claimNext: false })).task;
  }

  /**
   * `update`, and with `claimNext` (a report naming its worker): once the task has left the worker,
   * the worker's next task, claimed exactly as an idle heartbeat without `wait` would (the report
   * counts as that heartbeat). `next` is null when there is nothing the worker can take, or when
   * the worker is not the caller's (heartbeat rules).
   */
  async report(actor: Actor, id: string, u: TaskUpdate, opts: { claimNext: boolean }): Promise<ReportOutcome> {
    const claimNext = opts.claimNext && u.workerId !== undefined;
    const finished = u.workerId !== undefined && (u.status === 'completed' || u.status === 'failed') ? await this.finishHeld(actor, id, u, claimNext) : null;
    if (finished) return finished;
    const task = await this.updateChecked(actor, id, u);
    if (!claimNext || !TERMINAL.includes(task.status)) return { task, next: null };
    // A retried report whose first answer was lost: the task handed out then, if the worker still holds it.
    const { rows } = await this.db.query<TaskRow>(
      `SELECT n.* FROM workers w JOIN tasks n ON n.id = w.current_task WHERE w.id = $2 AND n.claimed_after = $1 AND n.status = 'running' AND n.assigned_worker = $2`,
      [id, u.workerId],
    );
    const again = rows[0] ? toTask(rows[0]) : null;
    const worker = await this.touchWorker(actor, { workerId: u.workerId!, status: again ? 'busy' : 'idle', currentTask: again?.id ?? null });
    if (!worker) return { task, next: null };
    if (again) return { task, next: again };
    return { task, next: await this.claim(worker.id, actor.userId, id) };
  }

  /**
   * The common report in one statement: the worker holding a running task completes or fails it;
   * the task, the freed worker and the event change together (`tasks_finish`), and with `claimNext`
   * the worker's next task is claimed in the same call (`tasks_finish_and_claim`). Null when the
   * task is not running under this worker: the checked path then gives the right answer or error.
   */
  private async finishHeld(actor: Actor, id: string, u: TaskUpdate, claimNext: boolean): Promise<ReportOutcome | null> {
    let rows: EmittingRow[];
    if (claimNext) {
      rows = await this.reports.submit({
        id,
        admin: actor.admin,
        caller: actor.userId,
        status: u.status!,
        progress: u.progress ?? null,
        ...(u.result === undefined ? {} : { result: u.result }),
        error: u.error ?? null,
        worker: u.workerId!,
        event_id: newEventId(),
        claim_event_id: newEventId(),
      });
    } else {
      const params = [id, actor.admin, actor.userId, u.status, u.progress ?? null, u.result === undefined ? null : JSON.stringify(u.result), u.error ?? null, u.workerId, newEventId()];
      rows = (await this.db.query<EmittingRow>(`SELECT (r.task).*, r.emitted FROM tasks_finish($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, false) r`, params, PREPARED)).rows;
      if (rows.some((r) => r.emitted)) eventsEmitted();
    }
    if (!rows[0]) return null;
    return { task: toTask(rows[0]), next: rows[1] ? toTask(rows[1]) : null };
  }

  private async updateChecked(actor: Actor, id: string, u: TaskUpdate): Promise<Task> {
    return this.db.transaction(async (tx) => {
      const { rows } = await tx.query<TaskRow>(`SELECT * FROM tasks WHERE id = $1 AND ($2::boolean OR owner_id = $3) FOR UPDATE`, [id, actor.admin, actor.userId]);
      const row = rows[0];
      if (!row) throw new AppError('NOT_FOUND', 'Task not found');
      if (u.workerId !== undefined && row.assigned_worker !== u.workerId) {
        throw new AppError('CONFLICT', `Task is not held by worker ${u.workerId}`, { details: { assigned_worker: row.assigned_worker } });
      }
      const next = u.status ?? row.status;
      if (next === row.status && TERMINAL.includes(next)) return toTask(row);
      if (next !== row.status && !TRANSITIONS[row.status].includes(next)) {
        throw new AppError('CONFLICT', `Task cannot go from ${row.status} to ${next}`, { details: { status: row.status, allowed: TRANSITIONS[row.status] } });
      }
      if (u.progress !== undefined && next !== 'running' && next !== 'completed') {
        throw new AppError('CONFLICT', `Progress can only be reported on a running task (it is ${next})`);
      }
      const done = TERMINAL.includes(next);
      const requeued = next === 'pending';
      const res = await tx.query<TaskRow>(
        `UPDATE tasks SET
           status = $2,
           progress = COALESCE($3, CASE WHEN $2 = 'completed' THEN 100 ELSE progress END),
           result = COALESCE($4::jsonb, result),
           error = COALESCE($5, error),
           started_at = CASE WHEN $2 = 'running' THEN COALESCE(started_at, clock_timestamp()) ELSE started_at END,
           completed_at = CASE WHEN $6 THEN clock_timestamp() ELSE NULL END,
           assigned_worker = CASE WHEN $7 THEN NULL ELSE assigned_worker END,
           lease_expires_at = CASE WHEN $6 OR $7 THEN NULL ELSE lease_expires_at END,
           updated_at = clock_timestamp()
         WHERE id = $1 RETURNING *`,
        [id, next, u.progress ?? null, u.result === undefined ? null : JSON.stringify(u.result), u.error ?? null, done, requeued],
      );
      const task = toTask(res.rows[0]!);
      if (done && row.assigned_worker) await this.releaseWorker(tx, row.assigned_worker, next === 'completed');
      if (requeued) await this.bus.publish(tx, TASKS_PENDING_TAG);
      if (next !== row.status) await this.emitStatus(tx, task);
      return task;
    });
  }

  /** Deletes a task; a pending or running one is cancelled first (its worker is freed). */
  async delete(actor: Actor, id: string): Promise<void> {
    await this.db.transaction(async (tx) => {
      const { rows } = await tx.query<TaskRow>(`DELETE FROM tasks WHERE id = $1 AND ($2::boolean OR owner_id = $3) RETURNING *`, [id, actor.admin, actor.userId]);
      const row = rows[0];
      if (!row) throw new AppError('NOT_FOUND', 'Task not found');
      if (row.assigned_worker && row.status === 'running') await this.releaseWorker(tx, row.assigned_worker, false);
      if (row.status === 'pending' || row.status === 'running') await emitEvent(tx, row.owner_id, 'task.cancelled', { task_id: row.id });
    });
  }

  /** Registers (or re-registers, by hostname) a worker for the caller. */
  async registerWorker(actor: Actor, input: { hostname: string; capabilities: string[]; resources: Record<string, unknown> }): Promise<Worker> {
    return this.db.transaction(async (tx) => {
      const { rows } = await tx.query<WorkerRow & { inserted: boolean }>(
        `INSERT INTO workers (id, owner_id, shared, hostname, capabilities, resources)
         VALUES ($1, $2, $3, $4, $5, $6::jsonb)
         ON CONFLICT (owner_id, hostname) DO UPDATE SET
           capabilities = EXCLUDED.capabilities, resources = EXCLUDED.resources, shared = EXCLUDED.shared,
           status = 'idle', last_heartbeat = now(), registered_at = now()
         RETURNING *, (xmax = 0) AS inserted`,
        [newId('worker'), actor.userId, actor.admin, input.hostname, [...new Set(input.capabilities)], JSON.stringify(input.resources)],
      );
      const worker = toWorker(rows[0]!);
      await emitEvent(tx, actor.userId, 'worker.registered', { worker_id: worker.id, hostname: worker.hostname });
      return worker;
    });
  }

  async listWorkers(actor: Actor): Promise<Worker[]> {
    const { rows } = await this.db.query<WorkerRow>(
      `SELECT * FROM workers WHERE $1::boolean OR owner_id = $2 OR shared ORDER BY registered_at DESC, id`,
      [actor.admin, actor.userId],
    );
    return rows.map(toWorker);
  }

  /**
   * Records a heartbeat; an idle worker gets the next task it can run (or, with `waitSeconds`, waits
   * for one). The claim is one statement with FOR UPDATE SKIP LOCKED: two workers never get one task.
   */
  async heartbeat(
    actor: Actor,
    hb: { workerId: string; status: 'idle' | 'busy'; currentTask: string | null; cpuUsage?: number; memoryUsage?: number; waitSeconds?: number },
    /** Aborted when the worker hangs up: a long-poll nobody listens to must not claim a task. */
    signal?: AbortSignal,
  ): Promise<{ assigned: Task | null }> {
    const worker = await this.touchWorker(actor, hb);
    if (!worker) throw new AppError('NOT_FOUND', 'Worker not found; register it first');
    if (hb.status !== 'idle') return { assigned: null };
    const deadline = Date.now() + Math.min(hb.waitSeconds ?? 0, 25) * 1000;
    for (let woken = false; ; woken = true) {
      if (signal?.aborted) return { assigned: null };
      const task = await this.claim(worker.id, actor.userId);
      // A wake-up may stand for several new tasks (see announcePending): pass it on.
      if (task && woken) this.wakeOne();
      if (task || Date.now() >= deadline) return { assigned: task };
      await this.waitForPending(deadline - Date.now());
    }
  }

  /** The heartbeat's writes, in one statement: the worker's row and the lease of what it runs. */
  private async touchWorker(actor: Actor, hb: { workerId: string; status: 'idle' | 'busy'; currentTask: string | null; cpuUsage?: number; memoryUsage?: number }): Promise<Worker | null> {
    const { rows } = await this.db.query<WorkerRow>(
      `WITH touched AS (
         UPDATE workers SET last_heartbeat = now(), status = $3, current_task = $4, cpu_usage = $5, memory_usage = $6
         WHERE id = $1 AND owner_id = $2 RETURNING *
       ), leases AS (
         -- A heartbeat extends the lease of whatever this worker is running.
         UPDATE tasks SET lease_expires_at = clock_timestamp() + make_interval(secs => $7)
         WHERE assigned_worker = (SELECT id FROM touched) AND status = 'running'
       )
       SELECT * FROM touched`,
      [hb.workerId, actor.userId, hb.status, hb.currentTask, hb.cpuUsage ?? null, hb.memoryUsage ?? null, this.opts.workerTimeoutSeconds],
    );
    return rows[0] ? toWorker(rows[0]) : null;
  }

  /**
   * Claims the worker's next task, if the worker is the caller's (`tasks_claim`: one statement, one
   * commit). `after`: the finished task whose report asked for it.
   */
  private async claim(workerId: string, callerId: string, after: string | null = null): Promise<Task | null> {
    const { rows } = await this.db.query<EmittingRow>(`SELECT (r.task).*, r.emitted FROM tasks_claim($1, $2, $3, $4, $5) r`, [
      workerId,
      callerId,
      this.opts.workerTimeoutSeconds,
      newEventId(),
      after,
    ], PREPARED);
    if (!rows[0]) return null;
    if (rows[0].emitted) eventsEmitted();
    this.claimed(1);
    return toTask(rows[0]);
  }

  /**
   * Every claim leaves a dead entry at the front of the pending index (the oldest tasks go first),
   * and each later claim walks past all of them until the table is vacuumed: the claim grows slower
   * with every task (measured: paced runs of 10,000 tasks fell behind, with up to 45% more database CPU).
   * Autovacuum looks at a database once a minute at best, and PGlite has none, so the queue vacuums
   * its table itself, at most every few seconds and only after enough claims. SKIP_LOCKED: a vacuum
   * already running (another process's, or autovacuum) is left to do the work.
   */
  private claimed(n: number): void {
    this.claimsSinceVacuum += n;
    if (this.claimsSinceVacuum < VACUUM_AFTER_CLAIMS || this.vacuuming || this.stopped) return;
    if (Date.now() - this.lastVacuumAt < VACUUM_MIN_INTERVAL_MS) return;
    this.vacuuming = true;
    this.claimsSinceVacuum = 0;
    this.lastVacuumAt = Date.now();
    void this.db
      .exec('VACUUM (SKIP_LOCKED) tasks')
      .catch((err: unknown) => this.log.error({ err }, 'task table vacuum failed'))
      .finally(() => {
        this.vacuuming = false;
      });
  }

  private wakeOne(): void {
    this.waiters.values().next().value?.();
  }

  private waitForPending(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      // Also poll: another process's NOTIFY may be missed while its listener reconnects.
      const timer = setTimeout(done, Math.min(ms, 1000));
      this.waiters.add(done);
    });
  }

  private async releaseWorker(tx: Queryable, workerId: string, completed: boolean): Promise<void> {
    await tx.query(
      `UPDATE workers SET current_task = NULL, status = CASE WHEN status = 'offline' THEN status ELSE 'idle' END,
              tasks_completed = tasks_completed + $2 WHERE id = $1`,
      [workerId, completed ? 1 : 0],
    );
  }

  private async emitStatus(tx: Queryable, task: Task): Promise<void> {
    if (task.status === 'completed') await emitEvent(tx, task.ownerId, 'task.completed', { task_id: task.id, status: 'completed', result: task.result ?? undefined });
    else if (task.status === 'failed') await emitEvent(tx, task.ownerId, 'task.failed', { task_id: task.id, status: 'failed', error: task.error ?? undefined });
    else if (task.status === 'cancelled') await emitEvent(tx, task.ownerId, 'task.cancelled', { task_id: task.id });
  }

  /** Starts the lease reaper: silent workers go offline and their tasks return to the queue (or fail). */
  start(): void {
    this.stopped = false;
    if (this.reaper) return;
    const tick = () => {
      this.reapExpired()
        .catch((err: unknown) => this.log.error({ err }, 'task lease reaper failed'))
        .finally(() => {
          if (this.reaper) this.reaper = setTimeout(tick, this.opts.reapIntervalMs);
        });
    };
    this.reaper = setTimeout(tick, this.opts.reapIntervalMs);
  }

  stop(): void {
    this.stopped = true;
    if (this.reaper) clearTimeout(this.reaper);
    this.reaper = null;
    for (const w of [...this.waiters]) w();
  }

  /** One reaper pass; returns how many tasks it took back. */
  async reapExpired(): Promise<number> {
    return this.db.transaction(async (tx) => {
      const offline = await tx.query<{ id: string; owner_id: string; last_heartbeat: Date }>(
        `UPDATE workers SET status = 'offline'
         WHERE status <> 'offline' AND last_heartbeat < clock_timestamp() - make_interval(secs => $1)
         RETURNING id, owner_id, last_heartbeat`,
        [this.opts.workerTimeoutSeconds],
      );
      for (const w of offline.rows) {
        await emitEvent(tx, w.owner_id, 'worker.offline', { worker_id: w.id, last_heartbeat: w.last_heartbeat.toISOString() });
      }
      const { rows } = await tx.query<TaskRow>(
        `UPDATE tasks SET
           status = CASE WHEN retry_count + 1 > max_retries THEN 'failed' ELSE 'pending' END,
           retry_count = retry_count + 1,
           error = CASE WHEN retry_count + 1 > max_retries THEN 'worker lost; retries exhausted' ELSE error END,
           completed_at = CASE WHEN retry_count + 1 > max_retries THEN clock_timestamp() ELSE NULL END,
           assigned_worker = NULL, lease_expires_at = NULL, updated_at = clock_timestamp()
         WHERE id IN (SELECT id FROM tasks WHERE status = 'running' AND lease_expires_at < clock_timestamp() FOR UPDATE SKIP LOCKED)
         RETURNING *`,
      );
      for (const r of rows) {
        const task = toTask(r);
        if (task.status === 'failed') await this.emitStatus(tx, task);
      }
      if (rows.some((r) => r.status === 'pending')) await this.bus.publish(tx, TASKS_PENDING_TAG);
      return rows.length;
    });
  }
}
