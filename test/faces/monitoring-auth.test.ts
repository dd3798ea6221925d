/**
 * Helomatic face (monitoring): `/api/auth/{register,login,refresh,logout}`.
 * Success is `{success:true,data,message,timestamp}`; errors are `{success:false,error:"<message>",code,details?,timestamp}`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { decodeJwt } from 'jose';
import { startTestServer, uniqueEmail, type TestResponse, type TestServer } from '../helpers/server.ts';

let s: TestServer;
before(async () => {
  s = await startTestServer();
});
after(() => s.close());

const PASSWORD = 'correct-horse-battery';

function assertIsoNear(value: unknown, expectedMs: number, toleranceMs: number): void {
  assert.equal(typeof value, 'string');
  const t = Date.parse(value as string);
  assert.ok(!Number.isNaN(t), `not a date: ${String(value)}`);
  assert.ok(Math.abs(t - expectedMs) <= toleranceMs, `${String(value)} is not within ${toleranceMs} ms of ${new Date(expectedMs).toISOString()}`);
}

function assertOk(res: TestResponse, status: number, message: string): void {
  assert.equal(res.status, status, res.text);
  assert.equal(res.body.success, true);
  assert.equal(res.body.message, message);
  assertIsoNear(res.body.timestamp, Date.now(), 10_000);
  assert.deepEqual(Object.keys(res.body).sort(), ['data', 'message', 'success', 'timestamp']);
}

/** Asserts the Helomatic error envelope, the status and the code. */
function assertHelomaticError(res: TestResponse, status: number, code: string): void {
  assert.equal(res.status, status, res.text);
  assert.equal(res.body.success, false);
  assert.equal(typeof res.body.error, 'string', 'error is the human message');
  assert.ok(res.body.error.length > 0);
  assert.equal(res.body.code, code);
  assertIsoNear(res.body.timestamp, Date.now(), 10_000);
  for (const k of Object.keys(res.body)) assert.ok(['success', 'error', 'code', 'details', 'timestamp'].includes(k), `unexpected key ${k}`);
  assert.ok(!('data' in res.body));
}

function issueFields(res: TestResponse): string[] {
  const issues = res.body.details?.issues as { field: string }[] | undefined;
  assert.ok(Array.isArray(issues), `details.issues missing: ${res.text}`);
  return issues.map((i) => i.field);
}

/** The documented token block: access and refresh tokens, one hour, Bearer. */
function assertTokens(tokens: Record<string, unknown>): void {
  assert.deepEqual(Object.keys(tokens).sort(), ['access_token', 'expires_in', 'refresh_token', 'token_type']);
  assert.match(tokens.access_token as string, /^[\w-]+\.[\w-]+\.[\w-]+$/);
  assert.match(tokens.refresh_token as string, /^msr_/);
  assert.equal(tokens.token_type, 'Bearer');
  assert.equal(tokens.expires_in, 3600);
}

async function register(opts: { email?: string; name?: string; company?: string } = {}) {
  const email = opts.email ?? uniqueEmail('helo');
  const res = await s.request('POST', '/api/auth/register', { body: { email, password: PASSWORD, name: opts.name ?? 'Test User', company: opts.company ?? 'Acme' } });
  assert.equal(res.status, 201, res.text);
  return { id: res.body.data.user.id as string, email, accessToken: res.body.data.tokens.access_token as string, refreshToken: res.body.data.tokens.refresh_token as string };
}

async function login(email: string) {
  const res = await s.request('POST', '/api/auth/login', { body: { email, password: PASSWORD } });
  assert.equal(res.status, 200, res.text);
  return { res, accessToken: res.body.data.tokens.access_token as string, refreshToken: res.body.data.tokens.refresh_token as string };
}

/** Whether an access token is still accepted (read through the shared account endpoint). */
async function tokenWorks(token: string): Promise<boolean> {
  const res = await s.request('GET', '/api/v1/users/me', { token });
  assert.ok(res.status === 200 || res.status === 401, res.text);
  return res.status === 200;
}

