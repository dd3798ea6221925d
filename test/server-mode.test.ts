/**
 * Server mode with real processes: two `mainspring serve` processes on one PostgreSQL database
 * migrate it together, share sessions, the admin account and rate-limit counters (in PostgreSQL,
 * or in Redis when REDIS_URL is set), and stop cleanly on SIGTERM.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import pg from 'pg';
import { MIGRATIONS } from '../src/migrations.ts';
import { ENGINE, emptyPgDatabase } from './helpers/engine.ts';
import { expectStatus, freePort, http, passwordLines, spawnServer, stopAll, stopProc, waitHealthy, type ServerProcess } from './helpers/process.ts';

const SKIP: string | false = ENGINE === 'postgres' ? false : 'needs PostgreSQL: set MAINSPRING_TEST_DATABASE_URL';
const REDIS_URL = 'redis://127.0.0.1:6379';
const START_TIMEOUT_MS = 60_000;
const RATE_LIMIT = 5;
/** Per test: skipped by name off PostgreSQL; bounded when it runs. */
const OPTS = { skip: SKIP, timeout: 60_000 };

// ---------------------------------------------------------------------------------------------
// Process plumbing

async function distinctFreePorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

/** Parsed JSON log lines (pino) of a process. */
function logRecords(p: ServerProcess): { level?: number; msg?: string }[] {
  return p
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as { level?: number; msg?: string }];
      } catch {
        return [];
      }
    });
}

async function withPg<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000, query_timeout: 10_000 });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

let seq = 0;
function uniqueEmail(tag: string): string {
  return `${tag}.${process.pid}.${Date.now().toString(36)}.${randomBytes(3).toString('hex')}.${seq++}@example.com`;
}

const PASSWORD = 'correct-horse-battery';

async function registerOn(p: ServerProcess, tag: string): Promise<{ id: string; email: string; accessToken: string }> {
  const email = uniqueEmail(tag);
  const res = await http(p, 'POST', '/api/auth/register', { body: { email, password: PASSWORD, name: 'Pair User' } });
  expectStatus(res, 201, `register on ${p.name}`);
  return { id: res.body.data.user.id, email, accessToken: res.body.data.tokens.access_token };
}

// ---------------------------------------------------------------------------------------------
// One pair of processes on one fresh, empty database

interface Pair {
  a: ServerProcess;
  b: ServerProcess;
  dbUrl: string;
  dropDb(): Promise<void>;
}

async function startPair(tag: string, extraEnv: Record<string, string> = {}): Promise<Pair> {
  const db = await emptyPgDatabase();
  const [portA, portB] = await distinctFreePorts(2);
  const env = {
    DATABASE_URL: db.url,
    JWT_SECRET: `pair-jwt-secret-${randomBytes(24).toString('hex')}`,
    SECRETS_KEY: `pair-secrets-key-${randomBytes(24).toString('hex')}`,
    RATE_LIMITS: JSON.stringify({ databases: { free: RATE_LIMIT } }),
    ...extraEnv,
  };
  // Both start in the same tick, so both reach the migration step on the empty database together.
  const a = spawnServer(`${tag}-A`, portA!, env);
  const b = spawnServer(`${tag}-B`, portB!, env);
  try {
    await Promise.all([waitHealthy(a, START_TIMEOUT_MS), waitHealthy(b, START_TIMEOUT_MS)]);
  } catch (err) {
    await Promise.all([stopProc(a), stopProc(b)]);
    await db.drop().catch(() => {});
    throw err;
  }
  return { a, b, dbUrl: db.url, dropDb: db.drop };
}

async function closePair(pair: Pair | undefined): Promise<void> {
  if (!pair) return;
  try {
    await stopAll([pair.a, pair.b], 'every server process exits 0 within 10 s of SIGTERM');
  } finally {
    await pair.dropDb().catch(() => {});
  }
}

/**
 * Alternates authenticated HeliosDB requests between the two processes: the first RATE_LIMIT are
 * allowed with a Remaining header that counts down across processes, the next is 429 on either.
 */
async function assertSharedCounter(pair: Pair): Promise<{ userId: string }> {
  const user = await registerOn(pair.a, 'limits');
  const order = [pair.a, pair.b, pair.a, pair.b, pair.a];
  const remaining: number[] = [];
  for (const [i, p] of order.entries()) {
    const res = await http(p, 'POST', '/v1/auth/refresh', { token: user.accessToken });
    expectStatus(res, 200, `request ${i + 1} of ${RATE_LIMIT} on ${p.name}`);
    assert.equal(res.headers.get('x-ratelimit-limit'), String(RATE_LIMIT), `limit header on ${p.name}`);
    remaining.push(Number(res.headers.get('x-ratelimit-remaining')));
  }
  assert.deepEqual(remaining, [4, 3, 2, 1, 0], 'X-RateLimit-Remaining counts down across both processes');

  const sixth = await http(pair.b, 'POST', '/v1/auth/refresh', { token: user.accessToken });
  expectStatus(sixth, 429, `request 6 on ${pair.b.name}`);
  assert.equal(sixth.body.success, false);
  assert.equal(sixth.body.error.code, 'RATE_LIMITED');
  assert.equal(sixth.headers.get('x-ratelimit-remaining'), '0');
  assert.ok(Number(sixth.headers.get('retry-after')) >= 1, 'Retry-After is set on 429');

  // The other process refuses as well: it sees the same counter, on any HeliosDB route.
  const seventh = await http(pair.a, 'POST', '/v1/auth/logout', { token: user.accessToken });
  expectStatus(seventh, 429, `request 7 on ${pair.a.name}`);

  // Other faces keep their own counters.
  const me = await http(pair.a, 'GET', '/auth/me', { token: user.accessToken });
  expectStatus(me, 200, 'Arrotech face is not limited by the HeliosDB counter');
  return { userId: user.id };
}

