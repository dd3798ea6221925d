/**
 * HelixCode face (tasks): `/api/v1/auth/{register,login,refresh,logout}` and `GET /api/v1/users/me`.
 * Errors are `{error:{code,message,details?},request_id}` and `request_id` is the `X-Request-Id` header.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { decodeJwt, SignJWT } from 'jose';
import { startTestServer, TEST_JWT_SECRET, uniqueEmail, type TestResponse, type TestServer } from '../helpers/server.ts';

let s: TestServer;
before(async () => {
  s = await startTestServer();
});
after(() => s.close());

const PASSWORD = 'correct-horse-battery';
let seq = 0;

function uniqueUsername(): string {
  return `hx${process.pid}n${Date.now().toString(36)}${seq++}`;
}

/** Asserts the HelixCode error shape, the status, the code, and that request_id is the response's X-Request-Id. */
function assertHelixError(res: TestResponse, status: number, code: string): void {
  assert.equal(res.status, status, res.text);
  assert.deepEqual(Object.keys(res.body).sort(), ['error', 'request_id']);
  assert.equal(res.body.error.code, code);
  assert.equal(typeof res.body.error.message, 'string');
  assert.ok(res.body.error.message.length > 0);
  for (const k of Object.keys(res.body.error)) assert.ok(['code', 'message', 'details'].includes(k), `unexpected error key ${k}`);
  assert.equal(typeof res.headers['x-request-id'], 'string');
  assert.equal(res.body.request_id, res.headers['x-request-id']);
}

/** The fields named in a VALIDATION_ERROR's details. */
function issueFields(res: TestResponse): string[] {
  const issues = res.body.error.details?.issues as { field: string }[] | undefined;
  assert.ok(Array.isArray(issues), `details.issues missing: ${res.text}`);
  return issues.map((i) => i.field);
}

function assertIsoNear(value: unknown, expectedMs: number, toleranceMs: number): void {
  assert.equal(typeof value, 'string');
  const t = Date.parse(value as string);
  assert.ok(!Number.isNaN(t), `not a date: ${String(value)}`);
  assert.ok(Math.abs(t - expectedMs) <= toleranceMs, `${String(value)} is not within ${toleranceMs} ms of ${new Date(expectedMs).toISOString()}`);
}

async function registerHelix(opts: { username?: string; email?: string; display_name?: string } = {}) {
  const username = opts.username ?? uniqueUsername();
  const email = opts.email ?? uniqueEmail('helix');
  const res = await s.request('POST', '/api/v1/auth/register', {
    body: { username, email, password: PASSWORD, ...(opts.display_name !== undefined ? { display_name: opts.display_name } : {}) },
  });
  assert.equal(res.status, 201, res.text);
  return { id: res.body.user.id as string, username, email };
}

async function loginHelix(username: string, password = PASSWORD) {
  const res = await s.request('POST', '/api/v1/auth/login', { body: { username, password } });
  assert.equal(res.status, 200, res.text);
  return { token: res.body.token as string, refreshToken: res.body.refresh_token as string, body: res.body };
}

async function me(token: string): Promise<TestResponse> {
  return s.request('GET', '/api/v1/users/me', { token });
}

/** An access token for the same user and session as `token`, signed correctly but already expired. */
async function expiredCopyOf(token: string): Promise<string> {
  const claims = decodeJwt(token);
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ sid: claims.sid, typ: 'access' })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(claims.sub!)
    .setIssuer('mainspring')
    .setAudience('mainspring-api')
    .setIssuedAt(now - 7200)
    .setExpirationTime(now - 3600)
    .sign(new TextEncoder().encode(TEST_JWT_SECRET));
}

