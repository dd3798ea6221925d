/**
 * HTTP benchmark: real Mainspring server processes on both engines, plus a bare Fastify + pg
 * baseline, each loaded by autocannon from this process (server and load generator never share
 * a process). One server runs at a time so they do not compete for the cores.
 *
 *   npm run bench                      10 s per target (plus 2 s of warm-up that is not counted)
 *   BENCH_SECONDS=30 npm run bench     longer runs
 *   BENCH_PG_URL=postgres://...        PostgreSQL server to create the throwaway database on
 *                                      (default postgres://postgres@127.0.0.1:5432/postgres)
 *   BENCH_CPU_PROF=<dir>               start every server child with --cpu-prof into <dir>
 *                                      (summarise with `node bench/profile-top.ts <file>`)
 *   BENCH_HEALTH=0                     skip the GET /health runs
 *   BENCH_AUTH_CACHE_TTL=0             no in-memory credential cache: every request reads the database
 *
 * Goals: PGlite GET /api/v1/users/me >= 2,000 req/s; PostgreSQL GET /api/v1/users/me >= 85% of the
 * baseline's req/s. The exit code is 0 whether goals pass or fail; it is 1 only when the benchmark
 * itself could not run. Every child process, the temporary data directory and the throwaway
 * database are removed on the way out, also after an error, a signal or the overall time limit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import autocannon, { type Result } from 'autocannon';
import pg from 'pg';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SECONDS = positiveInt('BENCH_SECONDS', 10);
const WARMUP_SECONDS = 2;
const CONNECTIONS = 50;
const PG_ADMIN_URL = process.env.BENCH_PG_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
const CPU_PROF_DIR = process.env.BENCH_CPU_PROF ? resolve(process.env.BENCH_CPU_PROF) : undefined;
// BENCH_HEALTH=0 skips the GET /health runs (useful with BENCH_CPU_PROF: the profile then holds only the authenticated GET).
const HEALTH = process.env.BENCH_HEALTH !== '0';
const STARTUP_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;
const PGLITE_GOAL_RPS = 2000;
const BASELINE_GOAL_RATIO = 0.85;
// Raised so the benchmark user is never throttled, yet every request still goes through the limiter.
const RATE_LIMITS = JSON.stringify({ tasks: { free: 100_000_000, anonymous: 100_000_000 } });
const JWT_ISSUER = 'mainspring';
const JWT_AUDIENCE = 'mainspring-api';

function positiveInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got "${raw}"`);
  return n;
}

// ---------------------------------------------------------------------------------------------
// Child processes and cleanup

interface ServerProcess {
  name: string;
  child: ChildProcess;
  baseUrl: string;
  exited: Promise<void>;
  hasExited(): boolean;
  output(): string;
}

const children = new Set<ChildProcess>();
const tempDirs: string[] = [];
let benchDatabase: string | undefined;
let currentLoad: { stop(): void } | undefined;

async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => done(port));
    });
  });
}

/** A clean environment: nothing from the caller's shell leaks into server configuration. */
function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const k of ['PATH', 'HOME', 'TMPDIR', 'LANG']) {
    const v = process.env[k];
    if (v) env[k] = v;
  }
  return env;
}

