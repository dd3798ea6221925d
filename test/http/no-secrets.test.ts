/**
 * A full account lifecycle on all four faces, every response kept; then nothing the server stores
 * as a secret (password hashes, token and key hashes, its signing and encryption keys) may appear
 * in any of them.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { decodeJwt } from 'jose';
import { startTestServer, uniqueEmail, type TestResponse, type TestServer } from '../helpers/server.ts';

let s: TestServer;
before(async () => {
  s = await startTestServer();
});
after(() => s.close());

interface Recorded {
  label: string;
  status: number;
  text: string;
  headers: string;
}
const recorded: Recorded[] = [];
/** Plain credentials the server handed out (they may be shown to their owner, but never stored). */
const issued = { accessTokens: new Set<string>(), refreshTokens: new Set<string>(), apiKeys: new Set<string>() };

const PASSWORD = 'correct-horse-battery-staple';

async function call(method: string, url: string, opts: Parameters<TestServer['request']>[2] = {}): Promise<TestResponse> {
  const res = await s.request(method, url, { ...opts, headers: { 'user-agent': 'secrets-probe/1.0', ...opts.headers } });
  recorded.push({ label: `${method} ${url} -> ${res.status}`, status: res.status, text: res.text, headers: JSON.stringify(res.headers) });
  assert.ok(res.status < 500, `${method} ${url}: ${res.status} ${res.text}`);
  collect(res.body);
  return res;
}

/** Remembers every token-looking string in a response body. */
function collect(v: unknown): void {
  if (typeof v === 'string') {
    // Full secrets only: a key's 12-character display prefix also starts with msk_.
    if (/^msr_[\w-]{40,}$/.test(v)) issued.refreshTokens.add(v);
    else if (/^msk_[\w-]{40,}$/.test(v)) issued.apiKeys.add(v);
    else if (/^eyJ[\w-]+\.[\w-]+\.[\w-]+$/.test(v)) issued.accessTokens.add(v);
  } else if (Array.isArray(v)) v.forEach(collect);
  else if (v && typeof v === 'object') Object.values(v).forEach(collect);
}

