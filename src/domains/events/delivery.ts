/**
 * The delivery engine: a dispatcher fans committed events out to matching subscriptions (one delivery
 * row each), and a sender claims due deliveries with FOR UPDATE SKIP LOCKED, signs and posts them, and
 * records every attempt. A process that dies mid-send leaves a lease that expires, so the delivery is
 * sent again with the same webhook-id: at least once, never lost.
 */
import { Counter, Histogram, type Registry } from 'prom-client';
import type { FaceName } from '../../config.ts';
import { newId } from '../../platform/crypto/index.ts';
import type { SecretBox } from '../../platform/crypto/secretbox.ts';
import type { Db } from '../../platform/db/index.ts';
import { eventMatches } from './catalogue.ts';
import { onEventEmitted } from './outbox.ts';
import { formatBody } from './payloads.ts';
import { signDelivery } from './signing.ts';

/** What the sender needs from outbound HTTP (the SSRF-guarded client satisfies it). */
export interface WebhookTransport {
  request(
    url: string,
    init: { method: string; headers: Record<string, string>; body: string; followRedirects: false; timeoutMs: number },
  ): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }>;
}

export interface DeliveryOptions {
  /** Delays (seconds) before the 2nd, 3rd, ... attempt; its length + 1 is the number of attempts. */
  retryScheduleSeconds: number[];
  timeoutMs: number;
  concurrency: number;
  batchSize: number;
  pollIntervalMs: number;
}

export interface DeliveryLogger {
  error(obj: unknown, msg: string): void;
}

/** Standard Webhooks' schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h — about 28 hours in all. */
export const DEFAULT_RETRY_SCHEDULE = [5, 300, 1800, 7200, 18000, 36000, 36000];
const MAX_RETRY_AFTER_SECONDS = 86_400;
const SNIPPET_BYTES = 1024;
// Results are written when this many are waiting, or after this delay, whichever comes first.
const RECORD_BATCH = 100;
const RECORD_DELAY_MS = 5;

interface ClaimedDelivery {
  id: string;
  subscription_id: string;
  body: string;
  attempts: number;
  url: string;
  secret_sealed: string;
  active: boolean;
}

type Outcome =
  | { kind: 'success'; status: number; durationMs: number; snippet: string }
  | { kind: 'failure'; status: number | null; durationMs: number; snippet: string | null; error: string; retryAfterSeconds?: number; gone?: boolean };

export class DeliveryEngine {
  private readonly db: Db;
  private readonly box: SecretBox;
  private readonly transport: WebhookTransport;
  private readonly opts: DeliveryOptions;
  private log: DeliveryLogger;
  private readonly delivered: Counter<'result'>;
  private readonly duration: Histogram<string>;
  private running = false;
  private loops: Promise<void>[] = [];
  private wakeDispatch: (() => void) | null = null;
  private wakeSend: (() => void) | null = null;
  private unsubscribe: (() => void) | null = null;
  private readonly inFlight = new Set<Promise<void>>();
  private pendingResults: { d: ClaimedDelivery; o: Outcome; disabled: boolean; resolve: () => void; reject: (err: unknown) => void }[] = [];
  private flushTimer: NodeJS.Timeout | null = null;

  constructor(deps: { db: Db; secretBox: SecretBox; transport: WebhookTransport; options: DeliveryOptions; log: DeliveryLogger; registry: Registry }) {
    this.db = deps.db;
    this.box = deps.secretBox;
    this.transport = deps.transport;
    this.opts = deps.options;
    this.log = deps.log;
    this.delivered = new Counter({ name: 'webhook_attempts_total', help: 'Webhook delivery attempts by result', labelNames: ['result'], registers: [deps.registry] });
    this.duration = new Histogram({ name: 'webhook_attempt_duration_seconds', help: 'Webhook attempt duration', registers: [deps.registry] });
  }

  /** Starts the dispatch and send loops; errors go to `log` (the server's logger) when given. */
  start(log?: DeliveryLogger): void {
    if (this.running) return;
    if (log) this.log = log;
    this.running = true;
    this.unsubscribe = onEventEmitted(() => this.wakeDispatch?.());
    this.loops = [this.loop('dispatch', () => this.dispatchOnce(), (w) => (this.wakeDispatch = w)), this.loop('send', () => this.sendOnce(), (w) => (this.wakeSend = w))];
  }

  /** Looks for due deliveries now instead of at the next poll (after a redelivery or ping). */
  wake(): void {
    this.wakeSend?.();
  }

