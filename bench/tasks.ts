/**
 * Task queue benchmark: BENCH_TASKS tasks (default 10,000) through the real HTTP API of a Mainspring
 * server child process, with 8 workers in this process long-polling heartbeats (`wait`) and
 * completing each task with PUT. On PGlite and on PostgreSQL (a throwaway database).
 *
 *   node bench/tasks.ts
 *
 * Reports end-to-end tasks/s (first create → last completion) and pickup latency (the server's
 * created_at → the moment the worker holds the task) p50/p99. Goal on PostgreSQL: >= 1,000 tasks/s,
 * pickup p50 <= 20 ms.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TASKS = Number(process.env.BENCH_TASKS ?? 10_000);
const WORKERS = 8;
const CREATORS = 16;
const PG_ADMIN_URL = process.env.BENCH_PG_URL || 'postgres://postgres@127.0.0.1:5432/postgres';

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

async function startServer(env: Record<string, string>): Promise<{ child: ChildProcess; base: string }> {
  const port = await freePort();
  const child = spawn(process.execPath, ['src/main.ts', 'serve'], {
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

async function call(base: string, method: string, path: string, token: string | null, body?: unknown) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = (await res.json()) as Record<string, unknown>;
  if (res.status >= 400) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
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
  if (engine === 'postgres') {
    const name = `ms_bench_tasks_${randomBytes(4).toString('hex')}`;
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
  const { child, base } = await startServer(env);
  cleanup.unshift(() => {
    child.kill('SIGTERM');
  });
  try {
    const reg = await call(base, 'POST', '/api/auth/register', null, { email: 'bench@example.com', password: 'correct-horse-battery', name: 'Bench' });
    const token = ((reg.data as Record<string, unknown>).tokens as { access_token: string }).access_token;
    const workerIds: string[] = [];
    for (let i = 0; i < WORKERS; i++) {
      const w = await call(base, 'POST', '/api/v1/workers/register', token, { hostname: `bench-${i}`, capabilities: ['building'], resources: { cpu: 1 } });
      workerIds.push(String(w.worker_id));
    }
    const pickups: number[] = [];
    let completed = 0;
    let creating = true;
    const started = Date.now();
    let next = 0;
    const creators = Array.from({ length: CREATORS }, async () => {
      while (next < TASKS) {
        next++;
        await call(base, 'POST', '/api/v1/tasks', token, { title: `bench ${next}`, type: 'building', priority: 'normal' });
      }
    });
    const workers = workerIds.map(async (id) => {
      while (completed < TASKS) {
        const hb = await call(base, 'POST', '/api/v1/workers/heartbeat', token, { worker_id: id, status: 'idle', current_task: null, wait: creating ? 2 : 0.2 });
        const task = hb.assigned_task as { id: string; created_at: string } | null;
        if (!task) continue;
        pickups.push(Date.now() - Date.parse(task.created_at));
        await call(base, 'PUT', `/api/v1/tasks/${task.id}`, token, { status: 'completed', worker_id: id, result: { ok: true } });
        completed++;
      }
    });
    await Promise.all(creators);
    creating = false;
    await Promise.all(workers);
    const seconds = (Date.now() - started) / 1000;
    const sorted = pickups.sort((a, b) => a - b);
    return { engine, completed, seconds, perSecond: completed / seconds, p50: pct(sorted, 50), p99: pct(sorted, 99) };
  } finally {
    for (const c of cleanup) await c();
  }
}

console.log(`task queue benchmark — ${new Date().toISOString()}, ${TASKS} tasks, ${WORKERS} workers (long-poll), ${CREATORS} concurrent creators`);
const rows = [];
const engines = (process.env.BENCH_ENGINES ?? 'pglite,postgres').split(',') as ('pglite' | 'postgres')[];
for (const engine of engines) rows.push(await runOnce(engine));
console.log('| engine | tasks completed | seconds | tasks/s | pickup p50 ms | pickup p99 ms | goal |');
console.log('|---|---|---|---|---|---|---|');
for (const r of rows) {
  const goal = r.engine === 'postgres' ? (r.perSecond >= 1000 && r.p50 <= 20 ? 'PASS' : 'FAIL') + ' (>= 1,000/s, p50 <= 20 ms)' : '—';
  console.log(`| ${r.engine} | ${r.completed} | ${r.seconds.toFixed(1)} | ${Math.round(r.perSecond)} | ${Math.round(r.p50)} | ${Math.round(r.p99)} | ${goal} |`);
}
