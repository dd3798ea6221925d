/** `loadConfig(env)`: defaults, validation messages that name the variable, persisted embedded secrets. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { ConfigError, DEFAULT_RATE_LIMITS, loadConfig, type Config } from '../src/config.ts';

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const JWT_SECRET = 'config-test-jwt-secret-0123456789abcdef';
const SECRETS_KEY = 'config-test-secrets-key-0123456789abcdef';
const SECRETS = { JWT_SECRET, SECRETS_KEY };
const PG_URL = 'postgres://user@db.example:5432/mainspring';

const tempDirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'ms-config-'));
  tempDirs.push(dir);
  return dir;
}
after(() => {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

/** Asserts `fn` throws a ConfigError whose message names every variable in `names`; returns the message. */
function configError(fn: () => unknown, names: string[]): string {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof ConfigError, `expected a ConfigError, got ${String(caught)}`);
  for (const name of names) assert.match(caught.message, new RegExp(`\\b${name}\\b`), `the message names ${name}: ${caught.message}`);
  return caught.message;
}

test('defaults: port 8080 on 0.0.0.0, embedded PGlite engine, ./data resolved against the working directory', () => {
  const c = loadConfig({ ...SECRETS });
  assert.equal(c.port, 8080);
  assert.equal(c.host, '0.0.0.0');
  assert.equal(c.engine, 'pglite');
  assert.equal(c.databaseUrl, undefined);
  assert.equal(c.redisUrl, undefined);
  assert.equal(c.dataDir, resolve(process.cwd(), 'data'));
  assert.equal(c.defaultTier, 'free');
  assert.equal(c.logLevel, 'info');
  assert.equal(c.jwtSecret, JWT_SECRET);
  assert.equal(c.secretsKey, SECRETS_KEY);
  assert.equal(c.passwordHashMemoryKib, 19456);
  assert.equal(c.trustProxy, false);
  assert.deepEqual(c.corsOrigins, []);
  assert.deepEqual(c.rateLimits, DEFAULT_RATE_LIMITS);
});

test('empty strings count as unset', () => {
  const c = loadConfig({ ...SECRETS, PORT: '', DATABASE_URL: '', DEFAULT_TIER: '', DATA_DIR: '' });
  assert.equal(c.port, 8080);
  assert.equal(c.engine, 'pglite');
  assert.equal(c.defaultTier, 'free');
  assert.equal(c.dataDir, resolve(process.cwd(), 'data'));
});

test('values from the environment are parsed and typed', () => {
  const dir = tempDir();
  const c = loadConfig({
    ...SECRETS,
    PORT: '9090',
    HOST: '127.0.0.1',
    DATA_DIR: dir,
    DEFAULT_TIER: 'pro',
    TRUST_PROXY: 'yes',
    CORS_ORIGINS: ' https://a.example , https://b.example ,',
    PASSWORD_HASH_MEMORY_KIB: '4096',
  });
  assert.equal(c.port, 9090);
  assert.equal(c.host, '127.0.0.1');
  assert.equal(c.dataDir, dir);
  assert.equal(c.defaultTier, 'pro');
  assert.equal(c.trustProxy, true);
  assert.deepEqual(c.corsOrigins, ['https://a.example', 'https://b.example']);
  assert.equal(c.passwordHashMemoryKib, 4096);
  assert.equal(existsSync(join(dir, 'secrets.json')), false, 'no secrets file when both secrets are given');
});

for (const port of ['abc', '70000', '-1', '80.5']) {
  test(`PORT=${port} is a ConfigError naming PORT`, () => {
    const message = configError(() => loadConfig({ ...SECRETS, PORT: port }), ['PORT']);
    assert.match(message, /^Invalid configuration:/);
  });
}

test('a DATABASE_URL that is not postgres:// is a ConfigError naming DATABASE_URL', () => {
  for (const url of ['mysql://root@localhost/db', 'localhost:5432', 'http://postgres.example']) {
    configError(() => loadConfig({ ...SECRETS, DATABASE_URL: url }), ['DATABASE_URL']);
  }
});

