/**
 * Credentials on every face: forged, expired and tampered access tokens, refresh-token rotation
 * and reuse detection, API keys, and login throttling. Every refusal is checked in all four
 * faces' error formats.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { SignJWT, decodeJwt } from 'jose';
import { listAuditEvents } from '../../src/domains/audit/service.ts';
import { createAccessTokenSigner } from '../../src/domains/identity/tokens.ts';
import { registerUser, startTestServer, TEST_JWT_SECRET, uniqueEmail, type TestResponse, type TestServer } from '../helpers/server.ts';
import { AUTH_PROBES, FACES, assertFaceError, assertRefusedEverywhere, header, loginRequest, requestFrom, type Face } from '../http/face-errors.ts';

const SECRET = new TextEncoder().encode(TEST_JWT_SECRET);
const ISSUER = 'mainspring';
const AUDIENCE = 'mainspring-api';

let s: TestServer;
before(async () => {
  // LOGIN_MAX_FAILURES and LOGIN_FAILURE_WINDOW_SECONDS are left at their defaults (10 per 15 minutes).
  s = await startTestServer();
});
after(() => s.close());

const b64url = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const nowSec = () => Math.floor(Date.now() / 1000);

interface ForgeOptions {
  alg?: 'HS256' | 'HS384' | 'HS512';
  key?: Uint8Array;
  issuer?: string;
  audience?: string;
  typ?: string;
  iat?: number;
  exp?: number;
}

/** Signs an access token like the server does, with any one thing changed. */
function forge(sub: string, sid: string, o: ForgeOptions = {}): Promise<string> {
  const iat = o.iat ?? nowSec();
  return new SignJWT({ sid, typ: o.typ ?? 'access' })
    .setProtectedHeader({ alg: o.alg ?? 'HS256', typ: 'JWT' })
    .setSubject(sub)
    .setIssuer(o.issuer ?? ISSUER)
    .setAudience(o.audience ?? AUDIENCE)
    .setIssuedAt(iat)
    .setExpirationTime(o.exp ?? iat + 600)
    .sign(o.key ?? SECRET);
}

/** The user id and session id inside a real access token. */
function claimsOf(token: string): { sub: string; sid: string } {
  const c = decodeJwt(token);
  assert.equal(typeof c.sub, 'string');
  assert.equal(typeof c.sid, 'string');
  return { sub: c.sub!, sid: c.sid as string };
}

/** Logs in through the HeliosDB face and returns a fresh session's tokens. */
async function login(email: string, password: string): Promise<{ accessToken: string; refreshToken: string }> {
  const res = await s.request('POST', '/v1/auth/login', { body: { email, password } });
  assert.equal(res.status, 200, res.text);
  return { accessToken: res.body.data.token, refreshToken: res.body.data.refresh_token };
}

function assertAccepted(res: TestResponse, label: string): void {
  assert.equal(res.status, 200, `${label}: ${res.status} ${res.text.slice(0, 200)}`);
}