describe('POST /api/v1/auth/register', () => {
  test('creates the account and returns the full user', async () => {
    const username = uniqueUsername();
    const email = uniqueEmail('helix');
    const before = Date.now();
    const res = await s.request('POST', '/api/v1/auth/register', { body: { username, email, password: PASSWORD, display_name: 'Ada Lovelace' } });
    assert.equal(res.status, 201, res.text);
    assert.deepEqual(Object.keys(res.body), ['user']);
    const u = res.body.user;
    assert.match(u.id, /^usr_[a-z0-9]+$/);
    assert.equal(u.username, username);
    assert.equal(u.email, email);
    assert.equal(u.display_name, 'Ada Lovelace');
    assert.deepEqual(u.roles, ['user']);
    assert.equal(u.tier, 'free');
    assert.equal(u.is_verified, false);
    assertIsoNear(u.created_at, before, 10_000);
    assert.ok(!('password' in u) && !('password_hash' in u));
    assert.ok(!res.text.includes(PASSWORD));

    const login = await loginHelix(username);
    assert.equal(login.body.user.id, u.id);
  });

  test('display_name is optional and null when absent', async () => {
    const res = await s.request('POST', '/api/v1/auth/register', { body: { username: uniqueUsername(), email: uniqueEmail('helix'), password: PASSWORD } });
    assert.equal(res.status, 201, res.text);
    assert.equal(res.body.user.display_name, null);
  });

  test('missing fields are 400 VALIDATION_ERROR naming each field', async () => {
    const res = await s.request('POST', '/api/v1/auth/register', { body: {} });
    assertHelixError(res, 400, 'VALIDATION_ERROR');
    assert.deepEqual(issueFields(res).sort(), ['email', 'password', 'username']);

    const noPassword = await s.request('POST', '/api/v1/auth/register', { body: { username: uniqueUsername(), email: uniqueEmail('helix') } });
    assertHelixError(noPassword, 400, 'VALIDATION_ERROR');
    assert.equal(noPassword.body.error.details.field, 'password');
  });

  test('a malformed JSON body is 400 VALIDATION_ERROR', async () => {
    const res = await s.request('POST', '/api/v1/auth/register', { rawBody: '{"email":' });
    assertHelixError(res, 400, 'VALIDATION_ERROR');
  });

  test('wrong types are 400 VALIDATION_ERROR naming the field', async () => {
    const res = await s.request('POST', '/api/v1/auth/register', { body: { username: uniqueUsername(), email: uniqueEmail('helix'), password: 123 } });
    assertHelixError(res, 400, 'VALIDATION_ERROR');
    assert.equal(res.body.error.details.field, 'password');

    const arr = await s.request('POST', '/api/v1/auth/register', { body: { username: ['a', 'b', 'c'], email: uniqueEmail('helix'), password: PASSWORD } });
    assertHelixError(arr, 400, 'VALIDATION_ERROR');
    assert.equal(arr.body.error.details.field, 'username');
  });

  test('an invalid email, a short password and a bad username are 400 with the field named', async () => {
    const email = await s.request('POST', '/api/v1/auth/register', { body: { username: uniqueUsername(), email: 'not-an-email', password: PASSWORD } });
    assertHelixError(email, 400, 'VALIDATION_ERROR');
    assert.equal(email.body.error.details.field, 'email');

    const short = await s.request('POST', '/api/v1/auth/register', { body: { username: uniqueUsername(), email: uniqueEmail('helix'), password: 'short' } });
    assertHelixError(short, 400, 'VALIDATION_ERROR');
    assert.equal(short.body.error.details.field, 'password');

    const name = await s.request('POST', '/api/v1/auth/register', { body: { username: 'has space!', email: uniqueEmail('helix'), password: PASSWORD } });
    assertHelixError(name, 400, 'VALIDATION_ERROR');
    assert.equal(name.body.error.details.field, 'username');
  });

  test('a duplicate email (any case) is 409 CONFLICT on the email field', async () => {
    const first = await registerHelix();
    const res = await s.request('POST', '/api/v1/auth/register', { body: { username: uniqueUsername(), email: first.email.toUpperCase(), password: PASSWORD } });
    assertHelixError(res, 409, 'CONFLICT');
    assert.equal(res.body.error.details.field, 'email');
  });

  test('a duplicate username (any case) is 409 CONFLICT on the username field', async () => {
    const first = await registerHelix();
    const res = await s.request('POST', '/api/v1/auth/register', { body: { username: first.username.toUpperCase(), email: uniqueEmail('helix'), password: PASSWORD } });
    assertHelixError(res, 409, 'CONFLICT');
    assert.equal(res.body.error.details.field, 'username');
  });

  test('a caller-supplied X-Request-Id is echoed in the header and the error body', async () => {
    const res = await s.request('POST', '/api/v1/auth/register', { body: {}, headers: { 'x-request-id': 'client-req-42' } });
    assertHelixError(res, 400, 'VALIDATION_ERROR');
    assert.equal(res.body.request_id, 'client-req-42');

    const bad = await s.request('POST', '/api/v1/auth/register', { body: {}, headers: { 'x-request-id': 'has spaces <script>' } });
    assertHelixError(bad, 400, 'VALIDATION_ERROR');
    assert.notEqual(bad.body.request_id, 'has spaces <script>');
  });
});