test('postgres:// and postgresql:// URLs select the postgres engine', () => {
  const dir = tempDir();
  for (const url of [PG_URL, 'postgresql://user@db.example/mainspring']) {
    const c = loadConfig({ ...SECRETS, DATABASE_URL: url, DATA_DIR: dir });
    assert.equal(c.engine, 'postgres');
    assert.equal(c.databaseUrl, url);
  }
  assert.equal(existsSync(join(dir, 'secrets.json')), false);
});

test('DATABASE_URL without JWT_SECRET and SECRETS_KEY is a ConfigError naming both', () => {
  const dir = tempDir();
  configError(() => loadConfig({ DATABASE_URL: PG_URL, DATA_DIR: dir }), ['JWT_SECRET', 'SECRETS_KEY']);
  // Server mode never falls back to generated secrets: every process must share them.
  assert.equal(existsSync(join(dir, 'secrets.json')), false, 'no secrets file is generated in server mode');
});

test('DATABASE_URL with only one of the secrets names the missing one only', () => {
  const missingKey = configError(() => loadConfig({ DATABASE_URL: PG_URL, JWT_SECRET }), ['SECRETS_KEY']);
  assert.doesNotMatch(missingKey, /JWT_SECRET/);
  const missingJwt = configError(() => loadConfig({ DATABASE_URL: PG_URL, SECRETS_KEY }), ['JWT_SECRET']);
  assert.doesNotMatch(missingJwt, /SECRETS_KEY/);
});

test('secrets shorter than 32 characters are refused by name', () => {
  configError(() => loadConfig({ JWT_SECRET: 'short', SECRETS_KEY }), ['JWT_SECRET']);
  configError(() => loadConfig({ JWT_SECRET, SECRETS_KEY: 'x'.repeat(31) }), ['SECRETS_KEY']);
});

test('embedded mode without secrets generates secrets.json (mode 0600) and reuses it on the next load', () => {
  const dir = join(tempDir(), 'nested', 'data');
  const first = loadConfig({ DATA_DIR: dir });
  const file = join(dir, 'secrets.json');
  assert.ok(existsSync(file), 'secrets.json is created, with its directory');
  assert.equal(statSync(file).mode & 0o777, 0o600, 'only the owner can read the secrets');
  const stored = JSON.parse(readFileSync(file, 'utf8')) as { jwtSecret: string; secretsKey: string };
  assert.equal(first.jwtSecret, stored.jwtSecret);
  assert.equal(first.secretsKey, stored.secretsKey);
  assert.ok(first.jwtSecret.length >= 32, 'generated JWT secret is long enough');
  assert.ok(first.secretsKey.length >= 32, 'generated secrets key is long enough');
  assert.notEqual(first.jwtSecret, first.secretsKey);

  const second = loadConfig({ DATA_DIR: dir });
  assert.equal(second.jwtSecret, first.jwtSecret);
  assert.equal(second.secretsKey, first.secretsKey);

  const other = loadConfig({ DATA_DIR: tempDir() });
  assert.notEqual(other.jwtSecret, first.jwtSecret, 'each data directory gets its own secrets');
});

test('embedded mode: a secret given in the environment wins, the other comes from secrets.json', () => {
  const dir = tempDir();
  const generated = loadConfig({ DATA_DIR: dir });
  const c = loadConfig({ DATA_DIR: dir, JWT_SECRET });
  assert.equal(c.jwtSecret, JWT_SECRET);
  assert.equal(c.secretsKey, generated.secretsKey);
});

test('a secrets.json without the secrets is a ConfigError naming the file', () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'secrets.json'), JSON.stringify({ jwtSecret: 'only-one' }));
  configError(() => loadConfig({ DATA_DIR: dir }), ['secrets']);
});

test('a secrets.json that is not valid JSON is a ConfigError naming the file, not a raw parse error', () => {
  // What a hand edit with a stray comma, or a write cut short by a crash, leaves behind.
  for (const content of ['{"jwtSecret": "x",\n', '', 'null']) {
    const dir = tempDir();
    writeFileSync(join(dir, 'secrets.json'), content);
    configError(() => loadConfig({ DATA_DIR: dir }), ['secrets']);
  }
});

