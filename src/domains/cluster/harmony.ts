/**
 * HelixCode Harmony over the task queue: the workers seen as cluster nodes, distribution of a
 * pending task to one chosen worker (a reservation the claim honours), and task sync for devices.
 */
import type { Db, Queryable } from '../../platform/db/index.ts';
import { AppError } from '../../platform/errors.ts';
import type { Actor, TaskPriority, TaskStatus, TaskType } from '../tasks/service.ts';

export const DISTRIBUTION_STRATEGIES = ['round_robin', 'least_loaded', 'capability_match'] as const;
export type DistributionStrategy = (typeof DISTRIBUTION_STRATEGIES)[number];

export interface WorkerNode {
  id: string;
  status: 'active' | 'offline';
  tasksCompleted: number;
  /** Running tasks / max(1, the worker's declared `resources.concurrency`, else 1). */
  currentLoad: number;
}

interface NodeRow {
  id: string;
  status: 'idle' | 'busy' | 'offline';
  capabilities: string[];
  tasks_completed: number;
  running: number;
  slots: number;
}

const nodeColumns = `
  w.id, w.status, w.capabilities, w.tasks_completed,
  (SELECT count(*)::int FROM tasks r WHERE r.assigned_worker = w.id AND r.status = 'running') AS running,
  GREATEST(1, CASE WHEN jsonb_typeof(w.resources -> 'concurrency') = 'number' THEN floor((w.resources ->> 'concurrency')::numeric)::int ELSE 1 END) AS slots`;

function loadOf(r: NodeRow): number {
  return Math.round((r.running / r.slots) * 100) / 100;
}

/** Workers the caller may see (admins: all; others: their own and shared ones), as cluster nodes. */
export async function workerNodes(db: Queryable, actor: Actor): Promise<WorkerNode[]> {
  const { rows } = await db.query<NodeRow>(
    `SELECT ${nodeColumns} FROM workers w WHERE $1::boolean OR w.owner_id = $2 OR w.shared ORDER BY w.registered_at, w.id`,
    [actor.admin, actor.userId],
  );
  return rows.map((r) => ({ id: r.id, status: r.status === 'offline' ? 'offline' : 'active', tasksCompleted: r.tasks_completed, currentLoad: loadOf(r) }));
}

export interface DistributeResult {
  distributed: boolean;
  assignedNodes: string[];
  estimatedCompletion: Date | null;
}

/** Chooses among candidates (sorted by id) by the strategy. */
function choose(strategy: DistributionStrategy, candidates: NodeRow[], lastWorker: string | null, wanted: Set<string>): NodeRow {
  const byLoad = (a: NodeRow, b: NodeRow) => a.running / a.slots - b.running / b.slots || a.id.localeCompare(b.id);
  if (strategy === 'round_robin') {
    return (lastWorker === null ? undefined : candidates.find((c) => c.id > lastWorker)) ?? candidates[0]!;
  }
  if (strategy === 'least_loaded') return [...candidates].sort(byLoad)[0]!;
  // capability_match: the tightest fit, i.e. the fewest capabilities beyond those required.
  const extra = (c: NodeRow) => c.capabilities.filter((x) => !wanted.has(x)).length;
  return [...candidates].sort((a, b) => extra(a) - extra(b) || byLoad(a, b))[0]!;
}

/**
 * Reserves a pending task for one worker that can run it: not offline, serving the task's owner,
 * holding the task's type, its required capabilities and the ones asked for here.
 */
export async function distributeTask(
  db: Db,
  actor: Actor,
  input: { taskId: string; strategy: DistributionStrategy; requiredCapabilities: string[] },
): Promise<DistributeResult> {
  return db.transaction(async (tx) => {
    const { rows } = await tx.query<{ id: string; owner_id: string; type: TaskType; status: TaskStatus; required_capabilities: string[] }>(
      `SELECT id, owner_id, type, status, required_capabilities FROM tasks WHERE id = $1 AND ($2::boolean OR owner_id = $3) FOR UPDATE`,
      [input.taskId, actor.admin, actor.userId],
    );
    const task = rows[0];
    if (!task) throw new AppError('NOT_FOUND', 'Task not found');
    if (task.status !== 'pending') throw new AppError('CONFLICT', `Only a pending task can be distributed (it is ${task.status})`, { details: { status: task.status } });
    const wanted = [...new Set([task.type, ...task.required_capabilities, ...input.requiredCapabilities])];
    const candidates = await tx.query<NodeRow>(
      `SELECT ${nodeColumns} FROM workers w
       WHERE w.status <> 'offline' AND (w.shared OR w.owner_id = $1) AND w.capabilities @> $2::text[]
       ORDER BY w.id`,
      [task.owner_id, wanted],
    );
    if (!candidates.rows.length) return { distributed: false, assignedNodes: [], estimatedCompletion: null };
    const cursor = await tx.query<{ last_worker: string }>(`SELECT last_worker FROM distribution_cursors WHERE owner_id = $1`, [task.owner_id]);
    const chosen = choose(input.strategy, candidates.rows, cursor.rows[0]?.last_worker ?? null, new Set(wanted));
    await tx.query(`UPDATE tasks SET reserved_for = $2, updated_at = clock_timestamp() WHERE id = $1`, [task.id, chosen.id]);
    if (input.strategy === 'round_robin') {
      await tx.query(
        `INSERT INTO distribution_cursors (owner_id, last_worker) VALUES ($1, $2) ON CONFLICT (owner_id) DO UPDATE SET last_worker = EXCLUDED.last_worker`,
        [task.owner_id, chosen.id],
      );
    }
    const history = await tx.query<{ avg_ms: number | null }>(
      `SELECT (avg(extract(epoch FROM completed_at - started_at)) * 1000)::float8 AS avg_ms
       FROM tasks WHERE owner_id = $1 AND type = $2 AND status = 'completed' AND started_at IS NOT NULL AND completed_at IS NOT NULL`,
      [task.owner_id, task.type],
    );
    const avg = history.rows[0]?.avg_ms ?? null;
    return { distributed: true, assignedNodes: [chosen.id], estimatedCompletion: avg === null ? null : new Date(Date.now() + avg) };
  });
}