// ---------------------------------------------------------------------------------------------

/** Starts a pair in `before`; a start failure is reported by each test rather than by the hook. */
function pairFixture(tag: string, extraEnv: Record<string, string> = {}) {
  const state: { pair?: Pair; startError?: unknown } = {};
  before(async () => {
    if (SKIP) return;
    try {
      state.pair = await startPair(tag, extraEnv);
    } catch (err) {
      state.startError = err;
    }
  }, { timeout: 2 * START_TIMEOUT_MS });
  return {
    get(): Pair {
      if (!state.pair) throw state.startError ?? new Error('the server pair did not start');
      return state.pair;
    },
    close: () => closePair(state.pair),
  };
}

describe('two server processes on one PostgreSQL database', () => {
  const fixture = pairFixture('pg');
  after(() => fixture.close());

  test('both processes migrate the empty database at the same moment and come up healthy', OPTS, async () => {
    const { a, b, dbUrl } = fixture.get();
    for (const p of [a, b]) {
      assert.ok(
        logRecords(p).some((r) => r.msg === 'Mainspring is serving'),
        `${p.name} logged that it is serving:\n${p.output()}`,
      );
    }
    const rows = await withPg(dbUrl, async (c) =>
      (await c.query<{ version: number; n: string }>('SELECT version, count(*) AS n FROM schema_migrations GROUP BY version ORDER BY version')).rows,
    );
    const expected = [...MIGRATIONS].map((m) => m.version).sort((x, y) => x - y);
    assert.deepEqual(
      rows.map((r) => r.version),
      expected,
      'schema_migrations holds every version',
    );
    assert.ok(
      rows.every((r) => r.n === '1'),
      `each version recorded once: ${JSON.stringify(rows)}`,
    );
  });

  test('the admin account is created once and only one process prints its generated password', OPTS, async () => {
    const { a, b, dbUrl } = fixture.get();
    const admins = await withPg(dbUrl, async (c) => (await c.query<{ n: string }>(`SELECT count(*) AS n FROM users WHERE lower(username) = 'admin'`)).rows[0]!.n);
    assert.equal(admins, '1');
    const lines = [a, b].map((p) => passwordLines(p));
    assert.deepEqual(
      lines.map((l) => l.length).sort(),
      [0, 1],
      `exactly one of the two logs holds the generated-password line:\nA:\n${a.output()}\nB:\n${b.output()}`,
    );
    // That password belongs to the stored admin: it logs in on the other process too.
    const password = /generated password: (\S+)/.exec(lines.flat()[0]!)?.[1];
    assert.ok(password, 'the password can be read from the line');
    const other = lines[0]!.length ? b : a;
    const login = await http(other, 'POST', '/api/v1/auth/login', { body: { username: 'admin', password } });
    expectStatus(login, 200, 'admin login with the printed password on the process that did not print it');
    assert.deepEqual(login.body.user.roles, ['admin']);
  });

  test('a session opened on one process works on the other, and logout on one ends it on both', OPTS, async () => {
    const { a, b } = fixture.get();
    const registered = await registerOn(a, 'pair');

    const login = await http(b, 'POST', '/api/v1/auth/login', { body: { username: registered.email, password: PASSWORD } });
    expectStatus(login, 200, 'HelixCode login on B');
    const tokenFromB: string = login.body.token;
    assert.equal(login.body.user.id, registered.id);

    const me = await http(a, 'GET', '/auth/me', { token: tokenFromB });
    expectStatus(me, 200, "B's token on A");
    assert.equal(me.body.data.email, registered.email);
    assert.equal(me.body.data.id, registered.id);

    // B has now resolved this token too (and may hold it in memory): logout on A must still end it on B.
    const onB = await http(b, 'GET', '/auth/me', { token: tokenFromB });
    expectStatus(onB, 200, "B's token on B before logout");

    const logout = await http(a, 'POST', '/api/auth/logout', { token: tokenFromB });
    expectStatus(logout, 200, 'logout on A');
    assert.equal(logout.body.data.logged_out, true);

    const refused = await http(b, 'GET', '/api/v1/users/me', { token: tokenFromB });
    expectStatus(refused, 401, 'the logged-out token on B');
    const refusedOnA = await http(a, 'GET', '/auth/me', { token: tokenFromB });
    expectStatus(refusedOnA, 401, 'the logged-out token on A');

    // Only that session ended: the token from registration (another session) still works on B.
    const stillIn = await http(b, 'GET', '/api/v1/users/me', { token: registered.accessToken });
    expectStatus(stillIn, 200, 'the registration session on B');
    assert.equal(stillIn.body.user.email, registered.email);
  });

  test('rate-limit counters live in PostgreSQL and are shared by both processes', OPTS, async () => {
    const { a, dbUrl } = fixture.get();
    const status = await http(a, 'GET', '/api/status');
    expectStatus(status, 200, 'status');
    assert.equal(status.body.components.rate_limiter.store, 'postgres');
    assert.equal(status.body.engine, 'postgres');

    const { userId } = await assertSharedCounter(fixture.get());
    const stored = await withPg(dbUrl, async (c) => (await c.query<{ points: number }>('SELECT points FROM rate_limits WHERE key = $1', [`databases:u:${userId}`])).rows);
    assert.equal(stored.length, 1, 'one counter row for the user in the rate_limits table');
    assert.ok(stored[0]!.points > RATE_LIMIT, `the row counts every request from both processes: ${stored[0]!.points}`);
  });

  test('both processes shut down gracefully on SIGTERM (exit 0 within 10 s)', OPTS, async () => {
    const { a, b } = fixture.get();
    const results = await Promise.all([stopProc(a), stopProc(b)]);
    for (const [i, r] of results.entries()) {
      const p = i === 0 ? a : b;
      assert.equal(r.timedOut, false, `${p.name} exited within 10 s`);
      assert.deepEqual(r.exit, { code: 0, signal: null }, `${p.name} exit status:\n${p.output()}`);
      assert.ok(logRecords(p).some((rec) => rec.msg === 'shutting down'), `${p.name} logged its shutdown`);
    }
  });
});