async function startServer(name: string, script: string[], env: Record<string, string>, opts: { ipc?: boolean } = {}): Promise<ServerProcess> {
  const port = await freePort();
  const flags: string[] = [];
  if (CPU_PROF_DIR) {
    mkdirSync(CPU_PROF_DIR, { recursive: true });
    flags.push('--cpu-prof', `--cpu-prof-dir=${CPU_PROF_DIR}`, `--cpu-prof-name=${name.replace(/[^A-Za-z0-9_-]+/g, '-')}.cpuprofile`);
  }
  const child = spawn(process.execPath, [...flags, ...script], {
    cwd: ROOT,
    env: { ...baseEnv(), ...env, HOST: '127.0.0.1', PORT: String(port) },
    stdio: opts.ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let tail = '';
  const keep = (chunk: Buffer) => {
    tail = (tail + chunk.toString('utf8')).slice(-8000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let done = false;
  const exited = new Promise<void>((settle) => {
    child.once('exit', () => {
      done = true;
      children.delete(child);
      settle();
    });
  });
  const server: ServerProcess = { name, child, baseUrl: `http://127.0.0.1:${port}`, exited, hasExited: () => done, output: () => tail };

  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (done) throw new Error(`${name} exited during start-up (code ${child.exitCode}, signal ${child.signalCode}):\n${tail}`);
    try {
      const res = await fetch(`${server.baseUrl}/health`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.ok) return server;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  await stopServer(server);
  throw new Error(`${name} did not answer GET /health within ${STARTUP_TIMEOUT_MS / 1000} s:\n${tail}`);
}

async function stopServer(server: ServerProcess): Promise<void> {
  if (server.hasExited()) return;
  server.child.kill('SIGTERM');
  const timer = setTimeout(() => server.child.kill('SIGKILL'), STOP_TIMEOUT_MS);
  await server.exited;
  clearTimeout(timer);
}

async function adminQuery(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

function databaseUrl(name: string): string {
  const u = new URL(PG_ADMIN_URL);
  u.pathname = `/${name}`;
  return u.toString();
}

let cleaning: Promise<void> | undefined;
/** Stops whatever is still running and removes what the run created. Safe to call more than once. */
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    currentLoad?.stop();
    await Promise.all(
      [...children].map(async (child) => {
        const exited = new Promise<void>((settle) => child.once('exit', () => settle()));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }),
    );
    if (benchDatabase) {
      const name = benchDatabase;
      await adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch((err: unknown) => {
        console.error(`could not drop database ${name}: ${String(err)}`);
      });
      benchDatabase = undefined;
    }
    for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  })();
  return cleaning;
}

// Last resort if the process is leaving without having cleaned up: no child outlives it.
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: stopping servers and cleaning up`);
    void cleanup().finally(() => process.exit(130));
  });
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers

interface Reply {
  status: number;
  headers: Headers;
  body: unknown;
  text: string;
}

async function call(baseUrl: string, method: string, path: string, opts: { body?: unknown; token?: string } = {}): Promise<Reply> {
  const headers: Record<string, string> = {};
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${baseUrl}${path}`, {
    method,
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  return { status: res.status, headers: res.headers, body, text };
}

interface BenchUser {
  id: string;
  token: string;
}

/** Registers a normal (non-admin) account through the HelixCode face, logs in, and checks /users/me. */
async function registerAndLogin(baseUrl: string): Promise<BenchUser> {
  const tag = randomBytes(5).toString('hex');
  const username = `bench_${tag}`;
  const password = `bench-${randomBytes(12).toString('base64url')}`;
  const reg = await call(baseUrl, 'POST', '/api/v1/auth/register', {
    body: { username, email: `${username}@example.com`, password, display_name: 'Benchmark User' },
  });
  if (reg.status !== 201) throw new Error(`register failed: ${reg.status} ${reg.text}`);
  const login = await call(baseUrl, 'POST', '/api/v1/auth/login', { body: { username, password } });
  const token = (login.body as { token?: unknown } | undefined)?.token;
  if (login.status !== 200 || typeof token !== 'string') throw new Error(`login failed: ${login.status} ${login.text}`);
  const me = await call(baseUrl, 'GET', '/api/v1/users/me', { token });
  const user = (me.body as { user?: { id?: unknown; roles?: unknown } } | undefined)?.user;
  if (me.status !== 200 || typeof user?.id !== 'string') throw new Error(`GET /api/v1/users/me failed: ${me.status} ${me.text}`);
  if (JSON.stringify(user.roles) !== '["user"]') throw new Error(`benchmark user is not a normal user: ${me.text}`);
  return { id: user.id, token };
}

/** X-RateLimit-Remaining after one more authenticated request (that request is counted too). */
async function remaining(baseUrl: string, token: string): Promise<number> {
  const r = await call(baseUrl, 'GET', '/api/v1/users/me', { token });
  if (r.status !== 200) throw new Error(`GET /api/v1/users/me: ${r.status} ${r.text}`);
  const v = Number(r.headers.get('x-ratelimit-remaining'));
  if (!Number.isFinite(v)) throw new Error('GET /api/v1/users/me has no X-RateLimit-Remaining header');
  return v;
}

// ---------------------------------------------------------------------------------------------
// Load

interface Row {
  label: string;
  result: Result;
  /** Requests written by autocannon in warm-up plus measurement (answered or not). */
  sent: number;
  /** Requests the rate limiter counted over the same span, when checked. */
  limiterCounted?: number;
}

async function load(url: string, seconds: number, headers: Record<string, string>): Promise<Result> {
  const instance = autocannon({ url, connections: CONNECTIONS, duration: seconds, timeout: 10, headers });
  currentLoad = instance;
  try {
    return await instance;
  } finally {
    currentLoad = undefined;
  }
}

/** 2 s of warm-up (not counted), then the measured run. */
async function measure(label: string, url: string, headers: Record<string, string> = {}): Promise<Row> {
  process.stdout.write(`  ${label}: warm-up ${WARMUP_SECONDS} s, measuring ${SECONDS} s ... `);
  const warm = await load(url, WARMUP_SECONDS, headers);
  const result = await load(url, SECONDS, headers);
  console.log(`${Math.round(result.requests.average)} req/s`);
  return { label, result, sent: warm.requests.sent + result.requests.sent };
}

/** Measures an authenticated GET and checks that the rate limiter counted the load. */
async function measureMe(label: string, server: ServerProcess, user: BenchUser): Promise<Row> {
  const before = await remaining(server.baseUrl, user.token);
  const row = await measure(label, `${server.baseUrl}/api/v1/users/me`, { authorization: `Bearer ${user.token}` });
  const after = await remaining(server.baseUrl, user.token);
  row.limiterCounted = before - after - 1;
  return row;
}

// ---------------------------------------------------------------------------------------------
// Report

function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function printTable(rows: Row[], compared: Row, ratio: number | undefined): void {
  const header = ['Engine / target', 'req/s (mean)', 'p50 ms', 'p99 ms', 'non-2xx', 'errors', 'vs baseline'];
  const lines = rows.map((r) => [
    r.label,
    fmt(r.result.requests.average),
    fmt(r.result.latency.p50, 2),
    fmt(r.result.latency.p99, 2),
    fmt(r.result.non2xx),
    fmt(r.result.errors),
    r === compared && ratio !== undefined ? `${fmt(ratio * 100, 1)}%` : '',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmtLine = (cells: string[]) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  console.log(fmtLine(header));
  console.log(`|${widths.map((w, i) => (i === 0 ? ` ${'-'.repeat(w)} ` : ` ${'-'.repeat(w - 1)}: `)).join('|')}|`);
  for (const l of lines) console.log(fmtLine(l));
}

function cpuModel(): string {
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    return m?.[1]?.trim() ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  console.log(`Mainspring HTTP benchmark — ${new Date().toISOString()}`);
  console.log(`node ${process.version}, ${availableParallelism()} CPUs (${cpuModel()})`);
  console.log(`autocannon: ${CONNECTIONS} connections, ${SECONDS} s per target after ${WARMUP_SECONDS} s warm-up; one server process at a time`);
  // Other work on the machine skews every number; the load average at start and end makes it visible.
  console.log(`load average at start: ${loadavg().map((l) => l.toFixed(2)).join(' ')}\n`);

  const rows: Row[] = [];

  // PGlite: embedded engine in a temporary data directory.
  const dataDir = mkdtempSync(join(tmpdir(), 'ms-bench-'));
  tempDirs.push(dataDir);
  const adminPassword = randomBytes(18).toString('base64url');
  // BENCH_AUTH_CACHE_TTL=0 makes every authenticated request read its session and user from the database.
  const authCacheTtl = process.env.BENCH_AUTH_CACHE_TTL ?? '30';
  console.log(`AUTH_CACHE_TTL_SECONDS=${authCacheTtl}${authCacheTtl === '0' ? ' (session and user read from the database on every request)' : ''}\n`);
  const mainEnv = { LOG_LEVEL: 'warn', RATE_LIMITS, MAINSPRING_ADMIN_PASSWORD: adminPassword, AUTH_CACHE_TTL_SECONDS: authCacheTtl };
  console.log('PGlite');
  let server = await startServer('mainspring-pglite', ['src/main.ts', 'serve'], { ...mainEnv, DATA_DIR: dataDir });
  let user = await registerAndLogin(server.baseUrl);
  if (HEALTH) rows.push(await measure('PGlite      GET /health', `${server.baseUrl}/health`));
  const pgliteMe = await measureMe('PGlite      GET /api/v1/users/me', server, user);
  rows.push(pgliteMe);
  await stopServer(server);

  // PostgreSQL: a throwaway database on the local server.
  const dbName = `ms_bench_${randomBytes(5).toString('hex')}`;
  await adminQuery(`CREATE DATABASE ${dbName}`);
  benchDatabase = dbName;
  const dbUrl = databaseUrl(dbName);
  const jwtSecret = randomBytes(48).toString('base64url');
  console.log(`PostgreSQL (database ${dbName})`);
  server = await startServer('mainspring-postgres', ['src/main.ts', 'serve'], {
    ...mainEnv,
    DATA_DIR: dataDir,
    DATABASE_URL: dbUrl,
    JWT_SECRET: jwtSecret,
    SECRETS_KEY: randomBytes(32).toString('base64url'),
  });
  user = await registerAndLogin(server.baseUrl);
  if (HEALTH) rows.push(await measure('PostgreSQL  GET /health', `${server.baseUrl}/health`));
  const pgMe = await measureMe('PostgreSQL  GET /api/v1/users/me', server, user);
  rows.push(pgMe);
  await stopServer(server);

  // Baseline: bare Fastify + jose + one pg query, same database, same token.
  console.log('Baseline (Fastify + jose + pg, same database and token)');
  server = await startServer(
    'baseline',
    ['bench/baseline-server.ts'],
    { DATABASE_URL: dbUrl, JWT_SECRET: jwtSecret, JWT_ISSUER, JWT_AUDIENCE },
    { ipc: true },
  );
  const probe = await call(server.baseUrl, 'GET', '/api/v1/users/me', { token: user.token });
  if (probe.status !== 200 || (probe.body as { user?: { id?: unknown } } | undefined)?.user?.id !== user.id) {
    throw new Error(`baseline GET /api/v1/users/me failed: ${probe.status} ${probe.text}`);
  }
  const baseline = await measure('Baseline    GET /api/v1/users/me', `${server.baseUrl}/api/v1/users/me`, { authorization: `Bearer ${user.token}` });
  rows.push(baseline);
  await stopServer(server);

  // Report.
  const ratio = baseline.result.requests.average > 0 ? pgMe.result.requests.average / baseline.result.requests.average : undefined;
  console.log('');
  printTable(rows, pgMe, ratio);
  console.log('');

  for (const r of [pgliteMe, pgMe]) {
    if (r.limiterCounted === undefined) continue;
    const ok = r.limiterCounted >= r.result.requests.total && r.limiterCounted <= r.sent;
    console.log(
      `${r.label.replace(/\s+/g, ' ')}: rate limiter counted ${fmt(r.limiterCounted)} requests; autocannon sent ${fmt(r.sent)} ` +
        `(warm-up + measured)${ok ? '' : ' — MISMATCH'}`,
    );
  }
  for (const r of rows) {
    const codes = Object.entries(r.result.statusCodeStats).filter(([code]) => !code.startsWith('2'));
    if (codes.length || r.result.errors) {
      console.log(`${r.label.replace(/\s+/g, ' ')}: ${codes.map(([c, s]) => `${s.count} × ${c}`).join(', ')} ${r.result.errors} errors, ${r.result.timeouts} timeouts`);
    }
  }
  console.log('');

  console.log(`load average at end: ${loadavg().map((l) => l.toFixed(2)).join(' ')}\n`);

  const clean = (r: Row) => r.result.non2xx === 0 && r.result.errors === 0;
  const pgliteOk = clean(pgliteMe) && pgliteMe.result.requests.average >= PGLITE_GOAL_RPS;
  console.log(
    `${pgliteOk ? 'PASS' : 'FAIL'}  PGlite GET /api/v1/users/me: ${fmt(pgliteMe.result.requests.average)} req/s (goal >= ${fmt(PGLITE_GOAL_RPS)} req/s` +
      `${clean(pgliteMe) ? '' : ', with non-2xx responses or errors'})`,
  );
  const ratioOk = ratio !== undefined && clean(pgMe) && clean(baseline) && ratio >= BASELINE_GOAL_RATIO;
  console.log(
    `${ratioOk ? 'PASS' : 'FAIL'}  PostgreSQL GET /api/v1/users/me: ${ratio === undefined ? 'n/a' : `${fmt(ratio * 100, 1)}%`} of baseline ` +
      `(${fmt(pgMe.result.requests.average)} vs ${fmt(baseline.result.requests.average)} req/s; goal >= ${fmt(BASELINE_GOAL_RATIO * 100)}%` +
      `${clean(pgMe) && clean(baseline) ? '' : ', with non-2xx responses or errors'})`,
  );
}

// Bounded: whatever happens, the run ends. Start-ups, up to five measured targets, and slack.
const deadlineMs = (5 * (SECONDS + WARMUP_SECONDS) + 3 * (STARTUP_TIMEOUT_MS / 1000) + 120) * 1000;
const watchdog = setTimeout(() => {
  console.error(`\nbenchmark did not finish within ${Math.round(deadlineMs / 1000)} s; stopping`);
  void cleanup().finally(() => process.exit(1));
}, deadlineMs);

let exitCode = 0;
try {
  await main();
} catch (err) {
  console.error('\nbenchmark failed:', err instanceof Error ? err.message : err);
  exitCode = 1;
} finally {
  await cleanup();
  clearTimeout(watchdog);
}
process.exit(exitCode);
