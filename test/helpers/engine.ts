/**
 * Test storage, by env switch: PGlite by default; PostgreSQL when MAINSPRING_TEST_DATABASE_URL is set.
 * Global setup migrates one template (a PGlite dump, or a PostgreSQL template database) once per run;
 * each test file gets its own copy, so files are isolated and nothing re-runs initdb or migrations.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { MIGRATIONS } from '../../src/migrations.ts';
import { migrate, PgliteDb, PostgresDb, type Db } from '../../src/platform/db/index.ts';

export const TEST_PG_URL = process.env.MAINSPRING_TEST_DATABASE_URL;
export const ENGINE: 'pglite' | 'postgres' = TEST_PG_URL ? 'postgres' : 'pglite';
const CACHE_DIR = new URL('../.cache/', import.meta.url).pathname;

function migrationsHash(): string {
  return createHash('sha256').update(JSON.stringify(MIGRATIONS)).digest('hex').slice(0, 12);
}

function templatePath(): string {
  return join(CACHE_DIR, `pglite-template-${migrationsHash()}.tar`);
}

/** The run's template database name (PostgreSQL), shared with test files through the environment. */
export function templateDbName(): string {
  const run = process.env.MAINSPRING_TEST_RUN ?? 'local';
  return `ms_tpl_${run}`;
}

export function urlForDb(name: string): string {
  const u = new URL(TEST_PG_URL!);
  u.pathname = `/${name}`;
  return u.toString();
}

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: TEST_PG_URL });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** Runs once per test run (global setup). */
export async function prepareTemplate(): Promise<void> {
  if (ENGINE === 'pglite') {
    const file = templatePath();
    if (existsSync(file)) return;
    mkdirSync(CACHE_DIR, { recursive: true });
    const db = await PgliteDb.open({});
    await migrate(db, MIGRATIONS);
    const dump = await db.pglite.dumpDataDir('none');
    await db.close();
    const tmp = `${file}.${process.pid}`;
    writeFileSync(tmp, Buffer.from(await dump.arrayBuffer()));
    renameSync(tmp, file);
    return;
  }
  const name = templateDbName();
  await admin(async (c) => {
    await c.query(`DROP DATABASE IF EXISTS ${name}`);
    await c.query(`CREATE DATABASE ${name}`);
  });
  const db = new PostgresDb(urlForDb(name), { max: 2 });
  await migrate(db, MIGRATIONS);
  await db.close();
}

/** Drops every database this run created (global teardown). */
export async function dropRunDatabases(): Promise<void> {
  if (ENGINE !== 'postgres') return;
  const run = process.env.MAINSPRING_TEST_RUN ?? 'local';
  await admin(async (c) => {
    const { rows } = await c.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname LIKE $1`, [`ms_%_${run}%`]);
    for (const r of rows) await c.query(`DROP DATABASE IF EXISTS ${r.datname} WITH (FORCE)`);
  });
}

export interface TestDb {
  db: Db;
  /** PostgreSQL URL of this copy (server mode only), for spawning real server processes on it. */
  url: string | undefined;
  drop(): Promise<void>;
}

let counter = 0;

/** A fresh, migrated database for one test file (or one test). */
export async function freshDb(): Promise<TestDb> {
  if (ENGINE === 'pglite') {
    const bytes = readFileSync(templatePath());
    const db = await PgliteDb.open({ loadDataDir: new Blob([bytes]) });
    return { db, url: undefined, drop: () => db.close() };
  }
  const run = process.env.MAINSPRING_TEST_RUN ?? 'local';
  const name = `ms_f_${run}_${process.pid}_${counter++}`;
  await admin((c) => c.query(`CREATE DATABASE ${name} TEMPLATE ${templateDbName()}`));
  const url = urlForDb(name);
  const db = new PostgresDb(url, { max: 10 });
  return {
    db,
    url,
    async drop() {
      await db.close();
      await admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}

/** A new empty PostgreSQL database (not migrated), for migration and multi-process tests. */
export async function emptyPgDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const run = process.env.MAINSPRING_TEST_RUN ?? 'local';
  const name = `ms_e_${run}_${process.pid}_${counter++}`;
  await admin((c) => c.query(`CREATE DATABASE ${name}`));
  return {
    url: urlForDb(name),
    drop: () => admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => undefined),
  };
}
