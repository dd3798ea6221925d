/**
 * The queue at scale through the real HTTP API: 1,000 tasks and 8 concurrent workers (each task
 * completes exactly once, priorities and capabilities respected), and — in server mode — a server
 * killed with SIGKILL mid-run: after the restart every task completes, none twice.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, test } from 'node:test';
import { createWorker, type Worker } from '../../src/worker/index.ts';
import { ENGINE, emptyPgDatabase } from '../helpers/engine.ts';
import { freePort, http, running, sleep, spawnServer, stopAll, waitHealthy, type ServerProcess } from '../helpers/process.ts';
import { startReceiver } from '../helpers/receiver.ts';
import { registerUser, startTestServer } from '../helpers/server.ts';

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

test('1,000 tasks, 8 workers: each completes exactly once, critical before low, gpu tasks only on gpu workers', { timeout: 240_000 }, async () => {
  const s = await startTestServer({ ALLOW_PRIVATE_URLS: '127.0.0.0/8' });
  await s.app.listen({ port: 0, host: '127.0.0.1' });
  const base = `http://127.0.0.1:${(s.app.server.address() as AddressInfo).port}`;
  const workers: Worker[] = [];
  cleanups.push(async () => {
    await Promise.all(workers.map((w) => w.stop()));
    s.app.server.closeAllConnections();
    await s.close();
  });
  const user = await registerUser(s);
  // The task.completed events (written for owners with a webhook) count the completions below.
  const hook = await s.request('POST', '/api/v1/webhooks', { token: user.accessToken, body: { url: 'http://127.0.0.1:9/hook', events: ['task.completed'] } });
  assert.equal(hook.status, 201, hook.text);
  const priorities = ['low', 'normal', 'high', 'critical'] as const;
  const gpuTasks = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const gpu = i % 5 === 0;
    const res = await s.request('POST', '/api/v1/tasks', {
      token: user.accessToken,
      body: { title: `scale ${i}`, type: 'building', priority: priorities[i % 4], ...(gpu ? { required_capabilities: ['gpu'] } : {}) },
    });
    assert.equal(res.status, 201);
    if (gpu) gpuTasks.add(res.body.id);
  }
  const runs = new Map<string, string[]>();
  for (let i = 0; i < 8; i++) {
    const capabilities = i < 2 ? ['building', 'gpu'] : ['building'];
    const hostname = `scale-${i}`;
    const w = createWorker({
      server: base,
      token: user.accessToken,
      capabilities,
      hostname,
      waitSeconds: 1,
      handlers: {
        building: async (_payload, ctx) => {
          runs.set(ctx.task.id, [...(runs.get(ctx.task.id) ?? []), hostname]);
          return { by: hostname };
        },
      },
    });
    workers.push(w);
  }
  await Promise.all(workers.map((w) => w.start()));
  const deadline = Date.now() + 200_000;
  let done = 0;
  while (Date.now() < deadline) {
    done = (await s.request('GET', '/api/v1/tasks?status=completed&limit=1', { token: user.accessToken })).body.total;
    if (done === 1000) break;
    await sleep(250);
  }
  assert.equal(done, 1000, 'every task completed');
  assert.equal(runs.size, 1000);
  for (const [id, by] of runs) assert.equal(by.length, 1, `${id} ran ${by.length} times`);
  for (const id of gpuTasks) assert.ok(['scale-0', 'scale-1'].includes(runs.get(id)![0]!), `gpu task ${id} ran on ${runs.get(id)![0]}`);
  const { rows } = await s.ctx.db.query<{ priority: string; first: Date; last: Date }>(
    `SELECT priority, min(started_at) AS first, max(started_at) AS last FROM tasks WHERE owner_id = $1 AND NOT ('gpu' = ANY(required_capabilities)) GROUP BY priority`,
    [user.id],
  );
  const at = Object.fromEntries(rows.map((r) => [r.priority, r]));
  // All tasks were pending before the workers started, so claims go by priority: every critical task
  // (that any worker can run) was started before the first low one.
  assert.ok(at.critical!.last.getTime() <= at.low!.first.getTime(), `critical until ${at.critical!.last.toISOString()}, low from ${at.low!.first.toISOString()}`);
  const completions = await s.ctx.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM events WHERE owner_id = $1 AND type = 'task.completed'`, [user.id]);
  assert.equal(completions.rows[0]!.n, 1000, 'one task.completed event per task');
  // 1,000 claims: the queue vacuumed its table (dead entries would slow every later claim).
  let vacuums = 0;
  for (let i = 0; i < 50 && vacuums === 0; i++) {
    if (i) await sleep(100);
    const stat = await s.ctx.db.query<{ n: string }>(`SELECT vacuum_count AS n FROM pg_stat_user_tables WHERE relname = 'tasks'`);
    vacuums = Number(stat.rows[0]?.n ?? 0);
  }
  assert.ok(vacuums >= 1, 'the tasks table was vacuumed by the queue');
});

test(
  'SIGKILL the server mid-run (server mode): after the restart every task completes, none twice',
  { skip: ENGINE === 'postgres' ? false : 'server mode only: set MAINSPRING_TEST_DATABASE_URL', timeout: 180_000 },
  async () => {
    const pg = await emptyPgDatabase();
    cleanups.push(() => pg.drop());
    const port = await freePort();
    const env = {
      DATABASE_URL: pg.url,
      JWT_SECRET: 'kill-test-jwt-secret-0123456789abcdef012345',
      SECRETS_KEY: 'kill-test-secrets-key-0123456789abcdef01234',
      WORKER_TIMEOUT: '3',
      RATE_LIMITS: JSON.stringify({ tasks: { free: 1000000, anonymous: 1000000 }, monitoring: { anonymous: 1000000 } }),
      ALLOW_PRIVATE_URLS: '127.0.0.0/8',
    };
    const receiver = await startReceiver();
    cleanups.push(() => receiver.close());
    let server: ServerProcess = spawnServer('first', port, env);
    await waitHealthy(server, 60_000);
    const reg = await http(server, 'POST', '/api/auth/register', { body: { email: 'kill@example.com', password: 'correct-horse-battery', name: 'K' } });
    const token: string = reg.body.data.tokens.access_token;
    // The task.completed events (written for owners with a webhook) tell whether any task completed twice.
    const hook = await http(server, 'POST', '/api/v1/webhooks', { token, body: { url: receiver.url, events: ['task.completed'] } });
    assert.equal(hook.status, 201, JSON.stringify(hook.body));
    const ids: string[] = [];
    for (let i = 0; i < 200; i++) ids.push((await http(server, 'POST', '/api/v1/tasks', { token, body: { title: `k${i}`, type: 'testing' } })).body.id);
    const executions = new Map<string, number>();
    const workers: Worker[] = [];
    cleanups.push(async () => {
      await Promise.all(workers.map((w) => w.stop()));
      for (const p of running) p.child.kill('SIGKILL');
    });
    for (let i = 0; i < 4; i++) {
      workers.push(
        createWorker({
          server: server.baseUrl,
          token,
          capabilities: ['testing'],
          hostname: `kill-${i}`,
          waitSeconds: 1,
          heartbeatSeconds: 1,
          handlers: {
            testing: async (_p, ctx) => {
              executions.set(ctx.task.id, (executions.get(ctx.task.id) ?? 0) + 1);
              await sleep(20);
              return { ok: true };
            },
          },
        }),
      );
    }
    await Promise.all(workers.map((w) => w.start()));
    while ([...executions.values()].length < 60) await sleep(20);
    server.child.kill('SIGKILL');
    await server.exited;
    await sleep(500);
    server = spawnServer('restarted', port, env);
    await waitHealthy(server, 60_000);
    const deadline = Date.now() + 120_000;
    let done = 0;
    while (Date.now() < deadline) {
      done = (await http(server, 'GET', '/api/v1/tasks?status=completed&limit=1', { token })).body.total;
      if (done === 200) break;
      await sleep(250);
    }
    assert.equal(done, 200, 'every task completed after the restart');
    for (const id of ids) assert.ok((executions.get(id) ?? 0) >= 1, `${id} ran`);
    const { Client } = (await import('pg')).default;
    const c = new Client({ connectionString: pg.url });
    await c.connect();
    const dup = await c.query(`SELECT data->>'task_id' AS id, count(*)::int AS n FROM events WHERE type = 'task.completed' GROUP BY 1 HAVING count(*) > 1`);
    const total = await c.query(`SELECT count(*)::int AS n FROM events WHERE type = 'task.completed'`);
    await c.end();
    assert.deepEqual(dup.rows, [], 'no task completed twice');
    assert.equal(total.rows[0].n, 200);
    await Promise.all(workers.splice(0).map((w) => w.stop()));
    await stopAll([server], 'the restarted server exits 0 on SIGTERM');
  },
);