describe('access tokens', () => {
  test('a genuine token and one signed the same way by hand are both accepted on every face', async () => {
    const u = await registerUser(s);
    const genuine = claimsOf(u.accessToken);
    assert.equal(genuine.sub, u.id);
    for (const face of FACES) {
      // The monitoring and databases probes end the session, so each face gets its own.
      const probe = AUTH_PROBES[face];
      const session = await login(u.email, u.password);
      assert.equal(claimsOf(session.accessToken).sub, u.id);
      assertAccepted(await s.request(probe.method, probe.url, { token: session.accessToken }), `genuine on ${face}`);
      const other = await login(u.email, u.password);
      const forged = await forge(u.id, claimsOf(other.accessToken).sid);
      assert.notEqual(forged, other.accessToken);
      assertAccepted(await s.request(probe.method, probe.url, { token: forged }), `hand-signed on ${face}`);
    }
  });

  test('alg:none tokens are refused on every face', async () => {
    const u = await registerUser(s);
    const { sub, sid } = claimsOf(u.accessToken);
    const payload = { sub, sid, typ: 'access', iss: ISSUER, aud: AUDIENCE, iat: nowSec(), exp: nowSec() + 600 };
    const unsigned = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(payload)}.`;
    await assertRefusedEverywhere(s, unsigned, 'AUTH_REQUIRED', 'alg:none');
    // The same with the real token's signature left in place.
    const withSig = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(payload)}.${u.accessToken.split('.')[2]}`;
    await assertRefusedEverywhere(s, withSig, 'AUTH_REQUIRED', 'alg:none with signature');
    // The real token still works: the refusals were about the token, not the account.
    assertAccepted(await s.request('GET', '/auth/me', { token: u.accessToken }), 'genuine');
  });

  test('a token signed with another key is refused on every face', async () => {
    const u = await registerUser(s);
    const { sub, sid } = claimsOf(u.accessToken);
    const token = await forge(sub, sid, { key: new TextEncoder().encode('another-secret-0123456789abcdef0123456789') });
    await assertRefusedEverywhere(s, token, 'AUTH_REQUIRED', 'wrong key');
  });

  test('an expired token is AUTH_EXPIRED on HeliosDB and 401 in every other face', async () => {
    const u = await registerUser(s);
    const { sub, sid } = claimsOf(u.accessToken);
    const expired = await forge(sub, sid, { iat: nowSec() - 7200, exp: nowSec() - 3600 });
    await assertRefusedEverywhere(s, expired, 'AUTH_EXPIRED', 'expired');
    const db = await s.request('POST', '/v1/auth/logout', { token: expired });
    assert.equal(db.body.error.code, 'AUTH_EXPIRED');
    assert.match(header(db, 'www-authenticate') ?? '', /error="invalid_token"/);
    // Same claims, still valid: accepted, so the refusal above was the expiry.
    assertAccepted(await s.request('GET', '/api/v1/users/me', { token: await forge(sub, sid) }), 'unexpired twin');
  });

  test('a token accepted once (and remembered as verified) is refused once it expires', async () => {
    const signer = createAccessTokenSigner({ secret: TEST_JWT_SECRET, issuer: ISSUER, audience: AUDIENCE, ttlSeconds: 1 });
    const { token, expiresAt } = await signer.sign({ userId: 'usr_a', sessionId: 'ses_a' });
    assert.deepEqual(await signer.verify(token), { userId: 'usr_a', sessionId: 'ses_a' });
    assert.deepEqual(await signer.verify(token), { userId: 'usr_a', sessionId: 'ses_a' }, 'the second answer (remembered) is the same');
    await new Promise((r) => setTimeout(r, expiresAt.getTime() - Date.now() + 20));
    await assert.rejects(signer.verify(token), (err: Error & { code?: string }) => err.code === 'AUTH_EXPIRED');
    // The same claims under another key are never taken from what was remembered.
    const other = createAccessTokenSigner({ secret: `${TEST_JWT_SECRET}-other`, issuer: ISSUER, audience: AUDIENCE, ttlSeconds: 60 });
    const fresh = await signer.sign({ userId: 'usr_a', sessionId: 'ses_a' });
    await signer.verify(fresh.token);
    await assert.rejects(other.verify(fresh.token), (err: Error & { code?: string }) => err.code === 'AUTH_REQUIRED');
  });

  test("a payload changed to another user's id, signature kept, is refused on every face", async () => {
    const victim = await registerUser(s);
    const attacker = await registerUser(s);
    const [h, p, sig] = attacker.accessToken.split('.') as [string, string, string];
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
    assert.equal(payload.sub, attacker.id);
    payload.sub = victim.id;
    const tampered = `${h}.${b64url(payload)}.${sig}`;
    await assertRefusedEverywhere(s, tampered, 'AUTH_REQUIRED', 'tampered sub');
    const me = await s.request('GET', '/api/v1/users/me', { token: attacker.accessToken });
    assert.equal(me.body.user.id, attacker.id);
  });

  test("a correctly signed token pairing one user's id with another user's session is refused", async () => {
    const a = await registerUser(s);
    const b = await registerUser(s);
    const token = await forge(b.id, claimsOf(a.accessToken).sid);
    await assertRefusedEverywhere(s, token, 'AUTH_REQUIRED', 'sub/sid mismatch');
  });

  test('wrong issuer or wrong audience is refused on every face', async () => {
    const u = await registerUser(s);
    const { sub, sid } = claimsOf(u.accessToken);
    await assertRefusedEverywhere(s, await forge(sub, sid, { issuer: 'someone-else' }), 'AUTH_REQUIRED', 'wrong issuer');
    await assertRefusedEverywhere(s, await forge(sub, sid, { audience: 'another-api' }), 'AUTH_REQUIRED', 'wrong audience');
  });

  test('HS384/HS512 tokens signed with the right secret are refused (algorithm allow-list)', async () => {
    const u = await registerUser(s);
    const { sub, sid } = claimsOf(u.accessToken);
    await assertRefusedEverywhere(s, await forge(sub, sid, { alg: 'HS512' }), 'AUTH_REQUIRED', 'HS512');
    await assertRefusedEverywhere(s, await forge(sub, sid, { alg: 'HS384' }), 'AUTH_REQUIRED', 'HS384');
  });

  test('a token whose typ is not "access" is refused', async () => {
    const u = await registerUser(s);
    const { sub, sid } = claimsOf(u.accessToken);
    await assertRefusedEverywhere(s, await forge(sub, sid, { typ: 'refresh' }), 'AUTH_REQUIRED', 'typ refresh');
  });

  test('a hand-made HS256 token without iat is refused (required claim)', async () => {
    const u = await registerUser(s);
    const { sub, sid } = claimsOf(u.accessToken);
    const head = b64url({ alg: 'HS256', typ: 'JWT' });
    const body = b64url({ sub, sid, typ: 'access', iss: ISSUER, aud: AUDIENCE, exp: nowSec() + 600 });
    const sig = createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
    await assertRefusedEverywhere(s, `${head}.${body}.${sig}`, 'AUTH_REQUIRED', 'no iat');
    // The same construction with iat is accepted: the hand signing itself is right.
    const withIat = b64url({ sub, sid, typ: 'access', iss: ISSUER, aud: AUDIENCE, iat: nowSec(), exp: nowSec() + 600 });
    const sig2 = createHmac('sha256', SECRET).update(`${head}.${withIat}`).digest('base64url');
    assertAccepted(await s.request('GET', '/auth/me', { token: `${head}.${withIat}.${sig2}` }), 'hand-made with iat');
  });

  test('garbage and a malformed Authorization header are refused in each face format', async () => {
    await assertRefusedEverywhere(s, 'not-a-jwt', 'AUTH_REQUIRED', 'garbage');
    await assertRefusedEverywhere(s, 'msk_not-a-real-key', 'AUTH_REQUIRED', 'unknown API key');
    for (const face of FACES) {
      const probe = AUTH_PROBES[face];
      const basic = await s.request(probe.method, probe.url, { headers: { authorization: 'Basic dXNlcjpwYXNz' } });
      assertFaceError(basic, face, 'AUTH_REQUIRED', `Basic on ${face}`);
      const none = await s.request(probe.method, probe.url);
      assertFaceError(none, face, 'AUTH_REQUIRED', `no credential on ${face}`);
    }
  });

  test("after logout the session's access token is refused on every face", async () => {
    const u = await registerUser(s);
    const res = await s.request('POST', '/api/v1/auth/logout', { token: u.accessToken });
    assert.equal(res.status, 200, res.text);
    await assertRefusedEverywhere(s, u.accessToken, 'AUTH_REQUIRED', 'logged out');
  });
});