describe('POST /api/v1/auth/login', () => {
  test('logs in by username and returns token, expiry, refresh token and user', async () => {
    const u = await registerHelix();
    const before = Date.now();
    const res = await s.request('POST', '/api/v1/auth/login', { body: { username: u.username, password: PASSWORD } });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(Object.keys(res.body).sort(), ['expires_at', 'refresh_token', 'token', 'user']);
    assert.match(res.body.token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
    assert.match(res.body.refresh_token, /^msr_/);
    assertIsoNear(res.body.expires_at, before + 3600_000, 5_000);
    assert.deepEqual(res.body.user, { id: u.id, username: u.username, roles: ['user'] });

    const claims = decodeJwt(res.body.token);
    assert.equal(claims.sub, u.id);
    assert.equal(claims.exp! * 1000, Date.parse(res.body.expires_at));

    const who = await me(res.body.token);
    assert.equal(who.status, 200, who.text);
    assert.equal(who.body.user.id, u.id);
  });

  test('accepts the email, in any case, as the username', async () => {
    const u = await registerHelix();
    const res = await s.request('POST', '/api/v1/auth/login', { body: { username: u.email.toUpperCase(), password: PASSWORD } });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.user.id, u.id);
    assert.equal(res.body.user.username, u.username);
  });

  test('a wrong password and an unknown user are the same 401 UNAUTHORIZED', async () => {
    const u = await registerHelix();
    const wrong = await s.request('POST', '/api/v1/auth/login', { body: { username: u.username, password: 'wrong-password-123' } });
    assertHelixError(wrong, 401, 'UNAUTHORIZED');
    assert.ok(!('token' in wrong.body));
    const unknown = await s.request('POST', '/api/v1/auth/login', { body: { username: 'nobody-here', password: PASSWORD } });
    assertHelixError(unknown, 401, 'UNAUTHORIZED');
    assert.equal(unknown.body.error.message, wrong.body.error.message);
  });

  test('missing fields are 400 VALIDATION_ERROR', async () => {
    const none = await s.request('POST', '/api/v1/auth/login', { body: {} });
    assertHelixError(none, 400, 'VALIDATION_ERROR');
    assert.deepEqual(issueFields(none).sort(), ['password', 'username']);
    const noPassword = await s.request('POST', '/api/v1/auth/login', { body: { username: 'someone' } });
    assertHelixError(noPassword, 400, 'VALIDATION_ERROR');
    assert.equal(noPassword.body.error.details.field, 'password');
  });

  test('a malformed JSON body is 400 VALIDATION_ERROR', async () => {
    const res = await s.request('POST', '/api/v1/auth/login', { rawBody: '{"email":' });
    assertHelixError(res, 400, 'VALIDATION_ERROR');
  });

  test('wrong types are 400 VALIDATION_ERROR', async () => {
    const res = await s.request('POST', '/api/v1/auth/login', { body: { username: 'someone', password: 123 } });
    assertHelixError(res, 400, 'VALIDATION_ERROR');
    assert.equal(res.body.error.details.field, 'password');
    const obj = await s.request('POST', '/api/v1/auth/login', { body: { username: { $ne: null }, password: PASSWORD } });
    assertHelixError(obj, 400, 'VALIDATION_ERROR');
    assert.equal(obj.body.error.details.field, 'username');
  });

  test('ten failed attempts lock the account for this client: 429 RATE_LIMIT_EXCEEDED, even with the right password', async () => {
    const u = await registerHelix();
    for (let i = 0; i < 10; i++) {
      const r = await s.request('POST', '/api/v1/auth/login', { body: { username: u.username, password: `wrong-${i}-password` } });
      assertHelixError(r, 401, 'UNAUTHORIZED');
    }
    const locked = await s.request('POST', '/api/v1/auth/login', { body: { username: u.username, password: PASSWORD } });
    assertHelixError(locked, 429, 'RATE_LIMIT_EXCEEDED');
    assert.ok(Number(locked.headers['retry-after']) > 0, 'Retry-After header');

    // Another account is not affected.
    const other = await registerHelix();
    await loginHelix(other.username);
  });

  test('the lock is per account: failures by username also lock logins by email (and the reverse)', async () => {
    const a = await registerHelix();
    for (let i = 0; i < 10; i++) {
      assertHelixError(await s.request('POST', '/api/v1/auth/login', { body: { username: a.username, password: `wrong-${i}-password` } }), 401, 'UNAUTHORIZED');
    }
    assertHelixError(await s.request('POST', '/api/v1/auth/login', { body: { username: a.email, password: PASSWORD } }), 429, 'RATE_LIMIT_EXCEEDED');

    const b = await registerHelix();
    for (let i = 0; i < 10; i++) {
      assertHelixError(await s.request('POST', '/api/v1/auth/login', { body: { username: b.email, password: `wrong-${i}-password` } }), 401, 'UNAUTHORIZED');
    }
    assertHelixError(await s.request('POST', '/api/v1/auth/login', { body: { username: b.username, password: PASSWORD } }), 429, 'RATE_LIMIT_EXCEEDED');
  });
});

