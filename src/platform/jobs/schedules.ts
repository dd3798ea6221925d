/**
 * Schedules with their own due-time table. pg-boss's cron is minute-grained and polls slowly; these
 * must start within a second of their due time, so a poll loop claims due rows directly.
 *
 * Each claim is one transaction: `SELECT ... FOR UPDATE SKIP LOCKED` takes a batch of due rows
 * (other processes skip them), advances each row's next due time, records the firing in
 * `schedule_runs` (primary key (schedule_id, due_at), so a due time cannot fire twice) and calls the
 * handler registered for the row's entity type with that transaction. A handler therefore commits
 * or rolls back with its firing: it should enqueue a job (`jobs.send(..., { tx })`) or write a row,
 * and return. Handlers must be short: the claim holds the rows' locks (and on PGlite the only
 * connection) until every handler of the batch has returned.
 *
 * Missed slots (downtime, a paused process) fire once: the next due time is computed from now,
 * not from the missed slot. Interval schedules keep their phase (the next slot on the original grid).
 */
import { Cron } from 'croner';
import { Registry } from 'prom-client';
import type { Db, Queryable } from '../db/index.ts';
import { queryOne } from '../db/index.ts';
import { newId } from '../crypto/index.ts';
import { AppError } from '../errors.ts';
import { counter, histogram, type BackgroundLogger } from './observe.ts';

export type NamedScheduleName = 'hourly' | 'daily' | 'weekly';

/** When a schedule fires. */
export type ScheduleSpec =
  | { kind: 'interval'; seconds: number }
  | { kind: 'cron'; expression: string; timezone?: string }
  | { kind: 'named'; name: NamedScheduleName }
  | { kind: 'once'; at: Date | string };

/** A spec as stored: cron always carries its zone, `once.at` is an ISO string. */
export type NormalizedScheduleSpec =
  | { kind: 'interval'; seconds: number }
  | { kind: 'cron'; expression: string; timezone: string }
  | { kind: 'named'; name: NamedScheduleName }
  | { kind: 'once'; at: string };

export type ScheduleStatus = 'active' | 'paused' | 'done';

/** The entity a schedule belongs to; one schedule per entity. */
export interface ScheduleRef {
  entityType: string;
  entityId: string;
}

export interface UpsertScheduleInput extends ScheduleRef {
  ownerId: string;
  spec: ScheduleSpec;
  /** Each run starts up to this many seconds after its slot (spreads load); must be shorter than the period. */
  jitterSeconds?: number;
  /** First slot not before this time (interval, named, cron); default: one period from now / the next cron match. */
  startAt?: Date;
}

export interface Schedule {
  id: string;
  entityType: string;
  entityId: string;
  ownerId: string;
  spec: NormalizedScheduleSpec;
  jitterSeconds: number;
  status: ScheduleStatus;
  /** When it will fire next (slot plus jitter); null while paused or once done. */
  nextRunAt: Date | null;
  lastDueAt: Date | null;
  lastFiredAt: Date | null;
  runCount: number;
  createdAt: Date;
  updatedAt: Date;
}

/** One firing handed to a handler. */
export interface ScheduleFiring {
  scheduleId: string;
  entityType: string;
  entityId: string;
  ownerId: string;
  spec: NormalizedScheduleSpec;
  /** The slot this firing is for (unique per schedule). */
  dueAt: Date;
  /** The slot plus jitter: when it was meant to start. */
  runAt: Date;
  /** When the claim took it (database clock). */
  firedAt: Date;
  /** The following run, or null for a `once` schedule. */
  nextRunAt: Date | null;
}

/** Runs inside the claiming transaction; keep it short (enqueue a job with `{ tx }` and return). */
export type FiringHandler = (firing: ScheduleFiring, tx: Queryable) => Promise<void>;