describe('refresh tokens', () => {
  test('refresh tokens rotate: each one works once, and the new pair works', async () => {
    const u = await registerUser(s);
    const r1 = await s.request('POST', '/api/auth/refresh', { body: { refresh_token: u.refreshToken } });
    assert.equal(r1.status, 200, r1.text);
    const next = r1.body.data.tokens.refresh_token as string;
    assert.notEqual(next, u.refreshToken);
    assertAccepted(await s.request('GET', '/auth/me', { token: r1.body.data.tokens.access_token }), 'rotated access token');
    const r2 = await s.request('POST', '/v1/auth/refresh', { body: { refresh_token: next } });
    assert.equal(r2.status, 200, r2.text);
    assert.equal(r2.body.data.user.id, u.id);
  });

  test('reusing a refresh token revokes the whole family (session) on every face', async () => {
    const u = await registerUser(s);
    const other = await login(u.email, u.password); // an unrelated session of the same user
    const family = await login(u.email, u.password);
    const sid = claimsOf(family.accessToken).sid;

    const rotated = await s.request('POST', '/api/auth/refresh', { body: { refresh_token: family.refreshToken } });
    assert.equal(rotated.status, 200, rotated.text);
    const newRefresh = rotated.body.data.tokens.refresh_token as string;
    const newAccess = rotated.body.data.tokens.access_token as string;
    assertAccepted(await s.request('GET', '/api/v1/users/me', { token: newAccess }), 'rotated access before reuse');

    // The old token again, on another face: refused, and the family is burnt.
    const replay = await s.request('POST', '/api/v1/auth/refresh', { body: { refresh_token: family.refreshToken } });
    assertFaceError(replay, 'tasks', 'AUTH_REQUIRED', 'replayed refresh token');

    const session = await s.ctx.db.query<{ revoked_at: Date | null; revoke_reason: string | null }>(
      'SELECT revoked_at, revoke_reason FROM auth_sessions WHERE id = $1',
      [sid],
    );
    assert.ok(session.rows[0]?.revoked_at, 'session revoked');
    assert.equal(session.rows[0]?.revoke_reason, 'refresh_token_reuse');

    // The newest refresh token of the family no longer works, on any refresh route.
    assertFaceError(await s.request('POST', '/auth/refresh', { body: { refresh_token: newRefresh } }), 'automation', 'AUTH_REQUIRED', 'new refresh after reuse');
    assertFaceError(await s.request('POST', '/v1/auth/refresh', { body: { refresh_token: newRefresh } }), 'databases', 'AUTH_REQUIRED', 'new refresh after reuse');
    assertFaceError(await s.request('POST', '/api/auth/refresh', { body: { refresh_token: newRefresh } }), 'monitoring', 'AUTH_REQUIRED', 'new refresh after reuse');
    // Both access tokens of the family are dead everywhere.
    await assertRefusedEverywhere(s, family.accessToken, 'AUTH_REQUIRED', 'original access after reuse');
    await assertRefusedEverywhere(s, newAccess, 'AUTH_REQUIRED', 'rotated access after reuse');

    // Another session of the same user is untouched.
    assertAccepted(await s.request('GET', '/auth/me', { token: other.accessToken }), 'other session');
    const otherRefresh = await s.request('POST', '/auth/refresh', { body: { refresh_token: other.refreshToken } });
    assert.equal(otherRefresh.status, 200, otherRefresh.text);
  });

  test('a refresh token of a logged-out session is refused', async () => {
    const u = await registerUser(s);
    const out = await s.request('POST', '/auth/logout', { body: { refresh_token: u.refreshToken } });
    assert.equal(out.status, 200, out.text);
    assertFaceError(await s.request('POST', '/api/auth/refresh', { body: { refresh_token: u.refreshToken } }), 'monitoring', 'AUTH_REQUIRED', 'refresh after logout');
    await assertRefusedEverywhere(s, u.accessToken, 'AUTH_REQUIRED', 'access after refresh-token logout');
  });
});

