import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { registerUser, startTestServer, type TestServer } from './helpers/server.ts';

let s: TestServer;
before(async () => {
  s = await startTestServer();
});
after(() => s.close());

test('a user registered on Helomatic reads /auth/me on Arrotech', async () => {
  const u = await registerUser(s);
  const me = await s.request('GET', '/auth/me', { token: u.accessToken });
  assert.equal(me.status, 200);
  assert.equal(me.body.data.email, u.email);
});
