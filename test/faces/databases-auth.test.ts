/**
 * HeliosDB face (databases): `/v1/auth/{signup,login,refresh,logout}`.
 * Success is `{success:true,data,meta:{request_id,duration_ms,timestamp}}`; errors are
 * `{success:false,error:{code,message,details?},meta}`.
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

const PASSWORD = 'secure-password-123';

function assertIsoNear(value: unknown, expectedMs: number, toleranceMs: number): void {
  assert.equal(typeof value, 'string');
  const t = Date.parse(value as string);
  assert.ok(!Number.isNaN(t), `not a date: ${String(value)}`);
  assert.ok(Math.abs(t - expectedMs) <= toleranceMs, `${String(value)} is not within ${toleranceMs} ms of ${new Date(expectedMs).toISOString()}`);
}

function assertMeta(res: TestResponse): void {
  const meta = res.body.meta;
  assert.deepEqual(Object.keys(meta).sort(), ['duration_ms', 'request_id', 'timestamp']);
  assert.equal(typeof res.headers['x-request-id'], 'string');
  assert.equal(meta.request_id, res.headers['x-request-id']);
  assert.equal(typeof meta.duration_ms, 'number');
  assert.ok(meta.duration_ms >= 0 && meta.duration_ms < 60_000);
  assertIsoNear(meta.timestamp, Date.now(), 10_000);
}

function assertOk(res: TestResponse, status: number): void {
  assert.equal(res.status, status, res.text);
  assert.deepEqual(Object.keys(res.body).sort(), ['data', 'meta', 'success']);
  assert.equal(res.body.success, true);
  assertMeta(res);
}

/** Asserts the HeliosDB error envelope, the status and the code. */
function assertHeliosError(res: TestResponse, status: number, code: string): void {
  assert.equal(res.status, status, res.text);
  assert.deepEqual(Object.keys(res.body).sort(), ['error', 'meta', 'success']);
  assert.equal(res.body.success, false);
  assert.equal(res.body.error.code, code);
  assert.equal(typeof res.body.error.message, 'string');
  assert.ok(res.body.error.message.length > 0);
  for (const k of Object.keys(res.body.error)) assert.ok(['code', 'message', 'details'].includes(k), `unexpected error key ${k}`);
  assertMeta(res);
}

function issueFields(res: TestResponse): string[] {
  const issues = res.body.error.details?.issues as { field: string }[] | undefined;
  assert.ok(Array.isArray(issues), `details.issues missing: ${res.text}`);
  return issues.map((i) => i.field);
}

async function signup(email = uniqueEmail('helios')) {
  const res = await s.request('POST', '/v1/auth/signup', { body: { email, password: PASSWORD } });
  assert.equal(res.status, 201, res.text);
  return { id: res.body.data.user_id as string, email };
}

async function login(email: string) {
  const res = await s.request('POST', '/v1/auth/login', { body: { email, password: PASSWORD } });
  assert.equal(res.status, 200, res.text);
  return { res, token: res.body.data.token as string, refreshToken: res.body.data.refresh_token as string };
}

/** Whether an access token still authenticates on this face (bearer refresh is the face's authenticated read). */
async function tokenWorks(token: string): Promise<boolean> {
  const res = await s.request('POST', '/v1/auth/refresh', { token });
  assert.ok(res.status === 200 || res.status === 401, res.text);
  return res.status === 200;
}

/** A correctly signed access token for the same user and session, already expired. */
async function expiredCopyOf(token: string): Promise<string> {
  const claims = decodeJwt(token);
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ sid: claims.sid, typ: 'access' })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(claims.sub!)
    .setIssuer('mainspring')
    .setAudience('mainspring-api')
    .setIssuedAt(now - 7200)
    .setExpirationTime(now - 60)
    .sign(new TextEncoder().encode(TEST_JWT_SECRET));
}