describe('two server processes with REDIS_URL share counters in Redis', () => {
  const fixture = pairFixture('redis', { REDIS_URL });
  let redis: Redis | undefined;
  let counterKey: string | undefined;

  before(async () => {
    if (SKIP) return;
    redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 5_000, commandTimeout: 5_000 });
    redis.on('error', () => {});
    await redis.connect();
  }, { timeout: 10_000 });
  after(async () => {
    try {
      await fixture.close();
    } finally {
      // Only this run's own key; nothing else in Redis is touched.
      if (redis && counterKey) await redis.del(counterKey).catch(() => {});
      redis?.disconnect();
    }
  });

  test('both processes come up on one database with the Redis store', OPTS, async () => {
    const { a, b, dbUrl } = fixture.get();
    for (const p of [a, b]) {
      const status = await http(p, 'GET', '/api/status');
      expectStatus(status, 200, `status on ${p.name}`);
      assert.equal(status.body.components.rate_limiter.store, 'redis', `${p.name} counts in Redis`);
      assert.equal(status.body.components.kv_storage.status, 'operational', `${p.name} reaches Redis`);
    }
    const rows = await withPg(dbUrl, async (c) => (await c.query<{ n: string }>('SELECT count(*) AS n FROM schema_migrations')).rows[0]!.n);
    assert.equal(Number(rows), MIGRATIONS.length, 'each migration recorded once');
    const admins = await withPg(dbUrl, async (c) => (await c.query<{ n: string }>(`SELECT count(*) AS n FROM users WHERE lower(username) = 'admin'`)).rows[0]!.n);
    assert.equal(admins, '1');
    assert.equal(passwordLines(a).length + passwordLines(b).length, 1, 'one generated-password line across both logs');
  });

  test('the HeliosDB counter is shared across processes through Redis', OPTS, async () => {
    const { dbUrl } = fixture.get();
    const { userId } = await assertSharedCounter(fixture.get());
    counterKey = `databases:u:${userId}`;
    const inRedis = await redis!.get(counterKey);
    assert.ok(inRedis !== null && Number(inRedis) > RATE_LIMIT, `Redis holds the user's counter: ${inRedis}`);
    const inPg = await withPg(dbUrl, async (c) => (await c.query('SELECT 1 FROM rate_limits WHERE key = $1', [counterKey])).rows.length);
    assert.equal(inPg, 0, 'nothing counted in the PostgreSQL table when Redis is configured');
  });

  test('both processes shut down gracefully on SIGTERM (exit 0 within 10 s)', OPTS, async () => {
    const { a, b } = fixture.get();
    const results = await Promise.all([stopProc(a), stopProc(b)]);
    for (const [i, r] of results.entries()) {
      const p = i === 0 ? a : b;
      assert.equal(r.timedOut, false, `${p.name} exited within 10 s`);
      assert.deepEqual(r.exit, { code: 0, signal: null }, `${p.name} exit status:\n${p.output()}`);
    }
  });
});
