/**
 * Conventions shared by the four faces: request ids, security headers, 404/413/415 in each face's
 * format, no 500s on hostile input, per-face rate limits with their headers, tiers and admins.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { registerUser, startTestServer, uniqueEmail, type TestResponse, type TestServer } from '../helpers/server.ts';
import { FACES, assertFaceError, header, loginRequest, requestFrom, type Face } from './face-errors.ts';

const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

/** A route per face that answers 404 whatever the caller sends. */
const NOT_FOUND_URL: Record<Face, string> = {
  tasks: '/api/v1/nope',
  monitoring: '/api/nope',
  databases: '/v1/nope',
  automation: '/nope',
};

function assertConventionHeaders(res: TestResponse, label: string): void {
  const id = header(res, 'x-request-id');
  assert.ok(id && REQUEST_ID_RE.test(id), `${label}: X-Request-Id ${id}`);
  assert.equal(header(res, 'x-content-type-options'), 'nosniff', `${label}: X-Content-Type-Options`);
  assert.equal(header(res, 'x-frame-options'), 'DENY', `${label}: X-Frame-Options`);
  assert.equal(header(res, 'referrer-policy'), 'no-referrer', `${label}: Referrer-Policy`);
  assert.ok(res.status < 500, `${label}: ${res.status} ${res.text.slice(0, 200)}`);
}

