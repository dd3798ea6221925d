/**
 * The check engine: schedule firings mark a source due (on its own row), checkers claim due sources
 * with a lease (`FOR UPDATE SKIP LOCKED`, so several server processes share the work and no source is
 * checked twice at once), fetch the page through the SSRF-guarded client or the browser, extract the
 * values, compare them with the last successful ones, store a history entry and emit events — all in
 * one transaction per check. Concurrency: global (`MONITOR_CONCURRENCY`) and per host
 * (`MONITOR_HOST_CONCURRENCY`) within a process.
 */
import type { Registry } from 'prom-client';
import type { MonitoringConfig } from '../../config.ts';
import { newId } from '../../platform/crypto/index.ts';
import type { Db, Queryable } from '../../platform/db/index.ts';
import { AppError } from '../../platform/errors.ts';
import { type HttpOut, isOutboundRequestError } from '../../platform/http-out/index.ts';
import { counter, gauge, histogram, type BackgroundLogger } from '../../platform/jobs/observe.ts';
import type { ScheduleFiring } from '../../platform/jobs/index.ts';
import { decodeBody, extractAll, type ExtractorSpec } from './extract.ts';
import { CHECK_COLUMNS, type CheckEntry, type CheckRow, SOURCE_ENTITY, toCheck } from './service.ts';

/** What fetching a page produced (HTTP or browser). */
export interface FetchedPage {
  status: number;
  headers: Record<string, string | string[]>;
  body: Buffer;
  finalUrl: string;
}

/** Renders pages with JavaScript (`fetcher: browser`); absent when the server has none. */
export interface PageRenderer {
  fetch(url: string, opts: { timeoutMs: number; headers?: Record<string, string>; maxBytes: number; signal?: AbortSignal }): Promise<{
    status: number;
    headers: Record<string, string>;
    body: Buffer;
    finalUrl: string;
  }>;
}

interface ClaimedSource {
  id: string;
  owner_id: string;
  name: string;
  url: string;
  method: string;
  headers: Record<string, string>;
  request_body: string | null;
  extractors: ExtractorSpec[];
  retry_attempts: number;
  timeout_ms: number;
  fetcher: 'http' | 'browser';
  status: string;
  consecutive_failures: number;
  last_values: Record<string, unknown> | null;
  etag: string | null;
  last_modified: string | null;
  webhook_subscription_id: string | null;
  webhook_events: string[];
  check_due_at: Date | null;
}

const CLAIM_COLUMNS = `s.id, s.owner_id, s.name, s.url, s.method, s.headers, s.request_body, s.extractors, s.retry_attempts, s.timeout_ms, s.fetcher, s.status,
  s.consecutive_failures, s.last_values, s.etag, s.last_modified, s.webhook_subscription_id, s.webhook_events, s.check_due_at`;

// Long enough for every attempt with its backoff, plus a margin; a crashed checker's lease expires.
const LEASE_SQL = `now() + ((s.timeout_ms::float8 * (s.retry_attempts + 1)) / 1000 + 120) * interval '1 second'`;

interface Outcome {
  ok: boolean;
  httpStatus: number | null;
  notModified: boolean;
  values: Record<string, unknown> | null;
  warnings: string[];
  error: string | null;
  attempts: number;
  etag: string | null;
  lastModified: string | null;
}

class Retryable extends Error {}