const NAMED_SECONDS: Record<NamedScheduleName, number> = { hourly: 3600, daily: 86_400, weekly: 604_800 };
const MAX_JITTER_SECONDS = 86_400;
// IANA names are Area/Location (possibly deeper) or a few single words (UTC, GMT, Etc zones).
const IANA_ZONE = /^[A-Za-z][A-Za-z0-9_+-]*(\/[A-Za-z0-9_+-]+)*$/;

function invalid(field: string, message: string): AppError {
  return new AppError('VALIDATION_ERROR', message, { details: { field } });
}

function assertTimeZone(zone: string): void {
  let ok = IANA_ZONE.test(zone);
  if (ok) {
    try {
      new Intl.DateTimeFormat('en-US', { timeZone: zone });
    } catch {
      ok = false;
    }
  }
  if (!ok) throw invalid('timezone', `Unknown time zone "${zone}": use an IANA name such as "Europe/Berlin" or "UTC"`);
}

// Parsed patterns are reused: the claim loop computes next times for every firing.
const cronCache = new Map<string, Cron>();

function cronFor(expression: string, timezone: string): Cron {
  const key = `${timezone}\u0000${expression}`;
  let cron = cronCache.get(key);
  if (!cron) {
    // No callback: croner only parses and computes, it starts no timer.
    cron = new Cron(expression, { timezone, mode: '5-or-6-parts' });
    if (cronCache.size >= 1000) cronCache.clear();
    cronCache.set(key, cron);
  }
  return cron;
}

/** Validates a spec and returns it as stored; throws AppError VALIDATION_ERROR with a clear message. */
export function normalizeScheduleSpec(spec: ScheduleSpec): NormalizedScheduleSpec {
  if (!spec || typeof spec !== 'object') throw invalid('spec', 'Schedule is required');
  switch (spec.kind) {
    case 'interval': {
      const { seconds } = spec;
      if (typeof seconds !== 'number' || !Number.isInteger(seconds) || seconds < 1) {
        throw invalid('seconds', 'Interval must be a whole number of seconds, at least 1');
      }
      return { kind: 'interval', seconds };
    }
    case 'cron': {
      const expression = typeof spec.expression === 'string' ? spec.expression.trim().replace(/\s+/g, ' ') : '';
      if (!expression) throw invalid('expression', 'Cron expression is required');
      const timezone = spec.timezone ?? 'UTC';
      if (typeof timezone !== 'string') throw invalid('timezone', 'Time zone must be a string');
      assertTimeZone(timezone);
      let cron: Cron;
      try {
        cron = cronFor(expression, timezone);
      } catch (err) {
        const reason = err instanceof Error ? err.message.replace(/^CronPattern: /, '') : String(err);
        throw invalid('expression', `Invalid cron expression "${expression}": ${reason}`);
      }
      if (cron.nextRun(new Date()) === null) throw invalid('expression', `Cron expression "${expression}" never fires`);
      return { kind: 'cron', expression, timezone };
    }
    case 'named': {
      if (!Object.hasOwn(NAMED_SECONDS, spec.name)) throw invalid('name', 'Named schedule must be hourly, daily or weekly');
      return { kind: 'named', name: spec.name };
    }
    case 'once': {
      const at = spec.at instanceof Date ? spec.at : typeof spec.at === 'string' ? new Date(spec.at) : new Date(NaN);
      if (Number.isNaN(at.getTime())) throw invalid('at', 'Run time must be an ISO 8601 date-time');
      return { kind: 'once', at: at.toISOString() };
    }
    default:
      throw invalid('kind', 'Schedule kind must be interval, cron, named or once');
  }
}

function periodMs(spec: NormalizedScheduleSpec): number | undefined {
  if (spec.kind === 'interval') return spec.seconds * 1000;
  if (spec.kind === 'named') return NAMED_SECONDS[spec.name] * 1000;
  return undefined;
}

