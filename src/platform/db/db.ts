/**
 * One small database interface over two engines: embedded PGlite and node-postgres.
 * Everything above this file speaks PostgreSQL SQL with `$1` parameters and nothing else.
 */
export type Row = Record<string, unknown>;

export interface QueryResult<T> {
  rows: T[];
  /** Rows inserted, updated or deleted (0 for a plain SELECT on PGlite). */
  rowCount: number;
}

export interface QueryOptions {
  /**
   * Keep the statement prepared on each server connection (PostgreSQL): later calls skip parsing
   * and planning. For hot statements whose text never changes; PGlite ignores it.
   */
  prepared?: boolean;
}

export interface Queryable {
  query<T = Row>(text: string, params?: readonly unknown[], opts?: QueryOptions): Promise<QueryResult<T>>;
  /** Runs a script of several statements without parameters (migrations). */
  exec(sql: string): Promise<void>;
}

export interface Db extends Queryable {
  readonly engine: 'pglite' | 'postgres';
  /** Runs `fn` inside BEGIN/COMMIT; any throw rolls back and is rethrown. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** Convenience: the first row or undefined. */
export async function queryOne<T = Row>(db: Queryable, text: string, params?: readonly unknown[]): Promise<T | undefined> {
  const { rows } = await db.query<T>(text, params);
  return rows[0];
}
