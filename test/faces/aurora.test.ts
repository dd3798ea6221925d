/**
 * HelixCode Aurora: the audit log, security metrics and host monitoring, over real logins, sessions
 * and host readings. Admins see every user's records; other users only their own.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { availableParallelism, cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { decodeJwt } from 'jose';
import { ConfigError, loadConfig } from '../../src/config.ts';
import { assertFaceError, requestFrom } from '../http/face-errors.ts';
import { startTestServer, uniqueEmail, type TestResponse, type TestServer } from '../helpers/server.ts';

let s: TestServer;
before(async () => {
  s = await startTestServer();
});
after(() => s.close());

const PASSWORD = 'correct-horse-battery';
const UA = 'AuroraClient/2.1 (test)';
const EVENT_TYPES = ['authentication', 'authorization', 'data_access', 'config_change'];
const MIB = 1024 * 1024;
let ipSeq = 10;

/** A fresh client address per account, so login throttles never carry over between tests. */
function nextIp(): string {
  return `203.0.113.${ipSeq++}`;
}

async function createAccount(role: 'admin' | 'user' = 'user') {
  const email = uniqueEmail(`aurora-${role}`);
  const user = await s.ctx.identity.createUser({ email, password: PASSWORD, role });
  return { id: user.id, email, ip: nextIp() };
}

async function login(account: { email: string; ip: string }): Promise<string> {
  const res = await requestFrom(s, account.ip, 'POST', '/api/v1/auth/login', {
    body: { username: account.email, password: PASSWORD },
    headers: { 'user-agent': UA },
  });
  assert.equal(res.status, 200, res.text);
  return res.body.token as string;
}

async function failLogin(account: { email: string; ip: string }): Promise<void> {
  const res = await requestFrom(s, account.ip, 'POST', '/api/v1/auth/login', {
    body: { username: account.email, password: 'wrong-password-123' },
    headers: { 'user-agent': UA },
  });
  assert.equal(res.status, 401, res.text);
}

async function logout(account: { ip: string }, token: string): Promise<void> {
  const res = await requestFrom(s, account.ip, 'POST', '/api/v1/auth/logout', { token, headers: { 'user-agent': UA } });
  assert.equal(res.status, 200, res.text);
}

async function audit(token: string, query = ''): Promise<TestResponse> {
  return s.request('GET', `/api/v1/aurora/audit${query}`, { token });
}

async function auditOk(token: string, query = '') {
  const res = await audit(token, query);
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(Object.keys(res.body).sort(), ['logs', 'total']);
  return res.body as { logs: AuditLog[]; total: number };
}

interface AuditLog {
  id: string;
  event_type: string;
  user_id: string | null;
  action: string;
  result: string;
  ip_address: string | null;
  timestamp: string;
  metadata: Record<string, unknown> & { user_agent: string | null };
}