describe('request ids, security headers and error formats', () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer({ BODY_LIMIT_BYTES: '2048' });
  });
  after(() => s.close());

  test('every response carries a distinct X-Request-Id and the security headers', async () => {
    const u = await registerUser(s);
    const calls: [string, string, Parameters<TestServer['request']>[2]?][] = [
      ['GET', '/health'],
      ['GET', '/api/status'],
      ['GET', '/metrics'],
      ['GET', '/openapi.json'],
      ['GET', '/api/v1/users/me', { token: u.accessToken }],
      ['GET', '/auth/me', { token: u.accessToken }],
      ['GET', '/auth/me/api-keys', { token: u.accessToken }],
      ['POST', '/v1/auth/refresh', { token: u.accessToken }],
      ['GET', '/api/v1/users/me'],
      ['POST', '/api/auth/logout'],
      ['POST', '/v1/auth/logout', { token: 'junk' }],
      ['GET', '/auth/me', { token: 'junk' }],
      ['POST', '/auth/login', { body: { email: u.email, password: 'wrong-password' } }],
      ['POST', '/v1/auth/login', { body: {} }],
      ['POST', '/auth/register', { body: { email: 'no-at-sign', password: 'x' } }],
      ...FACES.map((f): [string, string] => ['GET', NOT_FOUND_URL[f]]),
      ['POST', '/api/auth/login', { rawBody: '{"email":', headers: { 'content-type': 'application/json' } }],
      ['POST', '/api/v1/auth/login', { rawBody: '<xml/>', headers: { 'content-type': 'application/xml' } }],
      ['POST', '/v1/auth/login', { body: { email: 'x'.repeat(10_000), password: 'y' } }],
    ];
    const seen = new Set<string>();
    for (const [method, url, opts] of calls) {
      const res = await s.request(method, url, opts);
      assertConventionHeaders(res, `${method} ${url}`);
      const id = header(res, 'x-request-id')!;
      assert.ok(!seen.has(id), `request id ${id} reused`);
      seen.add(id);
    }
  });

  test("a sane caller X-Request-Id is echoed in header and body; an insane one is replaced", async () => {
    for (const face of FACES) {
      const given = `trace-${face}.01:AB_cd`;
      const res = await s.request('GET', NOT_FOUND_URL[face], { headers: { 'x-request-id': given } });
      assert.equal(header(res, 'x-request-id'), given, `${face} echoes`);
      assertFaceError(res, face, 'NOT_FOUND'); // also checks body request_id == header where the face has one
      if (face === 'tasks') assert.equal(res.body.request_id, given);
      if (face === 'databases') assert.equal(res.body.meta.request_id, given);
    }
    const longest = 'a'.repeat(128);
    assert.equal(header(await s.request('GET', '/health', { headers: { 'x-request-id': longest } }), 'x-request-id'), longest);

    for (const insane of ['has space', 'semi;colon', 'a'.repeat(129), '<script>', 'x/y']) {
      for (const face of FACES) {
        const res = await s.request('GET', NOT_FOUND_URL[face], { headers: { 'x-request-id': insane } });
        const id = header(res, 'x-request-id');
        assert.notEqual(id, insane, `${face} must not echo ${JSON.stringify(insane)}`);
        assert.ok(id && REQUEST_ID_RE.test(id), `${face} replaced id is sane: ${id}`);
        assert.ok(!res.text.includes(insane), `${face} body must not carry ${JSON.stringify(insane)}`);
        assertFaceError(res, face, 'NOT_FOUND');
      }
    }
  });

  test('unknown routes are 404 in each face format', async () => {
    for (const face of FACES) {
      assertFaceError(await s.request('GET', NOT_FOUND_URL[face]), face, 'NOT_FOUND', `GET ${NOT_FOUND_URL[face]}`);
      assertFaceError(await s.request('DELETE', `${NOT_FOUND_URL[face]}/1?x=2`), face, 'NOT_FOUND', `DELETE ${NOT_FOUND_URL[face]}/1`);
      assertFaceError(await s.request('POST', NOT_FOUND_URL[face], { body: { a: 1 } }), face, 'NOT_FOUND', `POST ${NOT_FOUND_URL[face]}`);
    }
    assertFaceError(await s.request('GET', '/api/v1'), 'tasks', 'NOT_FOUND', '/api/v1');
    assertFaceError(await s.request('GET', '/api'), 'monitoring', 'NOT_FOUND', '/api');
    assertFaceError(await s.request('GET', '/v1'), 'databases', 'NOT_FOUND', '/v1');
    // A known path with a method it does not serve.
    assertFaceError(await s.request('PUT', '/api/v1/users/me'), 'tasks', 'NOT_FOUND', 'PUT /api/v1/users/me');
    assertFaceError(await s.request('GET', '/v1/auth/login'), 'databases', 'NOT_FOUND', 'GET /v1/auth/login');
  });

  test('a body over BODY_LIMIT_BYTES is 413 in each face format', async () => {
    const big = { email: 'big@example.com', password: 'p'.repeat(10 * 1024) };
    assert.ok(JSON.stringify(big).length > 10_000);
    for (const face of FACES) {
      const { url } = loginRequest(face, 'big@example.com', 'x');
      const res = await s.request('POST', url, { body: { ...big, username: 'big@example.com' } });
      assertFaceError(res, face, 'PAYLOAD_TOO_LARGE', `413 on ${face}`);
    }
    // Just under the limit is read normally (401 for the wrong credentials, not 413).
    const small = await s.request('POST', '/auth/login', { body: { email: 'big@example.com', password: 'wrong-password', pad: 'p'.repeat(1800) } });
    assertFaceError(small, 'automation', 'AUTH_REQUIRED', 'under the limit');
  });

  test('an unsupported content type is 415 in each face format', async () => {
    for (const face of FACES) {
      const { url } = loginRequest(face, 'a@example.com', 'x');
      for (const type of ['application/xml', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
        const res = await s.request('POST', url, { rawBody: 'email=a%40example.com&password=x', headers: { 'content-type': type } });
        assertFaceError(res, face, 'UNSUPPORTED_MEDIA_TYPE', `${type} on ${face}`);
      }
    }
  });

  test('malformed JSON is a validation error (400, 422 on Arrotech) in each face format', async () => {
    for (const face of FACES) {
      const { url } = loginRequest(face, 'a@example.com', 'x');
      const res = await s.request('POST', url, { rawBody: '{"email": "a@example.com", ', headers: { 'content-type': 'application/json' } });
      assertFaceError(res, face, 'VALIDATION_ERROR', `bad JSON on ${face}`);
    }
  });

  test('hostile but well-formed input never produces a 500', async () => {
    const u = await registerUser(s);
    const inputs: [string, string, Parameters<TestServer['request']>[2]?][] = [
      ['POST', '/auth/login', { rawBody: '[]' }],
      ['POST', '/api/auth/login', { rawBody: 'null' }],
      ['POST', '/v1/auth/login', { rawBody: '42' }],
      ['POST', '/api/v1/auth/login', { rawBody: '"string"' }],
      ['POST', '/auth/logout', { rawBody: 'null' }],
      ['POST', '/auth/login', { rawBody: '{"__proto__":{"admin":true},"email":"a@b.co","password":"x"}' }],
      ['POST', '/auth/login', { rawBody: '{"constructor":{"prototype":{"x":1}},"email":"a@b.co","password":"x"}' }],
      ['POST', '/api/auth/register', { body: { email: `${'ü'.repeat(20)}@example.com`, password: 'correct-horse-battery' } }],
      ['POST', '/api/auth/register', { body: { email: uniqueEmail('emoji'), password: '🔑'.repeat(40), name: '名前 😀' } }],
      ['POST', '/auth/register', { body: { email: 'x@y.z', password: 'p'.repeat(257), name: 'n' } }],
      ['POST', '/auth/login', { body: { email: "' OR 1=1 --", password: "' OR 1=1 --" } }],
      ['POST', '/api/v1/auth/login', { body: { username: 'a'.repeat(200), password: 'x'.repeat(256) } }],
      ['GET', '/auth/me', { token: 'x'.repeat(8000) }],
      ['GET', '/auth/me', { token: 'eyJ.eyJ.sig' }],
      ['GET', '/auth/me', { token: `${Buffer.from('{"alg":"HS256"}').toString('base64url')}.!!!.???` }],
      ['GET', '/api/v1/users/me', { headers: { authorization: 'Bearer a b c' } }],
      ['GET', '/api/v1/users/me?x=%zz&y[]=1&y[]=2', { token: u.accessToken }],
      ['DELETE', `/auth/me/api-keys/${'k'.repeat(65)}`, { token: u.accessToken }],
      ['DELETE', `/auth/me/api-keys/${encodeURIComponent("'; DROP TABLE api_keys; --")}`, { token: u.accessToken }],
      ['POST', '/auth/me/api-keys', { token: u.accessToken, body: { name: 'n'.repeat(101) } }],
      ['POST', '/auth/me/api-keys', { token: u.accessToken, body: { name: '   ' } }],
      ['POST', '/auth/refresh', { body: { refresh_token: 'r'.repeat(512) } }],
      ['POST', '/v1/auth/refresh', { body: {} }],
      ['POST', '/auth/verify-email', { body: { token: 'msv_nope' } }],
      ['HEAD', '/auth/me', { token: u.accessToken }],
      ['OPTIONS', '/api/v1/users/me'],
      ['GET', '/health', { headers: { 'x-forwarded-for': 'not-an-ip, 1.2.3.4' } }],
    ];
    for (const [method, url, opts] of inputs) {
      const res = await s.request(method, url, opts);
      assertConventionHeaders(res, `${method} ${url.slice(0, 60)} ${JSON.stringify(opts?.body ?? opts?.rawBody ?? '').slice(0, 60)}`);
    }
    // The user still exists and works after the injection-looking inputs.
    assert.equal((await s.request('GET', '/auth/me', { token: u.accessToken })).status, 200);
  });

  test('NUL characters in text fields are refused as input errors, not 500', async () => {
    const u = await registerUser(s);
    const cases: [Face, string, string, Parameters<TestServer['request']>[2]][] = [
      ['monitoring', 'POST', '/api/auth/register', { body: { email: 'nul\u0000@example.com', password: 'correct-horse-battery' } }],
      ['automation', 'POST', '/auth/register', { body: { email: uniqueEmail('nul'), password: 'correct-horse-battery', name: 'a\u0000b' } }],
      ['automation', 'POST', '/auth/login', { body: { email: 'nul\u0000@example.com', password: 'whatever-1' } }],
      ['tasks', 'POST', '/api/v1/auth/login', { body: { username: 'nul\u0000user', password: 'whatever-1' } }],
      ['automation', 'POST', '/auth/me/api-keys', { token: u.accessToken, body: { name: 'key\u0000' } }],
    ];
    for (const [face, method, url, opts] of cases) {
      const res = await s.request(method, url, opts);
      assert.ok(res.status < 500, `${method} ${url}: ${res.status} ${res.text}`);
      assert.ok(res.status === 400 || res.status === 401 || res.status === 422, `${face} ${url}: ${res.status}`);
    }
  });

  test(
    'a login failure with a long (schema-valid) identifier is 401, not 500',
    async () => {
      const long = `${'a'.repeat(240)}@example.com`;
      for (const face of FACES) {
        const { url, body } = loginRequest(face, long, 'wrong-password');
        assertFaceError(await s.request('POST', url, { body }), face, 'AUTH_REQUIRED', `long identifier on ${face}`);
      }
    },
  );

  test('a malformed URL is answered in the face format with the usual headers', async () => {
    const urls: Record<Face, string> = { tasks: '/api/v1/%zz', monitoring: '/api/%zz', databases: '/v1/%zz', automation: '/%zz' };
    for (const face of FACES) {
      const res = await s.request('GET', urls[face]);
      assert.ok(header(res, 'x-request-id'), `${face}: X-Request-Id on ${res.status} ${res.text}`);
      assert.equal(header(res, 'x-content-type-options'), 'nosniff', face);
      assert.ok(res.status === 400 || res.status === 404 || res.status === 422, `${face}: ${res.status}`);
      const code = res.status === 404 ? 'NOT_FOUND' : 'VALIDATION_ERROR';
      assertFaceError(res, face, code, `bad URL on ${face}`);
    }
  });
});