describe('POST /api/auth/register', () => {
  test('creates the account, returns the user and a working token pair', async () => {
    const email = uniqueEmail('helo');
    const before = Date.now();
    const res = await s.request('POST', '/api/auth/register', { body: { email, password: PASSWORD, name: 'John Doe', company: 'Example Corp' } });
    assertOk(res, 201, 'Registration successful.');
    assert.deepEqual(Object.keys(res.body.data).sort(), ['tokens', 'user', 'verification_sent']);
    const u = res.body.data.user;
    assert.match(u.id, /^usr_/);
    assert.deepEqual({ ...u, id: '', created_at: '' }, { id: '', email, name: 'John Doe', company: 'Example Corp', role: 'user', verified: false, created_at: '' });
    assertIsoNear(u.created_at, before, 10_000);
    assertTokens(res.body.data.tokens);
    assert.equal(res.body.data.verification_sent, false, 'no mail server is configured');
    assert.equal(decodeJwt(res.body.data.tokens.access_token).sub, u.id);
    assert.ok(!res.text.includes(PASSWORD));
    assert.ok(await tokenWorks(res.body.data.tokens.access_token));
  });

  test('name and company are optional and null when absent', async () => {
    const res = await s.request('POST', '/api/auth/register', { body: { email: uniqueEmail('helo'), password: PASSWORD } });
    assert.equal(res.status, 201, res.text);
    assert.equal(res.body.data.user.name, null);
    assert.equal(res.body.data.user.company, null);
  });

  test('missing fields are 400 VALIDATION_ERROR naming them', async () => {
    const res = await s.request('POST', '/api/auth/register', { body: {} });
    assertHelomaticError(res, 400, 'VALIDATION_ERROR');
    assert.deepEqual(issueFields(res).sort(), ['email', 'password']);
    const noPassword = await s.request('POST', '/api/auth/register', { body: { email: uniqueEmail('helo') } });
    assertHelomaticError(noPassword, 400, 'VALIDATION_ERROR');
    assert.equal(noPassword.body.details.field, 'password');
  });

  test('a malformed JSON body is 400 VALIDATION_ERROR', async () => {
    assertHelomaticError(await s.request('POST', '/api/auth/register', { rawBody: '{"email":' }), 400, 'VALIDATION_ERROR');
  });

  test('wrong types are 400 VALIDATION_ERROR naming the field', async () => {
    const pw = await s.request('POST', '/api/auth/register', { body: { email: uniqueEmail('helo'), password: 123 } });
    assertHelomaticError(pw, 400, 'VALIDATION_ERROR');
    assert.equal(pw.body.details.field, 'password');
    const email = await s.request('POST', '/api/auth/register', { body: { email: 42, password: PASSWORD } });
    assertHelomaticError(email, 400, 'VALIDATION_ERROR');
    assert.equal(email.body.details.field, 'email');
    const name = await s.request('POST', '/api/auth/register', { body: { email: uniqueEmail('helo'), password: PASSWORD, name: { first: 'x' } } });
    assertHelomaticError(name, 400, 'VALIDATION_ERROR');
    assert.equal(name.body.details.field, 'name');
  });

  test('an invalid email and a short password are 400 VALIDATION_ERROR', async () => {
    const email = await s.request('POST', '/api/auth/register', { body: { email: 'user@nodot', password: PASSWORD } });
    assertHelomaticError(email, 400, 'VALIDATION_ERROR');
    assert.equal(email.body.details.field, 'email');
    const short = await s.request('POST', '/api/auth/register', { body: { email: uniqueEmail('helo'), password: 'seven77' } });
    assertHelomaticError(short, 400, 'VALIDATION_ERROR');
    assert.equal(short.body.details.field, 'password');
  });

  test('a duplicate email (any case, surrounding spaces) is 409 CONFLICT', async () => {
    const u = await register();
    const same = await s.request('POST', '/api/auth/register', { body: { email: u.email, password: PASSWORD } });
    assertHelomaticError(same, 409, 'CONFLICT');
    assert.equal(same.body.details.field, 'email');
    const upper = await s.request('POST', '/api/auth/register', { body: { email: `  ${u.email.toUpperCase()} `, password: PASSWORD } });
    assertHelomaticError(upper, 409, 'CONFLICT');
  });

  test('concurrent registrations of one email: exactly one 201, the rest 409 CONFLICT, never 500', async () => {
    const email = uniqueEmail('race');
    const results = await Promise.all(
      Array.from({ length: 5 }, () => s.request('POST', '/api/auth/register', { body: { email, password: PASSWORD } })),
    );
    const statuses = results.map((r) => r.status).sort();
    assert.deepEqual(statuses, [201, 409, 409, 409, 409], results.map((r) => r.text).join('\n'));
    for (const r of results.filter((x) => x.status === 409)) assertHelomaticError(r, 409, 'CONFLICT');
  });
});