  /** Stops claiming new work and waits for attempts in flight to be recorded. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.unsubscribe?.();
    this.wakeDispatch?.();
    this.wakeSend?.();
    await Promise.all(this.loops);
    await Promise.all(this.inFlight);
  }

  private async loop(name: string, step: () => Promise<boolean>, setWake: (w: () => void) => void): Promise<void> {
    while (this.running) {
      let busy = false;
      try {
        busy = await step();
      } catch (err) {
        // Background work never crashes the process: log and try again after a pause.
        this.log.error({ err }, `webhook ${name} loop failed`);
      }
      if (busy || !this.running) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.opts.pollIntervalMs);
        setWake(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Fans out one batch of undispatched events; true when there may be more. */
  async dispatchOnce(): Promise<boolean> {
    const created = await this.db.transaction(async (tx) => {
      const events = await tx.query<{ id: string; owner_id: string; type: string; data: unknown; created_at: Date; entity_id: string | null }>(
        `SELECT id, owner_id, type, data, created_at, entity_id FROM events WHERE dispatched_at IS NULL
         ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED`,
        [this.opts.batchSize],
      );
      if (!events.rows.length) return { events: 0, deliveries: 0 };
      const owners = [...new Set(events.rows.map((e) => e.owner_id))];
      const subs = await tx.query<{ id: string; owner_id: string; face: FaceName; events: string[]; secret_sealed: string; entity_id: string | null }>(
        `SELECT id, owner_id, face, events, secret_sealed, entity_id FROM webhook_subscriptions WHERE active AND owner_id = ANY($1::text[])`,
        [owners],
      );
      const secrets = new Map<string, string>();
      const rows: unknown[][] = [];
      for (const ev of events.rows) {
        for (const sub of subs.rows) {
          if (sub.owner_id !== ev.owner_id || !sub.events.some((p) => eventMatches(p, ev.type))) continue;
          // A subscription bound to one entity (a monitored source) hears only that entity's events.
          if (sub.entity_id !== null && sub.entity_id !== ev.entity_id) continue;
          let secret = secrets.get(sub.id);
          if (secret === undefined) {
            secret = this.box.open(sub.secret_sealed);
            secrets.set(sub.id, secret);
          }
          const body = formatBody(sub.face, { id: ev.id, type: ev.type, data: ev.data, createdAt: ev.created_at }, secret);
          rows.push([newId('msg'), sub.id, ev.id, ev.type, body]);
        }
      }
      for (let i = 0; i < rows.length; i += 500) {
        const chunk = rows.slice(i, i + 500);
        const values = chunk.map((_, j) => `($${j * 5 + 1}, $${j * 5 + 2}, $${j * 5 + 3}, $${j * 5 + 4}, $${j * 5 + 5})`).join(', ');
        await tx.query(
          `INSERT INTO webhook_deliveries (id, subscription_id, event_id, event_type, body) VALUES ${values}
           ON CONFLICT (subscription_id, event_id) DO NOTHING`,
          chunk.flat(),
        );
      }
      await tx.query(`UPDATE events SET dispatched_at = clock_timestamp() WHERE id = ANY($1::text[])`, [events.rows.map((e) => e.id)]);
      return { events: events.rows.length, deliveries: rows.length };
    });
    if (created.deliveries > 0) this.wakeSend?.();
    return created.events >= this.opts.batchSize;
  }

  /** Claims due deliveries up to the free concurrency and starts sending them; true when it claimed a full batch. */
  async sendOnce(): Promise<boolean> {
    const free = this.opts.concurrency - this.inFlight.size;
    if (free <= 0) {
      await Promise.race(this.inFlight);
      return true;
    }
    const lease = Math.ceil(this.opts.timeoutMs / 1000) + 10;
    const { rows } = await this.db.query<ClaimedDelivery>(
      `UPDATE webhook_deliveries d
       SET locked_until = clock_timestamp() + make_interval(secs => $2), attempts = d.attempts + 1
       FROM webhook_subscriptions s
       WHERE s.id = d.subscription_id AND d.id IN (
         SELECT id FROM webhook_deliveries
         WHERE status = 'pending' AND next_attempt_at <= clock_timestamp()
           AND (locked_until IS NULL OR locked_until < clock_timestamp())
         ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
       RETURNING d.id, d.subscription_id, d.body, d.attempts, s.url, s.secret_sealed, s.active`,
      [Math.min(free, this.opts.batchSize), lease],
    );
    for (const d of rows) {
      const p: Promise<void> = this.attempt(d)
        .catch((err: unknown) => this.log.error({ err, delivery: d.id }, 'webhook attempt could not be recorded'))
        .finally(() => this.inFlight.delete(p));
      this.inFlight.add(p);
    }
    return rows.length > 0 && rows.length >= Math.min(free, this.opts.batchSize);
  }

  private async attempt(d: ClaimedDelivery): Promise<void> {
    if (!d.active) {
      await this.record(d, { kind: 'failure', status: null, durationMs: 0, snippet: null, error: 'webhook is disabled' }, true);
      return;
    }
    const outcome = await this.send(d);
    this.delivered.inc({ result: outcome.kind });
    this.duration.observe(outcome.durationMs / 1000);
    await this.record(d, outcome, false);
  }