describe('rate limits', () => {
  const RATE_LIMITS = '{"databases":{"free":3,"anonymous":2},"monitoring":{"free":3},"tasks":{"free":3,"anonymous":2},"automation":{"free":3}}';
  const WINDOW_SECONDS: Record<Face, number> = { tasks: 3600, monitoring: 3600, databases: 60, automation: 86400 };
  let s: TestServer;
  before(async () => {
    s = await startTestServer({ RATE_LIMITS });
  });
  after(() => s.close());

  /** An authenticated request per face that neither changes state nor ends the session. */
  function authed(face: Face, token: string, from = '127.0.0.1'): Promise<TestResponse> {
    switch (face) {
      case 'tasks':
        return requestFrom(s, from, 'GET', '/api/v1/users/me', { token });
      case 'monitoring':
        return requestFrom(s, from, 'GET', '/api/status', { token });
      case 'databases':
        return requestFrom(s, from, 'POST', '/v1/auth/refresh', { token });
      case 'automation':
        return requestFrom(s, from, 'GET', '/auth/me', { token });
    }
  }

  async function loginToken(email: string, password: string): Promise<string> {
    const res = await s.request('POST', '/api/auth/login', { body: { email, password } });
    assert.equal(res.status, 200, res.text);
    return res.body.data.tokens.access_token as string;
  }

  function resetUnitCheck(face: Face, res: TestResponse): void {
    const reset = Number(header(res, 'x-ratelimit-reset'));
    assert.ok(Number.isFinite(reset), `${face}: X-RateLimit-Reset ${header(res, 'x-ratelimit-reset')}`);
    const now = Date.now();
    if (face === 'monitoring') {
      assert.ok(reset > 1e12, `Helomatic resets in epoch ms: ${reset}`);
      assert.ok(reset >= now - 2000 && reset <= now + WINDOW_SECONDS[face] * 1000 + 2000, `${face}: reset within window: ${reset}`);
    } else {
      assert.ok(reset < 1e11, `${face} resets in epoch seconds: ${reset}`);
      assert.ok(reset >= now / 1000 - 2 && reset <= now / 1000 + WINDOW_SECONDS[face] + 2, `${face}: reset within window: ${reset}`);
    }
  }

  test('each face counts per user with decreasing headers; the 4th request is 429 in the face format', async () => {
    const u = await registerUser(s);
    const other = await registerUser(s);
    for (const face of FACES) {
      const resets: number[] = [];
      for (let i = 0; i < 3; i++) {
        const res = await authed(face, u.accessToken);
        assert.equal(res.status, 200, `${face} request ${i + 1}: ${res.text}`);
        assert.equal(header(res, 'x-ratelimit-limit'), '3', `${face} limit`);
        assert.equal(header(res, 'x-ratelimit-remaining'), String(2 - i), `${face} remaining after ${i + 1}`);
        resetUnitCheck(face, res);
        resets.push(Number(header(res, 'x-ratelimit-reset')));
      }
      const spread = Math.max(...resets) - Math.min(...resets);
      assert.ok(spread <= (face === 'monitoring' ? 2000 : 2), `${face}: one window, one reset time (spread ${spread})`);

      const limited = await authed(face, u.accessToken);
      assertFaceError(limited, face, 'RATE_LIMITED', `4th on ${face}`);
      assert.equal(header(limited, 'x-ratelimit-limit'), '3');
      assert.equal(header(limited, 'x-ratelimit-remaining'), '0');
      resetUnitCheck(face, limited);
      const retry = Number(header(limited, 'retry-after'));
      assert.ok(retry >= 1 && retry <= WINDOW_SECONDS[face], `${face}: Retry-After ${retry}`);

      // Another user has their own budget.
      const fresh = await authed(face, other.accessToken);
      assert.equal(fresh.status, 200, `${face}: other user ${fresh.text}`);
      assert.equal(header(fresh, 'x-ratelimit-remaining'), '2');
    }
  });

  test('anonymous callers share a per-address budget (2 on HeliosDB and HelixCode)', async () => {
    for (const face of ['databases', 'tasks'] as const) {
      const from = face === 'databases' ? '203.0.113.10' : '203.0.113.11';
      const url = NOT_FOUND_URL[face];
      for (let i = 0; i < 2; i++) {
        const res = await requestFrom(s, from, 'GET', url);
        assertFaceError(res, face, 'NOT_FOUND', `anonymous ${i + 1} on ${face}`);
        assert.equal(header(res, 'x-ratelimit-limit'), '2');
        assert.equal(header(res, 'x-ratelimit-remaining'), String(1 - i));
      }
      // A bad token does not escape the anonymous budget.
      assertFaceError(await requestFrom(s, from, 'GET', url, { token: 'junk' }), face, 'RATE_LIMITED', `anonymous 3rd on ${face}`);
      // Another address is counted separately.
      const elsewhere = await requestFrom(s, '203.0.113.99', 'GET', url);
      assertFaceError(elsewhere, face, 'NOT_FOUND', `other address on ${face}`);
    }
  });

  test('an admin is never limited and gets no limit headers', async () => {
    const email = uniqueEmail('admin');
    await s.ctx.identity.createUser({ email, password: 'admin-password-1', role: 'admin' });
    const token = await loginToken(email, 'admin-password-1');
    for (const face of FACES) {
      for (let i = 0; i < 6; i++) {
        const res = await authed(face, token);
        assert.equal(res.status, 200, `admin ${face} #${i + 1}: ${res.text}`);
        for (const h of ['x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset', 'retry-after']) {
          assert.equal(header(res, h), undefined, `admin ${face}: no ${h}`);
        }
      }
    }
  });

  test('the enterprise tier is unlimited on HeliosDB (and still limited where the policy says so)', async () => {
    const email = uniqueEmail('enterprise');
    const user = await s.ctx.identity.createUser({ email, password: 'enterprise-pass-1', role: 'user', tier: 'enterprise' });
    assert.equal(user.tier, 'enterprise');
    const token = await loginToken(email, 'enterprise-pass-1');
    for (let i = 0; i < 6; i++) {
      const res = await authed('databases', token);
      assert.equal(res.status, 200, res.text);
      assert.equal(header(res, 'x-ratelimit-limit'), undefined, 'no limit header when unlimited');
      assert.equal(header(res, 'x-ratelimit-remaining'), undefined);
    }
    // HelixCode's published policy caps every tier at 1000/hour.
    const tasks = await authed('tasks', token);
    assert.equal(tasks.status, 200);
    assert.equal(header(tasks, 'x-ratelimit-limit'), '1000');
    assert.equal(header(tasks, 'x-ratelimit-remaining'), '999');
  });
});