/** The next `n` due times strictly after `from` (without jitter). Interval kinds count from `from`. */
export function nextRunTimes(spec: ScheduleSpec, from: Date, n: number): Date[] {
  const s = normalizeScheduleSpec(spec);
  const count = Math.max(0, Math.floor(n));
  const period = periodMs(s);
  if (period !== undefined) return Array.from({ length: count }, (_, i) => new Date(from.getTime() + (i + 1) * period));
  if (s.kind === 'cron') return count === 0 ? [] : cronFor(s.expression, s.timezone).nextRuns(count, from);
  const at = new Date((s as { at: string }).at);
  return count > 0 && at.getTime() > from.getTime() ? [at] : [];
}

/**
 * The first slot strictly after `now`, on the grid through `anchor` for interval kinds (so the phase
 * survives downtime and pauses), the next match for cron, null for once (it has no second slot).
 */
function nextSlotAfter(spec: NormalizedScheduleSpec, anchorMs: number, nowMs: number): number | null {
  const period = periodMs(spec);
  if (period !== undefined) {
    if (anchorMs > nowMs) return anchorMs;
    return anchorMs + (Math.floor((nowMs - anchorMs) / period) + 1) * period;
  }
  if (spec.kind === 'cron') return cronFor(spec.expression, spec.timezone).nextRun(new Date(nowMs))?.getTime() ?? null;
  return null;
}

/** The first slot of a new (or changed) schedule. */
function firstSlot(spec: NormalizedScheduleSpec, nowMs: number, startAt?: Date): number | null {
  if (spec.kind === 'once') return new Date(spec.at).getTime();
  const period = periodMs(spec);
  if (startAt) {
    if (period !== undefined) return startAt.getTime();
    // "not before startAt": the next match after the millisecond before it.
    return nextSlotAfter(spec, 0, startAt.getTime() - 1);
  }
  if (period !== undefined) return nowMs + period;
  return nextSlotAfter(spec, 0, nowMs);
}

function withJitter(slotMs: number, jitterSeconds: number): number {
  return jitterSeconds > 0 ? slotMs + Math.floor(Math.random() * jitterSeconds * 1000) : slotMs;
}

function validateJitter(spec: NormalizedScheduleSpec, jitterSeconds: number): void {
  if (!Number.isInteger(jitterSeconds) || jitterSeconds < 0 || jitterSeconds > MAX_JITTER_SECONDS) {
    throw invalid('jitterSeconds', `Jitter must be a whole number of seconds from 0 to ${MAX_JITTER_SECONDS}`);
  }
  if (jitterSeconds === 0 || spec.kind === 'once') return;
  // Jitter past the next slot would make runs overtake each other.
  const period = periodMs(spec) ?? gapOfCron(spec);
  if (period !== undefined && jitterSeconds * 1000 >= period) throw invalid('jitterSeconds', 'Jitter must be shorter than the time between runs');
}

function gapOfCron(spec: NormalizedScheduleSpec): number | undefined {
  if (spec.kind !== 'cron') return undefined;
  const [a, b] = cronFor(spec.expression, spec.timezone).nextRuns(2, new Date());
  return a && b ? b.getTime() - a.getTime() : undefined;
}

interface ScheduleRow {
  id: string;
  entity_type: string;
  entity_id: string;
  owner_id: string;
  kind: string;
  spec: NormalizedScheduleSpec;
  jitter_seconds: number;
  status: ScheduleStatus;
  next_slot_at: Date | null;
  next_run_at: Date | null;
  last_due_at: Date | null;
  last_fired_at: Date | null;
  run_count: number | string | bigint;
  created_at: Date;
  updated_at: Date;
}

