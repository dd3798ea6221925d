/**
 * Arrotech Hub face (automation): `/auth/{register,login,refresh,logout,me,verify-email}` and API keys
 * under `/auth/me`. Errors are FastAPI's `{detail:"..."}`; request validation is 422 `{detail:[{loc,msg,type}]}`.
 * Verification mail goes through a real SMTP server listening on an ephemeral local port.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { decodeJwt } from 'jose';
import { SMTPServer } from 'smtp-server';
import { startTestServer, uniqueEmail, type TestResponse, type TestServer } from '../helpers/server.ts';

interface ReceivedMail {
  from: string;
  to: string[];
  raw: string;
}

const mails: ReceivedMail[] = [];
/** The public address the server puts in its mails. */
const PUBLIC_URL = 'http://mainspring.test';
let smtp: SMTPServer;
let s: TestServer;

before(async () => {
  smtp = new SMTPServer({
    disabledCommands: ['STARTTLS', 'AUTH'],
    authOptional: true,
    logger: false,
    disableReverseLookup: true,
    // Recipients whose mailbox starts with "reject." are refused, to see a failed delivery.
    onRcptTo(address, _session, callback) {
      if (address.address.startsWith('reject.')) {
        const err = new Error('Mailbox unavailable') as Error & { responseCode: number };
        err.responseCode = 550;
        callback(err);
        return;
      }
      callback();
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
        mails.push({ from, to: session.envelope.rcptTo.map((r) => r.address), raw: Buffer.concat(chunks).toString('utf8') });
        callback();
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    smtp.once('error', reject);
    smtp.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (smtp.server.address() as AddressInfo).port;
  s = await startTestServer({ SMTP_URL: `smtp://127.0.0.1:${port}`, PUBLIC_URL });
});

after(async () => {
  await s.close();
  await new Promise<void>((resolve) => smtp.close(() => resolve()));
});

const PASSWORD = 'correct-horse-battery';

/** Decodes the text body of a single-part message (quoted-printable, base64 or plain). */
function mailText(raw: string): { headers: string; text: string } {
  const split = raw.indexOf('\r\n\r\n');
  const headers = raw.slice(0, split);
  let body = raw.slice(split + 4);
  const cte = /^content-transfer-encoding:\s*(\S+)/im.exec(headers)?.[1]?.toLowerCase();
  if (cte === 'quoted-printable') {
    body = body.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/gi, (_m, h: string) => String.fromCharCode(parseInt(h, 16)));
  } else if (cte === 'base64') {
    body = Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8');
  }
  return { headers, text: body };
}

async function mailTo(address: string): Promise<ReceivedMail> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const m = mails.find((x) => x.to.includes(address));
    if (m) return m;
    if (Date.now() > deadline) throw new Error(`no mail arrived for ${address}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function verificationTokenIn(mail: ReceivedMail): string {
  const token = /msv_[A-Za-z0-9_-]{20,}/.exec(mailText(mail.raw).text)?.[0];
  assert.ok(token, `no verification token in:\n${mail.raw}`);
  return token;
}

/** FastAPI HTTPException shape: exactly `{detail:"<message>"}`. */
function assertDetail(res: TestResponse, status: number): void {
  assert.equal(res.status, status, res.text);
  assert.deepEqual(Object.keys(res.body), ['detail']);
  assert.equal(typeof res.body.detail, 'string', `detail should be a message: ${res.text}`);
  assert.ok(res.body.detail.length > 0);
}

/** FastAPI request validation: 422 `{detail:[{loc,msg,type}]}`; returns the `loc`s. */
function assertValidation(res: TestResponse): (string | number)[][] {
  assert.equal(res.status, 422, res.text);
  assert.deepEqual(Object.keys(res.body), ['detail']);
  assert.ok(Array.isArray(res.body.detail), `detail should be a list of errors: ${res.text}`);
  assert.ok(res.body.detail.length > 0);
  for (const e of res.body.detail as { loc: unknown; msg: unknown; type: unknown }[]) {
    assert.ok(Array.isArray(e.loc), 'loc is a list');
    assert.equal(typeof e.msg, 'string');
    assert.equal(typeof e.type, 'string');
  }
  return (res.body.detail as { loc: (string | number)[] }[]).map((e) => e.loc);
}

function assertIsoNear(value: unknown, expectedMs: number, toleranceMs: number): void {
  assert.equal(typeof value, 'string');
  const t = Date.parse(value as string);
  assert.ok(!Number.isNaN(t), `not a date: ${String(value)}`);
  assert.ok(Math.abs(t - expectedMs) <= toleranceMs, `${String(value)} is not within ${toleranceMs} ms of ${new Date(expectedMs).toISOString()}`);
}

async function register(opts: { email?: string; name?: string } = {}) {
  const email = opts.email ?? uniqueEmail('arro');
  const res = await s.request('POST', '/auth/register', { body: { email, password: PASSWORD, name: opts.name ?? 'Arro User' } });
  assert.equal(res.status, 200, res.text);
  return { id: res.body.data.user.id as string, email, token: res.body.data.token as string, refreshToken: res.body.data.refresh_token as string, res };
}

async function login(email: string) {
  const res = await s.request('POST', '/auth/login', { body: { email, password: PASSWORD } });
  assert.equal(res.status, 200, res.text);
  return { token: res.body.data.token as string, refreshToken: res.body.data.refresh_token as string, res };
}

async function me(token: string): Promise<TestResponse> {
  return s.request('GET', '/auth/me', { token });
}

describe('POST /auth/register', () => {
  test('creates the account, returns a session and sends the verification mail', async () => {
    const email = uniqueEmail('arro');
    const res = await s.request('POST', '/auth/register', { body: { email, password: PASSWORD, name: 'Ari Tech' } });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.success, true);
    const d = res.body.data;
    assert.deepEqual(Object.keys(d).sort(), ['is_new_user', 'organizations', 'refresh_token', 'token', 'user', 'verification_sent']);
    assert.match(d.user.id, /^usr_/);
    assert.deepEqual(d.user, { id: d.user.id, email, name: 'Ari Tech', subscription_tier: 'free', email_verified: false });
    assert.deepEqual(d.organizations, []);
    assert.equal(d.is_new_user, true);
    assert.match(d.refresh_token, /^msr_/);
    assert.equal(decodeJwt(d.token).sub, d.user.id);
    assert.equal(d.verification_sent, true);

    const mail = await mailTo(email);
    const { headers } = mailText(mail.raw);
    assert.match(headers, /^subject: Verify your Mainspring account$/im);
    assert.equal(mail.from, 'no-reply@mainspring.local');
    verificationTokenIn(mail);

    const who = await me(d.token);
    assert.equal(who.status, 200, who.text);
    assert.equal(who.body.data.id, d.user.id);
  });

  test('a refused delivery reports verification_sent false and still creates the account', async () => {
    const email = uniqueEmail('reject');
    const res = await s.request('POST', '/auth/register', { body: { email, password: PASSWORD, name: 'No Mail' } });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.data.verification_sent, false);
    assert.equal(mails.some((m) => m.to.includes(email)), false);
    await login(email);
  });

  test('missing fields are 422 with one error per field', async () => {
    const locs = assertValidation(await s.request('POST', '/auth/register', { body: {} }));
    assert.deepEqual(locs.map((l) => l.join('.')).sort(), ['body.email', 'body.name', 'body.password']);
    const noName = assertValidation(await s.request('POST', '/auth/register', { body: { email: uniqueEmail('arro'), password: PASSWORD } }));
    assert.deepEqual(noName, [['body', 'name']]);
  });

  test('a malformed JSON body is 422 in the request-validation shape', async () => {
    const res = await s.request('POST', '/auth/register', { rawBody: '{"email":' });
    const locs = assertValidation(res);
    assert.equal(locs[0]![0], 'body');
  });

  test('wrong types are 422 naming the field', async () => {
    const res = await s.request('POST', '/auth/register', { body: { email: uniqueEmail('arro'), password: 123, name: 'X' } });
    assert.deepEqual(assertValidation(res), [['body', 'password']]);
    assert.equal(res.body.detail[0].type, 'invalid_type');
  });

  test('an invalid email and a short password are 422', async () => {
    const email = await s.request('POST', '/auth/register', { body: { email: 'nope', password: PASSWORD, name: 'X' } });
    assert.equal(email.status, 422, email.text);
    assert.ok('detail' in email.body);
    const short = await s.request('POST', '/auth/register', { body: { email: uniqueEmail('arro'), password: 'short', name: 'X' } });
    assert.equal(short.status, 422, short.text);
    assert.ok('detail' in short.body);
  });

  test('a duplicate email (any case) is 409 {detail}', async () => {
    const u = await register();
    const res = await s.request('POST', '/auth/register', { body: { email: u.email.toUpperCase(), password: PASSWORD, name: 'Again' } });
    assertDetail(res, 409);
    assert.match(res.body.detail, /already registered/i);
  });
});

describe('POST /auth/login', () => {
  test('returns a session for an existing user, is_new_user false', async () => {
    const u = await register({ name: 'Login Person' });
    const { res } = await login(u.email);
    assert.equal(res.body.success, true);
    const d = res.body.data;
    assert.deepEqual(Object.keys(d).sort(), ['is_new_user', 'organizations', 'refresh_token', 'token', 'user']);
    assert.deepEqual(d.user, { id: u.id, email: u.email, name: 'Login Person', subscription_tier: 'free', email_verified: false });
    assert.equal(d.is_new_user, false);
    assert.deepEqual(d.organizations, []);
    assert.notEqual(d.refresh_token, u.refreshToken);
    assert.notEqual(decodeJwt(d.token).sid, decodeJwt(u.token).sid, 'a login opens a new session');
    assert.equal((await me(d.token)).body.data.id, u.id);
  });

  test('a wrong password and an unknown email are the same 401 {detail}', async () => {
    const u = await register();
    const wrong = await s.request('POST', '/auth/login', { body: { email: u.email, password: 'bad-password-1' } });
    assertDetail(wrong, 401);
    const unknown = await s.request('POST', '/auth/login', { body: { email: uniqueEmail('ghost'), password: PASSWORD } });
    assertDetail(unknown, 401);
    assert.equal(wrong.body.detail, unknown.body.detail);
  });

  test('missing fields are 422', async () => {
    const locs = assertValidation(await s.request('POST', '/auth/login', { body: {} }));
    assert.deepEqual(locs.map((l) => l.join('.')).sort(), ['body.email', 'body.password']);
    assert.deepEqual(assertValidation(await s.request('POST', '/auth/login', { body: { email: uniqueEmail('arro') } })), [['body', 'password']]);
  });

  test('a malformed JSON body is 422 in the request-validation shape', async () => {
    assertValidation(await s.request('POST', '/auth/login', { rawBody: '{"email":' }));
  });

  test('wrong types are 422 naming the field', async () => {
    assert.deepEqual(assertValidation(await s.request('POST', '/auth/login', { body: { email: uniqueEmail('arro'), password: 123 } })), [['body', 'password']]);
    assert.deepEqual(assertValidation(await s.request('POST', '/auth/login', { body: { email: 5, password: PASSWORD } })), [['body', 'email']]);
  });
});

describe('POST /auth/refresh', () => {
  test('rotates the refresh token and returns a working access token', async () => {
    const u = await register();
    const res = await s.request('POST', '/auth/refresh', { body: { refresh_token: u.refreshToken } });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.success, true);
    assert.deepEqual(Object.keys(res.body.data).sort(), ['refresh_token', 'token']);
    assert.match(res.body.data.refresh_token, /^msr_/);
    assert.notEqual(res.body.data.refresh_token, u.refreshToken);
    assert.equal(decodeJwt(res.body.data.token).sid, decodeJwt(u.token).sid);
    assert.equal((await me(res.body.data.token)).body.data.id, u.id);
  });

  test('reusing an old refresh token is 401 and revokes the whole session', async () => {
    const u = await register();
    const first = await s.request('POST', '/auth/refresh', { body: { refresh_token: u.refreshToken } });
    assert.equal(first.status, 200, first.text);
    assertDetail(await s.request('POST', '/auth/refresh', { body: { refresh_token: u.refreshToken } }), 401);
    assertDetail(await s.request('POST', '/auth/refresh', { body: { refresh_token: first.body.data.refresh_token } }), 401);
    assertDetail(await me(first.body.data.token), 401);
    assertDetail(await me(u.token), 401);
    const fresh = await login(u.email);
    assert.equal((await me(fresh.token)).status, 200);
  });

  test('an unknown refresh token is 401 {detail}', async () => {
    assertDetail(await s.request('POST', '/auth/refresh', { body: { refresh_token: 'msr_unknown-token' } }), 401);
  });

  test('a missing refresh token is 422', async () => {
    assert.deepEqual(assertValidation(await s.request('POST', '/auth/refresh', { body: {} })), [['body', 'refresh_token']]);
  });

  test('a malformed JSON body is 422 in the request-validation shape', async () => {
    assertValidation(await s.request('POST', '/auth/refresh', { rawBody: '{"email":' }));
  });

  test('a refresh token of the wrong type is 422', async () => {
    assert.deepEqual(assertValidation(await s.request('POST', '/auth/refresh', { body: { refresh_token: 42 } })), [['body', 'refresh_token']]);
  });
});

describe('POST /auth/logout', () => {
  test('with the bearer token: ends that session only', async () => {
    const u = await register();
    const other = await login(u.email);
    const res = await s.request('POST', '/auth/logout', { token: u.token });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.body, { success: true, message: 'Logged out successfully' });
    assertDetail(await me(u.token), 401);
    assertDetail(await s.request('POST', '/auth/refresh', { body: { refresh_token: u.refreshToken } }), 401);
    assert.equal((await me(other.token)).status, 200);
  });

  test('with {refresh_token} and no bearer token: ends the session of that refresh token', async () => {
    const u = await register();
    const res = await s.request('POST', '/auth/logout', { body: { refresh_token: u.refreshToken } });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.success, true);
    assertDetail(await me(u.token), 401);
    assertDetail(await s.request('POST', '/auth/refresh', { body: { refresh_token: u.refreshToken } }), 401);
  });

  test('without any credential it is a harmless 200, as Arrotech answers', async () => {
    const u = await register();
    const res = await s.request('POST', '/auth/logout');
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.success, true);
    assert.equal((await me(u.token)).status, 200);
  });

  test('a malformed JSON body is 422 and does not end the session', async () => {
    const u = await register();
    assertValidation(await s.request('POST', '/auth/logout', { token: u.token, rawBody: '{"email":' }));
    assert.equal((await me(u.token)).status, 200);
  });

  test('a refresh token of the wrong type is 422 and ends nothing', async () => {
    const u = await register();
    assert.deepEqual(assertValidation(await s.request('POST', '/auth/logout', { body: { refresh_token: 7 } })), [['body', 'refresh_token']]);
    assert.equal((await me(u.token)).status, 200);
  });
});

describe('GET /auth/me', () => {
  test('returns the profile of the bearer token', async () => {
    const before = Date.now();
    const u = await register({ name: 'Profile Person' });
    const res = await me(u.token);
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.success, true);
    const d = res.body.data;
    assert.equal(d.id, u.id);
    assert.equal(d.email, u.email);
    assert.equal(d.name, 'Profile Person');
    assert.equal(d.subscription_tier, 'free');
    assert.equal(d.effective_tier, 'free');
    assert.equal(d.email_verified, false);
    assert.equal(d.role, 'user');
    assert.equal(d.username, null);
    assert.equal(d.company, null);
    assertIsoNear(d.created_at, before, 10_000);
  });

  test('no token, a garbage token or a non-Bearer header is 401 {detail} with WWW-Authenticate', async () => {
    const none = await s.request('GET', '/auth/me');
    assertDetail(none, 401);
    assert.match(String(none.headers['www-authenticate']), /^Bearer/);
    assertDetail(await me('garbage'), 401);
    assertDetail(await s.request('GET', '/auth/me', { headers: { authorization: 'Basic Zm9vOmJhcg==' } }), 401);
  });
});

describe('POST /auth/verify-email', () => {
  test('the mailed token verifies the address once; reuse is refused', async () => {
    const u = await register();
    assert.equal(u.res.body.data.verification_sent, true);
    const token = verificationTokenIn(await mailTo(u.email));

    const res = await s.request('POST', '/auth/verify-email', { body: { token } });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.body, { success: true, data: { email_verified: true }, message: 'Email verified' });

    assert.equal((await me(u.token)).body.data.email_verified, true);
    const helix = await s.request('GET', '/api/v1/users/me', { token: u.token });
    assert.equal(helix.body.user.is_verified, true);
    const relog = await login(u.email);
    assert.equal(relog.res.body.data.user.email_verified, true);

    const again = await s.request('POST', '/auth/verify-email', { body: { token } });
    assert.ok(again.status === 422 || again.status === 400, again.text);
    assert.equal(typeof again.body.detail, 'string');
  });

  test('the link in the mail, opened as it is, verifies the address', async () => {
    const u = await register();
    const text = mailText((await mailTo(u.email)).raw).text;
    const link = new RegExp(`${PUBLIC_URL}(/auth/verify-email\\?token=[^\\s"]+)`).exec(text)?.[1];
    assert.ok(link, `no verification link in:\n${text}`);
    const res = await s.request('GET', link);
    assert.equal(res.status, 200, `GET ${link}: ${res.status} ${res.text}`);
    assert.equal((await me(u.token)).body.data.email_verified, true);
  });

  test('a token verifies only its own account', async () => {
    const a = await register();
    const b = await register();
    const tokenB = verificationTokenIn(await mailTo(b.email));
    assert.equal((await s.request('POST', '/auth/verify-email', { body: { token: tokenB } })).status, 200);
    assert.equal((await me(a.token)).body.data.email_verified, false);
    assert.equal((await me(b.token)).body.data.email_verified, true);
  });

  test('an unknown token is refused', async () => {
    const res = await s.request('POST', '/auth/verify-email', { body: { token: 'msv_not-a-real-token' } });
    assert.ok(res.status === 422 || res.status === 400, res.text);
    assert.equal(typeof res.body.detail, 'string');
  });

  test('a missing token is 422', async () => {
    assert.deepEqual(assertValidation(await s.request('POST', '/auth/verify-email', { body: {} })), [['body', 'token']]);
  });

  test('a malformed JSON body is 422 in the request-validation shape', async () => {
    assertValidation(await s.request('POST', '/auth/verify-email', { rawBody: '{"email":' }));
  });

  test('a token of the wrong type is 422', async () => {
    assert.deepEqual(assertValidation(await s.request('POST', '/auth/verify-email', { body: { token: 12345 } })), [['body', 'token']]);
  });
});

describe('API keys', () => {
  /** Checks a credential on all four faces; returns the statuses. */
  async function statusOnEveryFace(credential: string) {
    return {
      tasks: (await s.request('GET', '/api/v1/users/me', { token: credential })).status,
      automation: (await me(credential)).status,
      monitoring: (await s.request('POST', '/api/auth/logout', { token: credential })).status,
      databases: (await s.request('POST', '/v1/auth/logout', { token: credential })).status,
    };
  }

  test('regenerate returns a new default key, shown once, that works as Bearer on every face', async () => {
    const u = await register();
    const res = await s.request('POST', '/auth/me/regenerate-api-key', { token: u.token });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.success, true);
    const k = res.body.data;
    assert.match(k.api_key, /^msk_[A-Za-z0-9_-]{40,}$/);
    assert.match(k.id, /^key_/);
    assert.equal(k.name, 'default');
    assert.equal(k.prefix, k.api_key.slice(0, 12));
    assert.equal(k.last_used_at, null);
    assert.equal(k.revoked_at, null);
    assertIsoNear(k.created_at, Date.now(), 10_000);

    const helix = await s.request('GET', '/api/v1/users/me', { token: k.api_key });
    assert.equal(helix.status, 200, helix.text);
    assert.equal(helix.body.user.id, u.id);
    const arro = await me(k.api_key);
    assert.equal(arro.status, 200, arro.text);
    assert.equal(arro.body.data.email, u.email);
    assert.deepEqual(await statusOnEveryFace(k.api_key), { tasks: 200, automation: 200, monitoring: 200, databases: 200 });
  });

  test('regenerating revokes the previous default key everywhere', async () => {
    const u = await register();
    const first = (await s.request('POST', '/auth/me/regenerate-api-key', { token: u.token })).body.data;
    const second = (await s.request('POST', '/auth/me/regenerate-api-key', { token: u.token })).body.data;
    assert.notEqual(second.api_key, first.api_key);
    assert.notEqual(second.id, first.id);

    assertDetail(await me(first.api_key), 401);
    assert.deepEqual(await statusOnEveryFace(first.api_key), { tasks: 401, automation: 401, monitoring: 401, databases: 401 });
    assert.equal((await me(second.api_key)).body.data.id, u.id);

    const list = await s.request('GET', '/auth/me/api-keys', { token: u.token });
    const byId = new Map((list.body.data as { id: string; revoked_at: string | null }[]).map((x) => [x.id, x]));
    assert.notEqual(byId.get(first.id)?.revoked_at, null);
    assert.equal(byId.get(second.id)?.revoked_at, null);
  });

  test('POST /auth/me/api-keys creates a named key; the list never shows a key itself', async () => {
    const u = await register();
    const created = await s.request('POST', '/auth/me/api-keys', { token: u.token, body: { name: 'ci-runner' } });
    assert.equal(created.status, 201, created.text);
    const k = created.body.data;
    assert.equal(k.name, 'ci-runner');
    assert.match(k.api_key, /^msk_/);
    assert.equal(k.prefix, k.api_key.slice(0, 12));
    const regen = (await s.request('POST', '/auth/me/regenerate-api-key', { token: u.token })).body.data;

    // Using the key is recorded.
    assert.equal((await me(k.api_key)).status, 200);

    const list = await s.request('GET', '/auth/me/api-keys', { token: u.token });
    assert.equal(list.status, 200, list.text);
    assert.equal(list.body.success, true);
    const items = list.body.data as Record<string, unknown>[];
    assert.deepEqual(items.map((x) => x.id).sort(), [k.id, regen.id].sort());
    for (const item of items) {
      assert.deepEqual(Object.keys(item).sort(), ['created_at', 'id', 'last_used_at', 'name', 'prefix', 'revoked_at']);
    }
    assert.ok(!list.text.includes(k.api_key) && !list.text.includes(regen.api_key), 'no key in the listing');
    const named = items.find((x) => x.id === k.id)!;
    assert.equal(named.name, 'ci-runner');
    assert.equal(named.prefix, k.prefix);
    assertIsoNear(named.last_used_at, Date.now(), 10_000);

    // A named key survives regeneration of the default key.
    await s.request('POST', '/auth/me/regenerate-api-key', { token: u.token });
    assert.equal((await me(k.api_key)).status, 200);
  });

  test('the list holds only the caller’s keys', async () => {
    const a = await register();
    const b = await register();
    const ka = (await s.request('POST', '/auth/me/api-keys', { token: a.token, body: { name: 'a-key' } })).body.data;
    const list = await s.request('GET', '/auth/me/api-keys', { token: b.token });
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.data, []);
    assert.ok(!list.text.includes(ka.id));
  });

  test('DELETE revokes a key; deleting it again is 404', async () => {
    const u = await register();
    const k = (await s.request('POST', '/auth/me/api-keys', { token: u.token, body: { name: 'temp' } })).body.data;
    assert.equal((await me(k.api_key)).status, 200);
    const del = await s.request('DELETE', `/auth/me/api-keys/${k.id}`, { token: u.token });
    assert.equal(del.status, 200, del.text);
    assert.deepEqual(del.body, { success: true, message: 'API key revoked' });
    assert.deepEqual(await statusOnEveryFace(k.api_key), { tasks: 401, automation: 401, monitoring: 401, databases: 401 });
    assertDetail(await s.request('DELETE', `/auth/me/api-keys/${k.id}`, { token: u.token }), 404);
    const listed = (await s.request('GET', '/auth/me/api-keys', { token: u.token })).body.data as { id: string; revoked_at: string | null }[];
    assertIsoNear(listed.find((x) => x.id === k.id)?.revoked_at, Date.now(), 10_000);
  });

  test('another user’s key id is 404 and the key keeps working', async () => {
    const owner = await register();
    const intruder = await register();
    const k = (await s.request('POST', '/auth/me/api-keys', { token: owner.token, body: { name: 'mine' } })).body.data;
    assertDetail(await s.request('DELETE', `/auth/me/api-keys/${k.id}`, { token: intruder.token }), 404);
    assertDetail(await s.request('DELETE', '/auth/me/api-keys/key_doesnotexist000', { token: intruder.token }), 404);
    assert.equal((await me(k.api_key)).body.data.id, owner.id);
  });

  test('creating a key: missing name, blank name, wrong type and malformed JSON are 422', async () => {
    const u = await register();
    assert.deepEqual(assertValidation(await s.request('POST', '/auth/me/api-keys', { token: u.token, body: {} })), [['body', 'name']]);
    assert.deepEqual(assertValidation(await s.request('POST', '/auth/me/api-keys', { token: u.token, body: { name: 99 } })), [['body', 'name']]);
    assertValidation(await s.request('POST', '/auth/me/api-keys', { token: u.token, rawBody: '{"email":' }));
    const blank = await s.request('POST', '/auth/me/api-keys', { token: u.token, body: { name: '   ' } });
    assert.equal(blank.status, 422, blank.text);
    assert.equal((await s.request('GET', '/auth/me/api-keys', { token: u.token })).body.data.length, 0, 'nothing was created');
  });

  test('the key endpoints require authentication', async () => {
    assertDetail(await s.request('POST', '/auth/me/regenerate-api-key'), 401);
    assertDetail(await s.request('GET', '/auth/me/api-keys'), 401);
    assertDetail(await s.request('POST', '/auth/me/api-keys', { body: { name: 'x' } }), 401);
    assertDetail(await s.request('DELETE', '/auth/me/api-keys/key_x'), 401);
  });

  test('a revoked key cannot manage keys, and a session that logged out cannot either', async () => {
    const u = await register();
    const k = (await s.request('POST', '/auth/me/api-keys', { token: u.token, body: { name: 'short-lived' } })).body.data;
    await s.request('DELETE', `/auth/me/api-keys/${k.id}`, { token: u.token });
    assertDetail(await s.request('POST', '/auth/me/api-keys', { token: k.api_key, body: { name: 'sneaky' } }), 401);
    await s.request('POST', '/auth/logout', { token: u.token });
    assertDetail(await s.request('GET', '/auth/me/api-keys', { token: u.token }), 401);
  });
});
