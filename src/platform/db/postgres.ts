import pg from 'pg';
import type { Db, QueryResult, Queryable } from './db.ts';

/** Server engine: a node-postgres pool shared by every request of this process. */
export class PostgresDb implements Db {
  readonly engine = 'postgres' as const;
  readonly pool: pg.Pool;
  readonly connectionString: string;

  constructor(connectionString: string, opts: { max?: number; applicationName?: string } = {}) {
    this.connectionString = connectionString;
    this.pool = new pg.Pool({
      connectionString,
      max: opts.max ?? 20,
      application_name: opts.applicationName ?? 'mainspring',
      idleTimeoutMillis: 30_000,
    });
    // An idle client losing its connection must not crash the process; the pool replaces it.
    this.pool.on('error', () => {});
  }

  async query<T>(text: string, params?: readonly unknown[]): Promise<QueryResult<T>> {
    const res = await this.pool.query(text, params ? [...params] : undefined);
    return { rows: res.rows as T[], rowCount: res.rowCount ?? 0 };
  }

  async exec(sql: string): Promise<void> {
    await this.pool.query(sql);
  }

  async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    const tx: Queryable = {
      async query<R>(text: string, params?: readonly unknown[]) {
        const res = await client.query(text, params ? [...params] : undefined);
        return { rows: res.rows as R[], rowCount: res.rowCount ?? 0 };
      },
      async exec(sql: string) {
        await client.query(sql);
      },
    };
    try {
      await client.query('BEGIN');
      const result = await fn(tx);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
