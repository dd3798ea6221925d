/**
 * The HelixCode document's own examples, replayed against a real server on the document's base URL
 * (http://localhost:8080): its curl commands (only TOKEN filled in, as its reader would) and its
 * Python example unchanged.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';
import { ENGINE, emptyPgDatabase } from '../helpers/engine.ts';
import { running, spawnServer, stopAll, waitHealthy, type ServerProcess } from '../helpers/process.ts';

const run = promisify(execFile);
let server: ServerProcess;
const cleanups: (() => Promise<void>)[] = [];

before(async () => {
  const env: Record<string, string> = { MAINSPRING_ADMIN_PASSWORD: 'admin123', JWT_SECRET: 'doc-replay-jwt-secret-0123456789abcdef01', SECRETS_KEY: 'doc-replay-secrets-key-0123456789abcdef0' };
  if (ENGINE === 'postgres') {
    const pg = await emptyPgDatabase();
    cleanups.push(() => pg.drop());
    env.DATABASE_URL = pg.url;
  } else {
    const dir = mkdtempSync(join(tmpdir(), 'ms-doc-'));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    env.DATA_DIR = dir;
  }
  server = spawnServer('doc-replay', 8080, { ...env, HOST: '127.0.0.1' });
  await waitHealthy(server, 90_000);
});
after(async () => {
  await stopAll([...running], 'the server exits 0 on SIGTERM');
  for (const c of cleanups) await c();
});

test('the curl examples: login as admin/admin123, then create a task with the token', async () => {
  const login = await run('bash', [
    '-c',
    `curl -s -X POST http://localhost:8080/api/v1/auth/login \\
-H "Content-Type: application/json" \\
-d '{"username":"admin","password":"admin123"}'`,
  ]);
  const body = JSON.parse(login.stdout);
  assert.equal(typeof body.token, 'string');
  assert.ok(!Number.isNaN(Date.parse(body.expires_at)));
  assert.equal(body.user.username, 'admin');
  assert.deepEqual(body.user.roles, ['admin']);
  const created = await run('bash', [
    '-c',
    `curl -s -X POST http://localhost:8080/api/v1/tasks \\
-H "Authorization: Bearer TOKEN" \\
-H "Content-Type: application/json" \\
-d '{"title":"Test Task","type":"planning","priority":"high"}'`.replace('TOKEN', body.token),
  ]);
  const task = JSON.parse(created.stdout);
  assert.match(task.id, /^task_/);
  assert.equal(task.title, 'Test Task');
  assert.equal(task.status, 'pending');
  assert.equal(task.priority, 'high');
});

test('the Python example, unchanged', async (t) => {
  try {
    await run('python3', ['-c', 'import requests']);
  } catch {
    t.skip('python3 with the requests package is not installed');
    return;
  }
  const example = `import requests

# Login
response = requests.post(
"http://localhost:8080/api/v1/auth/login",
json={"username": "admin", "password": "admin123"}
)
token = response.json()["token"]

# Create task
headers = {"Authorization": f"Bearer {token}"}
response = requests.post(
"http://localhost:8080/api/v1/tasks",
headers=headers,
json={
"title": "Test Task",
"type": "planning",
"priority": "high"
}
)
print(response.json())`;
  const out = await run('python3', ['-c', example]);
  assert.match(out.stdout, /'status': 'pending'/);
  assert.match(out.stdout, /'title': 'Test Task'/);
  assert.match(out.stdout, /'id': 'task_[a-z0-9]+'/);
});
