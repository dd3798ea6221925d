import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { OPENAPI_FILE } from '../scripts/write-openapi.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let s: TestServer;
before(async () => {
  s = await startTestServer();
});
after(() => s.close());

test('the committed openapi.json matches the routes (run `npm run openapi` after changing a route)', async () => {
  const committed = readFileSync(OPENAPI_FILE, 'utf8');
  const served = await s.request('GET', '/openapi.json');
  const current = JSON.stringify(served.body, null, 2) + '\n';
  if (current !== committed) {
    const before = JSON.parse(committed) as { paths: Record<string, unknown> };
    const changed = Object.keys({ ...before.paths, ...served.body.paths }).filter(
      (p) => JSON.stringify(before.paths[p]) !== JSON.stringify(served.body.paths[p]),
    );
    assert.fail(`openapi.json is stale (changed paths: ${changed.join(', ') || 'document metadata'}); run \`npm run openapi\``);
  }
});

test('GET /openapi.json serves an OpenAPI 3.1 document covering every face', async () => {
  const res = await s.request('GET', '/openapi.json');
  assert.equal(res.status, 200);
  assert.equal(res.body.openapi, '3.1.0');
  for (const path of ['/api/v1/auth/login', '/api/auth/login', '/v1/auth/login', '/auth/login', '/health', '/api/status', '/metrics']) {
    assert.ok(res.body.paths[path], `missing ${path}`);
  }
  assert.deepEqual(res.body.paths['/auth/me'].get.security, [{ bearerAuth: [] }]);
  assert.equal(res.body.paths['/auth/login'].post.security, undefined);
});

test('GET /docs serves the interactive documentation page', async () => {
  const res = await s.request('GET', '/docs');
  const page = res.status === 302 ? await s.request('GET', String(res.headers.location)) : res;
  assert.equal(page.status, 200);
  assert.match(page.text, /swagger-ui/i);
});
