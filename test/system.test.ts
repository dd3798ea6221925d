/**
 * System endpoints (liveness, the Helomatic status document, Prometheus metrics and its token)
 * and the audit trail written by authentication events.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { decodeJwt } from 'jose';
import { listAuditEvents, type AuditEvent } from '../src/domains/audit/service.ts';
import { ENGINE } from './helpers/engine.ts';
import { startTestServer, uniqueEmail, type TestServer } from './helpers/server.ts';
import { assertFaceError, header, requestFrom } from './http/face-errors.ts';

const PACKAGE_VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

function isIsoTime(v: unknown): v is string {
  return typeof v === 'string' && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/.test(v) && !Number.isNaN(Date.parse(v));
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text exposition into samples. */
function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    assert.ok(m, `unparseable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

function sum(samples: Sample[], name: string, match: Record<string, string>): number {
  return samples
    .filter((x) => x.name === name && Object.entries(match).every(([k, v]) => x.labels[k] === v))
    .reduce((acc, x) => acc + x.value, 0);
}

// One server for liveness, status, metrics and the audit trail; the metrics token needs its own.
let s: TestServer;
before(async () => {
  s = await startTestServer();
});
after(() => s.close());

describe('health, status and metrics', () => {

  test('GET /health is 200 healthy, unlimited and unauthenticated', async () => {
    for (let i = 0; i < 3; i++) {
      const res = await s.request('GET', '/health');
      assert.equal(res.status, 200);
      assert.equal(res.body.status, 'healthy');
      assert.equal(res.body.version, PACKAGE_VERSION);
      assert.equal(typeof res.body.uptime_seconds, 'number');
      assert.ok(res.body.uptime_seconds >= 0);
      assert.ok(isIsoTime(res.body.timestamp));
      assert.ok(Math.abs(Date.parse(res.body.timestamp) - Date.now()) < 60_000);
      assert.equal(header(res, 'x-ratelimit-limit'), undefined, 'liveness is not rate limited');
    }
    // A bad credential does not matter to liveness.
    assert.equal((await s.request('GET', '/health', { token: 'junk' })).status, 200);
  });

  test('GET /api/status is the Helomatic System Status document with measured checks', async () => {
    const before = Date.now();
    const res = await s.request('GET', '/api/status');
    assert.equal(res.status, 200, res.text);
    const b = res.body;
    assert.equal(b.status, 'operational');
    assert.equal(b.environment, 'production');
    assert.equal(b.version, PACKAGE_VERSION);
    assert.equal(b.engine, ENGINE);
    assert.ok(isIsoTime(b.timestamp));
    assert.ok(Date.parse(b.timestamp) >= before - 1000);

    const store = ENGINE === 'postgres' ? 'postgres' : 'memory';
    const { database, kv_storage: kv, rate_limiter: limiter } = b.components;
    for (const [name, c] of [['database', database], ['kv_storage', kv]] as const) {
      assert.equal(c.status, 'operational', `${name} status`);
      assert.equal(typeof c.latency, 'number', `${name} latency is a number`);
      assert.ok(Number.isFinite(c.latency) && c.latency >= 0, `${name} latency ${c.latency}`);
      assert.ok(c.latency < 10_000, `${name} latency is in milliseconds`);
      assert.ok(isIsoTime(c.last_check), `${name} last_check`);
      assert.ok(Date.parse(c.last_check) >= before - 1000, `${name} checked now`);
      assert.equal(c.error, undefined);
    }
    assert.equal(kv.store, store);
    assert.equal(limiter.status, 'operational');
    assert.equal(limiter.store, store);
    assert.ok(isIsoTime(limiter.last_check));

    assert.deepEqual(Object.keys(b.security).sort(), ['cors_configured', 'headers_enabled', 'rate_limiting', 'ssl_enforced']);
    assert.equal(b.security.headers_enabled, true);
    assert.equal(b.security.cors_configured, false);
    assert.equal(b.security.rate_limiting, 'active');
    assert.equal(typeof b.security.ssl_enforced, 'boolean');

    // Helomatic rate-limit headers (epoch ms) on the status document.
    assert.ok(Number(header(res, 'x-ratelimit-reset')) > 1e12);

    // Every call measures again.
    const again = await s.request('GET', '/api/status');
    assert.ok(Date.parse(again.body.components.database.last_check) >= Date.parse(database.last_check));
    // An invalid token is ignored here (the status document needs no authentication).
    assert.equal((await s.request('GET', '/api/status', { token: 'junk' })).status, 200);
  });

  test('GET /metrics is Prometheus text whose request counters grow', async () => {
    const first = await s.request('GET', '/metrics');
    assert.equal(first.status, 200);
    assert.match(String(header(first, 'content-type')), /^text\/plain/);
    assert.equal(header(first, 'x-ratelimit-limit'), undefined, 'metrics are not rate limited');
    assert.match(first.text, /^# HELP http_requests_total /m);
    assert.match(first.text, /^# TYPE http_requests_total counter$/m);
    assert.match(first.text, /^# TYPE http_request_duration_seconds histogram$/m);
    assert.match(first.text, /^process_cpu_user_seconds_total \d/m);
    assert.match(first.text, /^process_cpu_seconds_total \d/m);
    assert.match(first.text, /^nodejs_heap_size_used_bytes \d/m);

    const health = { name: 'http_requests_total', labels: { method: 'GET', route: '/health', status: '200', face: 'monitoring' } };
    const notFound = { method: 'GET', status: '404', face: 'databases' };
    const before = parseMetrics(first.text);
    const healthBefore = sum(before, health.name, health.labels);
    const notFoundBefore = sum(before, 'http_requests_total', notFound);

    for (let i = 0; i < 3; i++) assert.equal((await s.request('GET', '/health')).status, 200);
    for (let i = 0; i < 2; i++) assert.equal((await s.request('GET', '/v1/no-such-thing')).status, 404);
    const metricsReq = await s.request('GET', '/metrics');
    const afterSamples = parseMetrics(metricsReq.text);
    assert.equal(sum(afterSamples, health.name, health.labels), healthBefore + 3, 'three more /health requests counted');
    assert.equal(sum(afterSamples, 'http_requests_total', notFound), notFoundBefore + 2, 'unmatched routes counted under their face');
    // The first /metrics call itself was counted once it had been answered.
    assert.ok(sum(afterSamples, 'http_requests_total', { route: '/metrics', status: '200' }) >= 1);

    // The latency histogram has the configured buckets, cumulative, consistent with the counter.
    const buckets = afterSamples.filter((x) => x.name === 'http_request_duration_seconds_bucket' && x.labels.route === '/health' && x.labels.status === '200');
    const les = buckets.map((x) => x.labels.le);
    for (const le of ['0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '+Inf']) assert.ok(les.includes(le), `bucket le=${le}`);
    const values = buckets.map((x) => x.value);
    for (let i = 1; i < values.length; i++) assert.ok(values[i]! >= values[i - 1]!, 'buckets are cumulative');
    const inf = buckets.find((x) => x.labels.le === '+Inf')!.value;
    assert.equal(inf, healthBefore + 3);
    assert.equal(sum(afterSamples, 'http_request_duration_seconds_count', health.labels), healthBefore + 3);
    assert.ok(sum(afterSamples, 'http_request_duration_seconds_sum', health.labels) > 0);
  });
});

describe('METRICS_TOKEN', () => {
  let guarded: TestServer;
  before(async () => {
    guarded = await startTestServer({ METRICS_TOKEN: 'm-token', MAINSPRING_ENV: 'staging' });
  });
  after(() => guarded.close());

  test('/metrics needs the metrics token when one is configured', async () => {
    const none = await guarded.request('GET', '/metrics');
    assertFaceError(none, 'monitoring', 'AUTH_REQUIRED', 'no token');
    assert.ok(!none.text.includes('http_requests_total'));
    for (const wrong of ['m-tokex', 'm-token-and-more', 'm', 'M-TOKEN']) {
      const res = await guarded.request('GET', '/metrics', { token: wrong });
      assertFaceError(res, 'monitoring', 'AUTH_REQUIRED', `wrong token ${wrong}`);
    }
    assertFaceError(await guarded.request('GET', '/metrics', { headers: { authorization: 'Basic m-token' } }), 'monitoring', 'AUTH_REQUIRED', 'Basic scheme');
    assertFaceError(await guarded.request('GET', '/metrics', { headers: { authorization: 'm-token' } }), 'monitoring', 'AUTH_REQUIRED', 'bare token');

    // A user's access token is not the metrics token.
    const reg = await guarded.request('POST', '/api/auth/register', { body: { email: uniqueEmail('m'), password: 'correct-horse-battery' } });
    assertFaceError(await guarded.request('GET', '/metrics', { token: reg.body.data.tokens.access_token }), 'monitoring', 'AUTH_REQUIRED', 'user token');

    const ok = await guarded.request('GET', '/metrics', { headers: { authorization: 'Bearer m-token' } });
    assert.equal(ok.status, 200);
    assert.match(ok.text, /^http_requests_total\{/m);
    assert.ok(parseMetrics(ok.text).length > 10);
    // Liveness and status stay public; the deployment name is shown.
    assert.equal((await guarded.request('GET', '/health')).status, 200);
    const status = await guarded.request('GET', '/api/status');
    assert.equal(status.status, 200);
    assert.equal(status.body.environment, 'staging');
  });
});

describe('audit trail', () => {

  test('authentication events are recorded with user id, address, user agent and result', async () => {
    const started = Date.now();
    const ip = '192.0.2.44';
    const ua = 'audit-probe/2.0 (integration)';
    const headers = { 'user-agent': ua };
    const email = uniqueEmail('audit');
    const password = 'correct-horse-battery';
    const call = (method: string, url: string, opts: { body?: unknown; token?: string } = {}) => requestFrom(s, ip, method, url, { ...opts, headers });

    const reg = await call('POST', '/api/auth/register', { body: { email, password } });
    assert.equal(reg.status, 201, reg.text);
    const userId = reg.body.data.user.id as string;

    const first = await call('POST', '/v1/auth/login', { body: { email, password } });
    assert.equal(first.status, 200, first.text);
    const firstSid = decodeJwt(first.body.data.token).sid;

    assertFaceError(await call('POST', '/api/v1/auth/login', { body: { username: email, password: 'wrong-password' } }), 'tasks', 'AUTH_REQUIRED', 'wrong password');
    assertFaceError(await call('POST', '/auth/login', { body: { email: `nobody-${email}`, password } }), 'automation', 'AUTH_REQUIRED', 'unknown account');

    const refreshed = await call('POST', '/api/auth/refresh', { body: { refresh_token: first.body.data.refresh_token } });
    assert.equal(refreshed.status, 200, refreshed.text);
    const reuse = await call('POST', '/auth/refresh', { body: { refresh_token: first.body.data.refresh_token } });
    assertFaceError(reuse, 'automation', 'AUTH_REQUIRED', 'reuse');

    const second = await call('POST', '/auth/login', { body: { email, password } });
    assert.equal(second.status, 200, second.text);
    const token = second.body.data.token as string;
    const secondSid = decodeJwt(token).sid;
    const created = await call('POST', '/auth/me/api-keys', { token, body: { name: 'audited' } });
    assert.equal(created.status, 201, created.text);
    const keyId = created.body.data.id as string;
    assert.equal((await call('DELETE', `/auth/me/api-keys/${keyId}`, { token })).status, 200);
    assert.equal((await call('POST', '/api/v1/auth/logout', { token })).status, 200);

    // Someone else's activity must not show up in this user's trail.
    const other = await s.request('POST', '/api/auth/register', { body: { email: uniqueEmail('other'), password } });
    assert.equal(other.status, 201);

    const { events, total } = await listAuditEvents(s.ctx.db, { userId, limit: 100, offset: 0 });
    assert.equal(total, events.length);
    const find = (action: string, result: 'success' | 'failure', pred: (e: AuditEvent) => boolean = () => true) => {
      const hits = events.filter((e) => e.action === action && e.result === result && pred(e));
      assert.equal(hits.length, 1, `one ${action}/${result} event; got ${JSON.stringify(events.map((e) => [e.action, e.result]))}`);
      return hits[0]!;
    };

    const expected = [
      find('register', 'success', (e) => e.metadata.face === 'monitoring'),
      find('login', 'success', (e) => e.metadata.face === 'databases'),
      find('login', 'success', (e) => e.metadata.face === 'automation'),
      find('login', 'failure', (e) => e.metadata.reason === 'wrong_password' && e.metadata.face === 'tasks'),
      find('refresh', 'success', (e) => e.metadata.session_id === firstSid),
      find('refresh_token_reuse', 'failure', (e) => e.metadata.session_id === firstSid),
      find('api_key_created', 'success', (e) => e.metadata.key_id === keyId && e.metadata.name === 'audited'),
      find('api_key_revoked', 'success', (e) => e.metadata.key_id === keyId),
      find('logout', 'success', (e) => e.metadata.session_id === secondSid),
    ];
    assert.equal(events.length, expected.length, 'nothing else recorded for this user');
    for (const e of expected) {
      assert.equal(e.userId, userId, `${e.action} user`);
      assert.equal(e.eventType, 'authentication', `${e.action} type`);
      assert.equal(e.ipAddress, ip, `${e.action} ip`);
      assert.equal(e.userAgent, ua, `${e.action} user agent`);
      assert.ok(e.occurredAt instanceof Date && e.occurredAt.getTime() >= started - 5000, `${e.action} time`);
      assert.match(e.id, /^aud_/);
    }
    // Newest first: the logout came last.
    assert.equal(events[0]!.action, 'logout');
    for (let i = 1; i < events.length; i++) assert.ok(events[i - 1]!.occurredAt >= events[i]!.occurredAt, 'ordered newest first');

    // The unknown-account failure is kept without a user, with the identifier tried.
    const anon = await listAuditEvents(s.ctx.db, { action: 'login', limit: 100, offset: 0 });
    const unknown = anon.events.filter((e) => e.result === 'failure' && e.metadata.reason === 'unknown_account' && e.metadata.identifier === `nobody-${email}`);
    assert.equal(unknown.length, 1);
    assert.equal(unknown[0]!.userId, null);
    assert.equal(unknown[0]!.ipAddress, ip);

    // Filters narrow the list and count.
    const logins = await listAuditEvents(s.ctx.db, { userId, action: 'login', limit: 100, offset: 0 });
    assert.equal(logins.total, 3);
    assert.ok(logins.events.every((e) => e.action === 'login'));
    const page = await listAuditEvents(s.ctx.db, { userId, limit: 2, offset: 2 });
    assert.equal(page.events.length, 2);
    assert.equal(page.total, expected.length);
    assert.deepEqual(page.events.map((e) => e.id), events.slice(2, 4).map((e) => e.id));
  });
});
