/**
 * Monitored sources: create, read, change, pause, delete, with per-tier quotas, schedules from the
 * jobs layer, and a webhook subscription of their own when the user gives a webhook URL. Every query
 * filters by owner: another user's source is NOT_FOUND.
 */
import type { MonitoringConfig, Tier } from '../../config.ts';
import { newId } from '../../platform/crypto/index.ts';
import type { SecretBox } from '../../platform/crypto/secretbox.ts';
import type { Db, Queryable } from '../../platform/db/index.ts';
import { AppError } from '../../platform/errors.ts';
import { refusedLiteralTarget, type AllowPrivate } from '../../platform/http-out/index.ts';
import { deleteSchedule, nextRunTimes, pauseSchedule, resumeSchedule, type ScheduleSpec, upsertSchedule } from '../../platform/jobs/index.ts';
import { recordAuditEvent, type RequestContext } from '../audit/service.ts';
import { generateWebhookSecret } from '../events/signing.ts';
import { type ExtractorSpec, validateSelector } from './extract.ts';

export const SOURCE_ENTITY = 'monitor_source';
export const WEBHOOK_EVENTS = ['data_changed', 'error', 'check_completed'] as const;
export type WebhookEventName = (typeof WEBHOOK_EVENTS)[number];
export const EXTRACTOR_TYPES = ['css', 'xpath', 'jsonpath', 'regex'] as const;
export const METHODS = ['GET', 'POST'] as const;
const MAX_EXTRACTORS = 50;

export interface SourceInput {
  name: string;
  url: string;
  schedule: string;
  extractors: ExtractorSpec[];
  webhookUrl?: string | null;
  webhookEvents?: WebhookEventName[];
  /** Shared secret for the webhook signature; generated (and returned once) when absent. */
  webhookSecret?: string;
  retryAttempts?: number;
  timeout?: number;
  tags?: string[];
  method?: (typeof METHODS)[number];
  headers?: Record<string, string>;
  body?: string | null;
  fetcher?: 'http' | 'browser';
}