describe('POST /api/v1/auth/refresh', () => {
  test('a refresh token in the body rotates: new access and refresh tokens for the same user', async () => {
    const u = await registerHelix();
    const login = await loginHelix(u.username);
    const before = Date.now();
    const res = await s.request('POST', '/api/v1/auth/refresh', { body: { refresh_token: login.refreshToken } });
    assert.equal(res.status, 200, res.text);
    assert.match(res.body.refresh_token, /^msr_/);
    assert.notEqual(res.body.refresh_token, login.refreshToken);
    assertIsoNear(res.body.expires_at, before + 3600_000, 5_000);
    assert.deepEqual(res.body.user, { id: u.id, username: u.username, roles: ['user'] });
    assert.equal(decodeJwt(res.body.token).sid, decodeJwt(login.token).sid, 'same session');

    const who = await me(res.body.token);
    assert.equal(who.status, 200, who.text);
    assert.equal(who.body.user.id, u.id);

    // The rotated token works once more.
    const again = await s.request('POST', '/api/v1/auth/refresh', { body: { refresh_token: res.body.refresh_token } });
    assert.equal(again.status, 200, again.text);
  });

  test('reusing a rotated refresh token is 401 and revokes the whole session', async () => {
    const u = await registerHelix();
    const login = await loginHelix(u.username);
    const first = await s.request('POST', '/api/v1/auth/refresh', { body: { refresh_token: login.refreshToken } });
    assert.equal(first.status, 200, first.text);

    const reuse = await s.request('POST', '/api/v1/auth/refresh', { body: { refresh_token: login.refreshToken } });
    assertHelixError(reuse, 401, 'UNAUTHORIZED');

    const newest = await s.request('POST', '/api/v1/auth/refresh', { body: { refresh_token: first.body.refresh_token } });
    assertHelixError(newest, 401, 'UNAUTHORIZED');
    assertHelixError(await me(first.body.token), 401, 'UNAUTHORIZED');
    assertHelixError(await me(login.token), 401, 'UNAUTHORIZED');

    // A separate login of the same user is untouched.
    const other = await loginHelix(u.username);
    assert.equal((await me(other.token)).status, 200);
  });

  test('without a body, a valid bearer token gets a new access token for the same session', async () => {
    const u = await registerHelix();
    const login = await loginHelix(u.username);
    const before = Date.now();
    const res = await s.request('POST', '/api/v1/auth/refresh', { token: login.token });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.refresh_token, undefined);
    assertIsoNear(res.body.expires_at, before + 3600_000, 5_000);
    assert.deepEqual(res.body.user, { id: u.id, username: u.username, roles: ['user'] });
    assert.equal(decodeJwt(res.body.token).sid, decodeJwt(login.token).sid);
    assert.equal((await me(res.body.token)).body.user.id, u.id);

    // Logging out the session kills the reissued token too.
    const out = await s.request('POST', '/api/v1/auth/logout', { token: login.token });
    assert.equal(out.status, 200, out.text);
    assertHelixError(await me(res.body.token), 401, 'UNAUTHORIZED');
  });

  test('no refresh token and no bearer token is 401 UNAUTHORIZED', async () => {
    assertHelixError(await s.request('POST', '/api/v1/auth/refresh'), 401, 'UNAUTHORIZED');
    assertHelixError(await s.request('POST', '/api/v1/auth/refresh', { body: {} }), 401, 'UNAUTHORIZED');
  });

  test('an unknown refresh token, an expired bearer token and a garbage bearer token are 401 UNAUTHORIZED', async () => {
    assertHelixError(await s.request('POST', '/api/v1/auth/refresh', { body: { refresh_token: 'msr_not-a-real-token' } }), 401, 'UNAUTHORIZED');
    const u = await registerHelix();
    const login = await loginHelix(u.username);
    assertHelixError(await s.request('POST', '/api/v1/auth/refresh', { token: await expiredCopyOf(login.token) }), 401, 'UNAUTHORIZED');
    assertHelixError(await s.request('POST', '/api/v1/auth/refresh', { token: 'garbage' }), 401, 'UNAUTHORIZED');
  });

  test('an empty refresh token is 400 VALIDATION_ERROR', async () => {
    const res = await s.request('POST', '/api/v1/auth/refresh', { body: { refresh_token: '' } });
    assertHelixError(res, 400, 'VALIDATION_ERROR');
    assert.equal(res.body.error.details.field, 'refresh_token');
  });

  test('a malformed JSON body is 400 VALIDATION_ERROR', async () => {
    assertHelixError(await s.request('POST', '/api/v1/auth/refresh', { rawBody: '{"email":' }), 400, 'VALIDATION_ERROR');
  });

  test('a refresh token of the wrong type is 400 VALIDATION_ERROR', async () => {
    const res = await s.request('POST', '/api/v1/auth/refresh', { body: { refresh_token: 123 } });
    assertHelixError(res, 400, 'VALIDATION_ERROR');
    assert.equal(res.body.error.details.field, 'refresh_token');
  });

  test('the refresh token of a logged-out session is 401', async () => {
    const u = await registerHelix();
    const login = await loginHelix(u.username);
    assert.equal((await s.request('POST', '/api/v1/auth/logout', { token: login.token })).status, 200);
    assertHelixError(await s.request('POST', '/api/v1/auth/refresh', { body: { refresh_token: login.refreshToken } }), 401, 'UNAUTHORIZED');
  });
});

