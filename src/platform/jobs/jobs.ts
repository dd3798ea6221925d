/**
 * Background jobs: a typed wrapper around pg-boss on the main database (PGlite through pg-boss's
 * `fromPglite` adapter, PostgreSQL through our pool or a pool of its own). pg-boss installs and
 * migrates its own schema (`pgboss` by default) when `start()` runs.
 *
 * Transactional sends (outbox semantics): `send(name, payload, { tx })` inserts the job through the
 * caller's transaction, so the job exists only if that transaction commits. On PGlite the single
 * connection is held by the open transaction, so inside `db.transaction(...)` always pass `tx`:
 * a send without it would wait for the transaction that is waiting for it.
 */
import { PgBoss, fromPglite, type ConstructorOptions, type Db as PgBossDb, type Job, type SendOptions as PgBossSendOptions } from 'pg-boss';
import type { Registry } from 'prom-client';
import type { Db, Queryable } from '../db/index.ts';
import { PgliteDb } from '../db/pglite.ts';
import { PostgresDb } from '../db/postgres.ts';
import { counter, gauge, histogram, type BackgroundLogger } from './observe.ts';

export type { BackgroundLogger } from './observe.ts';

/** A map from job name to payload type, e.g. `{ 'mail.send': { to: string } }`. Payloads are JSON objects. */
export type JobDefinitions<D> = { [K in keyof D]: object };

/** The job names of a definitions map. */
export type JobName<D> = keyof D & string;

/** How pg-boss lets jobs with the same `singletonKey` coexist; see pg-boss's queue policies. */
export type QueuePolicy = 'standard' | 'short' | 'singleton' | 'stately' | 'exclusive';

/** Retry and concurrency settings of one job queue. */
export interface QueueDefinition {
  /** Retries after the first attempt fails (default 2). */
  retryLimit?: number;
  /** Delay before a retry, in whole seconds (default 0); with `backoff` it is the base of the exponential delay. */
  retryDelaySeconds?: number;
  /** Exponential backoff: the n-th retry waits about retryDelaySeconds × 2^(n-1) to 2^n, with jitter. */
  backoff?: boolean;
  /** Upper bound of a backoff delay, in seconds. */
  retryDelayMaxSeconds?: number;
  /** Copy jobs that exhausted their retries into `<name>__dead` for inspection or redrive. */
  deadLetter?: boolean;
  /** Handlers of this queue running at once in this process (default 1). */
  concurrency?: number;
  /** How long one attempt may run before pg-boss fails it (default 900). */
  expireInSeconds?: number;
  /** Queue policy (default `standard`); `short`, `singleton`, `stately` and `exclusive` deduplicate by `singletonKey`. */
  policy?: QueuePolicy;
}

/** Options of one `send`. */
export interface SendJobOptions {
  /** A transaction from `Db.transaction`: the job is created only if that transaction commits. */
  tx?: Queryable;
  /** Earliest start: a date, or seconds from now. */
  startAfter?: Date | number;
  /** Deduplication key, enforced according to the queue's policy. */
  singletonKey?: string;
}

/** What a handler learns about the job it runs. */
export interface JobContext {
  id: string;
  name: string;
  /** 1 for the first attempt, 2 for the first retry, ... */
  attempt: number;
  /** Aborted when the job expires or a graceful stop runs out of time; long handlers should watch it. */
  signal: AbortSignal;
}

/** Runs one job; a throw fails this attempt (retried per the queue's definition). */
export type JobHandler<P> = (payload: P, job: JobContext) => Promise<void>;

/** Queue sizes as pg-boss last counted them (its monitor pass runs every `monitorIntervalSeconds`). */
export interface QueueSize {
  queue: string;
  queued: number;
  active: number;
  failed: number;
}

export interface JobsOptions {
  db: Db;
  registry: Registry;
  logger: BackgroundLogger;
  /** pg-boss's schema (default `pgboss`). */
  schema?: string;
  /**
   * PostgreSQL only: give pg-boss a pool of its own on this URL instead of sharing `db.pool`, so
   * job traffic cannot take connections that requests need.
   */
  connectionString?: string;
  /** Size of that own pool (default 10). */
  poolMax?: number;
  /** How often an idle worker looks for jobs, in seconds (default 2, at least 0.5). */
  pollingIntervalSeconds?: number;
  /** How often pg-boss supervises queues (expires overdue jobs, recounts sizes), in seconds (default 30). */
  monitorIntervalSeconds?: number;
  /** How often the queue-size gauges are refreshed, in ms (default 15 000; 0 turns the loop off). */
  metricsIntervalMs?: number;
  /** How long `stop()` waits for in-flight jobs by default, in ms (default 30 000, at least 1 000). */
  stopTimeoutMs?: number;
}