describe('API keys', () => {
  test('an API key works on all four faces, records last use, and stops working once revoked', async () => {
    const u = await registerUser(s);
    const created = await s.request('POST', '/auth/me/api-keys', { token: u.accessToken, body: { name: 'ci-runner' } });
    assert.equal(created.status, 201, created.text);
    const key = created.body.data.api_key as string;
    const keyId = created.body.data.id as string;
    assert.match(key, /^msk_/);
    assert.equal(created.body.data.prefix, key.slice(0, 12));
    assert.equal(created.body.data.last_used_at, null);

    const before = await s.request('GET', '/auth/me/api-keys', { token: u.accessToken });
    assert.equal(before.status, 200);
    const listed = (before.body.data as { id: string; last_used_at: string | null }[]).find((k) => k.id === keyId);
    assert.ok(listed, 'key listed');
    assert.equal(listed.last_used_at, null, 'not used yet');

    const startedAt = Date.now();
    const tasks = await s.request('GET', '/api/v1/users/me', { token: key });
    assertAccepted(tasks, 'key on tasks');
    assert.equal(tasks.body.user.id, u.id);
    assertAccepted(await s.request('POST', '/api/auth/logout', { token: key }), 'key on monitoring');
    const db = await s.request('POST', '/v1/auth/logout', { token: key });
    assertAccepted(db, 'key on databases');
    assert.equal(db.body.success, true);
    const auto = await s.request('GET', '/auth/me', { token: key });
    assertAccepted(auto, 'key on automation');
    assert.equal(auto.body.data.id, u.id);

    // "Logging out" with a key ends no session: the user's access token still works.
    assertAccepted(await s.request('GET', '/auth/me', { token: u.accessToken }), 'session survives key logout');

    const afterUse = await s.request('GET', '/auth/me/api-keys', { token: u.accessToken });
    const used = (afterUse.body.data as { id: string; last_used_at: string | null }[]).find((k) => k.id === keyId);
    assert.ok(used?.last_used_at, 'last_used_at set after use');
    assert.ok(Date.parse(used.last_used_at) >= startedAt - 5000, 'last_used_at is recent');
    const row = await s.ctx.db.query<{ last_used_at: Date | null }>('SELECT last_used_at FROM api_keys WHERE id = $1', [keyId]);
    assert.ok(row.rows[0]?.last_used_at instanceof Date);

    // Another user cannot revoke it.
    const stranger = await registerUser(s);
    const foreign = await s.request('DELETE', `/auth/me/api-keys/${keyId}`, { token: stranger.accessToken });
    assertFaceError(foreign, 'automation', 'NOT_FOUND', 'foreign revoke');
    assertAccepted(await s.request('GET', '/auth/me', { token: key }), 'key survives foreign revoke');

    const revoked = await s.request('DELETE', `/auth/me/api-keys/${keyId}`, { token: u.accessToken });
    assert.equal(revoked.status, 200, revoked.text);
    await assertRefusedEverywhere(s, key, 'AUTH_REQUIRED', 'revoked key');
    const list = await s.request('GET', '/auth/me/api-keys', { token: u.accessToken });
    const gone = (list.body.data as { id: string; revoked_at: string | null }[]).find((k) => k.id === keyId);
    assert.ok(gone?.revoked_at, 'revoked_at shown');
    assertFaceError(await s.request('DELETE', `/auth/me/api-keys/${keyId}`, { token: u.accessToken }), 'automation', 'NOT_FOUND', 'second revoke');
  });
});