describe('POST /api/auth/login', () => {
  test('returns the user, a token pair and the session', async () => {
    const u = await register({ name: 'Jane Roe' });
    const before = Date.now();
    const { res } = await login(u.email);
    assertOk(res, 200, 'Login successful');
    const d = res.body.data;
    assert.deepEqual(Object.keys(d).sort(), ['session', 'tokens', 'user']);
    assert.equal(d.user.id, u.id);
    assert.equal(d.user.email, u.email);
    assert.equal(d.user.name, 'Jane Roe');
    assert.equal(d.user.role, 'user');
    assertIsoNear(d.user.last_login, before, 10_000);
    assertTokens(d.tokens);
    assert.deepEqual(Object.keys(d.session).sort(), ['expires_at', 'session_id']);
    assert.match(d.session.session_id, /^sess_/);
    assertIsoNear(d.session.expires_at, before + 3600_000, 5_000);
    assert.equal(decodeJwt(d.tokens.access_token).sid, d.session.session_id, 'the token belongs to the reported session');
    assert.ok(await tokenWorks(d.tokens.access_token));
  });

  test('expires_in is the token lifetime, 3600, whenever within a second the token is issued', async () => {
    const u = await register();
    const seen = new Set<number>();
    // Spread logins over more than one second so that every sub-second offset is exercised.
    for (let i = 0; i < 8; i++) {
      const { res } = await login(u.email);
      seen.add(res.body.data.tokens.expires_in);
      const t = decodeJwt(res.body.data.tokens.access_token);
      assert.equal(t.exp! - t.iat!, 3600);
      await new Promise((r) => setTimeout(r, 140));
    }
    assert.deepEqual([...seen], [3600]);
  });

  test('each login opens a new session; the email is case-insensitive', async () => {
    const u = await register();
    const a = await login(u.email);
    const b = await login(u.email.toUpperCase());
    assert.notEqual(a.res.body.data.session.session_id, b.res.body.data.session.session_id);
    assert.notEqual(a.refreshToken, b.refreshToken);
    assert.equal(b.res.body.data.user.id, u.id);
  });

  test('a wrong password and an unknown email are the same 401', async () => {
    const u = await register();
    const wrong = await s.request('POST', '/api/auth/login', { body: { email: u.email, password: 'not-the-password' } });
    assertHelomaticError(wrong, 401, 'AUTH_REQUIRED');
    const unknown = await s.request('POST', '/api/auth/login', { body: { email: uniqueEmail('ghost'), password: PASSWORD } });
    assertHelomaticError(unknown, 401, 'AUTH_REQUIRED');
    assert.equal(wrong.body.error, unknown.body.error);
  });

  test('missing fields are 400 VALIDATION_ERROR', async () => {
    const none = await s.request('POST', '/api/auth/login', { body: {} });
    assertHelomaticError(none, 400, 'VALIDATION_ERROR');
    assert.deepEqual(issueFields(none).sort(), ['email', 'password']);
    const empty = await s.request('POST', '/api/auth/login', { body: { email: '', password: PASSWORD } });
    assertHelomaticError(empty, 400, 'VALIDATION_ERROR');
    assert.equal(empty.body.details.field, 'email');
  });

  test('a malformed JSON body is 400 VALIDATION_ERROR', async () => {
    assertHelomaticError(await s.request('POST', '/api/auth/login', { rawBody: '{"email":' }), 400, 'VALIDATION_ERROR');
  });

  test('wrong types are 400 VALIDATION_ERROR', async () => {
    const res = await s.request('POST', '/api/auth/login', { body: { email: uniqueEmail('helo'), password: 123 } });
    assertHelomaticError(res, 400, 'VALIDATION_ERROR');
    assert.equal(res.body.details.field, 'password');
    const arr = await s.request('POST', '/api/auth/login', { body: [{ email: 'a@b.co', password: PASSWORD }] });
    assertHelomaticError(arr, 400, 'VALIDATION_ERROR');
  });
});