describe('POST /api/v1/auth/logout', () => {
  test('ends the session: its access and refresh tokens stop working, other sessions do not', async () => {
    const u = await registerHelix();
    const a = await loginHelix(u.username);
    const b = await loginHelix(u.username);
    const res = await s.request('POST', '/api/v1/auth/logout', { token: a.token });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.body, { status: 'success', message: 'Logged out successfully' });

    assertHelixError(await me(a.token), 401, 'UNAUTHORIZED');
    assertHelixError(await s.request('POST', '/api/v1/auth/refresh', { body: { refresh_token: a.refreshToken } }), 401, 'UNAUTHORIZED');
    assertHelixError(await s.request('POST', '/api/v1/auth/logout', { token: a.token }), 401, 'UNAUTHORIZED');

    const still = await me(b.token);
    assert.equal(still.status, 200, still.text);
    assert.equal(still.body.user.id, u.id);
  });

  test('without a token, or with a non-Bearer header, it is 401 UNAUTHORIZED with WWW-Authenticate', async () => {
    const none = await s.request('POST', '/api/v1/auth/logout');
    assertHelixError(none, 401, 'UNAUTHORIZED');
    assert.match(String(none.headers['www-authenticate']), /^Bearer/);
    const basic = await s.request('POST', '/api/v1/auth/logout', { headers: { authorization: 'Basic dXNlcjpwYXNz' } });
    assertHelixError(basic, 401, 'UNAUTHORIZED');
  });

  test('an expired token is 401 UNAUTHORIZED', async () => {
    const u = await registerHelix();
    const login = await loginHelix(u.username);
    const res = await s.request('POST', '/api/v1/auth/logout', { token: await expiredCopyOf(login.token) });
    assertHelixError(res, 401, 'UNAUTHORIZED');
    assert.match(String(res.headers['www-authenticate']), /expired/);
    // The session itself was not ended.
    assert.equal((await me(login.token)).status, 200);
  });

  test('a malformed JSON body is 400 VALIDATION_ERROR and does not end the session', async () => {
    const u = await registerHelix();
    const login = await loginHelix(u.username);
    const res = await s.request('POST', '/api/v1/auth/logout', { token: login.token, rawBody: '{"email":' });
    assertHelixError(res, 400, 'VALIDATION_ERROR');
    assert.equal((await me(login.token)).status, 200);
  });
});