  private async send(d: ClaimedDelivery): Promise<Outcome> {
    const started = performance.now();
    const headers = {
      'content-type': 'application/json',
      ...signDelivery(this.box.open(d.secret_sealed), d.id, d.body, Math.floor(Date.now() / 1000)),
    };
    try {
      const res = await this.transport.request(d.url, { method: 'POST', headers, body: d.body, followRedirects: false, timeoutMs: this.opts.timeoutMs });
      const durationMs = Math.round(performance.now() - started);
      const snippet = res.body.subarray(0, SNIPPET_BYTES).toString('utf8');
      if (res.status >= 200 && res.status < 300) return { kind: 'success', status: res.status, durationMs, snippet };
      const failure: Outcome = { kind: 'failure', status: res.status, durationMs, snippet, error: describeStatus(res.status) };
      if (res.status === 410) failure.gone = true;
      if (res.status === 429 || res.status === 503) {
        const ra = retryAfterSeconds(res.headers['retry-after']);
        if (ra !== undefined) failure.retryAfterSeconds = ra;
      }
      return failure;
    } catch (err) {
      return { kind: 'failure', status: null, durationMs: Math.round(performance.now() - started), snippet: null, error: err instanceof Error ? err.message : String(err) };
    }
  }

  /**
   * Queues an attempt's result; results are written in batches (one transaction for many attempts),
   * which is what lets one process record well over a thousand attempts a second.
   */
  private record(d: ClaimedDelivery, o: Outcome, disabled: boolean): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.pendingResults.push({ d, o, disabled, resolve, reject });
      if (this.pendingResults.length >= RECORD_BATCH) void this.flushResults();
      else this.flushTimer ??= setTimeout(() => void this.flushResults(), RECORD_DELAY_MS);
    });
  }

  private async flushResults(): Promise<void> {
    if (this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    const batch = this.pendingResults.splice(0, this.pendingResults.length);
    if (!batch.length) return;
    const maxAttempts = this.opts.retryScheduleSeconds.length + 1;
    const attempts: unknown[] = [];
    const updates: unknown[] = [];
    const gone: string[] = [];
    for (const { d, o, disabled } of batch) {
      attempts.push(d.id, d.attempts, o.status, o.durationMs, o.kind === 'failure' ? o.error : null, o.snippet);
      if (o.kind === 'success') {
        updates.push(d.id, 'succeeded', o.status, null, 0);
        continue;
      }
      const final = disabled || o.gone || d.attempts >= maxAttempts;
      updates.push(d.id, final ? 'failed' : 'pending', o.status, o.error, final ? 0 : this.retryDelay(d.attempts, o.retryAfterSeconds));
      if (o.gone) gone.push(d.subscription_id);
    }
    try {
      await this.db.transaction(async (tx) => {
        await tx.query(
          `INSERT INTO webhook_attempts (delivery_id, attempt, attempted_at, status_code, duration_ms, error, response_snippet)
           VALUES ${placeholders(batch.length, 6, (i) => `($${i + 1}, $${i + 2}, clock_timestamp(), $${i + 3}::int, $${i + 4}, $${i + 5}, $${i + 6})`)}
           ON CONFLICT DO NOTHING`,
          attempts,
        );
        await tx.query(
          `UPDATE webhook_deliveries d SET
             status = v.status,
             completed_at = CASE WHEN v.status = 'pending' THEN NULL ELSE clock_timestamp() END,
             next_attempt_at = CASE WHEN v.status = 'pending' THEN clock_timestamp() + make_interval(secs => v.delay) ELSE d.next_attempt_at END,
             last_status_code = v.code,
             last_error = v.err,
             locked_until = NULL
           FROM (VALUES ${placeholders(batch.length, 5, (i) => `($${i + 1}::text, $${i + 2}::text, $${i + 3}::int, $${i + 4}::text, $${i + 5}::float8)`)})
             AS v (id, status, code, err, delay)
           WHERE d.id = v.id`,
          updates,
        );
        if (gone.length) {
          await tx.query(
            `UPDATE webhook_subscriptions SET active = false, disabled_reason = 'receiver answered 410 Gone', updated_at = now() WHERE id = ANY($1::text[])`,
            [[...new Set(gone)]],
          );
        }
      });
      for (const r of batch) r.resolve();
    } catch (err) {
      // The leases expire and these deliveries are attempted again: at least once, never lost.
      for (const r of batch) r.reject(err);
    }
  }

  /** Exponential schedule with ±20 % jitter; a receiver's Retry-After wins when it gives one. */
  private retryDelay(attempt: number, retryAfter: number | undefined): number {
    if (retryAfter !== undefined) return Math.min(Math.max(retryAfter, 1), MAX_RETRY_AFTER_SECONDS);
    const base = this.opts.retryScheduleSeconds[Math.min(attempt - 1, this.opts.retryScheduleSeconds.length - 1)] ?? 60;
    return base * (0.8 + Math.random() * 0.4);
  }
}

/** `(…), (…)` for `rows` rows of `width` parameters each. */
function placeholders(rows: number, width: number, row: (offset: number) => string): string {
  return Array.from({ length: rows }, (_, r) => row(r * width)).join(', ');
}

function describeStatus(status: number): string {
  if (status >= 300 && status < 400) return `receiver answered ${status} (redirects are not followed)`;
  return `receiver answered ${status}`;
}

/** Retry-After is seconds or an HTTP date. */
export function retryAfterSeconds(value: string | string[] | undefined): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (!v) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim());
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}
