/**
 * The Mainspring task worker: an HTTP client of the HelixCode task API. It registers, long-polls
 * heartbeats while it has a free slot, runs each assigned task with the handler named by
 * `payload.handler` (or the task type), keeps the task's lease alive with busy heartbeats, and
 * reports the result. Network failures are retried with capped backoff; `stop()` drains.
 */
import { hostname as osHostname } from 'node:os';
import { ApiError, isTransient, TaskApi, type AssignedTask, type TaskReport } from './client.ts';
import { type HandlerContext, type TaskHandler } from './handlers.ts';

export { httpHandler, PayloadError, shellHandler, type HandlerContext, type TaskHandler } from './handlers.ts';

export type LogLevel = 'info' | 'warn' | 'error';
export type WorkerLog = (level: LogLevel, message: string, fields?: Record<string, unknown>) => void;

export interface WorkerOptions {
  /** Base URL of the server, e.g. `http://localhost:8080`. */
  server: string;
  /** A HelixCode access token; a worker registered by an admin serves every user's tasks. */
  token: string;
  /** Task types (and required capabilities) this worker takes. */
  capabilities: string[];
  /** Unique per worker: the server keys workers by (owner, hostname). Default `<host>-<pid>` (`-2`, `-3`... for more in one process). */
  hostname?: string;
  /** Tasks run at once (default 1). */
  concurrency?: number;
  handlers: Record<string, TaskHandler>;
  /** Long-poll length of an idle heartbeat (default 20 s, at most 25). Keep it below the server's WORKER_TIMEOUT. */
  waitSeconds?: number;
  /** Interval of the busy heartbeats that extend a running task's lease (default 10 s: WORKER_TIMEOUT / 3). */
  heartbeatSeconds?: number;
  /** How long `stop()` lets running tasks finish before handing them back as pending (default 20 s). */
  graceSeconds?: number;
  /** Handlers named here fail with this message instead of "no handler" (e.g. why `shell` is off). */
  disabledHandlers?: Record<string, string>;
  log?: WorkerLog;
}

export interface Worker {
  /** Registers and starts taking tasks; resolves once registered. Rejects on a 4xx (bad token or input). */
  start(): Promise<void>;
  /** Stops taking tasks, lets running ones finish within the grace period, hands back the rest. */
  stop(): Promise<void>;
  /** The id the server gave this worker (after `start()`). */
  readonly id: string | null;
}

const MAX_BACKOFF_MS = 10_000;
const ERROR_CAP = 10_000;

const noLog: WorkerLog = () => {};
let instances = 0;

/** Sleeps `ms`, or less when `signal` aborts. */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