describe('DEFAULT_TIER', () => {
  test('new registrations on every face get DEFAULT_TIER, and its limits apply', async () => {
    const s = await startTestServer({ DEFAULT_TIER: 'pro' });
    try {
      const password = 'correct-horse-battery';
      const tokens: string[] = [];

      const tasks = await s.request('POST', '/api/v1/auth/register', { body: { username: `pro${Date.now().toString(36)}`, email: uniqueEmail('pro'), password } });
      assert.equal(tasks.status, 201, tasks.text);
      assert.equal(tasks.body.user.tier, 'pro');
      tokens.push((await s.request('POST', '/api/v1/auth/login', { body: { username: tasks.body.user.email, password } })).body.token);

      const mon = await registerUser(s);
      tokens.push(mon.accessToken);

      const dbEmail = uniqueEmail('pro');
      const db = await s.request('POST', '/v1/auth/signup', { body: { email: dbEmail, password } });
      assert.equal(db.status, 201, db.text);
      tokens.push((await s.request('POST', '/v1/auth/login', { body: { email: dbEmail, password } })).body.data.token);

      const auto = await s.request('POST', '/auth/register', { body: { email: uniqueEmail('pro'), password, name: 'Pro' } });
      assert.equal(auto.status, 200, auto.text);
      assert.equal(auto.body.data.user.subscription_tier, 'pro');
      tokens.push(auto.body.data.token);

      for (const token of tokens) {
        const me = await s.request('GET', '/auth/me', { token });
        assert.equal(me.status, 200, me.text);
        assert.equal(me.body.data.subscription_tier, 'pro');
        assert.equal(me.body.data.effective_tier, 'pro');
      }
      // Operator-created users without an explicit tier get it too.
      const created = await s.ctx.identity.createUser({ email: uniqueEmail('cli'), password, role: 'user' });
      assert.equal(created.tier, 'pro');
      // The pro policy is in force: HeliosDB allows pro 1000/minute (the test server relaxes only free and anonymous).
      const limited = await s.request('POST', '/v1/auth/refresh', { token: tokens[0] });
      assert.equal(limited.status, 200, limited.text);
      assert.equal(header(limited, 'x-ratelimit-limit'), '1000');
    } finally {
      await s.close();
    }
  });

  test('without DEFAULT_TIER registrations are free', async () => {
    const s = await startTestServer();
    try {
      const u = await registerUser(s);
      const me = await s.request('GET', '/auth/me', { token: u.accessToken });
      assert.equal(me.body.data.subscription_tier, 'free');
    } finally {
      await s.close();
    }
  });
});
