import { join } from 'node:path';
import type { Db } from './db.ts';
import { PgliteDb } from './pglite.ts';
import { PostgresDb } from './postgres.ts';

export type { Db, Queryable, QueryResult, Row } from './db.ts';
export { queryOne } from './db.ts';
export { createInvalidationBus, type InvalidationBus } from './invalidation.ts';
export { migrate, type Migration } from './migrate.ts';
export { PgliteDb } from './pglite.ts';
export { PostgresDb } from './postgres.ts';

/** Opens the main database: PostgreSQL when a URL is given, else PGlite under `dataDir/pg`. */
export async function openDb(opts: { databaseUrl?: string; dataDir: string; poolSize?: number }): Promise<Db> {
  if (opts.databaseUrl) return new PostgresDb(opts.databaseUrl, { max: opts.poolSize });
  return PgliteDb.open({ dataDir: join(opts.dataDir, 'pg') });
}

/** SQLSTATE of a database error, when there is one. */
export function sqlState(err: unknown): string | undefined {
  if (err && typeof err === 'object' && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}

export const UNIQUE_VIOLATION = '23505';
