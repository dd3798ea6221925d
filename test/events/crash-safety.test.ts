/**
 * Crash safety of webhook delivery: 200 events to a receiver that fails 30 % of requests at random,
 * while the server is killed with SIGKILL mid-run and started again on the same storage. Every event
 * must be acknowledged at least once, always under the same webhook-id with the same body.
 * Runs embedded (PGlite data directory) by default, server mode (PostgreSQL) under the PG switch.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ENGINE, emptyPgDatabase } from '../helpers/engine.ts';
import { expectStatus, freePort, http, running, sleep, spawnServer, stopAll, waitHealthy, type ServerProcess } from '../helpers/process.ts';
import { startReceiver } from '../helpers/receiver.ts';

const EVENTS = 200;
const KILL_AFTER = 70;
const cleanups: (() => Promise<void>)[] = [];

after(async () => {
  for (const p of running) p.child.kill('SIGKILL');
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

test(`${EVENTS} events survive SIGKILL mid-run with a 30 % failing receiver (${ENGINE === 'postgres' ? 'server mode' : 'embedded'})`, { timeout: 180_000 }, async () => {
  const acked = new Map<string, string>();
  const bodies = new Map<string, Set<string>>();
  let failures = 0;
  const receiver = await startReceiver((req) => {
    const id = String(req.headers['webhook-id']);
    const seen = bodies.get(id) ?? new Set<string>();
    seen.add(req.body);
    bodies.set(id, seen);
    if (Math.random() < 0.3) {
      failures++;
      return { status: 500, body: 'random failure' };
    }
    acked.set(id, req.body);
    return { status: 200, body: 'ok' };
  });
  cleanups.push(() => receiver.close());

  const env: Record<string, string> = {
    ALLOW_PRIVATE_URLS: 'true',
    // Twelve attempts: the chance that one event fails them all at 30 % is 0.3^12 ≈ 5e-7.
    WEBHOOK_RETRY_SCHEDULE: '0.1,0.1,0.2,0.2,0.3,0.3,0.5,0.5,0.5,0.5,0.5',
    WEBHOOK_TIMEOUT_MS: '1000',
    WEBHOOK_POLL_INTERVAL_MS: '50',
    MAINSPRING_ADMIN_PASSWORD: 'admin-password-1',
    RATE_LIMITS: JSON.stringify({ tasks: { free: 100000, anonymous: 100000 }, monitoring: { free: 100000, anonymous: 100000 } }),
    JWT_SECRET: 'crash-test-jwt-secret-0123456789abcdef0123',
    SECRETS_KEY: 'crash-test-secrets-key-0123456789abcdef012',
  };
  if (ENGINE === 'postgres') {
    const pg = await emptyPgDatabase();
    cleanups.push(() => pg.drop());
    env.DATABASE_URL = pg.url;
  } else {
    const dir = mkdtempSync(join(tmpdir(), 'ms-crash-'));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    env.DATA_DIR = dir;
  }

  const start = async (name: string): Promise<ServerProcess> => {
    const p = spawnServer(name, await freePort(), env);
    await waitHealthy(p, 90_000);
    return p;
  };

  let server = await start('first');
  const reg = await http(server, 'POST', '/api/auth/register', { body: { email: 'crash@example.com', password: 'correct-horse-battery', name: 'Crash' } });
  expectStatus(reg, 201, 'register');
  const token: string = reg.body.data.tokens.access_token;
  const hook = await http(server, 'POST', '/api/v1/webhooks', { token, body: { url: receiver.url, events: ['task.*'] } });
  expectStatus(hook, 201, 'create webhook');

  const ids: string[] = [];
  let unackedAtKill = 0;
  for (let i = 0; i < EVENTS; i++) {
    if (i === KILL_AFTER) {
      // Mid-run: deliveries are pending, in flight and being retried right now.
      unackedAtKill = ids.filter((id) => !acked.has(id)).length;
      server.child.kill('SIGKILL');
      await server.exited;
      assert.equal(server.exit?.signal, 'SIGKILL');
      server = await start('restarted');
    }
    const ping = await http(server, 'POST', `/api/v1/webhooks/${hook.body.id}/ping`, { token });
    expectStatus(ping, 202, `ping ${i}`);
    ids.push(ping.body.id);
  }
  assert.equal(new Set(ids).size, EVENTS, 'each event has its own webhook-id');

  const deadline = Date.now() + 120_000;
  while (ids.some((id) => !acked.has(id)) && Date.now() < deadline) await sleep(100);
  const missing = ids.filter((id) => !acked.has(id));
  assert.deepEqual(missing, [], `${missing.length} events never acknowledged (receiver failed ${failures} requests)`);
  assert.ok(failures > 0, 'the receiver did fail some requests');
  assert.ok(unackedAtKill > 0, 'the kill came while deliveries were still outstanding');
  for (const id of ids) assert.equal(bodies.get(id)?.size, 1, `every attempt of ${id} carried the same body`);
  for (const id of acked.keys()) assert.ok(ids.includes(id), `unexpected webhook-id ${id}`);

  // The receiver's 200 comes before the server records it (results are written in small batches).
  let succeeded = 0;
  const logDeadline = Date.now() + 15_000;
  while (Date.now() < logDeadline) {
    const log = await http(server, 'GET', `/api/v1/webhooks/${hook.body.id}/deliveries?limit=1&status=succeeded`, { token });
    expectStatus(log, 200, 'delivery log');
    succeeded = log.body.total;
    if (succeeded === EVENTS) break;
    await sleep(100);
  }
  assert.equal(succeeded, EVENTS, 'the log marks every delivery succeeded');
  await stopAll([server], 'the restarted server exits 0 on SIGTERM');
});