test('RATE_LIMITS overrides merge into the published defaults', () => {
  const c: Config = loadConfig({
    ...SECRETS,
    RATE_LIMITS: JSON.stringify({
      databases: { free: 5, pro: { points: 50, windowSeconds: 10 } },
      tasks: { enterprise: null, anonymous: { points: 7 } },
    }),
  });
  assert.deepEqual(c.rateLimits.databases.free, { points: 5, windowSeconds: DEFAULT_RATE_LIMITS.databases.free.windowSeconds });
  assert.deepEqual(c.rateLimits.databases.pro, { points: 50, windowSeconds: 10 });
  assert.deepEqual(c.rateLimits.tasks.enterprise, { points: null, windowSeconds: DEFAULT_RATE_LIMITS.tasks.enterprise.windowSeconds });
  assert.deepEqual(c.rateLimits.tasks.anonymous, { points: 7, windowSeconds: DEFAULT_RATE_LIMITS.tasks.anonymous.windowSeconds });
  // Untouched entries keep their defaults, and the defaults themselves are not modified.
  assert.deepEqual(c.rateLimits.databases.developer, DEFAULT_RATE_LIMITS.databases.developer);
  assert.deepEqual(c.rateLimits.monitoring, DEFAULT_RATE_LIMITS.monitoring);
  assert.deepEqual(c.rateLimits.automation, DEFAULT_RATE_LIMITS.automation);
  assert.equal(DEFAULT_RATE_LIMITS.databases.free.points, 100);
  assert.equal(loadConfig({ ...SECRETS }).rateLimits.databases.free.points, 100, 'a later load starts from the defaults again');
});

test('RATE_LIMITS that is not valid JSON, or not a valid override, is a ConfigError naming RATE_LIMITS', () => {
  for (const raw of ['{nope', '[1,2]', '{"bogus":{"free":1}}', '{"databases":{"free":-1}}', '{"databases":{"gold":10}}', '{"databases":{"free":1.5}}']) {
    configError(() => loadConfig({ ...SECRETS, RATE_LIMITS: raw }), ['RATE_LIMITS']);
  }
});

test('DEFAULT_TIER must be one of the tiers', () => {
  configError(() => loadConfig({ ...SECRETS, DEFAULT_TIER: 'platinum' }), ['DEFAULT_TIER']);
  assert.equal(loadConfig({ ...SECRETS, DEFAULT_TIER: 'enterprise' }).defaultTier, 'enterprise');
});

test('several bad values are reported together, one line each', () => {
  const message = configError(() => loadConfig({ ...SECRETS, PORT: 'abc', DEFAULT_TIER: 'platinum', LOG_LEVEL: 'loud' }), [
    'PORT',
    'DEFAULT_TIER',
    'LOG_LEVEL',
  ]);
  assert.equal(message.split('\n').length, 4, message);
});

test('`serve` with PORT=abc exits 78 with a message naming PORT and no stack trace', async () => {
  const dir = tempDir();
  const child = spawn(process.execPath, ['src/main.ts', 'serve'], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? '', PORT: 'abc', DATA_DIR: dir, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  let timer: NodeJS.Timeout | undefined;
  try {
    const code = await Promise.race([
      new Promise<number | null>((r) => child.once('exit', (c) => r(c))),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('no exit within 30 s')), 30_000))),
    ]);
    assert.equal(code, 78, `exit code (EX_CONFIG); stderr:\n${stderr}`);
  } finally {
    clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  assert.match(stderr, /\bPORT\b/);
  assert.match(stderr, /Invalid configuration/);
  assert.doesNotMatch(stderr, /^\s+at /m, 'no stack trace');
  assert.doesNotMatch(stderr, /ConfigError/, 'no error class name, just the message');
  assert.equal(stdout, '', 'nothing on stdout');
  assert.equal(existsSync(join(dir, 'secrets.json')), false, 'nothing written before the configuration is valid');
});
