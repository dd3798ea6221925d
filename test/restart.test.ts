/**
 * Embedded mode (PGlite) with real processes: what survives a restart on the same DATA_DIR, and the
 * `migrate` and `admin create-user` commands. PGlite is single-process, so commands run one at a time.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { MIGRATIONS } from '../src/migrations.ts';
import { ENGINE } from './helpers/engine.ts';

const SKIP: string | false =
  ENGINE === 'pglite' ? false : 'embedded (PGlite) restarts only: unset MAINSPRING_TEST_DATABASE_URL to run';
const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const START_TIMEOUT_MS = 90_000;
const STOP_TIMEOUT_MS = 10_000;
const COMMAND_TIMEOUT_MS = 90_000;
const REQUEST_TIMEOUT_MS = 15_000;
/** Per test: skipped by name on PostgreSQL; bounded when it runs. */
const OPTS = { skip: SKIP, timeout: 240_000 };

// ---------------------------------------------------------------------------------------------
// Process plumbing

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface Proc {
  name: string;
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<Exit>;
  exit: Exit | undefined;
}

const running = new Set<Proc>();
const tempDirs: string[] = [];

after(async () => {
  // Safety net: anything a failed test left running is stopped (and must still stop cleanly).
  const left = [...running];
  const results = await Promise.all(left.map((p) => stopProc(p)));
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  const bad = results.flatMap((r, i) => (r.timedOut || r.exit.code !== 0 ? [`${left[i]!.name}: ${JSON.stringify(r.exit)}`] : []));
  assert.deepEqual(bad, [], 'leftover processes exit 0 within 10 s of SIGTERM');
});

function tempDataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'ms-restart-'));
  tempDirs.push(dir);
  return dir;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') return reject(new Error('no port assigned'));
      srv.close(() => resolve(addr.port));
    });
  });
}