function toSchedule(r: ScheduleRow): Schedule {
  return {
    id: r.id,
    entityType: r.entity_type,
    entityId: r.entity_id,
    ownerId: r.owner_id,
    spec: r.spec,
    jitterSeconds: r.jitter_seconds,
    status: r.status,
    nextRunAt: r.next_run_at,
    lastDueAt: r.last_due_at,
    lastFiredAt: r.last_fired_at,
    runCount: Number(r.run_count),
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

/**
 * Creates or replaces the schedule of an entity (`q` may be a transaction). An unchanged spec and
 * jitter keep the pending due time; a changed one starts over; a paused schedule stays paused.
 */
export async function upsertSchedule(q: Queryable, input: UpsertScheduleInput): Promise<Schedule> {
  for (const [field, value] of [['entityType', input.entityType], ['entityId', input.entityId], ['ownerId', input.ownerId]] as const) {
    if (typeof value !== 'string' || value.length === 0) throw invalid(field, `${field} is required`);
  }
  const spec = normalizeScheduleSpec(input.spec);
  const jitter = input.jitterSeconds ?? 0;
  validateJitter(spec, jitter);
  if (input.startAt !== undefined && Number.isNaN(input.startAt.getTime())) throw invalid('startAt', 'startAt must be a valid date');
  const slot = firstSlot(spec, Date.now(), input.startAt);
  if (slot === null) throw invalid('expression', 'Schedule never fires');
  const { rows } = await q.query<ScheduleRow>(
    `INSERT INTO schedules (id, entity_type, entity_id, owner_id, kind, spec, jitter_seconds, status, next_slot_at, next_run_at)
     VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, 'active', $8, $9)
     ON CONFLICT (entity_type, entity_id) DO UPDATE SET
       owner_id = EXCLUDED.owner_id,
       kind = EXCLUDED.kind,
       spec = EXCLUDED.spec,
       jitter_seconds = EXCLUDED.jitter_seconds,
       status = CASE
         WHEN schedules.status = 'paused' THEN 'paused'
         WHEN schedules.spec <> EXCLUDED.spec OR schedules.jitter_seconds <> EXCLUDED.jitter_seconds THEN 'active'
         ELSE schedules.status END,
       next_slot_at = CASE
         WHEN schedules.spec <> EXCLUDED.spec OR schedules.jitter_seconds <> EXCLUDED.jitter_seconds THEN EXCLUDED.next_slot_at
         ELSE schedules.next_slot_at END,
       next_run_at = CASE
         WHEN schedules.status = 'paused' THEN NULL
         WHEN schedules.spec <> EXCLUDED.spec OR schedules.jitter_seconds <> EXCLUDED.jitter_seconds THEN EXCLUDED.next_run_at
         ELSE schedules.next_run_at END,
       updated_at = now()
     RETURNING *`,
    [newId('sch'), input.entityType, input.entityId, input.ownerId, spec.kind, JSON.stringify(spec), jitter, iso(slot), iso(withJitter(slot, jitter))],
  );
  return toSchedule(rows[0]!);
}

/** The schedule of an entity, with its next run time, or undefined. */
export async function getSchedule(q: Queryable, ref: ScheduleRef): Promise<Schedule | undefined> {
  const row = await queryOne<ScheduleRow>(q, 'SELECT * FROM schedules WHERE entity_type = $1 AND entity_id = $2', [ref.entityType, ref.entityId]);
  return row && toSchedule(row);
}

/** An owner's schedules (optionally of one entity type), soonest first. */
export async function listSchedules(q: Queryable, opts: { ownerId: string; entityType?: string; limit?: number }): Promise<Schedule[]> {
  const { rows } = await q.query<ScheduleRow>(
    `SELECT * FROM schedules WHERE owner_id = $1 AND ($2::text IS NULL OR entity_type = $2)
     ORDER BY next_run_at NULLS LAST, id LIMIT $3`,
    [opts.ownerId, opts.entityType ?? null, Math.min(Math.max(opts.limit ?? 100, 1), 1000)],
  );
  return rows.map(toSchedule);
}

/**
 * Stops a schedule from firing until resumed. If a claim is firing it right now, this waits for that
 * claim to commit; once it returns, nothing fires (the claim only takes active rows).
 */
export async function pauseSchedule(q: Queryable, ref: ScheduleRef): Promise<Schedule | undefined> {
  const row = await queryOne<ScheduleRow>(
    q,
    `UPDATE schedules SET status = 'paused', next_run_at = NULL, updated_at = now()
     WHERE entity_type = $1 AND entity_id = $2 AND status = 'active' RETURNING *`,
    [ref.entityType, ref.entityId],
  );
  return row ? toSchedule(row) : getSchedule(q, ref);
}

/** Resumes a paused schedule at its next slot after now (slots missed while paused do not fire; a past `once` fires now). */
export async function resumeSchedule(q: Queryable, ref: ScheduleRef): Promise<Schedule | undefined> {
  const current = await getSchedule(q, ref);
  if (!current || current.status !== 'paused') return current;
  const row = await queryOne<Pick<ScheduleRow, 'next_slot_at'>>(q, 'SELECT next_slot_at FROM schedules WHERE id = $1', [current.id]);
  const now = Date.now();
  const slot =
    current.spec.kind === 'once' ? new Date(current.spec.at).getTime() : nextSlotAfter(current.spec, row?.next_slot_at?.getTime() ?? now, now);
  const updated = await queryOne<ScheduleRow>(
    q,
    `UPDATE schedules SET status = CASE WHEN $2::timestamptz IS NULL THEN 'done' ELSE 'active' END,
       next_slot_at = $2, next_run_at = $3, updated_at = now()
     WHERE id = $1 AND status = 'paused' RETURNING *`,
    [current.id, iso(slot), slot === null ? null : iso(withJitter(slot, current.jitterSeconds))],
  );
  return updated ? toSchedule(updated) : getSchedule(q, ref);
}

/** Deletes the schedule of an entity (and its run history); true when there was one. Waits for an in-progress firing. */
export async function deleteSchedule(q: Queryable, ref: ScheduleRef): Promise<boolean> {
  const { rows } = await q.query('DELETE FROM schedules WHERE entity_type = $1 AND entity_id = $2 RETURNING id', [ref.entityType, ref.entityId]);
  return rows.length > 0;
}

/** The next `n` run times of a stored schedule: its pending run, then the slots after it (without jitter). */
export function upcomingRunTimes(schedule: Schedule, n: number): Date[] {
  if (!schedule.nextRunAt || n < 1) return [];
  return [schedule.nextRunAt, ...nextRunTimes(schedule.spec, schedule.nextRunAt, n - 1)];
}

/** Recent firings of a schedule, newest first. */
export async function listScheduleRuns(q: Queryable, scheduleId: string, limit = 50): Promise<{ dueAt: Date; firedAt: Date; error: string | null }[]> {
  const { rows } = await q.query<{ due_at: Date; fired_at: Date; error: string | null }>(
    'SELECT due_at, fired_at, error FROM schedule_runs WHERE schedule_id = $1 ORDER BY due_at DESC LIMIT $2',
    [scheduleId, Math.min(Math.max(limit, 1), 1000)],
  );
  return rows.map((r) => ({ dueAt: r.due_at, firedAt: r.fired_at, error: r.error }));
}

export interface SchedulerOptions {
  db: Db;
  logger: BackgroundLogger;
  /** Where the scheduler's metrics go (a private registry when omitted). */
  registry?: Registry;
  /** Pause between claims when nothing was due, in ms (default 200). */
  pollIntervalMs?: number;
  /** Most rows one claim takes (default 100); a full batch is followed at once by another claim. */
  batchSize?: number;
  /** Run history older than this is deleted (default 7 days). */
  runRetentionDays?: number;
}

interface ClaimedRow {
  id: string;
  entity_type: string;
  entity_id: string;
  owner_id: string;
  spec: NormalizedScheduleSpec;
  jitter_seconds: number;
  next_slot_at: Date;
  next_run_at: Date;
  db_now: Date;
}

const PRUNE_EVERY_MS = 10 * 60_000;

/** Fires due schedules: a poll loop of batched `FOR UPDATE SKIP LOCKED` claims; safe with many processes. */
export class Scheduler {
  private readonly db: Db;
  private readonly logger: BackgroundLogger;
  private readonly pollIntervalMs: number;
  private readonly batchSize: number;
  private readonly runRetentionDays: number;
  private readonly handlers = new Map<string, FiringHandler>();
  private readonly metrics;
  private running: Promise<void> | undefined;
  private stopping = false;
  private wake: (() => void) | undefined;
  private lastPruneAt = Date.now();

  constructor(opts: SchedulerOptions) {
    this.db = opts.db;
    this.logger = opts.logger;
    this.pollIntervalMs = opts.pollIntervalMs ?? 200;
    this.batchSize = opts.batchSize ?? 100;
    this.runRetentionDays = opts.runRetentionDays ?? 7;
    const registry = opts.registry ?? new Registry();
    this.metrics = {
      firings: counter(registry, 'schedule_firings_total', 'Schedule firings handed to a handler', ['entity_type']),
      delay: histogram(registry, 'schedule_fire_delay_seconds', 'Time from a run being due to its claim', [], [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 30, 300]),
      errors: counter(registry, 'schedule_errors_total', 'Scheduler errors (logged, never fatal)', ['stage']),
    };
  }

  /** Registers the handler of an entity type; only types with a handler are claimed by this process. */
  on(entityType: string, handler: FiringHandler): this {
    if (this.handlers.has(entityType)) throw new Error(`a schedule handler for "${entityType}" is already registered`);
    this.handlers.set(entityType, handler);
    return this;
  }

  /** Starts the poll loop. */
  start(): void {
    if (this.running) return;
    this.stopping = false;
    this.running = this.loop();
  }

  /** Stops the loop; resolves once the claim in progress (and its handlers) has committed. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    await this.running;
    this.running = undefined;
  }

  /** Claims and fires one batch of due schedules now; returns how many fired. */
  async tick(): Promise<number> {
    const types = [...this.handlers.keys()];
    if (types.length === 0) return 0;
    return this.db.transaction(async (tx) => {
      const { rows } = await tx.query<ClaimedRow>(
        `SELECT id, entity_type, entity_id, owner_id, spec, jitter_seconds, next_slot_at, next_run_at, clock_timestamp() AS db_now
         FROM schedules
         WHERE status = 'active' AND next_run_at <= clock_timestamp() AND entity_type = ANY($1::text[])
         ORDER BY next_run_at
         LIMIT $2
         FOR UPDATE SKIP LOCKED`,
        [types, this.batchSize],
      );
      if (rows.length === 0) return 0;
      const firings: ScheduleFiring[] = [];
      const updates = rows.map((r) => {
        const now = r.db_now.getTime();
        const slot = r.next_slot_at.getTime();
        const next = nextSlotAfter(r.spec, slot, now);
        const nextRun = next === null ? null : withJitter(next, r.jitter_seconds);
        firings.push({
          scheduleId: r.id,
          entityType: r.entity_type,
          entityId: r.entity_id,
          ownerId: r.owner_id,
          spec: r.spec,
          dueAt: r.next_slot_at,
          runAt: r.next_run_at,
          firedAt: r.db_now,
          nextRunAt: nextRun === null ? null : new Date(nextRun),
        });
        return {
          id: r.id,
          status: next === null ? 'done' : 'active',
          next_slot_at: iso(next),
          next_run_at: iso(nextRun),
          due_at: r.next_slot_at.toISOString(),
          fired_at: r.db_now.toISOString(),
        };
      });
      const batch = JSON.stringify(updates);
      await tx.query(
        `UPDATE schedules s SET status = v.status, next_slot_at = v.next_slot_at, next_run_at = v.next_run_at,
           last_due_at = v.due_at, last_fired_at = v.fired_at, run_count = s.run_count + 1, updated_at = v.fired_at
         FROM jsonb_to_recordset($1::jsonb) AS v(id text, status text, next_slot_at timestamptz, next_run_at timestamptz, due_at timestamptz, fired_at timestamptz)
         WHERE s.id = v.id`,
        [batch],
      );
      // The row locks already keep a due time from being claimed twice; the primary key is the
      // backstop, and a conflict means "already fired", so that firing is not handed out again.
      const inserted = await tx.query<{ schedule_id: string }>(
        `INSERT INTO schedule_runs (schedule_id, due_at, fired_at)
         SELECT v.id, v.due_at, v.fired_at FROM jsonb_to_recordset($1::jsonb) AS v(id text, due_at timestamptz, fired_at timestamptz)
         ON CONFLICT DO NOTHING
         RETURNING schedule_id`,
        [batch],
      );
      const fresh = new Set(inserted.rows.map((r) => r.schedule_id));
      let fired = 0;
      for (const firing of firings) {
        if (!fresh.has(firing.scheduleId)) continue;
        this.metrics.delay.observe(Math.max(0, firing.firedAt.getTime() - firing.runAt.getTime()) / 1000);
        if (await this.runHandler(tx, firing)) fired++;
      }
      return fired;
    });
  }

  /** Deletes run history older than the retention; returns how many rows went. */
  async pruneRuns(): Promise<number> {
    const { rowCount } = await this.db.query(`DELETE FROM schedule_runs WHERE due_at < now() - make_interval(days => $1)`, [this.runRetentionDays]);
    return rowCount;
  }

  /**
   * Each handler runs under a savepoint: one that throws loses only its own work (the firing stays
   * recorded, with the error), instead of rolling back the batch and firing everything again.
   */
  private async runHandler(tx: Queryable, firing: ScheduleFiring): Promise<boolean> {
    const handler = this.handlers.get(firing.entityType);
    if (!handler) return false;
    await tx.query('SAVEPOINT schedule_firing');
    try {
      await handler(firing, tx);
      await tx.query('RELEASE SAVEPOINT schedule_firing');
      this.metrics.firings.inc({ entity_type: firing.entityType });
      return true;
    } catch (err) {
      await tx.query('ROLLBACK TO SAVEPOINT schedule_firing');
      this.metrics.errors.inc({ stage: 'handler' });
      this.log(err, { scheduleId: firing.scheduleId, entityType: firing.entityType, entityId: firing.entityId, dueAt: firing.dueAt }, 'schedule handler failed');
      const message = err instanceof Error ? err.message : String(err);
      await tx.query('UPDATE schedule_runs SET error = $3 WHERE schedule_id = $1 AND due_at = $2', [firing.scheduleId, firing.dueAt.toISOString(), message.slice(0, 2000)]);
      return false;
    }
  }

  private async loop(): Promise<void> {
    let failures = 0;
    while (!this.stopping) {
      let claimed = 0;
      try {
        claimed = await this.tick();
        failures = 0;
      } catch (err) {
        failures++;
        this.metrics.errors.inc({ stage: 'claim' });
        this.log(err, { failures }, 'schedule claim failed');
      }
      if (this.stopping) break;
      if (Date.now() - this.lastPruneAt > PRUNE_EVERY_MS) {
        this.lastPruneAt = Date.now();
        await this.pruneRuns().catch((err: unknown) => {
          this.metrics.errors.inc({ stage: 'prune' });
          this.log(err, {}, 'schedule run pruning failed');
        });
      }
      // A full batch means more may be due now; after errors, back off up to 5 s.
      if (claimed >= this.batchSize && failures === 0) continue;
      await this.sleep(failures ? Math.min(this.pollIntervalMs * 2 ** failures, 5000) : this.pollIntervalMs);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }

  private log(err: unknown, context: object, msg: string): void {
    try {
      this.logger.error({ err, ...context }, msg);
    } catch {
      // A failing logger must not stop the loop.
    }
  }
}
