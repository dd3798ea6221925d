/**
 * The one place model requests leave the process: a `fetch` for the provider SDKs that adds a
 * time limit for the response to start, retries 429 and 5xx answers (honouring `Retry-After`),
 * retries connection failures, and keeps a circuit breaker per provider so a provider that is down
 * fails fast instead of holding every caller for the full timeout.
 */

/** Thrown instead of calling a provider whose breaker is open. */
export class CircuitOpenError extends Error {
  readonly provider: string;
  readonly retryAfterMs: number;
  constructor(provider: string, retryAfterMs: number) {
    super(`${provider} failed repeatedly; requests to it are paused for ${Math.ceil(retryAfterMs / 1000)} s`);
    this.name = 'CircuitOpenError';
    this.provider = provider;
    this.retryAfterMs = retryAfterMs;
  }
}

/** Thrown when a provider did not start answering within the time limit. */
export class ProviderTimeoutError extends Error {
  readonly provider: string;
  constructor(provider: string, timeoutMs: number) {
    super(`${provider} did not answer within ${timeoutMs} ms`);
    this.name = 'ProviderTimeoutError';
    this.provider = provider;
  }
}

/** Thrown when the provider cannot be reached at all (refused, reset, DNS). */
export class ProviderUnreachableError extends Error {
  readonly provider: string;
  constructor(provider: string, cause: unknown) {
    super(`${provider} could not be reached: ${describe(cause)}`, { cause });
    this.name = 'ProviderUnreachableError';
    this.provider = provider;
  }
}

function describe(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } })?.cause;
  return cause?.code ?? cause?.message ?? (err as Error)?.message ?? String(err);
}

export type BreakerState = 'closed' | 'open' | 'half_open';

/**
 * Opens after `threshold` consecutive failures (connection errors, time-outs, 5xx); after
 * `cooldownMs` one trial request goes through (half-open): success closes it, failure re-opens it.
 */
export class CircuitBreaker {
  private failures = 0;
  private openedAt = 0;
  private trialInFlight = false;
  private readonly threshold: number;
  private readonly cooldownMs: number;
  private readonly now: () => number;

  constructor(threshold: number, cooldownMs: number, now: () => number = Date.now) {
    this.threshold = threshold;
    this.cooldownMs = cooldownMs;
    this.now = now;
  }

  get state(): BreakerState {
    if (this.failures < this.threshold) return 'closed';
    return this.now() - this.openedAt >= this.cooldownMs ? 'half_open' : 'open';
  }

  /** Milliseconds until a trial is allowed; 0 when requests may go now. */
  waitMs(): number {
    const s = this.state;
    if (s === 'closed') return 0;
    if (s === 'half_open') return this.trialInFlight ? 1000 : 0;
    return this.cooldownMs - (this.now() - this.openedAt);
  }

  /** Call before a request; false when it must not be sent. */
  admit(): boolean {
    const s = this.state;
    if (s === 'closed') return true;
    if (s === 'half_open' && !this.trialInFlight) {
      this.trialInFlight = true;
      return true;
    }
    return false;
  }

  success(): void {
    this.failures = 0;
    this.trialInFlight = false;
  }

  failure(): void {
    this.trialInFlight = false;
    this.failures = Math.min(this.failures + 1, this.threshold);
    if (this.failures >= this.threshold) this.openedAt = this.now();
  }
}

export interface ResilientFetchOptions {
  provider: string;
  breaker: CircuitBreaker;
  /** Time allowed until the response headers arrive (a stream may then run longer). */
  timeoutMs: number;
  maxRetries: number;
  /** A Retry-After longer than this is not waited out: the answer goes back to the caller. */
  retryMaxWaitMs: number;
  /** Called once per HTTP attempt with its outcome, for metrics. */
  onAttempt?: (outcome: 'ok' | 'retry' | 'error', status: number | null) => void;
  sleep?: (ms: number) => Promise<void>;
  fetchImpl?: typeof fetch;
}

const RETRY_STATUSES = new Set([408, 409, 425, 429, 500, 502, 503, 504, 529]);

/** Delay from `retry-after-ms` / `Retry-After` (seconds or HTTP date); null when absent or unparsable. */
export function retryAfterMs(headers: Headers, now = Date.now()): number | null {
  const ms = headers.get('retry-after-ms');
  if (ms && /^\d+(\.\d+)?$/.test(ms.trim())) return Math.round(Number(ms));
  const ra = headers.get('retry-after')?.trim();
  if (!ra) return null;
  if (/^\d+(\.\d+)?$/.test(ra)) return Math.round(Number(ra) * 1000);
  const at = Date.parse(ra);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

function backoffMs(attempt: number): number {
  const base = 250 * 2 ** attempt;
  return Math.round(base / 2 + Math.random() * base);
}

const defaultSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref?.());

export function resilientFetch(opts: ResilientFetchOptions): typeof fetch {
  const doFetch = opts.fetchImpl ?? fetch;
  const sleep = opts.sleep ?? defaultSleep;
  return async function providerFetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
    for (let attempt = 0; ; attempt++) {
      if (!opts.breaker.admit()) throw new CircuitOpenError(opts.provider, opts.breaker.waitMs());
      const callerSignal = init?.signal ?? undefined;
      if (callerSignal?.aborted) throw callerSignal.reason;
      const ctrl = new AbortController();
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        ctrl.abort();
      }, opts.timeoutMs);
      const onAbort = () => ctrl.abort(callerSignal?.reason);
      callerSignal?.addEventListener('abort', onAbort, { once: true });
      let res: Response;
      try {
        res = await doFetch(input, { ...init, signal: ctrl.signal });
      } catch (err) {
        callerSignal?.removeEventListener('abort', onAbort);
        if (callerSignal?.aborted) throw callerSignal.reason ?? err;
        opts.breaker.failure();
        const failure = timedOut ? new ProviderTimeoutError(opts.provider, opts.timeoutMs) : new ProviderUnreachableError(opts.provider, err);
        if (attempt < opts.maxRetries && opts.breaker.state === 'closed') {
          opts.onAttempt?.('retry', null);
          await sleep(backoffMs(attempt));
          continue;
        }
        opts.onAttempt?.('error', null);
        throw failure;
      } finally {
        clearTimeout(timer);
      }
      // Headers are in: from here the caller's own signal governs the body (streams may run long).
      if (res.status >= 500) opts.breaker.failure();
      else opts.breaker.success();
      if (RETRY_STATUSES.has(res.status) && attempt < opts.maxRetries) {
        const wait = retryAfterMs(res.headers) ?? backoffMs(attempt);
        if (wait <= opts.retryMaxWaitMs && (res.status < 500 || opts.breaker.state === 'closed')) {
          opts.onAttempt?.('retry', res.status);
          await res.body?.cancel().catch(() => undefined);
          callerSignal?.removeEventListener('abort', onAbort);
          await sleep(wait);
          continue;
        }
      }
      opts.onAttempt?.(res.ok ? 'ok' : 'error', res.status);
      return res;
    }
  };
}
