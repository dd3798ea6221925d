/**
 * One account, one session store, four faces: a token or refresh token obtained on one face
 * is honoured on every other, and ending a session anywhere ends it everywhere.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { decodeJwt } from 'jose';
import { registerUser, startTestServer, uniqueEmail, type TestServer } from './helpers/server.ts';

let s: TestServer;
before(async () => {
  s = await startTestServer();
});
after(() => s.close());

const PASSWORD = 'correct-horse-battery';

type Face = 'tasks' | 'monitoring' | 'databases' | 'automation';
const FACES: Face[] = ['tasks', 'monitoring', 'databases', 'automation'];

/** Logs in on the given face; returns the access and refresh tokens. */
async function loginOn(face: Face, email: string): Promise<{ token: string; refreshToken: string }> {
  switch (face) {
    case 'tasks': {
      const r = await s.request('POST', '/api/v1/auth/login', { body: { username: email, password: PASSWORD } });
      assert.equal(r.status, 200, r.text);
      return { token: r.body.token, refreshToken: r.body.refresh_token };
    }
    case 'monitoring': {
      const r = await s.request('POST', '/api/auth/login', { body: { email, password: PASSWORD } });
      assert.equal(r.status, 200, r.text);
      return { token: r.body.data.tokens.access_token, refreshToken: r.body.data.tokens.refresh_token };
    }
    case 'databases': {
      const r = await s.request('POST', '/v1/auth/login', { body: { email, password: PASSWORD } });
      assert.equal(r.status, 200, r.text);
      return { token: r.body.data.token, refreshToken: r.body.data.refresh_token };
    }
    case 'automation': {
      const r = await s.request('POST', '/auth/login', { body: { email, password: PASSWORD } });
      assert.equal(r.status, 200, r.text);
      return { token: r.body.data.token, refreshToken: r.body.data.refresh_token };
    }
  }
}

const LOGOUT: Record<Face, string> = {
  tasks: '/api/v1/auth/logout',
  monitoring: '/api/auth/logout',
  databases: '/v1/auth/logout',
  automation: '/auth/logout',
};

/** Rotates a refresh token on the given face; returns the status and, on success, the new pair. */
async function refreshOn(face: Face, refreshToken: string): Promise<{ status: number; token?: string; refreshToken?: string }> {
  const url = { tasks: '/api/v1/auth/refresh', monitoring: '/api/auth/refresh', databases: '/v1/auth/refresh', automation: '/auth/refresh' }[face];
  const r = await s.request('POST', url, { body: { refresh_token: refreshToken } });
  if (r.status !== 200) return { status: r.status };
  switch (face) {
    case 'tasks':
      return { status: 200, token: r.body.token, refreshToken: r.body.refresh_token };
    case 'monitoring':
      return { status: 200, token: r.body.data.tokens.access_token, refreshToken: r.body.data.tokens.refresh_token };
    default:
      return { status: 200, token: r.body.data.token, refreshToken: r.body.data.refresh_token };
  }
}

/**
 * Whether each face accepts the access token, using a request that does not end the session:
 * HelixCode and Arrotech read the user; HeliosDB refreshes with the bearer token; Helomatic's only
 * authenticated route is logout, so it is probed with a malformed body (authentication runs first).
 */
async function acceptedBy(token: string): Promise<Record<Face, boolean>> {
  const tasks = await s.request('GET', '/api/v1/users/me', { token });
  const automation = await s.request('GET', '/auth/me', { token });
  const databases = await s.request('POST', '/v1/auth/refresh', { token });
  const monitoring = await s.request('POST', '/api/auth/logout', { token, rawBody: '{"probe":' });
  for (const r of [tasks, automation, databases]) assert.ok(r.status === 200 || r.status === 401, r.text);
  assert.ok(monitoring.status === 400 || monitoring.status === 401, monitoring.text);
  return { tasks: tasks.status === 200, automation: automation.status === 200, databases: databases.status === 200, monitoring: monitoring.status === 400 };
}

const ALL = { tasks: true, monitoring: true, databases: true, automation: true };
const NONE = { tasks: false, monitoring: false, databases: false, automation: false };

