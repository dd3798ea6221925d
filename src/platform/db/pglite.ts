import { PGlite } from '@electric-sql/pglite';
import type { Db, QueryResult, Queryable } from './db.ts';

interface PgliteQueryable {
  query<T>(text: string, params?: unknown[]): Promise<{ rows: T[]; affectedRows?: number }>;
  exec(sql: string): Promise<unknown>;
}

function wrap(target: PgliteQueryable): Queryable {
  return {
    async query<T>(text: string, params?: readonly unknown[]): Promise<QueryResult<T>> {
      const res = await target.query<T>(text, params ? [...params] : undefined);
      return { rows: res.rows, rowCount: res.affectedRows ?? res.rows.length };
    },
    async exec(sql: string): Promise<void> {
      await target.exec(sql);
    },
  };
}

/** Embedded engine. PGlite has one connection: statements serialize, which is why transactions hold its lock. */
export class PgliteDb implements Db {
  readonly engine = 'pglite' as const;
  readonly pglite: PGlite;
  private readonly q: Queryable;

  private constructor(pglite: PGlite) {
    this.pglite = pglite;
    this.q = wrap(pglite);
  }

  /** Opens (creating if needed) a data directory, or an in-memory database when `dataDir` is undefined. */
  static async open(opts: { dataDir?: string; loadDataDir?: Blob | File }): Promise<PgliteDb> {
    const pglite = await PGlite.create({ dataDir: opts.dataDir, loadDataDir: opts.loadDataDir });
    return new PgliteDb(pglite);
  }

  query<T>(text: string, params?: readonly unknown[]): Promise<QueryResult<T>> {
    return this.q.query<T>(text, params);
  }

  exec(sql: string): Promise<void> {
    return this.q.exec(sql);
  }

  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    return this.pglite.transaction((tx) => fn(wrap(tx)));
  }

  async close(): Promise<void> {
    if (!this.pglite.closed) await this.pglite.close();
  }
}
