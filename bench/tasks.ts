/**
 * Task queue benchmark: BENCH_TASKS tasks (default 10,000) through the real HTTP API of a Mainspring
 * server child process, with 8 workers in this process long-polling heartbeats (`wait`) and
 * completing each task with PUT. On PGlite and on PostgreSQL (a throwaway database).
 *
 *   node bench/tasks.ts
 *
 * Reports end-to-end tasks/s (first create → last completion) and pickup latency (the server's
 * created_at → the moment the worker holds the task) p50/p99. Goal on PostgreSQL: >= 1,000 tasks/s,
 * pickup p50 <= 20 ms. Each worker completes a task with `claim_next` (the worker library's way):
 * one PUT reports it and hands back the next one.
 *
 *   BENCH_TASKS=2000 BENCH_ENGINES=postgres   fewer tasks, one engine
 *   BENCH_RATE=400                            creators offer this many tasks/s instead of as many as
 *                                             they can: pickup latency below saturation, not backlog
 *   BENCH_CREATORS=N                          concurrent creators (16 unpaced, 64 paced)
 *   BENCH_WARMUP=N                            tasks run first the same way, not measured (1,000)
 *   BENCH_CPU_PROF=<dir>                      profile the server child (bench/profile-top.ts)
 *
 * Also printed: CPU seconds of the server, of this process and of everything else (PostgreSQL,
 * the kernel); the server's read/write system calls per task (/proc); PostgreSQL commits and row
 * writes per task (pg_stat_database).
 *
 * Unpaced, 16 creators outrun 8 workers whenever the server is the limit, so pickup latency is then
 * mostly the backlog; the paced run shows the latency of the queue itself.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TASKS = Number(process.env.BENCH_TASKS ?? 10_000);
const WORKERS = 8;
// Paced runs need enough creators in flight to offer the rate while each request waits for its answer.
const CREATORS = Number(process.env.BENCH_CREATORS ?? (Number(process.env.BENCH_RATE ?? 0) > 0 ? 64 : 16));
const RATE = Number(process.env.BENCH_RATE ?? 0);
/** Tasks run first, the same way, and not measured. */
const WARMUP = Number(process.env.BENCH_WARMUP ?? 1000);
const PG_ADMIN_URL = process.env.BENCH_PG_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
/** BENCH_CPU_PROF=<dir>: start the server child with --cpu-prof into <dir> (read with bench/profile-top.ts). */
const CPU_PROF_DIR = process.env.BENCH_CPU_PROF;

/** CPU seconds (user + system) a process has used so far, from /proc (Linux); NaN elsewhere. */
function cpuSecondsOf(pid: number | undefined): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