describe('one account across the faces', () => {
  test('registered on Helomatic, logged in on HelixCode by email, the token works on HeliosDB and Arrotech', async () => {
    const u = await registerUser(s, { name: 'Cross Face' });
    const login = await s.request('POST', '/api/v1/auth/login', { body: { username: u.email, password: u.password } });
    assert.equal(login.status, 200, login.text);
    assert.equal(login.body.user.id, u.id);
    assert.equal(login.body.user.username, u.email, 'no username was chosen, so the email stands in');
    const token = login.body.token as string;

    const helios = await s.request('POST', '/v1/auth/refresh', { token });
    assert.equal(helios.status, 200, helios.text);
    assert.equal(helios.body.success, true);
    assert.deepEqual(helios.body.data.user, { id: u.id, email: u.email });
    assert.equal(decodeJwt(helios.body.data.token).sid, decodeJwt(token).sid);

    const arro = await s.request('GET', '/auth/me', { token });
    assert.equal(arro.status, 200, arro.text);
    assert.equal(arro.body.data.id, u.id);
    assert.equal(arro.body.data.email, u.email);
    assert.equal(arro.body.data.name, 'Cross Face');
    assert.equal(arro.body.data.company, 'Acme');

    assert.deepEqual(await acceptedBy(token), ALL);
  });

  test('a HeliosDB login token reads /api/v1/users/me on HelixCode', async () => {
    const u = await registerUser(s);
    const login = await s.request('POST', '/v1/auth/login', { body: { email: u.email, password: u.password } });
    assert.equal(login.status, 200, login.text);
    const me = await s.request('GET', '/api/v1/users/me', { token: login.body.data.token });
    assert.equal(me.status, 200, me.text);
    assert.equal(me.body.user.id, u.id);
    assert.equal(me.body.user.email, u.email);
    assert.equal(me.body.user.display_name, 'Test User');
  });

  test('an account made on HelixCode logs in on the other three faces with its email', async () => {
    const email = uniqueEmail('hx');
    const username = `cross${process.pid}${Date.now().toString(36)}`;
    const reg = await s.request('POST', '/api/v1/auth/register', { body: { username, email, password: PASSWORD } });
    assert.equal(reg.status, 201, reg.text);
    for (const face of ['monitoring', 'databases', 'automation'] as const) {
      const { token } = await loginOn(face, email);
      assert.equal(decodeJwt(token).sub, reg.body.user.id, face);
    }
    const arro = await s.request('GET', '/auth/me', { token: (await loginOn('automation', email)).token });
    assert.equal(arro.body.data.username, username);
  });

  test('an email registered on one face is a conflict on every other, each in its own shape', async () => {
    const u = await registerUser(s);
    const helix = await s.request('POST', '/api/v1/auth/register', { body: { username: `dup${process.pid}${Date.now().toString(36)}`, email: u.email, password: PASSWORD } });
    assert.equal(helix.status, 409, helix.text);
    assert.equal(helix.body.error.code, 'CONFLICT');
    const helios = await s.request('POST', '/v1/auth/signup', { body: { email: u.email, password: PASSWORD } });
    assert.equal(helios.status, 409, helios.text);
    assert.equal(helios.body.error.code, 'CONFLICT');
    const arro = await s.request('POST', '/auth/register', { body: { email: u.email.toUpperCase(), password: PASSWORD, name: 'Dup' } });
    assert.equal(arro.status, 409, arro.text);
    assert.equal(typeof arro.body.detail, 'string');
  });

  test('without SMTP_URL no verification mail is sent, on any face that reports it', async () => {
    const arro = await s.request('POST', '/auth/register', { body: { email: uniqueEmail('nomail'), password: PASSWORD, name: 'N' } });
    assert.equal(arro.status, 200, arro.text);
    assert.equal(arro.body.data.verification_sent, false);
    const helo = await s.request('POST', '/api/auth/register', { body: { email: uniqueEmail('nomail'), password: PASSWORD } });
    assert.equal(helo.body.data.verification_sent, false);
    assert.equal(helo.body.message, 'Registration successful.');
    const helios = await s.request('POST', '/v1/auth/signup', { body: { email: uniqueEmail('nomail'), password: PASSWORD } });
    assert.equal(helios.body.data.verification_sent, false);
  });
});