/** The dead-letter queue of a queue. */
export function deadLetterQueueName(name: string): string {
  return `${name}__dead`;
}

// pg-boss's own rule for queue names; checked here so `define` fails with the name in the message.
const QUEUE_NAME = /^[\w.\-/]+$/;

type State = 'new' | 'starting' | 'started' | 'stopping' | 'stopped';

/** Typed background jobs over pg-boss: define queues, send (optionally inside a transaction), work, stop gracefully. */
export class Jobs<D extends JobDefinitions<D>> {
  /** The underlying pg-boss instance, for operations this wrapper does not cover (redrive, findJobs). */
  readonly boss: PgBoss;
  private readonly logger: BackgroundLogger;
  private readonly pollingIntervalSeconds: number;
  private readonly metricsIntervalMs: number;
  private readonly stopTimeoutMs: number;
  private readonly definitions = new Map<string, QueueDefinition>();
  private readonly handlers = new Map<string, JobHandler<object>>();
  private readonly ready = new Set<string>();
  private state: State = 'new';
  private metricsTimer: NodeJS.Timeout | undefined;
  private readonly metrics;

  constructor(opts: JobsOptions) {
    this.logger = opts.logger;
    this.pollingIntervalSeconds = opts.pollingIntervalSeconds ?? 2;
    this.metricsIntervalMs = opts.metricsIntervalMs ?? 15_000;
    this.stopTimeoutMs = Math.max(1000, opts.stopTimeoutMs ?? 30_000);
    this.boss = new PgBoss({
      ...bossConnection(opts),
      schema: opts.schema ?? 'pgboss',
      // Schedules live in our own due-time table (schedules.ts); pg-boss's minute-grained cron stays off.
      schedule: false,
      supervise: true,
      // Queue counts are recounted by the monitor, which runs inside the supervise pass: both
      // intervals bound how stale `jobs_queued` can be. Supervise also expires overdue active jobs.
      monitorIntervalSeconds: opts.monitorIntervalSeconds ?? 30,
      superviseIntervalSeconds: opts.monitorIntervalSeconds ?? 30,
    });
    const registry = opts.registry;
    this.metrics = {
      queued: gauge(registry, 'jobs_queued', 'Jobs waiting in a queue (created or retry), as pg-boss last counted them', ['queue']),
      active: gauge(registry, 'jobs_active', 'Jobs this process is running now', ['queue']),
      failed: counter(registry, 'jobs_failed_total', 'Job attempts that threw (each attempt counts; retries may follow)', ['queue']),
      duration: histogram(registry, 'job_duration_seconds', 'Time one job attempt took', ['queue'], [0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900]),
      errors: counter(registry, 'jobs_background_errors_total', 'Errors in background job machinery (logged, never fatal)', ['source']),
    };
    // pg-boss reports failures of its own loops (maintenance, polling) here; unheard, an 'error'
    // event would crash the process.
    this.boss.on('error', (err) => this.backgroundError('pgboss', err, 'pg-boss background error'));
    this.boss.on('warning', (warning) => this.logger.warn?.({ warning }, 'pg-boss warning'));
  }

  /** Declares a queue (and its `<name>__dead` queue when `deadLetter`); created at `start()`, or now if started. */
  async define<N extends JobName<D>>(name: N, def: QueueDefinition = {}): Promise<void> {
    if (!QUEUE_NAME.test(name)) throw new Error(`invalid job name "${name}": use letters, digits, _ . - /`);
    if (this.definitions.has(name)) throw new Error(`job "${name}" is already defined`);
    validateDefinition(name, def);
    this.definitions.set(name, def);
    if (this.state === 'started') await this.createQueue(name, def);
  }

  /** Registers the handler of a defined queue; workers start at `start()`, or now if started. */
  async work<N extends JobName<D>>(name: N, handler: JobHandler<D[N]>): Promise<void> {
    if (!this.definitions.has(name)) throw new Error(`job "${name}" is not defined`);
    if (this.handlers.has(name)) throw new Error(`job "${name}" already has a handler`);
    this.handlers.set(name, handler as JobHandler<object>);
    if (this.state === 'started') await this.startWorker(name);
  }

