/**
 * Cache invalidation across processes. On PostgreSQL a tag is sent with NOTIFY inside the caller's
 * transaction (so it is delivered only if the change commits) and every process LISTENs; on PGlite
 * (one process) tags go straight to the local handlers. While the listening connection is down the
 * bus reports itself unreliable, and caches built on it must not serve from memory.
 */
import pg from 'pg';
import type { Db, Queryable } from './db.ts';
import { PostgresDb } from './postgres.ts';

const CHANNEL = 'mainspring_invalidate';

export interface InvalidationBus {
  /** Announces that everything tagged `tag` is stale (sent with the transaction `q`). */
  publish(q: Queryable, tag: string): Promise<void>;
  /** `tag` is a tag that went stale, or null for "everything" (after a lost connection). */
  subscribe(handler: (tag: string | null) => void): void;
  /** False while changes made by other processes might go unannounced. */
  readonly reliable: boolean;
  close(): Promise<void>;
}

export function createInvalidationBus(db: Db, onError: (err: unknown) => void = () => {}): InvalidationBus {
  return db instanceof PostgresDb ? new PgBus(db.connectionString, onError) : new LocalBus();
}

class LocalBus implements InvalidationBus {
  readonly reliable = true;
  private readonly handlers: ((tag: string | null) => void)[] = [];
  async publish(_q: Queryable, tag: string): Promise<void> {
    for (const h of this.handlers) h(tag);
  }
  subscribe(handler: (tag: string | null) => void): void {
    this.handlers.push(handler);
  }
  async close(): Promise<void> {}
}

class PgBus implements InvalidationBus {
  private readonly handlers: ((tag: string | null) => void)[] = [];
  private client: pg.Client | null = null;
  private connected = false;
  private closed = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly url: string;
  private readonly onError: (err: unknown) => void;

  constructor(url: string, onError: (err: unknown) => void) {
    this.url = url;
    this.onError = onError;
    void this.connect();
  }

  get reliable(): boolean {
    return this.connected;
  }

  async publish(q: Queryable, tag: string): Promise<void> {
    await q.query('SELECT pg_notify($1, $2)', [CHANNEL, tag]);
    // This process need not wait for its own notification to come back.
    this.emit(tag);
  }

  subscribe(handler: (tag: string | null) => void): void {
    this.handlers.push(handler);
  }

  private emit(tag: string | null): void {
    for (const h of this.handlers) h(tag);
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client({ connectionString: this.url, application_name: 'mainspring-invalidation' });
    client.on('notification', (msg) => {
      if (msg.channel === CHANNEL && msg.payload) this.emit(msg.payload);
    });
    const lost = (err?: unknown) => {
      if (this.client !== client) return;
      this.client = null;
      this.connected = false;
      // Anything may have changed while nobody was listening.
      this.emit(null);
      if (err) this.onError(err);
      client.end().catch(() => {});
      if (!this.closed) this.retryTimer = setTimeout(() => void this.connect(), 1000);
    };
    client.on('error', lost);
    client.on('end', () => lost());
    this.client = client;
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
      if (this.client !== client) return;
      this.emit(null);
      this.connected = true;
    } catch (err) {
      lost(err);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const c = this.client;
    this.client = null;
    this.connected = false;
    if (c) await c.end().catch(() => {});
  }
}