describe('POST /v1/auth/signup', () => {
  test('creates the account: 201 with user_id, email and verification_sent', async () => {
    const email = uniqueEmail('helios');
    const res = await s.request('POST', '/v1/auth/signup', { body: { email, password: PASSWORD, name: 'Dana' } });
    assertOk(res, 201);
    assert.deepEqual(Object.keys(res.body.data).sort(), ['email', 'user_id', 'verification_sent']);
    assert.match(res.body.data.user_id, /^usr_/);
    assert.equal(res.body.data.email, email);
    assert.equal(res.body.data.verification_sent, false, 'no mail server is configured');
    assert.ok(!('token' in res.body.data), 'signup does not hand out a token');

    const { res: l } = await login(email);
    assert.equal(l.body.data.user.id, res.body.data.user_id);
  });

  test('missing fields are 400 VALIDATION_ERROR naming them', async () => {
    const res = await s.request('POST', '/v1/auth/signup', { body: {} });
    assertHeliosError(res, 400, 'VALIDATION_ERROR');
    assert.deepEqual(issueFields(res).sort(), ['email', 'password']);
    const noEmail = await s.request('POST', '/v1/auth/signup', { body: { password: PASSWORD } });
    assertHeliosError(noEmail, 400, 'VALIDATION_ERROR');
    assert.equal(noEmail.body.error.details.field, 'email');
  });

  test('a malformed JSON body is 400 VALIDATION_ERROR', async () => {
    assertHeliosError(await s.request('POST', '/v1/auth/signup', { rawBody: '{"email":' }), 400, 'VALIDATION_ERROR');
  });

  test('wrong types are 400 VALIDATION_ERROR naming the field', async () => {
    const res = await s.request('POST', '/v1/auth/signup', { body: { email: uniqueEmail('helios'), password: 123 } });
    assertHeliosError(res, 400, 'VALIDATION_ERROR');
    assert.equal(res.body.error.details.field, 'password');
    const bool = await s.request('POST', '/v1/auth/signup', { body: { email: true, password: PASSWORD } });
    assertHeliosError(bool, 400, 'VALIDATION_ERROR');
    assert.equal(bool.body.error.details.field, 'email');
  });

  test('an invalid email is 400 "Invalid email format"; a short password is 400', async () => {
    const res = await s.request('POST', '/v1/auth/signup', { body: { email: 'user.example.com', password: PASSWORD } });
    assertHeliosError(res, 400, 'VALIDATION_ERROR');
    assert.equal(res.body.error.message, 'Invalid email format');
    assert.equal(res.body.error.details.field, 'email');
    const short = await s.request('POST', '/v1/auth/signup', { body: { email: uniqueEmail('helios'), password: 'abc' } });
    assertHeliosError(short, 400, 'VALIDATION_ERROR');
    assert.equal(short.body.error.details.field, 'password');
  });

  test('a duplicate email (any case) is 409 CONFLICT', async () => {
    const u = await signup();
    const res = await s.request('POST', '/v1/auth/signup', { body: { email: u.email.toUpperCase(), password: PASSWORD } });
    assertHeliosError(res, 409, 'CONFLICT');
    assert.equal(res.body.error.details.field, 'email');
  });

  test('the caller X-Request-Id becomes meta.request_id', async () => {
    const res = await s.request('POST', '/v1/auth/signup', { body: {}, headers: { 'x-request-id': 'req_client_0001' } });
    assertHeliosError(res, 400, 'VALIDATION_ERROR');
    assert.equal(res.body.meta.request_id, 'req_client_0001');
  });
});