  /** Enqueues a job; with `tx` it commits or rolls back with the caller's transaction. Null when deduplicated. */
  async send<N extends JobName<D>>(name: N, payload: D[N], opts: SendJobOptions = {}): Promise<string | null> {
    // Only queues this instance created are in pg-boss's queue cache. A cache miss inside a PGlite
    // transaction would look the queue up on the one connection the transaction holds.
    if (!this.ready.has(name)) {
      throw new Error(this.definitions.has(name) ? `jobs are not started (sending "${name}")` : `job "${name}" is not defined`);
    }
    const options: PgBossSendOptions = {};
    if (opts.startAfter !== undefined) options.startAfter = opts.startAfter;
    if (opts.singletonKey !== undefined) options.singletonKey = opts.singletonKey;
    if (opts.tx) options.db = transactionDb(opts.tx);
    return this.boss.send(name, payload, options);
  }

  /** Starts pg-boss (installing its schema if needed), creates the defined queues and starts the workers. */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new Error(`jobs cannot start: already ${this.state}`);
    this.state = 'starting';
    try {
      await this.boss.start();
      for (const [name, def] of this.definitions) await this.createQueue(name, def);
      for (const name of this.handlers.keys()) await this.startWorker(name);
    } catch (err) {
      this.state = 'stopped';
      await this.boss.stop({ graceful: false }).catch(() => {});
      throw err;
    }
    this.state = 'started';
    if (this.metricsIntervalMs > 0) {
      this.metricsTimer = setInterval(() => void this.refreshMetrics(), this.metricsIntervalMs);
      this.metricsTimer.unref();
    }
  }

  /**
   * Stops gracefully: no new jobs are fetched, in-flight jobs get `timeoutMs` to finish; those still
   * running then are failed back to pg-boss (retried per their queue, as one used attempt) and their
   * `signal` is aborted. Call it from the process's SIGTERM handler before closing the database.
   */
  async stop(opts: { timeoutMs?: number } = {}): Promise<void> {
    if (this.state === 'new') {
      this.state = 'stopped';
      return;
    }
    if (this.state === 'stopping' || this.state === 'stopped') return;
    this.state = 'stopping';
    clearInterval(this.metricsTimer);
    this.ready.clear();
    try {
      await this.boss.stop({ graceful: true, timeout: Math.max(1000, opts.timeoutMs ?? this.stopTimeoutMs), close: true });
    } finally {
      this.state = 'stopped';
    }
  }

  /** Queue sizes of every defined queue and dead-letter queue, as pg-boss last counted them. */
  async queueSizes(): Promise<QueueSize[]> {
    const names = this.queueNames();
    if (names.length === 0) return [];
    const queues = await this.boss.getQueues(names);
    return queues.map((q) => ({ queue: q.name, queued: q.queuedCount, active: q.activeCount, failed: q.failedCount }));
  }

  /** Refreshes the `jobs_queued` gauge; errors are logged and counted, never thrown. */
  async refreshMetrics(): Promise<void> {
    if (this.state !== 'started') return;
    try {
      for (const size of await this.queueSizes()) this.metrics.queued.set({ queue: size.queue }, size.queued);
    } catch (err) {
      this.backgroundError('metrics', err, 'job queue metrics refresh failed');
    }
  }

  private queueNames(): string[] {
    const names: string[] = [];
    for (const [name, def] of this.definitions) {
      names.push(name);
      if (def.deadLetter) names.push(deadLetterQueueName(name));
    }
    return names;
  }

  private async createQueue(name: string, def: QueueDefinition): Promise<void> {
    const dead = def.deadLetter ? deadLetterQueueName(name) : null;
    // Dead letters are kept for a person to look at: no retries of their own, kept 30 days.
    if (dead) await this.ensureQueue(dead, { policy: 'standard', retryLimit: 0, retentionSeconds: 30 * 86_400, deleteAfterSeconds: 30 * 86_400 });
    await this.ensureQueue(name, {
      policy: def.policy ?? 'standard',
      retryLimit: def.retryLimit ?? 2,
      retryDelay: def.retryDelaySeconds ?? 0,
      retryBackoff: def.backoff ?? false,
      retryDelayMax: def.backoff ? (def.retryDelayMaxSeconds ?? null) : null,
      expireInSeconds: def.expireInSeconds ?? 900,
      deadLetter: dead,
    });
    this.ready.add(name);
  }

  /**
   * createQueue leaves an existing queue as it was, so a changed definition is applied with
   * updateQueue. A policy cannot change in place (pg-boss refuses); that is logged, not fatal.
   */
  private async ensureQueue(
    name: string,
    opts: { policy: QueuePolicy; retryLimit: number; retryDelay?: number; retryBackoff?: boolean; retryDelayMax?: number | null; expireInSeconds?: number; retentionSeconds?: number; deleteAfterSeconds?: number; deadLetter?: string | null },
  ): Promise<void> {
    const { policy, deadLetter, retryDelayMax, ...rest } = opts;
    // pg-boss validates with `'key' in options`, so absent settings must be absent, not undefined.
    const settings = Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined));
    const existing = await this.boss.getQueue(name);
    if (!existing) {
      await this.boss.createQueue(name, { ...settings, policy, ...(deadLetter ? { deadLetter } : {}), ...(retryDelayMax != null ? { retryDelayMax } : {}) });
      return;
    }
    if (existing.policy !== policy) {
      this.logger.error({ queue: name, existing: existing.policy, wanted: policy }, 'job queue policy differs from its definition and cannot change in place');
    }
    await this.boss.updateQueue(name, { ...settings, ...(deadLetter !== undefined ? { deadLetter } : {}), ...(retryDelayMax !== undefined ? { retryDelayMax } : {}) });
  }

  private async startWorker(name: string): Promise<void> {
    const handler = this.handlers.get(name)!;
    const def = this.definitions.get(name)!;
    const labels = { queue: name };
    await this.boss.work<object>(
      name,
      { batchSize: 1, localConcurrency: def.concurrency ?? 1, pollingIntervalSeconds: this.pollingIntervalSeconds },
      async (jobs: Job<object>[]) => {
        for (const job of jobs) {
          this.metrics.active.inc(labels);
          const stopTimer = this.metrics.duration.startTimer(labels);
          try {
            await handler(job.data, { id: job.id, name, attempt: job.retryCount + 1, signal: job.signal });
          } catch (err) {
            this.metrics.failed.inc(labels);
            this.logger.error({ err, queue: name, jobId: job.id, attempt: job.retryCount + 1 }, 'job attempt failed');
            throw err;
          } finally {
            stopTimer();
            this.metrics.active.dec(labels);
          }
        }
      },
    );
  }

  private backgroundError(source: string, err: unknown, msg: string): void {
    this.metrics.errors.inc({ source });
    try {
      this.logger.error({ err, source }, msg);
    } catch {
      // A failing logger must not turn a reported error into a crash.
    }
  }
}

