/**
 * Embedded mode (PGlite) with real processes: what survives a restart on the same DATA_DIR, and the
 * `migrate` and `admin create-user` commands. PGlite is single-process, so commands run one at a time.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { MIGRATIONS } from '../src/migrations.ts';
import { ENGINE } from './helpers/engine.ts';
import { expectStatus, freePort, http, passwordLines, running, spawnMain, spawnServer, stopAll, stopProc, waitHealthy, type ServerProcess } from './helpers/process.ts';

const SKIP: string | false =
  ENGINE === 'pglite' ? false : 'embedded (PGlite) restarts only: unset MAINSPRING_TEST_DATABASE_URL to run';
const START_TIMEOUT_MS = 90_000;
const COMMAND_TIMEOUT_MS = 90_000;
/** Per test: skipped by name on PostgreSQL; bounded when it runs. */
const OPTS = { skip: SKIP, timeout: 240_000 };

// ---------------------------------------------------------------------------------------------
// Process plumbing

const tempDirs: string[] = [];

after(async () => {
  // Safety net: anything a failed test left running is stopped (and must still stop cleanly).
  try {
    await stopAll(running, 'leftover processes exit 0 within 10 s of SIGTERM');
  } finally {
    for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  }
});

function tempDataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'ms-restart-'));
  tempDirs.push(dir);
  return dir;
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

interface Server {
  proc: ServerProcess;
  baseUrl: string;
}

async function startServer(name: string, dataDir: string, env: Record<string, string> = {}): Promise<Server> {
  const proc = spawnServer(name, await freePort(), { DATA_DIR: dataDir, ...env });
  try {
    await waitHealthy(proc, START_TIMEOUT_MS);
  } catch (err) {
    await stopProc(proc);
    throw err;
  }
  return { proc, baseUrl: proc.baseUrl };
}

/** SIGTERM and assert a graceful exit: status 0 within 10 s. */
async function stopGracefully(s: Server): Promise<void> {
  const { exit, timedOut } = await stopProc(s.proc);
  assert.equal(timedOut, false, `${s.proc.name} exited within 10 s of SIGTERM`);
  assert.deepEqual(exit, { code: 0, signal: null }, `${s.proc.name} exit status:\n${s.proc.stderr()}`);
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