async function security(token: string) {
  const res = await s.request('GET', '/api/v1/aurora/metrics/security', { token });
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(Object.keys(res.body).sort(), ['active_sessions', 'auth_attempts', 'encryption_status', 'last_audit', 'security_level']);
  return res.body as {
    auth_attempts: { successful: number; failed: number; rate: number };
    active_sessions: number;
    encryption_status: string;
    security_level: string;
    last_audit: string | null;
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The same instant written with a +02:00 offset instead of Z. */
function withPlusTwo(d: Date): string {
  const shifted = new Date(d.getTime() + 2 * 3600_000).toISOString();
  return `${shifted.slice(0, -1)}+02:00`;
}

describe('GET /api/v1/aurora/audit', () => {
  test("lists the caller's own login, failed login and logout events, newest first, with every field", async () => {
    const acct = await createAccount();
    const startedAt = Date.now();
    const first = await login(acct);
    await failLogin(acct);
    const second = await login(acct);
    await logout(acct, first);

    const body = await auditOk(second);
    assert.equal(body.total, 5);
    assert.deepEqual(
      body.logs.map((l) => `${l.event_type}/${l.action}/${l.result}`),
      ['authentication/logout/success', 'authentication/login/success', 'authentication/login/failure', 'authentication/login/success', 'config_change/user_created/success'],
    );
    const ids = new Set(body.logs.map((l) => l.id));
    assert.equal(ids.size, 5);
    let previous = Infinity;
    for (const log of body.logs) {
      assert.deepEqual(Object.keys(log).sort(), ['action', 'event_type', 'id', 'ip_address', 'metadata', 'result', 'timestamp', 'user_id']);
      assert.match(log.id, /^aud_/);
      assert.equal(log.user_id, acct.id);
      assert.match(log.timestamp, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
      const t = Date.parse(log.timestamp);
      assert.ok(t <= previous, 'newest first');
      assert.ok(t <= Date.now() + 1000, 'not in the future');
      previous = t;
      assert.ok('user_agent' in log.metadata, 'metadata.user_agent is always present');
    }
    const [loggedOut, loggedIn, failed, firstLogin, created] = body.logs as [AuditLog, AuditLog, AuditLog, AuditLog, AuditLog];
    for (const l of [loggedOut, loggedIn, failed, firstLogin]) {
      assert.equal(l.ip_address, acct.ip);
      assert.equal(l.metadata.user_agent, UA);
      assert.ok(Date.parse(l.timestamp) >= startedAt - 1000);
    }
    assert.equal(failed.metadata.reason, 'wrong_password');
    assert.equal(loggedIn.metadata.face, 'tasks');
    assert.equal(typeof loggedOut.metadata.session_id, 'string');
    assert.equal(loggedOut.metadata.session_id, decodeJwt(first).sid, 'the logout names the session it ended');
    // Created by the operator path, not over HTTP: no address, no user agent.
    assert.equal(created.ip_address, null);
    assert.equal(created.metadata.user_agent, null);
    assert.equal(created.metadata.role, 'user');
  });

  test('event_type, start_time and end_time filter the events; limit and offset page them', async () => {
    const acct = await createAccount();
    await sleep(30);
    const mark = new Date();
    await sleep(30);
    const token = await login(acct);
    await failLogin(acct);

    const all = await auditOk(token);
    assert.equal(all.total, 3);

    const config = await auditOk(token, '?event_type=config_change');
    assert.equal(config.total, 1);
    assert.deepEqual(config.logs.map((l) => l.action), ['user_created']);
    const auth = await auditOk(token, '?event_type=authentication');
    assert.equal(auth.total, 2);
    assert.ok(auth.logs.every((l) => l.event_type === 'authentication' && l.action === 'login'));
    const none = await auditOk(token, '?event_type=data_access');
    assert.deepEqual(none, { logs: [], total: 0 });

    const afterMark = await auditOk(token, `?start_time=${mark.toISOString()}`);
    assert.deepEqual(afterMark.logs.map((l) => l.result), ['failure', 'success']);
    assert.equal(afterMark.total, 2);
    const beforeMark = await auditOk(token, `?end_time=${mark.toISOString()}`);
    assert.deepEqual(beforeMark.logs.map((l) => l.action), ['user_created']);
    // The same instant with an offset selects the same events.
    const withOffset = await auditOk(token, `?end_time=${encodeURIComponent(withPlusTwo(mark))}`);
    assert.deepEqual(withOffset.logs.map((l) => l.id), beforeMark.logs.map((l) => l.id));
    const window = await auditOk(token, `?event_type=config_change&start_time=${mark.toISOString()}&end_time=${new Date(Date.now() + 60_000).toISOString()}`);
    assert.deepEqual(window, { logs: [], total: 0 });

    const page1 = await auditOk(token, '?limit=1');
    assert.equal(page1.total, 3, 'total counts the whole filter, not the page');
    assert.deepEqual(page1.logs.map((l) => l.id), [all.logs[0]!.id]);
    const page2 = await auditOk(token, '?limit=2&offset=1');
    assert.deepEqual(page2.logs.map((l) => l.id), [all.logs[1]!.id, all.logs[2]!.id]);
    const beyond = await auditOk(token, '?offset=10');
    assert.deepEqual(beyond, { logs: [], total: 3 });
  });

  test("an admin sees every user's events; a user sees only their own", async () => {
    const admin = await createAccount('admin');
    const adminToken = await login(admin);
    const user = await createAccount();
    const userToken = await login(user);
    const stranger = { email: uniqueEmail('nobody'), ip: nextIp() };
    await failLogin(stranger);

    const seenByAdmin = await auditOk(adminToken, '?limit=1000');
    assert.ok(seenByAdmin.logs.some((l) => l.user_id === user.id && l.action === 'login'), "admin sees the user's login");
    assert.ok(seenByAdmin.logs.some((l) => l.user_id === admin.id && l.action === 'login'), 'admin sees their own login');
    const unknown = seenByAdmin.logs.find((l) => l.user_id === null && l.metadata.identifier === stranger.email);
    assert.ok(unknown, 'admin sees failed logins of unknown accounts');
    assert.equal(unknown.metadata.reason, 'unknown_account');
    assert.equal(seenByAdmin.total, seenByAdmin.logs.length);

    const seenByUser = await auditOk(userToken, '?limit=1000');
    assert.ok(seenByUser.logs.length >= 2);
    assert.ok(seenByUser.logs.every((l) => l.user_id === user.id), 'only the caller’s own events');
    assert.equal(seenByUser.total, seenByUser.logs.length);
    assert.ok(seenByAdmin.total > seenByUser.total);
  });

  test('bad query values are 400 VALIDATION_ERROR in the HelixCode shape, naming the field', async () => {
    const acct = await createAccount();
    const token = await login(acct);

    const badType = await audit(token, '?event_type=login');
    assertFaceError(badType, 'tasks', 'VALIDATION_ERROR', 'event_type=login');
    assert.equal(badType.body.error.details.field, 'event_type');
    assert.deepEqual(badType.body.error.details.allowed_values, EVENT_TYPES);

    const cases: [string, string][] = [
      ['?start_time=yesterday', 'start_time'],
      ['?start_time=2025-11-07', 'start_time'],
      ['?end_time=2025-13-40T00:00:00Z', 'end_time'],
      ['?start_time=2025-11-07T10:00:00Z&end_time=2025-11-07T09:59:59Z', 'start_time'],
      ['?limit=0', 'limit'],
      ['?limit=1001', 'limit'],
      ['?limit=abc', 'limit'],
      ['?limit=2.5', 'limit'],
      ['?offset=-1', 'offset'],
    ];
    for (const [query, field] of cases) {
      const res = await audit(token, query);
      assertFaceError(res, 'tasks', 'VALIDATION_ERROR', query);
      assert.equal(res.body.error.details?.field, field, `${query}: ${res.text}`);
    }

    const largest = await auditOk(token, '?limit=1000&start_time=2025-11-07T10:00:00Z&end_time=2025-11-07T10:00:00Z');
    assert.deepEqual(largest, { logs: [], total: 0 }, 'limit 1000 and start = end are accepted');
  });

  test('every Aurora route refuses a request without a valid token', async () => {
    for (const url of ['/api/v1/aurora/audit', '/api/v1/aurora/metrics/security', '/api/v1/aurora/monitoring/system']) {
      assertFaceError(await s.request('GET', url), 'tasks', 'AUTH_REQUIRED', `${url} without a token`);
      assertFaceError(await s.request('GET', url, { token: 'not-a-token' }), 'tasks', 'AUTH_REQUIRED', `${url} with a bad token`);
    }
  });
});

describe('GET /api/v1/aurora/metrics/security', () => {
  test("counts the user's own login outcomes of the last 24 hours and their live sessions", async () => {
    const acct = await createAccount();
    const tokens = [await login(acct), await login(acct)];
    await failLogin(acct);
    tokens.push(await login(acct));
    await failLogin(acct);

    const m = await security(tokens[2]!);
    assert.deepEqual(m.auth_attempts, { successful: 3, failed: 2, rate: 0.4 });
    assert.equal(m.active_sessions, 3);
    assert.equal(m.encryption_status, 'active');
    assert.equal(m.security_level, 'standard');
    const newest = (await auditOk(tokens[2]!, '?limit=1')).logs[0]!;
    assert.equal(m.last_audit, newest.timestamp, 'last_audit is the newest event the caller can see');

    await logout(acct, tokens[0]!);
    const afterLogout = await security(tokens[2]!);
    assert.equal(afterLogout.active_sessions, 2);
    assert.deepEqual(afterLogout.auth_attempts, m.auth_attempts, 'a logout is not a login attempt');
    assert.ok(Date.parse(afterLogout.last_audit!) >= Date.parse(m.last_audit!));
    assert.equal(afterLogout.last_audit, (await auditOk(tokens[2]!, '?limit=1')).logs[0]!.timestamp);

    // An expired session no longer counts.
    await s.ctx.db.query(`UPDATE auth_sessions SET expires_at = now() - interval '1 minute' WHERE id = $1`, [decodeJwt(tokens[1]!).sid]);
    assert.equal((await security(tokens[2]!)).active_sessions, 1);

    // A failure older than 24 hours leaves the window.
    const failures = await auditOk(tokens[2]!, '?event_type=authentication&limit=1000');
    const oldest = failures.logs.filter((l) => l.action === 'login' && l.result === 'failure').at(-1)!;
    await s.ctx.db.query(`UPDATE audit_events SET occurred_at = now() - interval '25 hours' WHERE id = $1`, [oldest.id]);
    assert.deepEqual((await security(tokens[2]!)).auth_attempts, { successful: 3, failed: 1, rate: 0.25 });
  });

  test("an admin's figures cover every user", async () => {
    const admin = await createAccount('admin');
    const adminToken = await login(admin);
    const before = await security(adminToken);

    const user = await createAccount();
    const userTokens = [await login(user), await login(user), await login(user)];
    await failLogin(user);
    await failLogin(user);
    await failLogin({ email: uniqueEmail('nobody'), ip: nextIp() });

    const after = await security(adminToken);
    assert.equal(after.auth_attempts.successful - before.auth_attempts.successful, 3);
    assert.equal(after.auth_attempts.failed - before.auth_attempts.failed, 3, 'including failures for unknown accounts');
    assert.equal(after.active_sessions - before.active_sessions, 3);
    const { successful, failed, rate } = after.auth_attempts;
    assert.equal(rate, Math.round((failed / (successful + failed)) * 10_000) / 10_000);

    // The same figures as the audit log shows an admin for the last 24 hours.
    const dayAgo = new Date(Date.now() - 24 * 3600_000).toISOString();
    const logins = (await auditOk(adminToken, `?event_type=authentication&start_time=${dayAgo}&limit=1000`)).logs.filter((l) => l.action === 'login');
    assert.equal(successful, logins.filter((l) => l.result === 'success').length);
    assert.equal(failed, logins.filter((l) => l.result === 'failure').length);

    const own = await security(userTokens[0]!);
    assert.deepEqual(own.auth_attempts, { successful: 3, failed: 2, rate: 0.4 }, 'the user sees only their own');
    assert.equal(own.active_sessions, 3);
    assert.ok(after.active_sessions > own.active_sessions);
    assert.ok(Date.parse(after.last_audit!) >= Date.parse(own.last_audit!));

    await logout(user, userTokens[1]!);
    assert.equal((await security(adminToken)).active_sessions, after.active_sessions - 1);
  });

  test('security_level is the configured SECURITY_LEVEL, and a value outside the enum stops the server', async () => {
    const strict = await startTestServer({ SECURITY_LEVEL: 'enhanced' });
    try {
      const email = uniqueEmail('level');
      await strict.ctx.identity.createUser({ email, password: PASSWORD, role: 'user' });
      const res = await strict.request('POST', '/api/v1/auth/login', { body: { username: email, password: PASSWORD } });
      assert.equal(res.status, 200, res.text);
      const m = await strict.request('GET', '/api/v1/aurora/metrics/security', { token: res.body.token });
      assert.equal(m.status, 200, m.text);
      assert.equal(m.body.security_level, 'enhanced');
    } finally {
      await strict.close();
    }
    const dataDir = mkdtempSync(join(tmpdir(), 'ms-level-'));
    try {
      assert.throws(() => loadConfig({ DATA_DIR: dataDir, SECURITY_LEVEL: 'lax' }), (err: unknown) => err instanceof ConfigError && /SECURITY_LEVEL/.test(err.message));
      assert.equal(loadConfig({ DATA_DIR: dataDir }).securityLevel, 'standard');
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe('GET /api/v1/aurora/monitoring/system', () => {
  test('reports measured CPU, memory, disk and network figures in sane ranges', async () => {
    const acct = await createAccount();
    const token = await login(acct);
    const t0 = performance.now();
    const res = await s.request('GET', '/api/v1/aurora/monitoring/system', { token });
    const elapsed = performance.now() - t0;
    assert.equal(res.status, 200, res.text);
    assert.ok(elapsed < 1000, `answered in ${Math.round(elapsed)} ms`);
    const { cpu, memory, disk, network } = res.body;
    assert.deepEqual(Object.keys(res.body).sort(), ['cpu', 'disk', 'memory', 'network']);

    assert.equal(typeof cpu.usage, 'number');
    assert.ok(cpu.usage >= 0 && cpu.usage <= 100, `cpu.usage ${cpu.usage}`);
    assert.equal(cpu.cores, availableParallelism());
    assert.ok(cpu.temperature === null || (typeof cpu.temperature === 'number' && cpu.temperature > -40 && cpu.temperature < 150));

    assert.ok(Math.abs(memory.total - Math.round(totalmem() / MIB)) <= 1, `memory.total ${memory.total} MB`);
    assert.ok(memory.total > memory.used && memory.used > 0, JSON.stringify(memory));
    assert.ok(memory.available > 0);
    assert.equal(memory.used + memory.available, memory.total);
    assert.ok(Math.abs(memory.percentage - (memory.used / memory.total) * 100) <= 0.1, JSON.stringify(memory));

    const fs = await statfs(s.ctx.config.dataDir);
    assert.equal(disk.total, Math.round((fs.blocks * fs.bsize) / MIB));
    assert.ok(disk.total > 0 && disk.used >= 0 && disk.available >= 0);
    assert.ok(disk.used <= disk.total && disk.available <= disk.total, JSON.stringify(disk));
    assert.ok(Math.abs(disk.percentage - (disk.used / disk.total) * 100) <= 0.1, JSON.stringify(disk));

    if (existsSync('/proc/net/dev')) {
      assert.ok(Number.isInteger(network.rx_bytes) && network.rx_bytes >= 0, JSON.stringify(network));
      assert.ok(Number.isInteger(network.tx_bytes) && network.tx_bytes >= 0, JSON.stringify(network));
    } else {
      assert.deepEqual(network, { rx_bytes: null, tx_bytes: null });
    }
  });

  test('CPU usage rises while a core is kept busy', async () => {
    const acct = await createAccount();
    const token = await login(acct);
    const busy = new Worker('const end = Date.now() + 2000; while (Date.now() < end) {}', { eval: true });
    try {
      await sleep(150);
      // The first call starts a measurement under load; the second covers a fully loaded interval.
      assert.equal((await s.request('GET', '/api/v1/aurora/monitoring/system', { token })).status, 200);
      const res = await s.request('GET', '/api/v1/aurora/monitoring/system', { token });
      assert.equal(res.status, 200, res.text);
      // One of the host's CPUs is saturated: at least a quarter of its share must show.
      const floor = 25 / cpus().length;
      assert.ok(res.body.cpu.usage >= floor, `usage ${res.body.cpu.usage}% < ${floor}% with one core busy`);
    } finally {
      await busy.terminate();
    }
  });
});