export interface Source {
  id: string;
  ownerId: string;
  name: string;
  url: string;
  method: string;
  headers: Record<string, string>;
  body: string | null;
  schedule: string;
  extractors: ExtractorSpec[];
  webhookUrl: string | null;
  webhookEvents: WebhookEventName[];
  retryAttempts: number;
  timeoutMs: number;
  tags: string[];
  fetcher: 'http' | 'browser';
  status: 'active' | 'paused' | 'error';
  consecutiveFailures: number;
  lastCheck: Date | null;
  lastSuccess: Date | null;
  lastError: string | null;
  lastValues: Record<string, unknown> | null;
  nextCheck: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface CheckEntry {
  id: string;
  trigger: 'schedule' | 'manual';
  /** When a scheduled check was due; null for manual checks. */
  dueAt: Date | null;
  startedAt: Date;
  checkedAt: Date;
  ok: boolean;
  httpStatus: number | null;
  durationMs: number;
  attempts: number;
  notModified: boolean;
  values: Record<string, unknown> | null;
  changes: { extractor: string; old: unknown; new: unknown }[];
  changed: boolean;
  warnings: string[];
  error: string | null;
}

interface SourceRow {
  id: string;
  owner_id: string;
  name: string;
  url: string;
  method: string;
  headers: Record<string, string>;
  request_body: string | null;
  schedule: string;
  extractors: ExtractorSpec[];
  webhook_url: string | null;
  webhook_events: string[];
  retry_attempts: number;
  timeout_ms: number;
  tags: string[];
  fetcher: 'http' | 'browser';
  status: 'active' | 'paused' | 'error';
  consecutive_failures: number;
  last_check: Date | null;
  last_success: Date | null;
  last_error: string | null;
  last_values: Record<string, unknown> | null;
  next_run_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

const SOURCE_SELECT = `SELECT s.id, s.owner_id, s.name, s.url, s.method, s.headers, s.request_body, s.schedule, s.extractors, s.webhook_url, s.webhook_events,
       s.retry_attempts, s.timeout_ms, s.tags, s.fetcher, s.status, s.consecutive_failures, s.last_check, s.last_success, s.last_error,
       s.last_values, sc.next_run_at, s.created_at, s.updated_at
  FROM monitor_sources s LEFT JOIN schedules sc ON sc.entity_type = '${SOURCE_ENTITY}' AND sc.entity_id = s.id`;

export function toSource(r: SourceRow): Source {
  return {
    id: r.id,
    ownerId: r.owner_id,
    name: r.name,
    url: r.url,
    method: r.method,
    headers: r.headers,
    body: r.request_body,
    schedule: r.schedule,
    extractors: r.extractors,
    webhookUrl: r.webhook_url,
    webhookEvents: r.webhook_events as WebhookEventName[],
    retryAttempts: r.retry_attempts,
    timeoutMs: r.timeout_ms,
    tags: r.tags,
    fetcher: r.fetcher,
    status: r.status,
    consecutiveFailures: r.consecutive_failures,
    lastCheck: r.last_check,
    lastSuccess: r.last_success,
    lastError: r.last_error,
    lastValues: r.last_values,
    nextCheck: r.status === 'paused' ? null : r.next_run_at,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

function invalid(field: string, message: string, extra: Record<string, unknown> = {}): AppError {
  return new AppError('VALIDATION_ERROR', message, { details: { field, ...extra } });
}

/**
 * `hourly`, `daily`, `weekly`, `every_N_minutes` (also `every_N_hours`), or a 5/6-field cron
 * expression (UTC) → the scheduler's spec.
 */
export function parseSchedule(schedule: string): ScheduleSpec {
  const s = schedule.trim();
  if (s === 'hourly' || s === 'daily' || s === 'weekly') return { kind: 'named', name: s };
  const every = /^every_(\d{1,5})_(minute|minutes|hour|hours)$/.exec(s);
  if (every) {
    const n = Number(every[1]);
    if (n < 1) throw invalid('schedule', 'every_N_minutes needs N of at least 1');
    const seconds = n * (every[2]!.startsWith('hour') ? 3600 : 60);
    if (seconds > 366 * 86_400) throw invalid('schedule', 'The interval may be at most a year');
    return { kind: 'interval', seconds };
  }
  if (/^[\d*/,\-A-Za-z?LW#]+(\s+[\d*/,\-A-Za-z?LW#]+){4,5}$/.test(s)) {
    const spec: ScheduleSpec = { kind: 'cron', expression: s, timezone: 'UTC' };
    try {
      nextRunTimes(spec, new Date(), 1);
    } catch (err) {
      throw invalid('schedule', `Invalid cron expression "${s}": ${(err as Error).message}`);
    }
    return spec;
  }
  throw invalid('schedule', `Invalid schedule "${s}": use hourly, daily, weekly, every_N_minutes (e.g. every_15_minutes) or a cron expression (e.g. "*/30 * * * *")`, {
    allowed_values: ['hourly', 'daily', 'weekly', 'every_N_minutes', '<cron expression>'],
  });
}

/** The shortest gap between two runs of a schedule, in seconds. */
export function shortestIntervalSeconds(spec: ScheduleSpec): number {
  if (spec.kind === 'interval') return spec.seconds;
  if (spec.kind === 'named') return { hourly: 3600, daily: 86_400, weekly: 604_800 }[spec.name];
  const times = nextRunTimes(spec, new Date(), 60);
  let min = Infinity;
  for (let i = 1; i < times.length; i++) min = Math.min(min, (times[i]!.getTime() - times[i - 1]!.getTime()) / 1000);
  return min;
}

export interface MonitoringServiceDeps {
  db: Db;
  config: MonitoringConfig;
  secretBox: SecretBox;
  allowPrivate: AllowPrivate;
  /** Whether `fetcher: browser` can run here; `reason` is shown in the 400 when it cannot. */
  browserAvailable: () => Promise<{ ok: true } | { ok: false; reason: string }>;
}

export class MonitoringService {
  private readonly db: Db;
  private readonly deps: MonitoringServiceDeps;

  constructor(deps: MonitoringServiceDeps) {
    this.db = deps.db;
    this.deps = deps;
  }

  /** Semantic checks the request schema cannot make; throws VALIDATION_ERROR with details. */
  async validate(input: SourceInput, tier: Tier): Promise<ScheduleSpec> {
    let url: URL;
    try {
      url = new URL(input.url);
    } catch {
      throw invalid('url', `Invalid URL "${input.url}"`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalid('url', 'Only http and https URLs can be monitored', { value: input.url });
    const refused = refusedLiteralTarget(input.url, this.deps.allowPrivate);
    if (refused) throw invalid('url', refused, { value: input.url });
    if (input.webhookUrl) {
      let hook: URL;
      try {
        hook = new URL(input.webhookUrl);
      } catch {
        throw invalid('webhookUrl', `Invalid webhook URL "${input.webhookUrl}"`);
      }
      if (hook.protocol !== 'http:' && hook.protocol !== 'https:') throw invalid('webhookUrl', 'The webhook URL must be http or https');
      const refusedHook = refusedLiteralTarget(input.webhookUrl, this.deps.allowPrivate);
      if (refusedHook) throw invalid('webhookUrl', refusedHook);
    }
    if (input.extractors.length > MAX_EXTRACTORS) throw invalid('extractors', `At most ${MAX_EXTRACTORS} extractors per source`);
    const names = new Set<string>();
    input.extractors.forEach((e, i) => {
      if (names.has(e.name)) throw invalid(`extractors.${i}.name`, `Extractor names must be unique: "${e.name}" appears twice`);
      names.add(e.name);
      const problem = validateSelector(e);
      if (problem) throw invalid(`extractors.${i}.selector`, problem, { type: e.type, selector: e.selector });
    });
    const spec = parseSchedule(input.schedule);
    const minMinutes = this.deps.config.minIntervalMinutes[tier];
    if (shortestIntervalSeconds(spec) < minMinutes * 60) {
      throw new AppError('QUOTA_EXCEEDED', `The ${tier} plan checks a source at most every ${minMinutes} minute${minMinutes === 1 ? '' : 's'}`, {
        details: { field: 'schedule', min_interval_minutes: minMinutes, tier },
      });
    }
    if (input.fetcher === 'browser') {
      const b = await this.deps.browserAvailable();
      if (!b.ok) throw invalid('fetcher', b.reason);
    }
    if (input.body && input.method !== 'POST') throw invalid('body', 'A request body needs method POST');
    if (input.webhookSecret !== undefined && (input.webhookSecret.length < 8 || input.webhookSecret.length > 256)) {
      throw invalid('webhookSecret', 'webhookSecret must be 8-256 characters');
    }
    return spec;
  }

  async create(user: { id: string; tier: Tier }, input: SourceInput, ctx: RequestContext): Promise<{ source: Source; webhookSecret: string | null }> {
    const spec = await this.validate(input, user.tier);
    const id = newId('mon');
    const result = await this.db.transaction(async (tx) => {
      // Serialises concurrent creates of one user so the quota cannot be overshot.
      await tx.query('SELECT id FROM users WHERE id = $1 FOR UPDATE', [user.id]);
      const { rows } = await tx.query<{ n: number }>('SELECT count(*)::int AS n FROM monitor_sources WHERE owner_id = $1', [user.id]);
      const max = this.deps.config.maxSources[user.tier];
      if ((rows[0]?.n ?? 0) >= max) {
        throw new AppError('QUOTA_EXCEEDED', `The ${user.tier} plan allows ${max} monitoring source${max === 1 ? '' : 's'}`, { details: { limit: max, tier: user.tier } });
      }
      await tx.query(
        `INSERT INTO monitor_sources (id, owner_id, name, url, method, headers, schedule, extractors, webhook_url, webhook_events, retry_attempts, timeout_ms, tags, fetcher, request_body)
         VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8::jsonb, $9, $10, $11, $12, $13, $14, $15)`,
        [
          id,
          user.id,
          input.name,
          input.url,
          input.method ?? 'GET',
          JSON.stringify(input.headers ?? {}),
          input.schedule.trim(),
          JSON.stringify(input.extractors),
          input.webhookUrl ?? null,
          input.webhookUrl ? (input.webhookEvents ?? ['data_changed', 'error']) : (input.webhookEvents ?? []),
          input.retryAttempts ?? 3,
          input.timeout ?? 30_000,
          [...new Set(input.tags ?? [])],
          input.fetcher ?? 'http',
          input.method === 'POST' ? (input.body ?? null) : null,
        ],
      );
      const secret = await this.syncWebhook(tx, user.id, id, input.webhookUrl ?? null, input.webhookEvents ?? ['data_changed', 'error'], input.webhookSecret);
      await upsertSchedule(tx, { entityType: SOURCE_ENTITY, entityId: id, ownerId: user.id, spec, jitterSeconds: jitterFor(spec) });
      await recordAuditEvent(tx, { eventType: 'config_change', action: 'monitor_created', result: 'success', userId: user.id, context: ctx, metadata: { source_id: id, url: input.url } });
      return secret;
    });
    return { source: await this.get(user.id, id), webhookSecret: result };
  }

  async get(ownerId: string, id: string, q: Queryable = this.db): Promise<Source> {
    const { rows } = await q.query<SourceRow>(`${SOURCE_SELECT} WHERE s.id = $1 AND s.owner_id = $2`, [id, ownerId]);
    if (!rows[0]) throw new AppError('NOT_FOUND', 'Monitoring source not found', { details: { id } });
    return toSource(rows[0]);
  }

  async list(ownerId: string, f: { page: number; limit: number; status?: string; tag?: string; search?: string }): Promise<{ items: Source[]; total: number }> {
    const where = ['s.owner_id = $1'];
    const params: unknown[] = [ownerId];
    if (f.status) {
      params.push(f.status);
      where.push(`s.status = $${params.length}`);
    }
    if (f.tag) {
      params.push(f.tag);
      where.push(`$${params.length} = ANY (s.tags)`);
    }
    if (f.search) {
      params.push(`%${f.search.replace(/[\\%_]/g, (c) => `\\${c}`)}%`);
      where.push(`(s.name ILIKE $${params.length} OR s.url ILIKE $${params.length})`);
    }
    const whereSql = where.join(' AND ');
    const count = await this.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM monitor_sources s WHERE ${whereSql}`, params);
    params.push(f.limit, (f.page - 1) * f.limit);
    const { rows } = await this.db.query<SourceRow>(
      `${SOURCE_SELECT} WHERE ${whereSql} ORDER BY s.created_at DESC, s.id LIMIT $${params.length - 1} OFFSET $${params.length}`,
      params,
    );
    return { items: rows.map(toSource), total: count.rows[0]?.n ?? 0 };
  }

  /** Replaces (PUT) or merges (PATCH) a source's settings; a schedule change reschedules it. */
  async update(user: { id: string; tier: Tier }, id: string, patch: Partial<SourceInput>, ctx: RequestContext): Promise<{ source: Source; webhookSecret: string | null }> {
    const current = await this.get(user.id, id);
    const merged: SourceInput = {
      name: patch.name ?? current.name,
      url: patch.url ?? current.url,
      schedule: patch.schedule ?? current.schedule,
      extractors: patch.extractors ?? current.extractors,
      webhookUrl: patch.webhookUrl !== undefined ? patch.webhookUrl : current.webhookUrl,
      webhookEvents: patch.webhookEvents ?? current.webhookEvents,
      webhookSecret: patch.webhookSecret,
      retryAttempts: patch.retryAttempts ?? current.retryAttempts,
      timeout: patch.timeout ?? current.timeoutMs,
      tags: patch.tags ?? current.tags,
      method: patch.method ?? (current.method as SourceInput['method']),
      headers: patch.headers ?? current.headers,
      body: patch.body !== undefined ? patch.body : current.body,
      fetcher: patch.fetcher ?? current.fetcher,
    };
    const spec = await this.validate(merged, user.tier);
    const secret = await this.db.transaction(async (tx) => {
      const { rowCount } = await tx.query(
        `UPDATE monitor_sources SET name = $3, url = $4, method = $5, headers = $6::jsonb, schedule = $7, extractors = $8::jsonb, webhook_url = $9,
                webhook_events = $10, retry_attempts = $11, timeout_ms = $12, tags = $13, fetcher = $14, request_body = $15, updated_at = now(),
                -- A new URL or new extractors start a new baseline: the next check compares against nothing.
                last_values = CASE WHEN url <> $4 OR extractors <> $8::jsonb THEN NULL ELSE last_values END,
                etag = CASE WHEN url <> $4 THEN NULL ELSE etag END,
                last_modified = CASE WHEN url <> $4 THEN NULL ELSE last_modified END
          WHERE id = $1 AND owner_id = $2`,
        [
          id,
          user.id,
          merged.name,
          merged.url,
          merged.method ?? 'GET',
          JSON.stringify(merged.headers ?? {}),
          merged.schedule.trim(),
          JSON.stringify(merged.extractors),
          merged.webhookUrl ?? null,
          merged.webhookEvents ?? [],
          merged.retryAttempts,
          merged.timeout,
          [...new Set(merged.tags ?? [])],
          merged.fetcher,
          merged.method === 'POST' ? (merged.body ?? null) : null,
        ],
      );
      if (!rowCount) throw new AppError('NOT_FOUND', 'Monitoring source not found', { details: { id } });
      const s = await this.syncWebhook(tx, user.id, id, merged.webhookUrl ?? null, merged.webhookEvents ?? [], merged.webhookSecret);
      if (merged.schedule.trim() !== current.schedule) {
        await upsertSchedule(tx, { entityType: SOURCE_ENTITY, entityId: id, ownerId: user.id, spec, jitterSeconds: jitterFor(spec) });
        if (current.status === 'paused') await pauseSchedule(tx, { entityType: SOURCE_ENTITY, entityId: id });
      }
      await recordAuditEvent(tx, { eventType: 'config_change', action: 'monitor_updated', result: 'success', userId: user.id, context: ctx, metadata: { source_id: id } });
      return s;
    });
    return { source: await this.get(user.id, id), webhookSecret: secret };
  }

  async delete(ownerId: string, id: string, ctx: RequestContext): Promise<void> {
    await this.db.transaction(async (tx) => {
      const { rows } = await tx.query<{ webhook_subscription_id: string | null }>('DELETE FROM monitor_sources WHERE id = $1 AND owner_id = $2 RETURNING webhook_subscription_id', [id, ownerId]);
      if (!rows[0]) throw new AppError('NOT_FOUND', 'Monitoring source not found', { details: { id } });
      if (rows[0].webhook_subscription_id) await tx.query('DELETE FROM webhook_subscriptions WHERE id = $1', [rows[0].webhook_subscription_id]);
      await deleteSchedule(tx, { entityType: SOURCE_ENTITY, entityId: id });
      await recordAuditEvent(tx, { eventType: 'config_change', action: 'monitor_deleted', result: 'success', userId: ownerId, context: ctx, metadata: { source_id: id } });
    });
  }

  async pause(ownerId: string, id: string): Promise<Source> {
    await this.db.transaction(async (tx) => {
      const { rowCount } = await tx.query(`UPDATE monitor_sources SET status = 'paused', check_due_at = NULL, updated_at = now() WHERE id = $1 AND owner_id = $2`, [id, ownerId]);
      if (!rowCount) throw new AppError('NOT_FOUND', 'Monitoring source not found', { details: { id } });
      await pauseSchedule(tx, { entityType: SOURCE_ENTITY, entityId: id });
    });
    return this.get(ownerId, id);
  }

  async resume(ownerId: string, id: string): Promise<Source> {
    await this.db.transaction(async (tx) => {
      const { rowCount } = await tx.query(
        `UPDATE monitor_sources SET status = CASE WHEN consecutive_failures > 0 THEN 'error' ELSE 'active' END, updated_at = now()
          WHERE id = $1 AND owner_id = $2`,
        [id, ownerId],
      );
      if (!rowCount) throw new AppError('NOT_FOUND', 'Monitoring source not found', { details: { id } });
      await resumeSchedule(tx, { entityType: SOURCE_ENTITY, entityId: id });
    });
    return this.get(ownerId, id);
  }

  async history(ownerId: string, id: string, page: { page: number; limit: number }): Promise<{ items: CheckEntry[]; total: number }> {
    await this.get(ownerId, id);
    const count = await this.db.query<{ n: number }>('SELECT count(*)::int AS n FROM monitor_checks WHERE source_id = $1', [id]);
    const { rows } = await this.db.query<CheckRow>(
      `SELECT ${CHECK_COLUMNS} FROM monitor_checks WHERE source_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3`,
      [id, page.limit, (page.page - 1) * page.limit],
    );
    return { items: rows.map(toCheck), total: count.rows[0]?.n ?? 0 };
  }

  /**
   * The source's own webhook subscription (entity-bound: it receives only this source's events):
   * created, changed or removed to match the source. Returns a generated secret when one was made.
   */
  private async syncWebhook(tx: Queryable, ownerId: string, sourceId: string, url: string | null, events: string[], secret: string | undefined): Promise<string | null> {
    const { rows } = await tx.query<{ webhook_subscription_id: string | null }>('SELECT webhook_subscription_id FROM monitor_sources WHERE id = $1', [sourceId]);
    const existing = rows[0]?.webhook_subscription_id ?? null;
    const types = events.map((e) => `monitor.${e}`);
    if (!url || !events.length) {
      if (existing) {
        await tx.query('DELETE FROM webhook_subscriptions WHERE id = $1', [existing]);
        await tx.query('UPDATE monitor_sources SET webhook_subscription_id = NULL WHERE id = $1', [sourceId]);
      }
      return null;
    }
    if (existing) {
      await tx.query(
        `UPDATE webhook_subscriptions SET url = $2, events = $3, active = true, disabled_reason = NULL, updated_at = now()
                ${secret ? ', secret_sealed = $4' : ''} WHERE id = $1`,
        secret ? [existing, url, types, this.deps.secretBox.seal(secret)] : [existing, url, types],
      );
      return null;
    }
    const generated = secret ?? generateWebhookSecret();
    const subId = newId('wh');
    await tx.query(
      `INSERT INTO webhook_subscriptions (id, owner_id, face, url, events, secret_sealed, description, active, entity_id)
       VALUES ($1, $2, 'monitoring', $3, $4, $5, $6, true, $7)`,
      [subId, ownerId, url, types, this.deps.secretBox.seal(generated), `Monitoring source ${sourceId}`, sourceId],
    );
    await tx.query('UPDATE monitor_sources SET webhook_subscription_id = $2 WHERE id = $1', [sourceId, subId]);
    return secret ? null : generated;
  }
}

/** Spread checks over a tenth of their period (at most 5 min) so sources created together do not fire together. */
function jitterFor(spec: ScheduleSpec): number {
  const period = shortestIntervalSeconds(spec);
  return Math.max(0, Math.min(300, Math.floor(period / 10)));
}

export interface CheckRow {
  id: string;
  trigger: 'schedule' | 'manual';
  due_at: Date | null;
  started_at: Date;
  checked_at: Date;
  ok: boolean;
  http_status: number | null;
  duration_ms: number;
  attempts: number;
  not_modified: boolean;
  values: Record<string, unknown> | null;
  changes: { extractor: string; old: unknown; new: unknown }[];
  changed: boolean;
  warnings: string[];
  error: string | null;
}

export const CHECK_COLUMNS = 'id, trigger, due_at, started_at, checked_at, ok, http_status, duration_ms, attempts, not_modified, "values", changes, changed, warnings, error';

export function toCheck(r: CheckRow): CheckEntry {
  return {
    id: String(r.id),
    trigger: r.trigger,
    dueAt: r.due_at,
    startedAt: r.started_at,
    checkedAt: r.checked_at,
    ok: r.ok,
    httpStatus: r.http_status,
    durationMs: r.duration_ms,
    attempts: r.attempts,
    notModified: r.not_modified,
    values: r.values,
    changes: r.changes,
    changed: r.changed,
    warnings: r.warnings,
    error: r.error,
  };
}