async function fullFlow(): Promise<void> {
  const stamp = Date.now().toString(36);
  const emails = { tasks: uniqueEmail('tasks'), monitoring: uniqueEmail('monitoring'), databases: uniqueEmail('databases'), automation: uniqueEmail('automation') };

  // Register on each face.
  const tasksReg = await call('POST', '/api/v1/auth/register', { body: { username: `secret${stamp}`, email: emails.tasks, password: PASSWORD, display_name: 'T' } });
  assert.equal(tasksReg.status, 201, tasksReg.text);
  const monReg = await call('POST', '/api/auth/register', { body: { email: emails.monitoring, password: PASSWORD, name: 'M', company: 'Acme' } });
  assert.equal(monReg.status, 201, monReg.text);
  const dbReg = await call('POST', '/v1/auth/signup', { body: { email: emails.databases, password: PASSWORD, name: 'D' } });
  assert.equal(dbReg.status, 201, dbReg.text);
  const autoReg = await call('POST', '/auth/register', { body: { email: emails.automation, password: PASSWORD, name: 'A' } });
  assert.equal(autoReg.status, 200, autoReg.text);

  // Duplicates and bad input on each face.
  await call('POST', '/api/v1/auth/register', { body: { username: `secret${stamp}`, email: emails.tasks, password: PASSWORD } });
  await call('POST', '/api/auth/register', { body: { email: emails.monitoring, password: PASSWORD } });
  await call('POST', '/v1/auth/signup', { body: { email: emails.databases, password: PASSWORD } });
  await call('POST', '/auth/register', { body: { email: emails.automation, password: PASSWORD, name: 'A' } });
  await call('POST', '/auth/register', { body: { email: uniqueEmail('short'), password: 'short', name: 'A' } });

  // Log in three of them on every face, with wrong passwords too.
  const sessions: { face: string; access: string; refresh: string }[] = [];
  for (const email of Object.values(emails).slice(0, 3)) {
    const t = await call('POST', '/api/v1/auth/login', { body: { username: email, password: PASSWORD } });
    sessions.push({ face: 'tasks', access: t.body.token, refresh: t.body.refresh_token });
    const m = await call('POST', '/api/auth/login', { body: { email, password: PASSWORD } });
    sessions.push({ face: 'monitoring', access: m.body.data.tokens.access_token, refresh: m.body.data.tokens.refresh_token });
    const d = await call('POST', '/v1/auth/login', { body: { email, password: PASSWORD } });
    sessions.push({ face: 'databases', access: d.body.data.token, refresh: d.body.data.refresh_token });
    const a = await call('POST', '/auth/login', { body: { email, password: PASSWORD } });
    sessions.push({ face: 'automation', access: a.body.data.token, refresh: a.body.data.refresh_token });
    await call('POST', '/auth/login', { body: { email, password: `${PASSWORD}-wrong` } });
  }
  await call('POST', '/api/v1/auth/login', { body: { username: emails.automation, password: `${PASSWORD}-wrong` } });
  await call('POST', '/v1/auth/login', { body: { email: emails.automation, password: `${PASSWORD}-wrong` } });
  await call('POST', '/api/auth/login', { body: { email: 'nobody@example.com', password: PASSWORD } });
  for (const x of sessions) assert.ok(x.access && x.refresh, `login on ${x.face}`);

  // Refresh on each face (body refresh token, and bearer where the face allows it).
  const [s1, s2, s3, s4] = sessions as [(typeof sessions)[0], (typeof sessions)[0], (typeof sessions)[0], (typeof sessions)[0]];
  assert.equal((await call('POST', '/api/v1/auth/refresh', { body: { refresh_token: s1.refresh } })).status, 200);
  assert.equal((await call('POST', '/api/v1/auth/refresh', { token: s1.access })).status, 200);
  assert.equal((await call('POST', '/api/auth/refresh', { body: { refresh_token: s2.refresh } })).status, 200);
  assert.equal((await call('POST', '/v1/auth/refresh', { body: { refresh_token: s3.refresh } })).status, 200);
  assert.equal((await call('POST', '/v1/auth/refresh', { token: s3.access })).status, 200);
  assert.equal((await call('POST', '/auth/refresh', { body: { refresh_token: s4.refresh } })).status, 200);
  // Reuse of a spent refresh token.
  await call('POST', '/auth/refresh', { body: { refresh_token: s4.refresh } });

  // API keys: create, list, regenerate, use, revoke.
  const owner = sessions[11]!; // an automation session untouched by the refreshes above and the logouts below
  assert.equal(owner.face, 'automation');
  const k1 = await call('POST', '/auth/me/api-keys', { token: owner.access, body: { name: 'first' } });
  assert.equal(k1.status, 201, k1.text);
  const k2 = await call('POST', '/auth/me/api-keys', { token: owner.access, body: { name: 'second' } });
  assert.equal(k2.status, 201, k2.text);
  const regen = await call('POST', '/auth/me/regenerate-api-key', { token: owner.access });
  assert.equal(regen.status, 200, regen.text);
  const list = await call('GET', '/auth/me/api-keys', { token: owner.access });
  assert.equal(list.status, 200);
  assert.equal(list.body.data.length, 3);
  const key = k1.body.data.api_key as string;
  for (const [m, u] of [['GET', '/api/v1/users/me'], ['POST', '/api/auth/logout'], ['POST', '/v1/auth/logout'], ['GET', '/auth/me']] as const) {
    assert.equal((await call(m, u, { token: key })).status, 200, `${m} ${u} with key`);
  }
  assert.equal((await call('DELETE', `/auth/me/api-keys/${k2.body.data.id}`, { token: owner.access })).status, 200);
  await call('GET', '/auth/me/api-keys', { token: owner.access });

  // Who am I, status, and the public documents.
  for (const x of sessions.slice(0, 4)) {
    await call('GET', '/auth/me', { token: x.access });
    await call('GET', '/api/v1/users/me', { token: x.access });
  }
  await call('GET', '/api/status');
  await call('GET', '/api/status', { token: owner.access });
  await call('GET', '/health');
  await call('GET', '/metrics');
  await call('GET', '/openapi.json');

  // Log out on each face, then use the dead tokens.
  const logouts: [string, string][] = [['/api/v1/auth/logout', ''], ['/api/auth/logout', ''], ['/v1/auth/logout', ''], ['/auth/logout', '']];
  for (let i = 0; i < logouts.length; i++) {
    const x = sessions[4 + i]!;
    assert.equal((await call('POST', logouts[i]![0], { token: x.access })).status, 200, logouts[i]![0]);
    await call('GET', '/auth/me', { token: x.access });
  }
  await call('POST', '/auth/logout', { body: { refresh_token: sessions[8]!.refresh } });
}

