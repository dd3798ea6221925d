/**
 * Webhook delivery and scheduler benchmark, on PGlite and PostgreSQL.
 *
 *   node bench/webhooks.ts                   (BENCH_EVENTS=5000, BENCH_SCHEDULES=10000)
 *
 * Deliveries: this process runs Mainspring's real delivery engine (outbox dispatcher + sender, SSRF
 * guard on, private address allowed for the local receiver) over a fresh database; the receiver is a
 * separate process. Events are emitted through the outbox in transactions of 100, as fast as they go;
 * throughput = events / (last receipt - first emit), latency = receipt time - event commit time.
 * Goal: >= 1,000 deliveries/s on PostgreSQL with p50 < 100 ms.
 *
 * Scheduler: 10,000 interval schedules with a 60 s period, their due times spread over one minute as
 * schedules created over time are; start lag = firing time - due time. Goal: p99 < 2 s. A second run
 * puts all of them on the same instant (the worst case) and is reported as it is.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpus } from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { DeliveryEngine, DEFAULT_RETRY_SCHEDULE } from '../src/domains/events/delivery.ts';
import { emitEvent } from '../src/domains/events/outbox.ts';
import { MIGRATIONS } from '../src/migrations.ts';
import { createSecretBox } from '../src/platform/crypto/secretbox.ts';
import { migrate, PgliteDb, PostgresDb, type Db } from '../src/platform/db/index.ts';
import { createHttpOut, parseAllowPrivate } from '../src/platform/http-out/index.ts';
import { Scheduler, upsertSchedule } from '../src/platform/jobs/index.ts';
import { Registry } from 'prom-client';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const EVENTS = Number(process.env.BENCH_EVENTS ?? 5000);
const SCHEDULES = Number(process.env.BENCH_SCHEDULES ?? 10000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 128);
const PG_ADMIN_URL = process.env.BENCH_PG_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
const log = { error: (obj: unknown, msg: string) => console.error(msg, obj) };

function pct(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function withDatabase<T>(engine: 'pglite' | 'postgres', fn: (db: Db) => Promise<T>): Promise<T> {
  if (engine === 'pglite') {
    const db = await PgliteDb.open({});
    try {
      await migrate(db, MIGRATIONS);
      return await fn(db);
    } finally {
      await db.close();
    }
  }
  const name = `ms_bench_wh_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  const db = new PostgresDb(url.toString(), { max: 20 });
  try {
    await migrate(db, MIGRATIONS);
    return await fn(db);
  } finally {
    await db.close();
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  }
}

async function createUser(db: Db): Promise<string> {
  const id = `usr_bench${randomBytes(4).toString('hex')}`;
  await db.query(`INSERT INTO users (id, email, password_hash) VALUES ($1, $2, 'x')`, [id, `${id}@bench.local`]);
  return id;
}

interface ReceiverReport {
  count: number;
  first: number;
  last: number;
  latencies: number[];
}

async function startReceiverChild() {
  const child = spawn(process.execPath, ['bench/receiver-child.ts'], { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  const queue: ((line: string) => void)[] = [];
  lines.on('line', (l) => queue.shift()?.(l));
  const next = () => new Promise<string>((resolve) => queue.push(resolve));
  const ready = JSON.parse(await next()) as { ready: number };
  return {
    url: `http://127.0.0.1:${ready.ready}/hook`,
    async report(): Promise<ReceiverReport> {
      const p = next();
      child.stdin!.write('report\n');
      return JSON.parse(await p) as ReceiverReport;
    },
    stop() {
      child.stdin!.write('exit\n');
    },
  };
}

async function benchDeliveries(engine: 'pglite' | 'postgres') {
  return withDatabase(engine, async (db) => {
    const receiver = await startReceiverChild();
    const box = createSecretBox('bench-secrets-key-0123456789abcdef0123456789');
    const userId = await createUser(db);
    await db.query(
      `INSERT INTO webhook_subscriptions (id, owner_id, face, url, events, secret_sealed) VALUES ('wh_bench', $1, 'tasks', $2, $3, $4)`,
      [userId, receiver.url, ['task.*'], box.seal('whsec_' + randomBytes(32).toString('base64'))],
    );
    const engineInstance = new DeliveryEngine({
      db,
      secretBox: box,
      transport: createHttpOut({ allowPrivate: parseAllowPrivate('127.0.0.1/32'), userAgent: 'Mainspring/bench' }),
      registry: new Registry(),
      log,
      options: { retryScheduleSeconds: DEFAULT_RETRY_SCHEDULE, timeoutMs: 15000, concurrency: CONCURRENCY, batchSize: 200, pollIntervalMs: 200 },
    });
    engineInstance.start();
    const started = Date.now();
    for (let i = 0; i < EVENTS; i += 100) {
      await db.transaction(async (tx) => {
        for (let j = i; j < Math.min(i + 100, EVENTS); j++) {
          await emitEvent(tx, userId, 'task.completed', { task_id: `task-${j}`, status: 'completed' });
        }
      });
    }
    const emitted = Date.now();
    let report = await receiver.report();
    const deadline = Date.now() + 300_000;
    while (report.count < EVENTS && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      report = await receiver.report();
    }
    await engineInstance.stop();
    receiver.stop();
    const sorted = [...report.latencies].sort((a, b) => a - b);
    return {
      engine,
      delivered: report.count,
      emitSeconds: (emitted - started) / 1000,
      perSecond: report.count / ((report.last - started) / 1000),
      p50: pct(sorted, 50),
      p99: pct(sorted, 99),
    };
  });
}

async function benchScheduler(engine: 'pglite' | 'postgres', spreadSeconds: number) {
  return withDatabase(engine, async (db) => {
    const userId = await createUser(db);
    const lags: number[] = [];
    const fired = new Set<string>();
    const scheduler = new Scheduler({ db, logger: log, pollIntervalMs: 200, batchSize: 500 });
    scheduler.on('bench', async (firing) => {
      // Only each schedule's first due time counts: with a 60 s spread the earliest ones come round again.
      if (fired.has(firing.entityId)) return;
      fired.add(firing.entityId);
      lags.push(Date.now() - firing.dueAt.getTime());
    });
    // Due times start 20 s from now, so creating 10,000 rows is not part of the measurement.
    const base = Date.now() + 20_000;
    for (let i = 0; i < SCHEDULES; i += 500) {
      await db.transaction(async (tx) => {
        for (let j = i; j < Math.min(i + 500, SCHEDULES); j++) {
          await upsertSchedule(tx, {
            entityType: 'bench',
            entityId: `e${j}`,
            ownerId: userId,
            spec: { kind: 'interval', seconds: 60 },
            startAt: new Date(base + (spreadSeconds ? (j / SCHEDULES) * spreadSeconds * 1000 : 0)),
          });
        }
      });
    }
    const created = Date.now();
    if (created > base) throw new Error(`creating ${SCHEDULES} schedules took longer than the 20 s lead`);
    scheduler.start();
    const deadline = base + spreadSeconds * 1000 + 60_000;
    while (lags.length < SCHEDULES && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    await scheduler.stop();
    const sorted = lags.sort((a, b) => a - b);
    return { engine, spread: spreadSeconds, fired: lags.length, p50: pct(sorted, 50), p99: pct(sorted, 99), max: sorted[sorted.length - 1] ?? NaN };
  });
}

const fmt = (n: number, d = 0) => (Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }) : 'n/a');

console.log(`webhook + scheduler benchmark — ${new Date().toISOString()}, ${cpus().length} cores, node ${process.version}`);
const deliveries = [];
for (const engine of ['pglite', 'postgres'] as const) deliveries.push(await benchDeliveries(engine));
console.log(`\nDeliveries (${EVENTS} events, concurrency ${CONCURRENCY}, receiver in its own process)`);
console.log('| engine | delivered | deliveries/s | p50 ms | p99 ms | goal |');
console.log('|---|---|---|---|---|---|');
for (const r of deliveries) {
  const goal = r.engine === 'postgres' ? (r.perSecond >= 1000 && r.p50 < 100 ? 'PASS (>= 1,000/s, p50 < 100 ms)' : 'FAIL (>= 1,000/s, p50 < 100 ms)') : '—';
  console.log(`| ${r.engine} | ${r.delivered} | ${fmt(r.perSecond)} | ${fmt(r.p50)} | ${fmt(r.p99)} | ${goal} |`);
}
const sched = [];
for (const engine of ['pglite', 'postgres'] as const) {
  sched.push(await benchScheduler(engine, 60));
  sched.push(await benchScheduler(engine, 0));
}
console.log(`\nScheduler (${SCHEDULES} interval schedules, period 60 s)`);
console.log('| engine | due times | fired | lag p50 ms | lag p99 ms | lag max ms | goal p99 < 2 s |');
console.log('|---|---|---|---|---|---|---|');
for (const r of sched) {
  const goal = r.spread ? (r.p99 < 2000 && r.fired === SCHEDULES ? 'PASS' : 'FAIL') : 'worst case, reported';
  console.log(`| ${r.engine} | ${r.spread ? `spread over ${r.spread} s` : 'all at one instant'} | ${r.fired} | ${fmt(r.p50)} | ${fmt(r.p99)} | ${fmt(r.max)} | ${goal} |`);
}