function backoff(attempt: number): number {
  const base = Math.min(MAX_BACKOFF_MS, 250 * 2 ** Math.min(attempt, 10));
  return base / 2 + Math.random() * (base / 2);
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

interface Running {
  task: AssignedTask;
  abort: AbortController;
  done: Promise<void>;
  /** Set when the worker gave the task back: the handler's outcome is then dropped. */
  handedBack: boolean;
}

export function createWorker(opts: WorkerOptions): Worker {
  const api = new TaskApi(opts.server, opts.token);
  const log = opts.log ?? noLog;
  const concurrency = Math.max(1, Math.floor(opts.concurrency ?? 1));
  const waitSeconds = Math.min(25, Math.max(0, opts.waitSeconds ?? 20));
  const heartbeatMs = Math.max(100, (opts.heartbeatSeconds ?? 10) * 1000);
  const graceMs = Math.max(0, (opts.graceSeconds ?? 20) * 1000);
  // Two workers with one hostname would share an id, so each one in a process gets its own default.
  const instance = ++instances;
  const hostname = opts.hostname ?? `${osHostname()}-${process.pid}${instance > 1 ? `-${instance}` : ''}`;
  const handlers = { ...opts.handlers };
  const disabled = { ...opts.disabledHandlers };

  let workerId: string | null = null;
  let started = false;
  let stopping: Promise<void> | null = null;
  /** Aborted by stop(): cuts long-polls and backoff sleeps short. */
  const halt = new AbortController();
  const running = new Map<string, Running>();
  const slots: Promise<void>[] = [];
  /** Set when a long-poll was cut by stop(): the server may have assigned a task nobody received. */
  let pollCut = false;

  async function register(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        const res = await api.register({ hostname, capabilities: opts.capabilities, resources: { concurrency } }, halt.signal);
        workerId = res.worker_id;
        log('info', 'worker registered', { worker_id: workerId, hostname, capabilities: opts.capabilities });
        return;
      } catch (err) {
        if (!isTransient(err) || halt.signal.aborted) throw err;
        log('warn', 'register failed; retrying', { error: message(err) });
        await pause(backoff(attempt), halt.signal);
      }
    }
  }

  /** One slot: long-poll for a task, run it, repeat until stopped. */
  async function slot(): Promise<void> {
    let failures = 0;
    while (!halt.signal.aborted) {
      let task: AssignedTask | null;
      try {
        const current = [...running.keys()][0] ?? null;
        const res = await api.heartbeat({ worker_id: workerId!, status: 'idle', current_task: current, wait: waitSeconds }, halt.signal);
        task = res.assigned_task;
        failures = 0;
      } catch (err) {
        if (halt.signal.aborted) {
          pollCut = true;
          return;
        }
        if (err instanceof ApiError && err.status === 404) {
          log('warn', 'the server does not know this worker; registering again');
          try {
            await register();
            continue;
          } catch (regErr) {
            err = regErr;
          }
        }
        log(isTransient(err) ? 'warn' : 'error', 'heartbeat failed; retrying', { error: message(err) });
        await pause(backoff(failures++), halt.signal);
        continue;
      }
      // A completion report hands back the next task, if there is one: run it without a heartbeat.
      while (task) {
        if (halt.signal.aborted) {
          // Assigned as stop() began: give it straight back.
          await handBack(task.id);
          return;
        }
        task = await run(task);
      }
    }
  }

  /**
   * Sends a report, retrying transient failures until `deadline`; false when it could not be
   * delivered, else the next task the server handed back (when `body.claim_next` asked for one).
   */
  async function report(taskId: string, body: TaskReport, deadline: number): Promise<false | { next: AssignedTask | null }> {
    for (let attempt = 0; ; attempt++) {
      try {
        // A retry after a lost answer gets the task the first attempt was handed, not a second one.
        const res = await api.report(taskId, body);
        return { next: res.next_task ?? null };
      } catch (err) {
        if (!isTransient(err) || Date.now() >= deadline) {
          log('error', 'could not report the task', { task_id: taskId, status: body.status, error: message(err) });
          return false;
        }
        log('warn', 'report failed; retrying', { task_id: taskId, error: message(err) });
        await pause(Math.min(backoff(attempt), Math.max(0, deadline - Date.now())));
      }
    }
  }

  async function handBack(taskId: string): Promise<void> {
    if ((await report(taskId, { status: 'pending', worker_id: workerId! }, Date.now() + 10_000)) !== false) {
      log('info', 'task handed back to the queue', { task_id: taskId });
    }
  }

  function handlerFor(task: AssignedTask): { name: string; handler: TaskHandler | undefined } {
    const payload = task.payload;
    const named = payload && typeof payload === 'object' && !Array.isArray(payload) ? (payload as Record<string, unknown>).handler : undefined;
    const name = typeof named === 'string' && named ? named : task.type;
    return { name, handler: Object.hasOwn(handlers, name) ? handlers[name] : undefined };
  }

  /** Runs the task and reports it; the next task when the report handed one back. */
  async function run(task: AssignedTask): Promise<AssignedTask | null> {
    const abort = new AbortController();
    let finished!: () => void;
    const entry: Running = { task, abort, handedBack: false, done: new Promise<void>((r) => (finished = r)) };
    running.set(task.id, entry);
    log('info', 'task started', { task_id: task.id, type: task.type });

    // Busy heartbeats extend the lease while the handler runs and while the outcome is reported.
    const beat = setInterval(() => {
      api.heartbeat({ worker_id: workerId!, status: 'busy', current_task: task.id }).catch((err: unknown) => {
        log('warn', 'busy heartbeat failed', { task_id: task.id, error: message(err) });
      });
    }, heartbeatMs);

    // Progress reports go out one at a time, before the final report.
    let progressChain: Promise<unknown> = Promise.resolve();
    let lastProgress = -1;
    const ctx: HandlerContext = {
      taskId: task.id,
      task: { id: task.id, title: task.title, type: task.type, timeout_seconds: task.timeout_seconds, retry_count: task.retry_count },
      signal: abort.signal,
      progress(percent: number) {
        const p = Math.max(0, Math.min(100, Math.round(Number(percent))));
        if (!Number.isFinite(p) || p === lastProgress || abort.signal.aborted) return;
        lastProgress = p;
        progressChain = progressChain.then(() =>
          api.report(task.id, { progress: p, worker_id: workerId! }).catch((err: unknown) => {
            log('warn', 'progress report failed', { task_id: task.id, error: message(err) });
          }),
        );
      },
    };

    let outcome: { ok: true; result: unknown } | { ok: false; error: string };
    const { name, handler } = handlerFor(task);
    let timeout: NodeJS.Timeout | undefined;
    try {
      if (!handler) {
        const why = Object.hasOwn(disabled, name) ? disabled[name] : undefined;
        throw new Error(why ?? `No handler "${name}" on this worker (it has: ${Object.keys(handlers).join(', ') || 'none'})`);
      }
      const payload = task.payload && typeof task.payload === 'object' && !Array.isArray(task.payload) ? (task.payload as Record<string, unknown>) : {};
      const work = Promise.resolve().then(() => handler(payload, ctx));
      const limits: Promise<never>[] = [
        new Promise<never>((_, reject) => abort.signal.addEventListener('abort', () => reject(new Error('task aborted')), { once: true })),
      ];
      if (task.timeout_seconds) {
        const secs = task.timeout_seconds;
        limits.push(
          new Promise<never>((_, reject) => {
            timeout = setTimeout(() => {
              reject(new Error(`task timed out after ${secs} s`));
              abort.abort();
            }, secs * 1000);
          }),
        );
      }
      work.catch(() => {});
      const result = await Promise.race([work, ...limits]);
      outcome = { ok: true, result: result === undefined ? null : result };
    } catch (err) {
      outcome = { ok: false, error: message(err).slice(0, ERROR_CAP) || 'task failed' };
    } finally {
      clearTimeout(timeout);
    }

    try {
      if (entry.handedBack) return null;
      await progressChain;
      // While stopping, no new work: the report asks for a next task only while running normally.
      const claimNext = !halt.signal.aborted;
      const body: TaskReport = outcome.ok
        ? { status: 'completed', result: outcome.result, worker_id: workerId!, claim_next: claimNext }
        : { status: 'failed', error: outcome.error, worker_id: workerId!, claim_next: claimNext };
      // Retried for a while: the busy heartbeats keep the lease meanwhile.
      const delivered = await report(task.id, body, Date.now() + 5 * 60_000);
      if (!delivered) return null;
      log(outcome.ok ? 'info' : 'warn', outcome.ok ? 'task completed' : 'task failed', { task_id: task.id, ...(outcome.ok ? {} : { error: outcome.error }) });
      return delivered.next;
    } finally {
      clearInterval(beat);
      running.delete(task.id);
      finished();
    }
  }

  /**
   * Running tasks the server holds for this worker id but this process never received go back to
   * the queue: checked at start (a restart under the same hostname) and after stop() cut a
   * long-poll (the server may still hand that poll a task nobody reads).
   */
  async function reclaimOrphans(): Promise<void> {
    try {
      const { tasks } = await api.listRunning();
      for (const t of tasks) if (t.assigned_worker === workerId && !running.has(t.id)) await handBack(t.id);
    } catch (err) {
      log('warn', 'could not check for tasks assigned during shutdown', { error: message(err) });
    }
  }

  return {
    get id() {
      return workerId;
    },
    async start() {
      if (started) throw new Error('worker already started');
      started = true;
      await register();
      await reclaimOrphans();
      for (let i = 0; i < concurrency; i++) slots.push(slot());
    },
    stop() {
      stopping ??= (async () => {
        halt.abort();
        if (!started || !workerId) return;
        log('info', 'stopping: no new tasks', { running: running.size });
        const drained = Promise.all([...running.values()].map((r) => r.done));
        let timer: NodeJS.Timeout | undefined;
        const inTime = await Promise.race([drained.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), graceMs)))]);
        clearTimeout(timer);
        if (!inTime) {
          const late = [...running.values()];
          for (const r of late) {
            r.handedBack = true;
            r.abort.abort();
          }
          await Promise.all(late.map((r) => handBack(r.task.id)));
          await Promise.all(late.map((r) => r.done));
        }
        await Promise.all(slots);
        if (pollCut) await reclaimOrphans();
        log('info', 'worker stopped');
      })();
      return stopping;
    },
  };
}
