/**
 * The task worker against a real server on a real port: built-in `http` and custom handlers,
 * `shell` only with --allow-shell, many workers completing every task exactly once, a killed
 * worker's task re-queued and finished by another, and SIGTERM draining the running task.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { parseAllowPrivate } from '../../src/platform/http-out/index.ts';
import { createWorker, httpHandler, type TaskHandler, type Worker } from '../../src/worker/index.ts';
import { running, sleep, spawnMain, spawnScript, stopProc, type Proc } from '../helpers/process.ts';
import { registerUser, startTestServer, type TestServer } from '../helpers/server.ts';

const WORKER_TIMEOUT = 2;

let s: TestServer;
let baseUrl: string;
const workers: Worker[] = [];

before(async () => {
  s = await startTestServer({ WORKER_TIMEOUT: String(WORKER_TIMEOUT) });
  await s.app.listen({ port: 0, host: '127.0.0.1' });
  baseUrl = `http://127.0.0.1:${(s.app.server.address() as AddressInfo).port}`;
  s.ctx.tasks.start();
});
after(async () => {
  await Promise.all(workers.map((w) => w.stop()));
  await Promise.all([...running].map((p) => stopProc(p)));
  s.ctx.tasks.stop();
  // Keep-alive sockets of the workers' HTTP client would hold the listening server open.
  s.app.server.closeAllConnections();
  await s.close();
});

/** An in-process worker with test-friendly timings (the server's WORKER_TIMEOUT is 2 s). */
async function startWorker(token: string, capabilities: string[], handlers: Record<string, TaskHandler>, extra: { hostname?: string; concurrency?: number } = {}) {
  const w = createWorker({ server: baseUrl, token, capabilities, handlers, waitSeconds: 1, heartbeatSeconds: 0.5, graceSeconds: 5, ...extra,
    log: process.env.DEBUG_WORKER ? (l, m, f) => console.log(Date.now() % 100000, l, m, JSON.stringify(f ?? {})) : undefined });
  workers.push(w);
  await w.start();
  return w;
}

/** A worker process: the real command line plus a `sleep` handler (the fixture). */
function spawnFixture(name: string, args: string[]): Proc {
  return spawnScript(name, 'test/worker/fixture-worker.ts', args);
}

const processArgs = (token: string, capability: string, hostname: string) => [
  '--server', baseUrl, '--token', token, '--capabilities', capability, '--hostname', hostname, '--heartbeat-seconds', '0.5', '--grace-seconds', '10',
];