function validateDefinition(name: string, def: QueueDefinition): void {
  const nonNegativeInt = (v: number | undefined) => v === undefined || (Number.isInteger(v) && v >= 0);
  if (!nonNegativeInt(def.retryLimit)) throw new Error(`job "${name}": retryLimit must be an integer >= 0`);
  if (!nonNegativeInt(def.retryDelaySeconds)) throw new Error(`job "${name}": retryDelaySeconds must be an integer >= 0`);
  if (!nonNegativeInt(def.retryDelayMaxSeconds)) throw new Error(`job "${name}": retryDelayMaxSeconds must be an integer >= 0`);
  if (def.concurrency !== undefined && !(Number.isInteger(def.concurrency) && def.concurrency >= 1)) {
    throw new Error(`job "${name}": concurrency must be an integer >= 1`);
  }
  if (def.expireInSeconds !== undefined && !(Number.isInteger(def.expireInSeconds) && def.expireInSeconds >= 1)) {
    throw new Error(`job "${name}": expireInSeconds must be an integer >= 1`);
  }
  if (def.deadLetter && !QUEUE_NAME.test(deadLetterQueueName(name))) throw new Error(`job "${name}": dead-letter name is invalid`);
}

/** How pg-boss reaches the database for its own statements (polling, maintenance, sends without `tx`). */
function bossConnection(opts: JobsOptions): Partial<ConstructorOptions> {
  const db = opts.db;
  if (db instanceof PgliteDb) return { db: fromPglite(db.pglite), backend: 'pglite' };
  if (db instanceof PostgresDb) {
    if (opts.connectionString) return { connectionString: opts.connectionString, max: opts.poolMax ?? 10, application_name: 'mainspring-jobs' };
    const pool = db.pool;
    // pool.query (not PostgresDb.query): pg-boss sends multi-statement scripts without parameters
    // (its migrations) and unwraps node-postgres's array-of-results itself.
    return { db: { executeSql: (text: string, values?: unknown[]) => pool.query(text, values) as Promise<{ rows: unknown[] }> } as PgBossDb };
  }
  throw new Error(`unsupported database engine ${db.engine}`);
}

/** pg-boss's database interface over one of our transactions: its statements join that transaction. */
function transactionDb(tx: Queryable): PgBossDb {
  // pg-boss sends a single parameterized INSERT through this; it never sends a script here.
  return { executeSql: (text: string, values?: unknown[]) => tx.query(text, values) };
}