/** Read and write system calls a process has made so far, from /proc (Linux); NaN elsewhere. */
function syscallsOf(pid: number | undefined): { reads: number; writes: number } {
  try {
    const io = readFileSync(`/proc/${pid}/io`, 'utf8');
    const field = (name: string) => Number(new RegExp(`^${name}: (\\d+)$`, 'm').exec(io)?.[1] ?? NaN);
    return { reads: field('syscr'), writes: field('syscw') };
  } catch {
    return { reads: NaN, writes: NaN };
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Busy CPU seconds of the whole machine so far (all cores), from /proc/stat; NaN elsewhere. */
function machineBusySeconds(): number {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal
    return (f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!) / 100;
  } catch {
    return NaN;
  }
}

async function startServer(engine: string, env: Record<string, string>): Promise<{ child: ChildProcess; base: string }> {
  const port = await freePort();
  const flags: string[] = [];
  if (CPU_PROF_DIR) {
    mkdirSync(CPU_PROF_DIR, { recursive: true });
    flags.push('--cpu-prof', `--cpu-prof-dir=${CPU_PROF_DIR}`, `--cpu-prof-name=tasks-${engine}.cpuprofile`);
  }
  const child = spawn(process.execPath, [...flags, 'src/main.ts', 'serve'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    try {
      if ((await fetch(`${base}/health`)).ok) return { child, base };
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  child.kill('SIGKILL');
  throw new Error('server did not start');
}

// The benchmark shares the machine with the server: node:http with kept-alive connections costs it
// about half the CPU of fetch per request, leaving more for the server and the database.
const agent = new Agent({ keepAlive: true, maxSockets: 64 });

function call(base: string, method: string, path: string, token: string | null, body?: unknown): Promise<Record<string, unknown>> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      `${base}${path}`,
      {
        method,
        agent,
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          try {
            const json = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
            if ((res.statusCode ?? 500) >= 400) reject(new Error(`${method} ${path}: ${res.statusCode} ${JSON.stringify(json)}`));
            else resolve(json);
          } catch (err) {
            reject(err instanceof Error ? err : new Error(String(err)));
          }
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** The benchmark database's transaction and row-write counters (PostgreSQL's own statistics). */
async function pgCounters(database: string | null): Promise<{ commits: number; writes: number } | null> {
  if (!database) return null;
  const c = new pg.Client({ connectionString: PG_ADMIN_URL });
  await c.connect();
  try {
    // Backends report their counters at most once a second: give the last ones time to land.
    await c.query('SELECT pg_stat_clear_snapshot()');
    const { rows } = await c.query<{ commits: string; writes: string }>(
      `SELECT xact_commit + xact_rollback AS commits, tup_inserted + tup_updated + tup_deleted AS writes FROM pg_stat_database WHERE datname = $1`,
      [database],
    );
    return rows[0] ? { commits: Number(rows[0].commits), writes: Number(rows[0].writes) } : null;
  } finally {
    await c.end();
  }
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

async function runOnce(engine: 'pglite' | 'postgres') {
  const env: Record<string, string> = {
    MAINSPRING_ADMIN_PASSWORD: 'bench-admin-password',
    RATE_LIMITS: JSON.stringify({ tasks: { free: 100_000_000, anonymous: 100_000_000 }, monitoring: { anonymous: 100_000_000 } }),
    JWT_SECRET: randomBytes(32).toString('base64url'),
    SECRETS_KEY: randomBytes(32).toString('base64url'),
  };
  const cleanup: (() => Promise<void> | void)[] = [];
  let database: string | null = null;
  if (engine === 'postgres') {
    const name = `ms_bench_tasks_${randomBytes(4).toString('hex')}`;
    database = name;
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
    await admin.end();
    const url = new URL(PG_ADMIN_URL);
    url.pathname = `/${name}`;
    env.DATABASE_URL = url.toString();
    cleanup.push(async () => {
      const c = new pg.Client({ connectionString: PG_ADMIN_URL });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    });
  } else {
    const dir = mkdtempSync(join(tmpdir(), 'ms-bench-tasks-'));
    env.DATA_DIR = dir;
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  }
  const { child, base } = await startServer(engine, env);
  cleanup.unshift(async () => {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    // The CPU profile is written on a clean exit.
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 10_000))]);
  });
  try {
    const reg = await call(base, 'POST', '/api/auth/register', null, { email: 'bench@example.com', password: 'correct-horse-battery', name: 'Bench' });
    const token = ((reg.data as Record<string, unknown>).tokens as { access_token: string }).access_token;
    const workerIds: string[] = [];
    for (let i = 0; i < WORKERS; i++) {
      const w = await call(base, 'POST', '/api/v1/workers/register', token, { hostname: `bench-${i}`, capabilities: ['building'], resources: { cpu: 1 } });
      workerIds.push(String(w.worker_id));
    }
    type Held = { id: string; created_at: string } | null;
    /** Creates `total` tasks (paced when BENCH_RATE is set) while the workers run them; returns pickup latencies. */
    const runPhase = async (label: string, total: number): Promise<{ pickups: number[]; started: number; ended: number }> => {
      const pickups: number[] = [];
      let completed = 0;
      let lastCompletion = 0;
      let creating = true;
      const started = Date.now();
      let next = 0;
      const creators = Array.from({ length: CREATORS }, async () => {
        while (next < total) {
          const n = next++;
          if (RATE > 0) {
            const due = started + (n * 1000) / RATE;
            if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
          }
          await call(base, 'POST', '/api/v1/tasks', token, { title: `${label} ${n + 1}`, type: 'building', priority: 'normal' });
        }
      });
      const workers = workerIds.map(async (id) => {
        let task = null as Held;
        while (completed < total) {
          if (!task) {
            const hb = await call(base, 'POST', '/api/v1/workers/heartbeat', token, { worker_id: id, status: 'idle', current_task: null, wait: creating ? 2 : 0.2 });
            task = hb.assigned_task as Held;
            if (!task) continue;
          }
          pickups.push(Date.now() - Date.parse(task.created_at));
          // The completion asks for the worker's next task (as the worker library does).
          const done = await call(base, 'PUT', `/api/v1/tasks/${task.id}`, token, { status: 'completed', worker_id: id, result: { ok: true }, claim_next: true });
          completed++;
          lastCompletion = Date.now();
          task = done.next_task as Held;
        }
      });
      await Promise.all(creators);
      creating = false;
      await Promise.all(workers);
      // Idle workers may still sit in a long-poll after the last completion: that is not queue time.
      return { pickups, started, ended: lastCompletion };
    };
    // Warm-up (not measured): the server's JIT, prepared statements and caches, as after a while in service.
    if (WARMUP > 0) await runPhase('warm-up', WARMUP);
    const serverCpu0 = cpuSecondsOf(child.pid);
    const serverIo0 = syscallsOf(child.pid);
    const clientCpu0 = process.cpuUsage();
    const machine0 = machineBusySeconds();
    const pg0 = await pgCounters(database);
    const { pickups, started, ended } = await runPhase('bench', TASKS);
    const completed = pickups.length;
    const seconds = (ended - started) / 1000;
    const serverCpu = cpuSecondsOf(child.pid) - serverCpu0;
    const serverIo = syscallsOf(child.pid);
    const clientUsage = process.cpuUsage(clientCpu0);
    const clientCpu = (clientUsage.user + clientUsage.system) / 1e6;
    // Everything else: PostgreSQL (on that engine) and whatever else the machine was doing.
    const otherCpu = machineBusySeconds() - machine0 - serverCpu - clientCpu;
    await new Promise((r) => setTimeout(r, 1200));
    const pg1 = await pgCounters(database);
    const perTask = (v: number | undefined, w: number | undefined) => (v === undefined || w === undefined ? '—' : ((w - v) / completed).toFixed(1));
    const sorted = pickups.sort((a, b) => a - b);
    return {
      engine, completed, seconds, perSecond: completed / seconds, p50: pct(sorted, 50), p99: pct(sorted, 99), serverCpu, clientCpu, otherCpu,
      commitsPerTask: perTask(pg0?.commits, pg1?.commits), writesPerTask: perTask(pg0?.writes, pg1?.writes),
      serverSyscalls: `${perTask(serverIo0.reads, serverIo.reads)} / ${perTask(serverIo0.writes, serverIo.writes)}`,
    };
  } finally {
    for (const c of cleanup) await c();
    agent.destroy();
  }
}

console.log(
  `task queue benchmark — ${new Date().toISOString()}, ${TASKS} tasks, ${WORKERS} workers (long-poll, claim_next), ${CREATORS} concurrent creators` +
    (RATE > 0 ? ` offering ${RATE} tasks/s` : ' (unpaced)'),
);
const rows = [];
const engines = (process.env.BENCH_ENGINES ?? 'pglite,postgres').split(',') as ('pglite' | 'postgres')[];
for (const engine of engines) rows.push(await runOnce(engine));
console.log('| engine | tasks completed | seconds | tasks/s | pickup p50 ms | pickup p99 ms | server CPU s | bench CPU s | other CPU s | server reads / writes (syscalls) per task | PG commits/task | PG row writes/task | goal |');
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  const goal = r.engine === 'postgres' ? (r.perSecond >= 1000 && r.p50 <= 20 ? 'PASS' : 'FAIL') + ' (>= 1,000/s, p50 <= 20 ms)' : '—';
  console.log(`| ${r.engine} | ${r.completed} | ${r.seconds.toFixed(1)} | ${Math.round(r.perSecond)} | ${Math.round(r.p50)} | ${Math.round(r.p99)} | ${r.serverCpu.toFixed(1)} | ${r.clientCpu.toFixed(1)} | ${r.otherCpu.toFixed(1)} | ${r.serverSyscalls} | ${r.commitsPerTask} | ${r.writesPerTask} | ${goal} |`);
}