describe('login throttling', () => {
  /** One login attempt through `face`, optionally from another address. */
  async function attempt(face: Face, identifier: string, password: string, remoteAddress?: string): Promise<TestResponse> {
    const { url, body } = loginRequest(face, identifier, password);
    return remoteAddress ? requestFrom(s, remoteAddress, 'POST', url, { body }) : s.request('POST', url, { body });
  }

  test('10 wrong passwords lock the account for this address: the 11th try gets 429 with Retry-After on every face', async () => {
    const victim = await registerUser(s);
    const bystander = await registerUser(s);

    for (let i = 0; i < 10; i++) {
      const face = FACES[i % FACES.length]!;
      const res = await attempt(face, victim.email, `wrong-password-${i}`);
      assertFaceError(res, face, 'AUTH_REQUIRED', `failure ${i + 1} on ${face}`);
    }
    for (const face of FACES) {
      const res = await attempt(face, victim.email, victim.password);
      assertFaceError(res, face, 'RATE_LIMITED', `right password after lockout on ${face}`);
      const retry = Number(header(res, 'retry-after'));
      assert.ok(retry >= 1 && retry <= 900, `Retry-After within the 15-minute window: ${retry}`);
    }

    // Another account from the same address is unaffected.
    const ok = await attempt('automation', bystander.email, bystander.password);
    assert.equal(ok.status, 200, ok.text);
    // The same account from another address is unaffected.
    const elsewhere = await attempt('monitoring', victim.email, victim.password, '198.51.100.7');
    assert.equal(elsewhere.status, 200, elsewhere.text);

    const audit = await listAuditEvents(s.ctx.db, { action: 'login', limit: 200, offset: 0 });
    const throttled = audit.events.filter((e) => e.result === 'failure' && e.metadata.reason === 'throttled' && e.metadata.identifier === victim.email.toLowerCase());
    assert.equal(throttled.length, 4, 'each refused attempt is audited as throttled');
  });

  test('the counter is per account: switching between email and username does not buy more tries', async () => {
    const username = `throttle${Date.now().toString(36)}`;
    const email = uniqueEmail('throttle');
    const password = 'correct-horse-battery';
    const reg = await s.request('POST', '/api/v1/auth/register', { body: { username, email, password } });
    assert.equal(reg.status, 201, reg.text);
    for (let i = 0; i < 10; i++) {
      const res = await attempt('tasks', username, `wrong-password-${i}`);
      assertFaceError(res, 'tasks', 'AUTH_REQUIRED', `failure ${i + 1}`);
    }
    assertFaceError(await attempt('tasks', username, password), 'tasks', 'RATE_LIMITED', 'username after lockout');
    assertFaceError(await attempt('tasks', email, password), 'tasks', 'RATE_LIMITED', 'email of the same account after lockout');
  });
});