export interface SyncedTask {
  id: string;
  title: string;
  type: TaskType;
  priority: TaskPriority;
  status: TaskStatus;
  progress: number;
  assignedWorker: string | null;
  createdAt: Date;
  updatedAt: Date;
  completedAt: Date | null;
}

export const SYNC_PAGE = 500;

/**
 * Records a device's sync and returns the caller's tasks changed after `since` (all of them when
 * absent), oldest change first, at most SYNC_PAGE. The cursor is the newest returned change in
 * microseconds (`since` again when nothing changed); deleted tasks are not reported.
 */
export async function syncDevice(
  db: Db,
  actor: Actor,
  input: { deviceId: string; deviceType: string; since?: string },
): Promise<{ tasks: SyncedTask[]; cursor: string | null; hasMore: boolean; syncedAt: Date }> {
  return db.transaction(async (tx) => {
    const { rows } = await tx.query<{
      id: string; title: string; type: TaskType; priority: TaskPriority; status: TaskStatus; progress: number; assigned_worker: string | null;
      created_at: Date; updated_at: Date; completed_at: Date | null; cursor: string;
    }>(
      `SELECT id, title, type, priority, status, progress, assigned_worker, created_at, updated_at, completed_at,
              to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS cursor
       FROM tasks WHERE owner_id = $1 AND ($2::timestamptz IS NULL OR updated_at > $2::timestamptz)
       ORDER BY updated_at, id LIMIT $3`,
      [actor.userId, input.since ?? null, SYNC_PAGE + 1],
    );
    const hasMore = rows.length > SYNC_PAGE;
    const page = rows.slice(0, SYNC_PAGE);
    const device = await tx.query<{ last_sync: Date }>(
      `INSERT INTO devices (owner_id, id, device_type, last_sync) VALUES ($1, $2, $3, clock_timestamp())
       ON CONFLICT (owner_id, id) DO UPDATE SET device_type = EXCLUDED.device_type, last_sync = EXCLUDED.last_sync
       RETURNING last_sync`,
      [actor.userId, input.deviceId, input.deviceType],
    );
    return {
      tasks: page.map((r) => ({
        id: r.id, title: r.title, type: r.type, priority: r.priority, status: r.status, progress: r.progress,
        assignedWorker: r.assigned_worker, createdAt: r.created_at, updatedAt: r.updated_at, completedAt: r.completed_at,
      })),
      cursor: page.at(-1)?.cursor ?? input.since ?? null,
      hasMore,
      syncedAt: device.rows[0]!.last_sync,
    };
  });
}

export interface DeviceSync {
  deviceId: string;
  deviceType: string;
  lastSync: Date;
  /** `stale` when the last sync is older than twice the sync interval. */
  status: 'synced' | 'stale';
}

/** The caller's devices, most recently synced first. */
export async function deviceSyncs(db: Queryable, actor: Actor, intervalSeconds: number): Promise<DeviceSync[]> {
  const { rows } = await db.query<{ id: string; device_type: string; last_sync: Date; stale: boolean }>(
    `SELECT id, device_type, last_sync, last_sync < clock_timestamp() - make_interval(secs => $2 * 2) AS stale
     FROM devices WHERE owner_id = $1 ORDER BY last_sync DESC, id`,
    [actor.userId, intervalSeconds],
  );
  return rows.map((r) => ({ deviceId: r.id, deviceType: r.device_type, lastSync: r.last_sync, status: r.stale ? 'stale' : 'synced' }));
}
