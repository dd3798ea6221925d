/**
 * Fixed-window request counters behind one interface. Embedded mode counts in memory; server mode
 * counts in PostgreSQL (or Redis when configured) so that every process shares the same numbers.
 */
import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import type pg from 'pg';
import {
  RateLimiterMemory,
  RateLimiterPostgres,
  RateLimiterRedis,
  RateLimiterRes,
  type RateLimiterAbstract,
} from 'rate-limiter-flexible';

export interface LimitPolicy {
  /** Requests allowed per window; null means unlimited. */
  points: number | null;
  windowSeconds: number;
}

export interface RateDecision {
  allowed: boolean;
  /** null when the policy is unlimited. */
  limit: number | null;
  remaining: number;
  /** Epoch milliseconds at which the current window ends. */
  resetAtMs: number;
  retryAfterSeconds: number;
}

export type StoreKind = 'memory' | 'postgres' | 'redis';

export interface RateLimitStoreOptions {
  kind: StoreKind;
  pool?: pg.Pool;
  redisUrl?: string;
}

export const RATE_LIMIT_TABLE = 'rate_limits';

interface PendingBatch {
  waiters: { resolve: (d: RateDecision) => void; reject: (err: unknown) => void }[];
  /** A write of this subject's count is in flight: newcomers wait and share the next one. */
  writing: boolean;
}

export class RateLimits {
  readonly kind: StoreKind;
  private readonly limiters = new Map<string, RateLimiterAbstract>();
  private readonly batches = new Map<string, PendingBatch>();
  private readonly pool: pg.Pool | undefined;
  private readonly redis: Redis | undefined;

  constructor(opts: RateLimitStoreOptions) {
    this.kind = opts.kind;
    this.pool = opts.pool;
    if (opts.kind === 'redis') {
      if (!opts.redisUrl) throw new Error('redis rate-limit store needs a URL');
      this.redis = new Redis(opts.redisUrl, { enableOfflineQueue: true, maxRetriesPerRequest: 2, lazyConnect: false });
      // Connection errors surface on commands; the client reconnects by itself.
      this.redis.on('error', () => {});
    }
    if (opts.kind === 'postgres' && !opts.pool) throw new Error('postgres rate-limit store needs a pool');
  }

  private limiter(bucket: string, policy: { points: number; windowSeconds: number }): RateLimiterAbstract {
    const id = `${bucket}|${policy.points}|${policy.windowSeconds}`;
    let limiter = this.limiters.get(id);
    if (limiter) return limiter;
    const common = { keyPrefix: bucket, points: policy.points, duration: policy.windowSeconds };
    if (this.kind === 'memory') limiter = new RateLimiterMemory(common);
    else if (this.kind === 'redis') limiter = new RateLimiterRedis({ ...common, storeClient: this.redis });
    else {
      limiter = new RateLimiterPostgres({
        ...common,
        storeClient: this.pool,
        storeType: 'pool',
        tableName: RATE_LIMIT_TABLE,
        tableCreated: true,
        clearExpiredByTimeout: false,
      });
    }
    this.limiters.set(id, limiter);
    return limiter;
  }

  /**
   * Counts one request of `subject` in `bucket` and says whether it is allowed. With a shared store,
   * requests of one subject are counted with ONE write of N points: those that arrive while a write
   * of that subject is in flight wait for it and share the next one (so one subject's writes never
   * queue on its row in the database), and each still gets its exact place in the window — the same
   * answers as N writes.
   */
  consume(bucket: string, subject: string, policy: LimitPolicy): Promise<RateDecision> {
    if (policy.points === null) return Promise.resolve(unlimited(policy));
    if (this.kind === 'memory') return this.consumeNow(bucket, subject, policy.points, policy.windowSeconds, 1).then((r) => r[0]!);
    const id = `${bucket}|${policy.points}|${policy.windowSeconds}|${subject}`;
    let state = this.batches.get(id);
    if (!state) {
      state = { waiters: [], writing: false };
      this.batches.set(id, state);
    }
    const batch = state;
    const promise = new Promise<RateDecision>((resolve, reject) => batch.waiters.push({ resolve, reject }));
    if (!batch.writing) {
      batch.writing = true;
      setImmediate(() => void this.drain(id, batch, bucket, subject, policy.points!, policy.windowSeconds));
    }
    return promise;
  }