describe('POST /v1/auth/login', () => {
  test('returns a bearer token, its expiry, a refresh token and the user', async () => {
    const u = await signup();
    const before = Date.now();
    const { res } = await login(u.email);
    assertOk(res, 200);
    const d = res.body.data;
    assert.deepEqual(Object.keys(d).sort(), ['expires_at', 'refresh_token', 'token', 'token_type', 'user']);
    assert.equal(d.token_type, 'bearer');
    assert.match(d.token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
    assert.match(d.refresh_token, /^msr_/);
    assertIsoNear(d.expires_at, before + 3600_000, 5_000);
    assert.deepEqual(d.user, { id: u.id, email: u.email });
    assert.equal(decodeJwt(d.token).sub, u.id);
    assert.ok(await tokenWorks(d.token));
  });

  test('a wrong password and an unknown email are the same 401 AUTH_REQUIRED', async () => {
    const u = await signup();
    const wrong = await s.request('POST', '/v1/auth/login', { body: { email: u.email, password: 'incorrect-password' } });
    assertHeliosError(wrong, 401, 'AUTH_REQUIRED');
    const unknown = await s.request('POST', '/v1/auth/login', { body: { email: uniqueEmail('nobody'), password: PASSWORD } });
    assertHeliosError(unknown, 401, 'AUTH_REQUIRED');
    assert.equal(unknown.body.error.message, wrong.body.error.message);
  });

  test('missing fields are 400 VALIDATION_ERROR', async () => {
    const none = await s.request('POST', '/v1/auth/login', { body: {} });
    assertHeliosError(none, 400, 'VALIDATION_ERROR');
    assert.deepEqual(issueFields(none).sort(), ['email', 'password']);
    const noPassword = await s.request('POST', '/v1/auth/login', { body: { email: uniqueEmail('helios') } });
    assertHeliosError(noPassword, 400, 'VALIDATION_ERROR');
    assert.equal(noPassword.body.error.details.field, 'password');
  });

  test('a malformed JSON body is 400 VALIDATION_ERROR', async () => {
    assertHeliosError(await s.request('POST', '/v1/auth/login', { rawBody: '{"email":' }), 400, 'VALIDATION_ERROR');
  });

  test('wrong types are 400 VALIDATION_ERROR', async () => {
    const res = await s.request('POST', '/v1/auth/login', { body: { email: uniqueEmail('helios'), password: 123 } });
    assertHeliosError(res, 400, 'VALIDATION_ERROR');
    assert.equal(res.body.error.details.field, 'password');
    const nul = await s.request('POST', '/v1/auth/login', { body: { email: null, password: PASSWORD } });
    assertHeliosError(nul, 400, 'VALIDATION_ERROR');
    assert.equal(nul.body.error.details.field, 'email');
  });
});

describe('POST /v1/auth/refresh', () => {
  test('with the bearer token and no body: a new token for the same session, no refresh token', async () => {
    const u = await signup();
    const l = await login(u.email);
    const before = Date.now();
    const res = await s.request('POST', '/v1/auth/refresh', { token: l.token });
    assertOk(res, 200);
    const d = res.body.data;
    assert.deepEqual(Object.keys(d).sort(), ['expires_at', 'token', 'token_type', 'user']);
    assert.equal(d.token_type, 'bearer');
    assertIsoNear(d.expires_at, before + 3600_000, 5_000);
    assert.deepEqual(d.user, { id: u.id, email: u.email });
    assert.equal(decodeJwt(d.token).sid, decodeJwt(l.token).sid);
    assert.ok(await tokenWorks(d.token));

    // The session is the same: logging out with the old token ends the new one as well.
    assert.equal((await s.request('POST', '/v1/auth/logout', { token: l.token })).status, 200);
    assertHeliosError(await s.request('POST', '/v1/auth/refresh', { token: d.token }), 401, 'AUTH_REQUIRED');
  });

  test('with {refresh_token}: the refresh token rotates and the new pair works', async () => {
    const u = await signup();
    const l = await login(u.email);
    const res = await s.request('POST', '/v1/auth/refresh', { body: { refresh_token: l.refreshToken } });
    assertOk(res, 200);
    const d = res.body.data;
    assert.equal(d.token_type, 'bearer');
    assert.match(d.refresh_token, /^msr_/);
    assert.notEqual(d.refresh_token, l.refreshToken);
    assert.deepEqual(d.user, { id: u.id, email: u.email });
    assert.equal(decodeJwt(d.token).sid, decodeJwt(l.token).sid);
    assert.ok(await tokenWorks(d.token));
    const next = await s.request('POST', '/v1/auth/refresh', { body: { refresh_token: d.refresh_token } });
    assertOk(next, 200);
  });

  test('a body refresh token is honoured even when the bearer token is invalid', async () => {
    const u = await signup();
    const l = await login(u.email);
    const res = await s.request('POST', '/v1/auth/refresh', { token: 'garbage', body: { refresh_token: l.refreshToken } });
    assertOk(res, 200);
    assert.equal(res.body.data.user.id, u.id);
  });

  test('reusing an old refresh token is 401 and revokes the session: newest refresh token and access tokens die', async () => {
    const u = await signup();
    const l = await login(u.email);
    const first = await s.request('POST', '/v1/auth/refresh', { body: { refresh_token: l.refreshToken } });
    assert.equal(first.status, 200, first.text);

    const reuse = await s.request('POST', '/v1/auth/refresh', { body: { refresh_token: l.refreshToken } });
    assertHeliosError(reuse, 401, 'AUTH_REQUIRED');

    assertHeliosError(await s.request('POST', '/v1/auth/refresh', { body: { refresh_token: first.body.data.refresh_token } }), 401, 'AUTH_REQUIRED');
    assertHeliosError(await s.request('POST', '/v1/auth/refresh', { token: first.body.data.token }), 401, 'AUTH_REQUIRED');
    assertHeliosError(await s.request('POST', '/v1/auth/refresh', { token: l.token }), 401, 'AUTH_REQUIRED');
    assertHeliosError(await s.request('POST', '/v1/auth/logout', { token: first.body.data.token }), 401, 'AUTH_REQUIRED');

    const fresh = await login(u.email);
    assert.ok(await tokenWorks(fresh.token), 'a new login is unaffected');
  });

  test('no credential at all is 401 AUTH_REQUIRED with WWW-Authenticate', async () => {
    const res = await s.request('POST', '/v1/auth/refresh');
    assertHeliosError(res, 401, 'AUTH_REQUIRED');
    assert.match(String(res.headers['www-authenticate']), /^Bearer/);
    assertHeliosError(await s.request('POST', '/v1/auth/refresh', { body: {} }), 401, 'AUTH_REQUIRED');
  });

  test('an expired bearer token is 401 AUTH_EXPIRED', async () => {
    const u = await signup();
    const l = await login(u.email);
    const res = await s.request('POST', '/v1/auth/refresh', { token: await expiredCopyOf(l.token) });
    assertHeliosError(res, 401, 'AUTH_EXPIRED');
    assert.match(String(res.headers['www-authenticate']), /error="invalid_token"/);
  });

  test('an unknown refresh token and a garbage bearer token are 401 AUTH_REQUIRED', async () => {
    assertHeliosError(await s.request('POST', '/v1/auth/refresh', { body: { refresh_token: 'msr_nope' } }), 401, 'AUTH_REQUIRED');
    assertHeliosError(await s.request('POST', '/v1/auth/refresh', { token: 'hdb_live_xxxxxxxxxxxx' }), 401, 'AUTH_REQUIRED');
  });

  test('an empty refresh token is 400 VALIDATION_ERROR', async () => {
    const res = await s.request('POST', '/v1/auth/refresh', { body: { refresh_token: '' } });
    assertHeliosError(res, 400, 'VALIDATION_ERROR');
    assert.equal(res.body.error.details.field, 'refresh_token');
  });

  test('a malformed JSON body is 400 VALIDATION_ERROR', async () => {
    assertHeliosError(await s.request('POST', '/v1/auth/refresh', { rawBody: '{"email":' }), 400, 'VALIDATION_ERROR');
  });

  test('a refresh token of the wrong type is 400 VALIDATION_ERROR', async () => {
    const res = await s.request('POST', '/v1/auth/refresh', { body: { refresh_token: ['msr_x'] } });
    assertHeliosError(res, 400, 'VALIDATION_ERROR');
    assert.equal(res.body.error.details.field, 'refresh_token');
  });
});

describe('POST /v1/auth/logout', () => {
  test('invalidates the current token and its refresh token, not other sessions', async () => {
    const u = await signup();
    const a = await login(u.email);
    const b = await login(u.email);
    const res = await s.request('POST', '/v1/auth/logout', { token: a.token });
    assertOk(res, 200);
    assert.deepEqual(res.body.data, { logged_out: true });

    assertHeliosError(await s.request('POST', '/v1/auth/logout', { token: a.token }), 401, 'AUTH_REQUIRED');
    assertHeliosError(await s.request('POST', '/v1/auth/refresh', { token: a.token }), 401, 'AUTH_REQUIRED');
    assertHeliosError(await s.request('POST', '/v1/auth/refresh', { body: { refresh_token: a.refreshToken } }), 401, 'AUTH_REQUIRED');
    assert.ok(await tokenWorks(b.token));
  });

  test('no token is 401 AUTH_REQUIRED; an expired token is 401 AUTH_EXPIRED and ends nothing', async () => {
    assertHeliosError(await s.request('POST', '/v1/auth/logout'), 401, 'AUTH_REQUIRED');
    assertHeliosError(await s.request('POST', '/v1/auth/logout', { headers: { authorization: 'Bearer' } }), 401, 'AUTH_REQUIRED');
    const u = await signup();
    const l = await login(u.email);
    assertHeliosError(await s.request('POST', '/v1/auth/logout', { token: await expiredCopyOf(l.token) }), 401, 'AUTH_EXPIRED');
    assert.ok(await tokenWorks(l.token));
  });

  test('a malformed JSON body is 400 VALIDATION_ERROR and does not end the session', async () => {
    const u = await signup();
    const l = await login(u.email);
    assertHeliosError(await s.request('POST', '/v1/auth/logout', { token: l.token, rawBody: '{"email":' }), 400, 'VALIDATION_ERROR');
    assert.ok(await tokenWorks(l.token));
  });
});