function header(h: Record<string, string | string[]>, name: string): string | undefined {
  const v = h[name] ?? h[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

function sameValue(a: unknown, b: unknown): boolean {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

export interface MonitorEngineDeps {
  db: Db;
  http: HttpOut;
  browser: PageRenderer | null;
  config: MonitoringConfig;
  registry: Registry;
  log: BackgroundLogger;
  /** First retry delay; each further retry doubles it (capped at a minute). */
  retryBaseMs?: number;
  pollIntervalMs?: number;
}

export class MonitorEngine {
  private readonly deps: MonitorEngineDeps;
  private readonly db: Db;
  private running = false;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private inFlight = 0;
  private readonly perHost = new Map<string, number>();
  private readonly hostWaiters = new Map<string, (() => void)[]>();
  private readonly active = new Set<Promise<void>>();
  private readonly checks;
  private readonly duration;
  private readonly lag;

  constructor(deps: MonitorEngineDeps) {
    this.deps = deps;
    this.db = deps.db;
    this.checks = counter(deps.registry, 'monitor_checks_total', 'Monitoring checks by result', ['result']);
    this.duration = histogram(deps.registry, 'monitor_check_duration_seconds', 'Monitoring check duration (fetch, retries, extraction)', [], [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]);
    this.lag = histogram(deps.registry, 'monitor_check_start_lag_seconds', 'Delay from a check being due to it starting', [], [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300]);
    const db = this.db;
    const g = gauge(deps.registry, 'monitor_sources', 'Monitoring sources by status', ['status']);
    // Read at scrape time, so every process reports the shared truth.
    (g as unknown as { collect?: () => Promise<void> }).collect = async function collect(this: typeof g) {
      const { rows } = await db.query<{ status: string; n: number }>('SELECT status, count(*)::int AS n FROM monitor_sources GROUP BY status');
      this.reset();
      for (const st of ['active', 'paused', 'error']) this.set({ status: st }, rows.find((r) => r.status === st)?.n ?? 0);
    };
  }

  /** The scheduler's handler: marks the source due, inside the claiming transaction. */
  readonly onFiring = async (firing: ScheduleFiring, tx: Queryable): Promise<void> => {
    await tx.query(
      `UPDATE monitor_sources SET check_due_at = LEAST(coalesce(check_due_at, $2), $2) WHERE id = $1 AND status <> 'paused'`,
      [firing.entityId, firing.runAt],
    );
    queueMicrotask(() => this.wake?.());
  };

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.wake?.();
    await this.loop;
    await Promise.allSettled([...this.active]);
  }

  private async run(): Promise<void> {
    const poll = this.deps.pollIntervalMs ?? 500;
    while (this.running) {
      let claimed = 0;
      const free = this.deps.config.concurrency - this.inFlight;
      if (free > 0) {
        try {
          const sources = await this.claim(free);
          claimed = sources.length;
          for (const s of sources) this.launch(s);
        } catch (err) {
          this.deps.log.error({ err }, 'claiming due monitoring checks failed');
        }
      }
      if (!this.running) break;
      if (claimed === free && free > 0) continue;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, poll);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  private async claim(limit: number): Promise<ClaimedSource[]> {
    const { rows } = await this.db.query<ClaimedSource>(
      `UPDATE monitor_sources s SET check_lease_until = ${LEASE_SQL}, check_claimed_due = s.check_due_at
        WHERE s.id IN (SELECT id FROM monitor_sources
                        WHERE check_due_at IS NOT NULL AND check_due_at <= now() AND status <> 'paused'
                          AND (check_lease_until IS NULL OR check_lease_until < now())
                        ORDER BY check_due_at LIMIT $1 FOR UPDATE SKIP LOCKED)
        RETURNING ${CLAIM_COLUMNS}`,
      [limit],
    );
    return rows;
  }

  private launch(source: ClaimedSource): void {
    this.inFlight++;
    if (source.check_due_at) this.lag.observe(Math.max(0, (Date.now() - source.check_due_at.getTime()) / 1000));
    const p = this.check(source, 'schedule')
      .then(() => undefined)
      .catch((err: unknown) => {
        if ((err as AppError)?.code === 'NOT_FOUND') return; // deleted while being checked
        this.deps.log.error({ err, source_id: source.id }, 'monitoring check failed unexpectedly');
      })
      .finally(() => {
        this.inFlight--;
        this.active.delete(p);
        this.wake?.();
      });
    this.active.add(p);
  }

  /**
   * Checks a source now (`POST .../check`) and returns the history entry. A check already running for
   * it (scheduled or manual) is a CONFLICT.
   */
  async checkNow(ownerId: string, id: string): Promise<CheckEntry> {
    const { rows } = await this.db.query<ClaimedSource>(
      `UPDATE monitor_sources s SET check_lease_until = ${LEASE_SQL}, check_claimed_due = NULL
        WHERE s.id = $1 AND s.owner_id = $2 AND (s.check_lease_until IS NULL OR s.check_lease_until < now())
        RETURNING ${CLAIM_COLUMNS}`,
      [id, ownerId],
    );
    if (!rows[0]) {
      const exists = await this.db.query('SELECT 1 FROM monitor_sources WHERE id = $1 AND owner_id = $2', [id, ownerId]);
      if (!exists.rows.length) throw new AppError('NOT_FOUND', 'Monitoring source not found', { details: { id } });
      throw new AppError('CONFLICT', 'A check of this source is already running; try again when it has finished', { details: { id } });
    }
    // A manual check does not consume a pending scheduled one.
    return this.check({ ...rows[0], check_due_at: null }, 'manual');
  }

  private async check(source: ClaimedSource, trigger: 'schedule' | 'manual'): Promise<CheckEntry> {
    const started = performance.now();
    const startedAt = new Date();
    const host = new URL(source.url).host;
    await this.acquireHost(host);
    let outcome: Outcome;
    try {
      outcome = await this.fetchAndExtract(source);
    } finally {
      this.releaseHost(host);
    }
    const durationMs = Math.round(performance.now() - started);
    this.duration.observe(durationMs / 1000);
    this.checks.inc({ result: !outcome.ok ? 'error' : outcome.notModified ? 'not_modified' : 'ok' });
    return this.record(source, trigger, outcome, durationMs, startedAt);
  }

  private async fetchAndExtract(source: ClaimedSource): Promise<Outcome> {
    const maxBytes = this.deps.config.maxBodyBytes;
    const baseDelay = this.deps.retryBaseMs ?? 1000;
    let attempts = 0;
    let lastError = 'no attempt made';
    let lastStatus: number | null = null;
    for (let attempt = 0; attempt <= source.retry_attempts; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, Math.min(60_000, baseDelay * 2 ** (attempt - 1))));
      attempts++;
      try {
        const page = await this.fetchOnce(source, maxBytes);
        lastStatus = page.status;
        if (page.status === 304 && source.last_values) {
          return { ok: true, httpStatus: 304, notModified: true, values: source.last_values, warnings: [], error: null, attempts, etag: source.etag, lastModified: source.last_modified };
        }
        if (page.status >= 500 || page.status === 429 || page.status === 408) throw new Retryable(`The page answered HTTP ${page.status}`);
        if (page.status >= 400) {
          return { ok: false, httpStatus: page.status, notModified: false, values: null, warnings: [], error: `The page answered HTTP ${page.status}`, attempts, etag: null, lastModified: null };
        }
        const contentType = header(page.headers, 'content-type');
        const text = decodeBody(page.body, contentType);
        const { values } = extractAll(text, contentType, source.extractors);
        const out: Record<string, unknown> = {};
        const warnings: string[] = [];
        for (const v of values) {
          out[v.name] = v.value ?? null;
          if (v.warning) warnings.push(`${v.name}: ${v.warning}`);
        }
        return {
          ok: true,
          httpStatus: page.status,
          notModified: false,
          values: out,
          warnings,
          error: null,
          attempts,
          etag: header(page.headers, 'etag') ?? null,
          lastModified: header(page.headers, 'last-modified') ?? null,
        };
      } catch (err) {
        if (isOutboundRequestError(err) && (err.reason === 'address_not_allowed' || err.reason === 'invalid_url' || err.reason === 'scheme_not_allowed' || err.reason === 'response_too_large' || err.reason === 'redirect_not_allowed')) {
          // Retrying cannot change these answers.
          return { ok: false, httpStatus: null, notModified: false, values: null, warnings: [], error: err.message, attempts, etag: null, lastModified: null };
        }
        lastError = err instanceof Error ? err.message : String(err);
      }
    }
    return { ok: false, httpStatus: lastStatus, notModified: false, values: null, warnings: [], error: lastError, attempts, etag: null, lastModified: null };
  }

  private async fetchOnce(source: ClaimedSource, maxBytes: number): Promise<FetchedPage> {
    const headers: Record<string, string> = { accept: 'text/html,application/xhtml+xml,application/json;q=0.9,*/*;q=0.8', ...source.headers };
    if (source.fetcher === 'browser') {
      if (!this.deps.browser) throw new Error('No browser is available on this server for fetcher "browser"');
      return this.deps.browser.fetch(source.url, { timeoutMs: source.timeout_ms, headers, maxBytes });
    }
    // Conditional GET only when there is a baseline to fall back on.
    if (source.last_values) {
      if (source.etag) headers['if-none-match'] = source.etag;
      if (source.last_modified) headers['if-modified-since'] = source.last_modified;
    }
    const res = await this.deps.http.request(source.url, {
      method: source.method,
      headers,
      body: source.method === 'POST' ? (source.request_body ?? '') : undefined,
      timeoutMs: source.timeout_ms,
      maxResponseBytes: maxBytes,
    });
    return { status: res.status, headers: res.headers, body: res.body, finalUrl: res.url };
  }

  private async record(source: ClaimedSource, trigger: 'schedule' | 'manual', o: Outcome, durationMs: number, startedAt: Date): Promise<CheckEntry> {
    const baseline = source.last_values;
    const changes: { extractor: string; old: unknown; new: unknown }[] = [];
    if (o.ok && baseline && o.values) {
      for (const e of source.extractors) {
        const before = baseline[e.name];
        const after = o.values[e.name];
        if (!(e.name in baseline)) continue; // a new extractor: no baseline yet
        if (!sameValue(before, after)) changes.push({ extractor: e.name, old: before ?? null, new: after ?? null });
      }
    }
    const changed = changes.length > 0;
    return this.db.transaction(async (tx) => {
      // The source may have been deleted while it was being checked: then there is nothing to record.
      const alive = await tx.query('SELECT 1 FROM monitor_sources WHERE id = $1 FOR UPDATE', [source.id]);
      if (!alive.rows.length) throw new AppError('NOT_FOUND', 'Monitoring source not found (it was deleted during the check)', { details: { id: source.id } });
      const { rows } = await tx.query<CheckRow>(
        `INSERT INTO monitor_checks (source_id, trigger, due_at, started_at, ok, http_status, duration_ms, attempts, not_modified, "values", changes, changed, warnings, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11::jsonb, $12, $13::jsonb, $14) RETURNING ${CHECK_COLUMNS}`,
        [
          source.id,
          trigger,
          source.check_due_at,
          startedAt,
          o.ok,
          o.httpStatus,
          durationMs,
          o.attempts,
          o.notModified,
          o.values ? JSON.stringify(o.values) : null,
          JSON.stringify(changes),
          changed,
          JSON.stringify(o.warnings),
          o.error,
        ],
      );
      const entry = toCheck(rows[0]!);
      const updated = await tx.query<{ consecutive_failures: number }>(
        `UPDATE monitor_sources SET
            last_check = $2,
            last_success = CASE WHEN $3 THEN $2 ELSE last_success END,
            last_values = CASE WHEN $3 THEN $4::jsonb ELSE last_values END,
            etag = CASE WHEN $3 THEN $5 ELSE etag END,
            last_modified = CASE WHEN $3 THEN $6 ELSE last_modified END,
            consecutive_failures = CASE WHEN $3 THEN 0 ELSE consecutive_failures + 1 END,
            last_error = CASE WHEN $3 THEN NULL ELSE $7 END,
            status = CASE WHEN status = 'paused' THEN 'paused' WHEN $3 THEN 'active' ELSE 'error' END,
            check_lease_until = NULL,
            check_due_at = CASE WHEN check_claimed_due IS NOT NULL AND check_due_at <= check_claimed_due THEN NULL ELSE check_due_at END,
            check_claimed_due = NULL
          WHERE id = $1
          RETURNING consecutive_failures`,
        [source.id, entry.checkedAt, o.ok, o.values ? JSON.stringify(o.values) : null, o.etag, o.lastModified, o.error],
      );
      await this.emit(tx, source, entry, changes, updated.rows[0]!.consecutive_failures);
      await this.prune(tx, source.id);
      return entry;
    });
  }

  /** Events for the source's own webhook, only those it subscribed to. */
  private async emit(tx: Queryable, s: ClaimedSource, e: CheckEntry, changes: CheckEntry['changes'], failures: number): Promise<void> {
    if (!s.webhook_subscription_id) return;
    const base = { source_id: s.id, name: s.name, url: s.url, checked_at: e.checkedAt.toISOString() };
    const events: [string, unknown][] = [];
    if (e.changed && s.webhook_events.includes('data_changed')) events.push(['monitor.data_changed', { ...base, changes }]);
    if (!e.ok && s.webhook_events.includes('error')) {
      events.push(['monitor.error', { ...base, error: e.error, http_status: e.httpStatus, attempts: e.attempts, consecutive_failures: failures }]);
    }
    if (s.webhook_events.includes('check_completed')) {
      events.push(['monitor.check_completed', { ...base, ok: e.ok, changed: e.changed, values: e.values, http_status: e.httpStatus, duration_ms: e.durationMs, warnings: e.warnings }]);
    }
    for (const [type, data] of events) {
      await tx.query('INSERT INTO events (id, owner_id, type, data, entity_id) VALUES ($1, $2, $3, $4::jsonb, $5)', [newId('evt'), s.owner_id, type, JSON.stringify(data), s.id]);
    }
  }

  /** Keeps the newest `historyKeep` entries of the source and none older than `historyDays`. */
  private async prune(tx: Queryable, sourceId: string): Promise<void> {
    const { historyKeep, historyDays } = this.deps.config;
    await tx.query(
      `DELETE FROM monitor_checks WHERE source_id = $1
          AND (checked_at < now() - make_interval(days => $3)
               OR id <= (SELECT id FROM monitor_checks WHERE source_id = $1 ORDER BY id DESC OFFSET $2 LIMIT 1))`,
      [sourceId, historyKeep, historyDays],
    );
  }

  private async acquireHost(host: string): Promise<void> {
    const limit = this.deps.config.hostConcurrency;
    while ((this.perHost.get(host) ?? 0) >= limit) {
      await new Promise<void>((resolve) => {
        const q = this.hostWaiters.get(host) ?? [];
        q.push(resolve);
        this.hostWaiters.set(host, q);
      });
    }
    this.perHost.set(host, (this.perHost.get(host) ?? 0) + 1);
  }

  private releaseHost(host: string): void {
    const n = (this.perHost.get(host) ?? 1) - 1;
    if (n <= 0) this.perHost.delete(host);
    else this.perHost.set(host, n);
    const q = this.hostWaiters.get(host);
    const next = q?.shift();
    if (q && !q.length) this.hostWaiters.delete(host);
    next?.();
  }
}

export { SOURCE_ENTITY };