describe('POST /api/auth/refresh', () => {
  test('exchanges the refresh token for a new pair in the same session', async () => {
    const u = await register();
    const res = await s.request('POST', '/api/auth/refresh', { body: { refresh_token: u.refreshToken } });
    assertOk(res, 200, 'Token refreshed');
    assert.deepEqual(Object.keys(res.body.data), ['tokens']);
    const t = res.body.data.tokens;
    assertTokens(t);
    assert.notEqual(t.refresh_token, u.refreshToken);
    assert.equal(decodeJwt(t.access_token).sub, u.id);
    assert.equal(decodeJwt(t.access_token).sid, decodeJwt(u.accessToken).sid);
    assert.ok(await tokenWorks(t.access_token));
  });

  test('reusing an old refresh token is 401 and revokes the whole session', async () => {
    const u = await register();
    const first = await s.request('POST', '/api/auth/refresh', { body: { refresh_token: u.refreshToken } });
    assert.equal(first.status, 200, first.text);
    const newest = first.body.data.tokens;

    const reuse = await s.request('POST', '/api/auth/refresh', { body: { refresh_token: u.refreshToken } });
    assertHelomaticError(reuse, 401, 'AUTH_REQUIRED');

    assertHelomaticError(await s.request('POST', '/api/auth/refresh', { body: { refresh_token: newest.refresh_token } }), 401, 'AUTH_REQUIRED');
    assert.equal(await tokenWorks(newest.access_token), false);
    assert.equal(await tokenWorks(u.accessToken), false);
    assertHelomaticError(await s.request('POST', '/api/auth/logout', { token: newest.access_token }), 401, 'AUTH_REQUIRED');

    // Other sessions of the same user are not touched.
    const other = await login(u.email);
    assert.ok(await tokenWorks(other.accessToken));
  });

  test('an unknown refresh token, or an access token in its place, is 401', async () => {
    assertHelomaticError(await s.request('POST', '/api/auth/refresh', { body: { refresh_token: 'msr_unknown' } }), 401, 'AUTH_REQUIRED');
    const u = await register();
    assertHelomaticError(await s.request('POST', '/api/auth/refresh', { body: { refresh_token: u.accessToken } }), 401, 'AUTH_REQUIRED');
  });

  test('a missing or empty refresh token is 400 VALIDATION_ERROR', async () => {
    const none = await s.request('POST', '/api/auth/refresh', { body: {} });
    assertHelomaticError(none, 400, 'VALIDATION_ERROR');
    assert.equal(none.body.details.field, 'refresh_token');
    assertHelomaticError(await s.request('POST', '/api/auth/refresh', { body: { refresh_token: '' } }), 400, 'VALIDATION_ERROR');
  });

  test('a malformed JSON body is 400 VALIDATION_ERROR', async () => {
    assertHelomaticError(await s.request('POST', '/api/auth/refresh', { rawBody: '{"email":' }), 400, 'VALIDATION_ERROR');
  });

  test('a refresh token of the wrong type is 400 VALIDATION_ERROR', async () => {
    const res = await s.request('POST', '/api/auth/refresh', { body: { refresh_token: 123 } });
    assertHelomaticError(res, 400, 'VALIDATION_ERROR');
    assert.equal(res.body.details.field, 'refresh_token');
  });

  test('the refresh token of a logged-out session is 401', async () => {
    const u = await register();
    assert.equal((await s.request('POST', '/api/auth/logout', { token: u.accessToken })).status, 200);
    assertHelomaticError(await s.request('POST', '/api/auth/refresh', { body: { refresh_token: u.refreshToken } }), 401, 'AUTH_REQUIRED');
  });
});

describe('POST /api/auth/logout', () => {
  test('ends the session of the bearer token and only that session', async () => {
    const u = await register();
    const other = await login(u.email);
    const res = await s.request('POST', '/api/auth/logout', { token: u.accessToken });
    assertOk(res, 200, 'Logout successful');
    assert.deepEqual(res.body.data, { logged_out: true });

    assert.equal(await tokenWorks(u.accessToken), false);
    assertHelomaticError(await s.request('POST', '/api/auth/logout', { token: u.accessToken }), 401, 'AUTH_REQUIRED');
    assertHelomaticError(await s.request('POST', '/api/auth/refresh', { body: { refresh_token: u.refreshToken } }), 401, 'AUTH_REQUIRED');
    assert.ok(await tokenWorks(other.accessToken));
  });

  test('without a token, with a garbage token or a non-Bearer header it is 401', async () => {
    const none = await s.request('POST', '/api/auth/logout');
    assertHelomaticError(none, 401, 'AUTH_REQUIRED');
    assert.match(String(none.headers['www-authenticate']), /^Bearer/);
    assertHelomaticError(await s.request('POST', '/api/auth/logout', { token: 'garbage' }), 401, 'AUTH_REQUIRED');
    assertHelomaticError(await s.request('POST', '/api/auth/logout', { headers: { authorization: 'Token abc' } }), 401, 'AUTH_REQUIRED');
  });

  test('a malformed JSON body is 400 VALIDATION_ERROR and does not end the session', async () => {
    const u = await register();
    const res = await s.request('POST', '/api/auth/logout', { token: u.accessToken, rawBody: '{"email":' });
    assertHelomaticError(res, 400, 'VALIDATION_ERROR');
    assert.ok(await tokenWorks(u.accessToken));
  });
});
