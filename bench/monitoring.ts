/**
 * Web-monitoring benchmark: N sources (default 10,000), each due every minute, against a local site.
 *
 *   node bench/monitoring.ts        (BENCH_SOURCES=10000, BENCH_MINUTES=3, BENCH_ENGINES=pglite,postgres)
 *
 * This process runs Mainspring's real scheduler and check engine (as `serve` does) over a fresh
 * database; the site is a separate process listening on 127.0.1.1-127.0.1.50, so per-host
 * concurrency applies as with 50 real sites. Every check fetches a ~6 KB product page and runs a CSS,
 * an attribute and an XPath extractor. Sources are created through the service (validation, quota,
 * schedule) with their first check spread over the first minute. After one warm-up minute the run is
 * measured for BENCH_MINUTES: scheduled checks started per minute, start lag (check start − due time) p50/p99,
 * CPU of this process (user+system over wall time, 100% = one core) and peak RSS.
 * Goal on PostgreSQL: 10,000 checks per minute (N per minute, 1% slack for the window edges) with
 * start lag p99 < 5 s; PGlite is reported against the same line.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { closeContext, createContext } from '../src/app.ts';
import { loadConfig } from '../src/config.ts';
import { PgliteDb, PostgresDb, type Db } from '../src/platform/db/index.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SOURCES = Number(process.env.BENCH_SOURCES ?? 10_000);
const MINUTES = Number(process.env.BENCH_MINUTES ?? 3);
const ENGINES = (process.env.BENCH_ENGINES ?? 'pglite,postgres').split(',') as ('pglite' | 'postgres')[];
const PG_ADMIN_URL = process.env.BENCH_PG_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
const HOSTS = 50;

function pct(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function startSite(): Promise<{ port: number; stop(): void }> {
  const child = spawn(process.execPath, [join(ROOT, 'bench/site-child.ts')], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', (line) => resolve((JSON.parse(line) as { port: number }).port));
    child.once('exit', (code) => reject(new Error(`site exited with ${code}`)));
  });
  return { port, stop: () => child.kill('SIGTERM') };
}

async function openEngine(engine: 'pglite' | 'postgres'): Promise<{ db: Db; url?: string; drop(): Promise<void> }> {
  if (engine === 'pglite') {
    const db = await PgliteDb.open({});
    return { db, drop: async () => {} };
  }
  const name = `ms_bench_mon_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  const db = new PostgresDb(url.toString(), { max: 20 });
  return {
    db,
    url: url.toString(),
    drop: async () => {
      const a = new pg.Client({ connectionString: PG_ADMIN_URL });
      await a.connect();
      await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await a.end();
    },
  };
}

async function run(engine: 'pglite' | 'postgres', sitePort: number): Promise<string> {
  const dataDir = mkdtempSync(join(tmpdir(), 'ms-bench-mon-'));
  const store = await openEngine(engine);
  const config = loadConfig({
    DATA_DIR: dataDir,
    JWT_SECRET: 'bench-jwt-secret-0123456789abcdef0123456789',
    SECRETS_KEY: 'bench-secrets-key-0123456789abcdef0123456789',
    ALLOW_PRIVATE_URLS: '127.0.0.0/8',
    MONITOR_MAX_SOURCES: `free=${SOURCES}`,
    MONITOR_MIN_INTERVAL_MINUTES: 'free=1',
    LOG_LEVEL: 'silent',
    ...(store.url ? { DATABASE_URL: store.url } : {}),
  });
  const ctx = await createContext(config, { db: store.db });
  const user = await ctx.identity.createUser({ email: `bench-${engine}@example.com`, password: 'bench-password-1', role: 'user', tier: 'free' });
  const t0 = Date.now();
  const reqCtx = { ip: '127.0.0.1', userAgent: 'bench' };
  for (let i = 0; i < SOURCES; i++) {
    await ctx.monitoring.create(
      { id: user.id, tier: 'free' },
      {
        name: `Product ${i}`,
        url: `http://127.0.1.${(i % HOSTS) + 1}:${sitePort}/product/${i}`,
        schedule: 'every_1_minutes',
        extractors: [
          { type: 'css', selector: '.price-current', name: 'price', attribute: 'data-price' },
          { type: 'css', selector: 'h1.title', name: 'title' },
          { type: 'xpath', selector: "//span[@class='stock-status']/text()", name: 'stock' },
        ],
        retryAttempts: 1,
        timeout: 10_000,
      },
      reqCtx,
    );
  }
  // Spread the first slots over one minute, as sources created over time are.
  await ctx.db.query(
    `UPDATE schedules SET next_slot_at = now() + interval '5 seconds' + (random() * interval '60 seconds'),
                          next_run_at = NULL WHERE entity_type = 'monitor_source'`,
  );
  // With the jitter every later run gets (a tenth of the period), so the first round looks like the rest.
  await ctx.db.query(`UPDATE schedules SET next_run_at = next_slot_at + random() * make_interval(secs => jitter_seconds) WHERE entity_type = 'monitor_source'`);
  const createSeconds = (Date.now() - t0) / 1000;

  ctx.scheduler.start();
  ctx.monitorEngine.start();
  const warmupEnd = Date.now() + 65_000;
  await new Promise((r) => setTimeout(r, warmupEnd - Date.now()));
  const measureStart = new Date();
  const cpu0 = process.cpuUsage();
  let peakRss = 0;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 1000);
  await new Promise((r) => setTimeout(r, MINUTES * 60_000));
  const measureEnd = new Date();
  const cpu = process.cpuUsage(cpu0);
  // Checks due just before the end still run; then stop.
  await new Promise((r) => setTimeout(r, 10_000));
  clearInterval(sampler);
  await ctx.monitorEngine.stop();
  await ctx.scheduler.stop();

  const { rows } = await ctx.db.query<{ lag_ms: number; ok: boolean }>(
    `SELECT extract(epoch FROM (started_at - due_at)) * 1000 AS lag_ms, ok FROM monitor_checks
      WHERE trigger = 'schedule' AND started_at >= $1 AND started_at < $2`,
    [measureStart, measureEnd],
  );
  const lags = rows.map((r) => Number(r.lag_ms)).sort((a, b) => a - b);
  // Slots the scheduler fired in the same window (its own record), to tell firing from checking.
  const fired = await ctx.db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM schedule_runs r JOIN schedules s ON s.id = r.schedule_id
      WHERE s.entity_type = 'monitor_source' AND r.due_at >= $1 AND r.due_at < $2`,
    [measureStart, measureEnd],
  );
  if (process.env.BENCH_DEBUG) {
    const extra = await ctx.db.query(
      `SELECT (SELECT count(*)::int FROM monitor_checks) AS all_checks,
              (SELECT count(*)::int FROM monitor_checks WHERE due_at IS NULL) AS null_due,
              (SELECT max(n)::int FROM (SELECT count(*) AS n FROM monitor_checks GROUP BY source_id) x) AS max_per_source,
              (SELECT min(n)::int FROM (SELECT count(*) AS n FROM monitor_checks GROUP BY source_id) x) AS min_per_source,
              (SELECT count(*)::int FROM schedule_runs) AS all_runs,
              (SELECT count(*)::int FROM monitor_sources WHERE check_due_at IS NOT NULL) AS pending,
              (SELECT count(*)::int FROM schedule_runs r WHERE r.due_at >= $1 AND r.due_at < $2) AS runs_in_window,
              (SELECT count(*)::int FROM monitor_checks c WHERE c.started_at >= $1 AND c.started_at < $2) AS started_in_window`,
      [measureStart, measureEnd],
    );
    console.error(JSON.stringify({ engine, checks: rows.length, firedSlots: fired.rows[0]!.n, ...extra.rows[0] }));
  }
  const failed = rows.filter((r) => !r.ok).length;
  const perMinute = rows.length / MINUTES;
  const wallMs = measureEnd.getTime() - measureStart.getTime();
  const cpuPct = ((cpu.user + cpu.system) / 1000 / wallMs) * 100;
  await closeContext(ctx);
  await store.drop();
  rmSync(dataDir, { recursive: true, force: true });
  const goal = perMinute >= SOURCES * 0.99 && pct(lags, 99) < 5000 ? 'PASS' : 'FAIL';
  return `| ${engine} | ${SOURCES} | ${createSeconds.toFixed(0)} | ${MINUTES} | ${Math.round(perMinute)} | ${failed} | ${pct(lags, 50).toFixed(0)} | ${pct(lags, 99).toFixed(0)} | ${cpuPct.toFixed(0)}% | ${(peakRss / 1048576).toFixed(0)} | ${goal} |`;
}

const site = await startSite();
const rows: string[] = [];
try {
  for (const engine of ENGINES) rows.push(await run(engine, site.port));
} finally {
  site.stop();
}
console.log(`\nMonitoring: ${SOURCES} sources every minute (${new Date().toISOString()}, Node ${process.version})\n`);
console.log('| engine | sources | create s | minutes measured | checks/min | failed | start lag p50 ms | start lag p99 ms | CPU (this process) | peak RSS MB | goal |');
console.log('|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows) console.log(r);