describe('logout on one face ends the session on all faces', () => {
  for (const via of FACES) {
    test(`logout through ${via}`, async () => {
      const u = await registerUser(s);
      const victim = await loginOn('automation', u.email);
      const bystander = await loginOn('tasks', u.email);
      assert.deepEqual(await acceptedBy(victim.token), ALL);

      const out = await s.request('POST', LOGOUT[via], { token: victim.token });
      assert.equal(out.status, 200, out.text);

      assert.deepEqual(await acceptedBy(victim.token), NONE);
      for (const face of FACES) assert.equal((await refreshOn(face, victim.refreshToken)).status, 401, `refresh on ${face}`);
      assert.deepEqual(await acceptedBy(bystander.token), ALL, 'another session of the same user lives on');
    });
  }

  test('Arrotech logout by refresh token alone ends the session everywhere', async () => {
    const u = await registerUser(s);
    const out = await s.request('POST', '/auth/logout', { body: { refresh_token: u.refreshToken } });
    assert.equal(out.status, 200, out.text);
    assert.deepEqual(await acceptedBy(u.accessToken), NONE);
  });
});

describe('refresh tokens across faces', () => {
  test('a refresh token rotates on any face, and the rotated one continues on another', async () => {
    const u = await registerUser(s);
    let refresh = u.refreshToken;
    const sid = decodeJwt(u.accessToken).sid;
    for (const face of ['automation', 'databases', 'tasks', 'monitoring'] as const) {
      const r = await refreshOn(face, refresh);
      assert.equal(r.status, 200, `refresh on ${face}`);
      assert.notEqual(r.refreshToken, refresh);
      assert.equal(decodeJwt(r.token!).sid, sid, `same session after refresh on ${face}`);
      assert.deepEqual(await acceptedBy(r.token!), ALL);
      refresh = r.refreshToken!;
    }
  });

  test('reuse detected on one face revokes the session for every face', async () => {
    const u = await registerUser(s);
    const rotated = await refreshOn('monitoring', u.refreshToken);
    assert.equal(rotated.status, 200);

    const reuse = await s.request('POST', '/api/v1/auth/refresh', { body: { refresh_token: u.refreshToken } });
    assert.equal(reuse.status, 401, reuse.text);
    assert.equal(reuse.body.error.code, 'UNAUTHORIZED');

    assert.deepEqual(await acceptedBy(rotated.token!), NONE);
    assert.deepEqual(await acceptedBy(u.accessToken), NONE);
    for (const face of FACES) assert.equal((await refreshOn(face, rotated.refreshToken!)).status, 401, `newest refresh token on ${face}`);
  });
});

describe('API keys across faces', () => {
  test('a key made on Arrotech authenticates on HelixCode and dies everywhere when revoked', async () => {
    const u = await registerUser(s);
    const created = await s.request('POST', '/auth/me/api-keys', { token: u.accessToken, body: { name: 'cross' } });
    assert.equal(created.status, 201, created.text);
    const key = created.body.data.api_key as string;
    const me = await s.request('GET', '/api/v1/users/me', { token: key });
    assert.equal(me.status, 200, me.text);
    assert.equal(me.body.user.id, u.id);

    // Logging out the session that created the key does not revoke the key.
    assert.equal((await s.request('POST', '/api/auth/logout', { token: u.accessToken })).status, 200);
    assert.equal((await s.request('GET', '/auth/me', { token: key })).status, 200);

    const del = await s.request('DELETE', `/auth/me/api-keys/${created.body.data.id}`, { token: key });
    assert.equal(del.status, 200, del.text);
    const after = await s.request('GET', '/api/v1/users/me', { token: key });
    assert.equal(after.status, 401);
    assert.equal(after.body.error.code, 'UNAUTHORIZED');
    const helios = await s.request('POST', '/v1/auth/logout', { token: key });
    assert.equal(helios.status, 401);
    assert.equal(helios.body.error.code, 'AUTH_REQUIRED');
  });
});