describe('GET /api/v1/users/me', () => {
  test('returns the full user of the bearer token', async () => {
    const u = await registerHelix({ display_name: 'Grace Hopper' });
    const before = Date.now();
    const login = await loginHelix(u.username);
    const res = await me(login.token);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(Object.keys(res.body), ['user']);
    const got = res.body.user;
    assert.equal(got.id, u.id);
    assert.equal(got.username, u.username);
    assert.equal(got.email, u.email);
    assert.equal(got.display_name, 'Grace Hopper');
    assert.deepEqual(got.roles, ['user']);
    assert.equal(got.tier, 'free');
    assert.equal(got.is_verified, false);
    assertIsoNear(got.last_login, before, 10_000);
    assertIsoNear(got.created_at, before, 10_000);
  });

  test('a user registered without a username (on another face) shows the email as username', async () => {
    const email = uniqueEmail('nouser');
    const reg = await s.request('POST', '/api/auth/register', { body: { email, password: PASSWORD } });
    assert.equal(reg.status, 201, reg.text);
    const res = await me(reg.body.data.tokens.access_token);
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.user.username, email);
    assert.equal(res.body.user.email, email);
  });

  test('no token, a garbage token, a forged token and an expired token are 401 UNAUTHORIZED', async () => {
    const none = await s.request('GET', '/api/v1/users/me');
    assertHelixError(none, 401, 'UNAUTHORIZED');
    assertHelixError(await me('not.a.jwt'), 401, 'UNAUTHORIZED');

    const u = await registerHelix();
    const login = await loginHelix(u.username);
    const claims = decodeJwt(login.token);
    const forged = await new SignJWT({ sid: claims.sid, typ: 'access' })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(claims.sub!)
      .setIssuer('mainspring')
      .setAudience('mainspring-api')
      .setIssuedAt()
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode('some-other-secret-0123456789abcdef0123456789'));
    assertHelixError(await me(forged), 401, 'UNAUTHORIZED');

    const expired = await me(await expiredCopyOf(login.token));
    assertHelixError(expired, 401, 'UNAUTHORIZED');
  });
});