test('no password hash, token hash, key hash or server key appears in any response', async () => {
  await fullFlow();
  assert.ok(recorded.length > 60, `flow recorded ${recorded.length} responses`);

  const users = await s.ctx.db.query<{ password_hash: string }>('SELECT password_hash FROM users');
  const refresh = await s.ctx.db.query<{ token_hash: string }>('SELECT token_hash FROM refresh_tokens');
  const verifications = await s.ctx.db.query<{ token_hash: string }>('SELECT token_hash FROM email_verifications');
  const keys = await s.ctx.db.query<{ key_hash: string }>('SELECT key_hash FROM api_keys');
  assert.ok(users.rows.length >= 4, 'users');
  assert.ok(refresh.rows.length >= 16, 'refresh tokens');
  assert.ok(verifications.rows.length >= 4, 'email verifications');
  assert.ok(keys.rows.length >= 3, 'api keys');

  const secrets: [string, string][] = [
    ['JWT secret', s.ctx.config.jwtSecret],
    ['SECRETS_KEY', s.ctx.config.secretsKey],
    ['argon2 marker', '$argon2'],
  ];
  for (const r of users.rows) {
    assert.match(r.password_hash, /^\$argon2id\$/);
    secrets.push(['password hash', r.password_hash]);
    // The digest alone, in case a hash were ever shown re-encoded around it.
    secrets.push(['password digest', r.password_hash.split('$').pop()!]);
  }
  for (const r of refresh.rows) secrets.push(['refresh token hash', r.token_hash]);
  for (const r of verifications.rows) secrets.push(['verification token hash', r.token_hash]);
  for (const r of keys.rows) secrets.push(['API key hash', r.key_hash]);
  for (const [, v] of secrets) assert.ok(v.length >= 7, 'secret long enough to search for');

  for (const r of recorded) {
    const haystack = `${r.headers}\n${r.text}`;
    for (const [what, secret] of secrets) {
      assert.ok(!haystack.includes(secret), `${what} leaked in ${r.label}`);
    }
    assert.ok(!haystack.includes(PASSWORD), `plain password echoed in ${r.label}`);
    // Verification tokens only ever travel by mail.
    assert.ok(!/msv_[\w-]{10,}/.test(haystack), `verification token in ${r.label}`);
  }
});

test('API key listings show only the prefix, never the key', async () => {
  const listings = recorded.filter((r) => r.label.startsWith('GET /auth/me/api-keys'));
  assert.ok(listings.length >= 2);
  // Every key issued by this flow is listed by its prefix.
  const lastListing = listings.at(-1)!.text;
  for (const key of issued.apiKeys) assert.ok(lastListing.includes(key.slice(0, 12)), 'prefix listed');
  assert.ok(issued.apiKeys.size >= 3, `keys issued: ${issued.apiKeys.size}`);
  for (const r of listings) {
    for (const key of issued.apiKeys) {
      assert.ok(!r.text.includes(key), `key shown in ${r.label}`);
      assert.ok(!r.text.includes(key.slice(0, 13)), `more than the 12-character prefix shown in ${r.label}`);
    }
  }
});

test('access tokens carry only the session claims', () => {
  // 14 sessions at least (two registrations, twelve logins); a token re-issued for the same session within one second is identical.
  assert.ok(issued.accessTokens.size >= 14, `access tokens issued: ${issued.accessTokens.size}`);
  for (const token of issued.accessTokens) {
    const claims = decodeJwt(token);
    assert.deepEqual(Object.keys(claims).sort(), ['aud', 'exp', 'iat', 'iss', 'sid', 'sub', 'typ']);
    assert.ok(!token.includes(PASSWORD));
  }
});

test('the database keeps no plain credential: no password, token or key in any table', async () => {
  assert.ok(issued.refreshTokens.size >= 16 && issued.apiKeys.size >= 3 && issued.accessTokens.size >= 14);
  const tables = ['users', 'auth_sessions', 'refresh_tokens', 'api_keys', 'email_verifications', 'audit_events'];
  for (const table of tables) {
    const { rows } = await s.ctx.db.query<{ dump: string }>(`SELECT coalesce(string_agg(t::text, E'\\n'), '') AS dump FROM ${table} t`);
    const dump = rows[0]?.dump ?? '';
    assert.ok(dump.length > 0, `${table} has rows`);
    assert.ok(!dump.includes(PASSWORD), `plain password stored in ${table}`);
    for (const t of issued.refreshTokens) assert.ok(!dump.includes(t), `refresh token stored in ${table}`);
    for (const k of issued.apiKeys) assert.ok(!dump.includes(k), `API key stored in ${table}`);
    for (const a of issued.accessTokens) assert.ok(!dump.includes(a), `access token stored in ${table}`);
  }
});