  /** Writes the subject's waiting requests, one write at a time, until none wait. */
  private async drain(id: string, batch: PendingBatch, bucket: string, subject: string, points: number, windowSeconds: number): Promise<void> {
    while (batch.waiters.length > 0) {
      const waiters = batch.waiters.splice(0);
      try {
        const decisions = await this.consumeNow(bucket, subject, points, windowSeconds, waiters.length);
        waiters.forEach((w, i) => w.resolve(decisions[i]!));
      } catch (err) {
        waiters.forEach((w) => w.reject(err));
      }
    }
    this.batches.delete(id);
  }

  /** One store write of `n` points; the decision of each of the `n` requests in arrival order. */
  private async consumeNow(bucket: string, subject: string, points: number, windowSeconds: number, n: number): Promise<RateDecision[]> {
    const limiter = this.limiter(bucket, { points, windowSeconds });
    let res: RateLimiterRes;
    try {
      res = await limiter.consume(storeKey(subject), n);
    } catch (err) {
      if (!(err instanceof RateLimiterRes)) throw err;
      res = err;
    }
    const before = res.consumedPoints - n;
    return Array.from({ length: n }, (_, i) => {
      const position = before + i + 1;
      return decision(position <= points, points, res, position);
    });
  }

  /** Reads the current count without changing it. */
  async peek(bucket: string, subject: string, policy: LimitPolicy): Promise<RateDecision> {
    if (policy.points === null) return unlimited(policy);
    const limiter = this.limiter(bucket, { points: policy.points, windowSeconds: policy.windowSeconds });
    const res = await limiter.get(storeKey(subject));
    if (!res) return { allowed: true, limit: policy.points, remaining: policy.points, resetAtMs: Date.now() + policy.windowSeconds * 1000, retryAfterSeconds: 0 };
    return decision(res.consumedPoints < policy.points, policy.points, res);
  }

  async reset(bucket: string, subject: string, policy: LimitPolicy): Promise<void> {
    if (policy.points === null) return;
    await this.limiter(bucket, { points: policy.points, windowSeconds: policy.windowSeconds }).delete(storeKey(subject));
  }

  /** Round-trips to the backing store; used by the status endpoint. */
  async ping(): Promise<void> {
    if (this.redis) await this.redis.ping();
    else if (this.pool) await this.pool.query(`SELECT 1 FROM ${RATE_LIMIT_TABLE} LIMIT 1`);
  }

  async close(): Promise<void> {
    if (this.redis) this.redis.disconnect();
  }
}

/** Store keys stay short whatever the subject (the PostgreSQL column is varchar(255)). */
function storeKey(subject: string): string {
  return subject.length <= 96 ? subject : `h:${createHash('sha256').update(subject).digest('base64url')}`;
}

function unlimited(policy: LimitPolicy): RateDecision {
  return { allowed: true, limit: null, remaining: 0, resetAtMs: Date.now() + policy.windowSeconds * 1000, retryAfterSeconds: 0 };
}

function decision(allowed: boolean, points: number, res: RateLimiterRes, consumed = res.consumedPoints): RateDecision {
  const ms = res.msBeforeNext > 0 ? res.msBeforeNext : 0;
  return {
    allowed,
    limit: points,
    remaining: Math.max(points - consumed, 0),
    resetAtMs: Date.now() + ms,
    retryAfterSeconds: Math.max(1, Math.ceil(ms / 1000)),
  };
}