function spawnMain(name: string, args: string[], env: Record<string, string>): Proc {
  // A minimal environment: nothing from the caller's shell (DATABASE_URL, secrets, ...) leaks in.
  const child = spawn(process.execPath, ['src/main.ts', ...args], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'info', PASSWORD_HASH_MEMORY_KIB: '4096', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
  const proc: Proc = {
    name,
    child,
    stdout: () => out,
    stderr: () => err,
    exit: undefined,
    exited: new Promise<Exit>((resolve) => {
      child.once('exit', (code, signal) => {
        proc.exit = { code, signal };
        running.delete(proc);
        resolve(proc.exit);
      });
    }),
  };
  running.add(proc);
  return proc;
}

async function stopProc(p: Proc, timeoutMs = STOP_TIMEOUT_MS): Promise<{ exit: Exit; timedOut: boolean }> {
  if (p.exit) return { exit: p.exit, timedOut: false };
  p.child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([p.exited.then(() => false), new Promise<boolean>((r) => (timer = setTimeout(() => r(true), timeoutMs)))]);
  clearTimeout(timer);
  if (timedOut) p.child.kill('SIGKILL');
  return { exit: await p.exited, timedOut };
}

/** Runs a one-shot command to completion (bounded) and returns its exit code and output. */
async function runCommand(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = spawnMain(args.join(' '), args, env);
  let timer: NodeJS.Timeout | undefined;
  try {
    const exit = await Promise.race([
      p.exited,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${p.name}: no exit within ${COMMAND_TIMEOUT_MS} ms`)), COMMAND_TIMEOUT_MS))),
    ]);
    return { code: exit.code, stdout: p.stdout(), stderr: p.stderr() };
  } finally {
    clearTimeout(timer);
    if (!p.exit) p.child.kill('SIGKILL');
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Server {
  proc: Proc;
  baseUrl: string;
}

async function startServer(name: string, dataDir: string, env: Record<string, string> = {}): Promise<Server> {
  const port = await freePort();
  const proc = spawnMain(name, ['serve'], { HOST: '127.0.0.1', PORT: String(port), DATA_DIR: dataDir, ...env });
  const baseUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (proc.exit) throw new Error(`${name} exited (${JSON.stringify(proc.exit)}) before becoming healthy:\n${proc.stdout()}${proc.stderr()}`);
    try {
      const res = await fetch(`${baseUrl}/health`, { signal: AbortSignal.timeout(2_000) });
      await res.body?.cancel();
      if (res.status === 200) return { proc, baseUrl };
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  await stopProc(proc);
  throw new Error(`${name} not healthy within ${START_TIMEOUT_MS} ms:\n${proc.stdout()}${proc.stderr()}`);
}

/** SIGTERM and assert a graceful exit: status 0 within 10 s. */
async function stopGracefully(s: Server): Promise<void> {
  const { exit, timedOut } = await stopProc(s.proc);
  assert.equal(timedOut, false, `${s.proc.name} exited within 10 s of SIGTERM`);
  assert.deepEqual(exit, { code: 0, signal: null }, `${s.proc.name} exit status:\n${s.proc.stderr()}`);
}

interface HttpResult {
  status: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- assertions read arbitrary JSON
  body: any;
}

async function http(s: Server, method: string, path: string, opts: { token?: string; body?: unknown } = {}): Promise<HttpResult> {
  const headers: Record<string, string> = {};
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${s.baseUrl}${path}`, {
    method,
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const text = await res.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = text;
  }
  return { status: res.status, body };
}

function expectStatus(res: HttpResult, status: number, what: string): void {
  assert.equal(res.status, status, `${what}: expected ${status}, got ${res.status} ${JSON.stringify(res.body)}`);
}

function passwordLines(p: Proc): string[] {
  return `${p.stdout()}\n${p.stderr()}`.split('\n').filter((l) => l.includes('generated password'));
}

const versions = [...MIGRATIONS].map((m) => m.version).sort((a, b) => a - b);

// ---------------------------------------------------------------------------------------------

test('a restart on the same DATA_DIR keeps the admin password, users, sessions and access tokens', OPTS, async () => {
  const dataDir = tempDataDir();

  // First start: the admin account is created with a generated password, printed once.
  const first = await startServer('first start', dataDir);
  const lines = passwordLines(first.proc);
  assert.equal(lines.length, 1, `one generated-password line:\n${first.proc.stdout()}`);
  const adminPassword = /generated password: (\S+)/.exec(lines[0]!)?.[1];
  assert.ok(adminPassword && adminPassword.length >= 16, `a password can be read from: ${lines[0]}`);

  const adminLogin = await http(first, 'POST', '/api/v1/auth/login', { body: { username: 'admin', password: adminPassword } });
  expectStatus(adminLogin, 200, 'admin login with the printed password');
  assert.deepEqual(adminLogin.body.user.roles, ['admin']);
  assert.equal(adminLogin.body.user.username, 'admin');
  const adminToken: string = adminLogin.body.token;

  const wrong = await http(first, 'POST', '/api/v1/auth/login', { body: { username: 'admin', password: `${adminPassword}x` } });
  expectStatus(wrong, 401, 'admin login with a wrong password');

  const email = `restart.${process.pid}.${Date.now().toString(36)}@example.com`;
  const password = 'correct-horse-battery';
  const reg = await http(first, 'POST', '/api/auth/register', { body: { email, password, name: 'Restart User' } });
  expectStatus(reg, 201, 'register');
  const userId: string = reg.body.data.user.id;
  const userToken: string = reg.body.data.tokens.access_token;
  const refreshToken: string = reg.body.data.tokens.refresh_token;

  await stopGracefully(first);

  // Second start on the same directory.
  const second = await startServer('second start', dataDir);
  assert.deepEqual(passwordLines(second.proc), [], `no new generated-password line on restart:\n${second.proc.stdout()}`);
  assert.doesNotMatch(second.proc.stdout(), /Created user "admin"/, 'the admin account is not created again');

  const me = await http(second, 'GET', '/auth/me', { token: userToken });
  expectStatus(me, 200, 'the access token issued before the restart');
  assert.equal(me.body.data.id, userId);
  assert.equal(me.body.data.email, email);

  const adminMe = await http(second, 'GET', '/api/v1/users/me', { token: adminToken });
  expectStatus(adminMe, 200, "the admin's access token issued before the restart");
  assert.deepEqual(adminMe.body.user.roles, ['admin']);

  const relogin = await http(second, 'POST', '/api/auth/login', { body: { email, password } });
  expectStatus(relogin, 200, 'the user logs in after the restart');
  assert.equal(relogin.body.data.user.id, userId);

  const refreshed = await http(second, 'POST', '/api/auth/refresh', { body: { refresh_token: refreshToken } });
  expectStatus(refreshed, 200, 'the refresh token issued before the restart');

  const adminAgain = await http(second, 'POST', '/api/v1/auth/login', { body: { username: 'admin', password: adminPassword } });
  expectStatus(adminAgain, 200, 'the admin password still works after the restart');

  await stopGracefully(second);
});

test('`migrate` applies every version on a fresh DATA_DIR, then reports the database up to date', OPTS, async () => {
  const dataDir = tempDataDir();
  const first = await runCommand(['migrate'], { DATA_DIR: dataDir });
  assert.equal(first.code, 0, `first migrate exit code; stderr:\n${first.stderr}`);
  const applied = /Applied migrations: ([\d, ]+)/.exec(first.stdout)?.[1];
  assert.ok(applied, `the applied versions are printed: ${first.stdout}`);
  assert.deepEqual(
    applied.split(',').map((v) => Number(v.trim())),
    versions,
    'every migration, in version order',
  );

  const second = await runCommand(['migrate'], { DATA_DIR: dataDir });
  assert.equal(second.code, 0, `second migrate exit code; stderr:\n${second.stderr}`);
  assert.match(second.stdout, /Database is up to date/);
  assert.doesNotMatch(second.stdout, /Applied migrations/);
});

test('`admin create-user` creates an account that can then log in with its tier', OPTS, async () => {
  const dataDir = tempDataDir();
  const created = await runCommand(['admin', 'create-user', '--email', 'x@y.z', '--password', 'longpassword', '--tier', 'pro'], { DATA_DIR: dataDir });
  assert.equal(created.code, 0, `create-user exit code; stderr:\n${created.stderr}`);
  assert.match(created.stdout, /^Created user usr_\S+ <x@y\.z> \(tier pro\)$/m);

  const duplicate = await runCommand(['admin', 'create-user', '--email', 'X@y.z', '--password', 'longpassword'], { DATA_DIR: dataDir });
  assert.notEqual(duplicate.code, 0, 'the same email (any case) cannot be created twice');
  assert.match(duplicate.stderr, /already registered/i);

  const badTier = await runCommand(['admin', 'create-user', '--email', 'q@y.z', '--password', 'longpassword', '--tier', 'gold'], { DATA_DIR: dataDir });
  assert.equal(badTier.code, 64, 'a usage error exits 64');
  assert.match(badTier.stderr, /--tier must be one of/);

  const server = await startServer('after create-user', dataDir);
  const login = await http(server, 'POST', '/api/v1/auth/login', { body: { username: 'x@y.z', password: 'longpassword' } });
  expectStatus(login, 200, 'login as the created user');
  assert.deepEqual(login.body.user.roles, ['user']);
  const me = await http(server, 'GET', '/auth/me', { token: login.body.token });
  expectStatus(me, 200, '/auth/me for the created user');
  assert.equal(me.body.data.email, 'x@y.z');
  assert.equal(me.body.data.effective_tier, 'pro');
  assert.equal(me.body.data.role, 'user');
  const wrong = await http(server, 'POST', '/api/v1/auth/login', { body: { username: 'x@y.z', password: 'not-the-password' } });
  expectStatus(wrong, 401, 'login with a wrong password');
  await stopGracefully(server);
});