async function createTask(token: string, body: Record<string, unknown>): Promise<string> {
  const res = await s.request('POST', '/api/v1/tasks', { token, body: { title: 'worker test', ...body } });
  assert.equal(res.status, 201, res.text);
  return res.body.id as string;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- task JSON
type TaskJson = any;

async function waitTask(token: string, id: string, until: (t: TaskJson) => boolean, timeoutMs: number, what: string, proc?: Proc): Promise<TaskJson> {
  const deadline = Date.now() + timeoutMs;
  let last: TaskJson;
  while (Date.now() < deadline) {
    last = (await s.request('GET', `/api/v1/tasks/${id}`, { token })).body;
    if (until(last)) return last;
    await sleep(50);
  }
  assert.fail(`${what}: not reached within ${timeoutMs} ms; task is ${JSON.stringify(last)}${proc ? `\n${proc.name} output:\n${proc.output()}` : ''}`);
}

describe('worker', () => {
  let target: Server;
  let targetUrl: string;
  before(async () => {
    target = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8').on('data', (d: string) => (body += d));
      req.on('end', () => {
        res.setHeader('content-type', 'application/json');
        res.setHeader('x-target', 'yes');
        res.end(JSON.stringify({ method: req.method, path: req.url, header: req.headers['x-test'] ?? null, body }));
      });
    });
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
    targetUrl = `http://127.0.0.1:${(target.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((r) => target.close(() => r())));

  test('http tasks (private addresses refused unless allowed) and custom handlers with progress', { timeout: 20_000 }, async () => {
    const { accessToken: token } = await registerUser(s);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    await startWorker(token, ['building'], {
      http: httpHandler({ allowPrivate: parseAllowPrivate('true') }),
      echo: async (payload, ctx) => {
        ctx.progress(50);
        await gate;
        return { echo: payload.value, task: ctx.taskId };
      },
      boom: () => Promise.reject(new Error('handler said no')),
    }, { concurrency: 3 });
    await startWorker(token, ['testing'], { http: httpHandler() });

    const get = await createTask(token, { type: 'building', payload: { handler: 'http', url: `${targetUrl}/hello?x=1` } });
    const post = await createTask(token, { type: 'building', payload: { handler: 'http', url: `${targetUrl}/p`, method: 'post', headers: { 'x-test': 't1' }, body: { a: 1 } } });
    const echo = await createTask(token, { type: 'building', payload: { handler: 'echo', value: 42 } });
    const boom = await createTask(token, { type: 'building', payload: { handler: 'boom' } });
    const missing = await createTask(token, { type: 'building', payload: { handler: 'nope' } });
    const refused = await createTask(token, { type: 'testing', payload: { handler: 'http', url: `${targetUrl}/private` } });
    const byType = await createTask(token, { type: 'testing', payload: { url: 'ftp://example.com/' } });

    const done = (t: TaskJson) => t.status === 'completed' || t.status === 'failed';
    const g = await waitTask(token, get, done, 10_000, 'GET task');
    assert.equal(g.status, 'completed', JSON.stringify(g));
    assert.equal(g.result.status, 200);
    assert.equal(g.result.headers['x-target'], 'yes');
    assert.deepEqual(JSON.parse(g.result.body), { method: 'GET', path: '/hello?x=1', header: null, body: '' });
    const p = await waitTask(token, post, done, 10_000, 'POST task');
    assert.deepEqual(JSON.parse(p.result.body), { method: 'POST', path: '/p', header: 't1', body: '{"a":1}' });

    const running = await waitTask(token, echo, (t) => t.status === 'running' && t.progress === 50, 10_000, 'progress 50');
    assert.equal(running.result, null);
    release();
    const e = await waitTask(token, echo, done, 10_000, 'echo task');
    assert.equal(e.status, 'completed');
    assert.deepEqual(e.result, { echo: 42, task: echo });
    assert.equal(e.progress, 100);

    const b = await waitTask(token, boom, done, 10_000, 'boom task');
    assert.equal(b.status, 'failed');
    assert.equal(b.error, 'handler said no');
    const m = await waitTask(token, missing, done, 10_000, 'missing handler');
    assert.equal(m.status, 'failed');
    assert.match(m.error, /No handler "nope"/);
    const r = await waitTask(token, refused, done, 10_000, 'private address');
    assert.equal(r.status, 'failed');
    assert.match(r.error, /Refused to connect to 127\.0\.0\.1/);
    const t = await waitTask(token, byType, done, 10_000, 'no payload.handler');
    assert.equal(t.status, 'failed');
    assert.match(t.error, /No handler "testing"/);
  });

  test('shell runs only on a worker started with --allow-shell', { timeout: 25_000 }, async () => {
    const { accessToken: token } = await registerUser(s);
    const shellTask = { type: 'deployment', payload: { handler: 'shell', command: process.execPath, args: ['-e', 'console.log("hi"); console.error("warn"); process.exit(3)'] } };

    const plain = spawnMain('worker-no-shell', ['worker', ...processArgs(token, 'deployment', 'no-shell')], {});
    const refusedId = await createTask(token, shellTask);
    const refused = await waitTask(token, refusedId, (t) => t.status === 'failed' || t.status === 'completed', 15_000, 'shell refused', plain);
    assert.equal(refused.status, 'failed');
    assert.match(refused.error, /shell.*disabled.*--allow-shell/);
    const stopped = await stopProc(plain);
    assert.deepEqual(stopped.exit, { code: 0, signal: null }, plain.output());

    const shell = spawnMain('worker-shell', ['worker', ...processArgs(token, 'deployment', 'with-shell'), '--allow-shell'], {});
    const okId = await createTask(token, shellTask);
    const ok = await waitTask(token, okId, (t) => t.status === 'failed' || t.status === 'completed', 15_000, 'shell allowed', shell);
    assert.equal(ok.status, 'completed', JSON.stringify(ok));
    assert.deepEqual(ok.result, { exit_code: 3, stdout: 'hi\n', stderr: 'warn\n' });
    assert.deepEqual((await stopProc(shell)).exit, { code: 0, signal: null }, shell.output());
  });

  test('3 workers and 300 tasks: every task completes exactly once', { timeout: 30_000 }, async () => {
    const { accessToken: token } = await registerUser(s);
    const runs = new Map<string, number>();
    const byWorker = new Map<string, number>();
    const pool: Worker[] = [];
    for (let i = 0; i < 3; i++) {
      const name = `pool-${i}`;
      pool.push(
        await startWorker(token, ['refactoring'], {
          count: async (_payload, ctx) => {
            runs.set(ctx.taskId, (runs.get(ctx.taskId) ?? 0) + 1);
            byWorker.set(name, (byWorker.get(name) ?? 0) + 1);
            await sleep(Math.random() * 5);
            return { by: name };
          },
        }, { hostname: name }),
      );
    }
    const ids = new Set<string>();
    for (let i = 0; i < 300; i++) ids.add(await createTask(token, { type: 'refactoring', payload: { handler: 'count', n: i } }));
    const deadline = Date.now() + 25_000;
    let completed = 0;
    while (Date.now() < deadline) {
      completed = (await s.request('GET', '/api/v1/tasks?status=completed&limit=1', { token })).body.total;
      if (completed === ids.size) break;
      await sleep(100);
    }
    assert.equal(completed, 300, `completed ${completed} of 300`);
    assert.equal(runs.size, 300);
    assert.deepEqual([...runs.entries()].filter(([, n]) => n !== 1), [], 'no task ran twice');
    for (const id of ids) assert.equal(runs.get(id), 1);
    const poolIds = new Set(pool.map((w) => w.id));
    const list = (await s.request('GET', '/api/v1/tasks?limit=500', { token })).body.tasks as TaskJson[];
    assert.equal(list.length, 300);
    for (const t of list) {
      assert.equal(t.status, 'completed');
      assert.ok(poolIds.has(t.assigned_worker));
      assert.equal(t.retry_count, 0);
    }
    assert.equal([...byWorker.values()].reduce((a, b) => a + b, 0), 300);
    await Promise.all(pool.map((w) => w.stop()));
  });

  test('a SIGKILLed worker’s task is re-queued within WORKER_TIMEOUT + 5 s and completed by another worker', { timeout: 25_000 }, async () => {
    const { accessToken: token } = await registerUser(s);
    const victim = spawnFixture('victim', processArgs(token, 'debugging', 'victim'));
    const id = await createTask(token, { type: 'debugging', payload: { handler: 'sleep', ms: 60_000 } });
    const claimed = await waitTask(token, id, (t) => t.status === 'running', 15_000, 'victim claims', victim);
    await sleep(1500); // the lease outlives WORKER_TIMEOUT only through heartbeats
    assert.equal((await s.request('GET', `/api/v1/tasks/${id}`, { token })).body.status, 'running', victim.output());
    victim.child.kill('SIGKILL');
    const killedAt = Date.now();
    await victim.exited;
    const rescuer = await startWorker(token, ['debugging'], { sleep: async (_p, ctx) => ({ rescued: true, retry_count: ctx.task.retry_count }) }, { hostname: 'rescuer' });
    const done = await waitTask(token, id, (t) => t.status === 'completed', (WORKER_TIMEOUT + 5) * 1000, 're-queued and completed');
    const elapsed = Date.now() - killedAt;
    assert.ok(elapsed <= (WORKER_TIMEOUT + 5) * 1000, `took ${elapsed} ms`);
    assert.notEqual(done.assigned_worker, claimed.assigned_worker);
    assert.equal(done.assigned_worker, rescuer.id);
    assert.equal(done.retry_count, 1);
    assert.deepEqual(done.result, { rescued: true, retry_count: 1 });
    await rescuer.stop();
  });

  test('SIGTERM lets the running task finish, then the worker exits 0', { timeout: 20_000 }, async () => {
    const { accessToken: token } = await registerUser(s);
    const worker = spawnFixture('draining', processArgs(token, 'design', 'draining'));
    const id = await createTask(token, { type: 'design', payload: { handler: 'sleep', ms: 1500 } });
    await waitTask(token, id, (t) => t.status === 'running', 15_000, 'claimed', worker);
    const queued = await createTask(token, { type: 'design', payload: { handler: 'sleep', ms: 10 } });
    worker.child.kill('SIGTERM');
    const exit = await worker.exited;
    assert.deepEqual(exit, { code: 0, signal: null }, worker.output());
    const t = (await s.request('GET', `/api/v1/tasks/${id}`, { token })).body;
    assert.equal(t.status, 'completed', JSON.stringify(t));
    assert.deepEqual(t.result.slept, 1500);
    assert.match(worker.output(), /shutting down/);
    // The stopping worker took nothing new.
    const q = (await s.request('GET', `/api/v1/tasks/${queued}`, { token })).body;
    assert.equal(q.status, 'pending', JSON.stringify(q));
  });
});
