/**
 * HelixCode tasks and workers through the real HTTP API: the document's shapes, validation,
 * transitions, ownership, capability/priority/dependency-aware claiming, long-poll, leases, events.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startReceiver } from '../helpers/receiver.ts';
import { registerUser, startTestServer, uniqueEmail, type TestServer } from '../helpers/server.ts';
import { assertFaceError } from '../http/face-errors.ts';

let s: TestServer;
let alice: Awaited<ReturnType<typeof registerUser>>;
let bob: Awaited<ReturnType<typeof registerUser>>;
let adminToken: string;

before(async () => {
  s = await startTestServer({ WORKER_TIMEOUT: '2', ALLOW_PRIVATE_URLS: 'true', WEBHOOK_POLL_INTERVAL_MS: '50' });
  alice = await registerUser(s);
  bob = await registerUser(s);
  const email = uniqueEmail('admin');
  await s.ctx.identity.createUser({ email, password: 'admin-password-1', role: 'admin' });
  adminToken = (await s.request('POST', '/api/v1/auth/login', { body: { username: email, password: 'admin-password-1' } })).body.token;
});
after(() => s.close());

const create = async (token: string, body: Record<string, unknown>) => {
  const res = await s.request('POST', '/api/v1/tasks', { token, body });
  assert.equal(res.status, 201, res.text);
  return res.body as { id: string; status: string; priority: string; type: string };
};
const register = async (token: string, hostname: string, capabilities: string[]) => {
  const res = await s.request('POST', '/api/v1/workers/register', { token, body: { hostname, capabilities, resources: { cpu: 8, memory: 16384, gpu: true } } });
  assert.equal(res.status, 200, res.text);
  return res.body.worker_id as string;
};
const heartbeat = async (token: string, worker_id: string, extra: Record<string, unknown> = {}) => {
  const res = await s.request('POST', '/api/v1/workers/heartbeat', { token, body: { worker_id, status: 'idle', current_task: null, resources: { cpu_usage: 15.5, memory_usage: 4096 }, ...extra } });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.acknowledged, true);
  return res.body.assigned_task as { id: string; status: string; assigned_worker: string; priority: string } | null;
};

describe('tasks', () => {
  test("the document's create example answers 201 {id,title,status:pending,priority,created_at}", async () => {
    const res = await s.request('POST', '/api/v1/tasks', {
      token: alice.accessToken,
      body: { title: 'Implement user authentication', description: 'Add JWT-based auth system', type: 'building', priority: 'high', project_id: 'project-123' },
    });
    assert.equal(res.status, 201);
    assert.match(res.body.id, /^task_/);
    assert.equal(res.body.title, 'Implement user authentication');
    assert.equal(res.body.status, 'pending');
    assert.equal(res.body.priority, 'high');
    assert.ok(!Number.isNaN(Date.parse(res.body.created_at)));
    const got = await s.request('GET', `/api/v1/tasks/${res.body.id}`, { token: alice.accessToken });
    assert.equal(got.status, 200);
    assert.equal(got.body.description, 'Add JWT-based auth system');
    assert.equal(got.body.type, 'building');
    assert.equal(got.body.assigned_worker, null);
    assert.equal(got.body.progress, 0);
    const minimal = await create(alice.accessToken, { title: 'Test Task', type: 'planning', priority: 'high' });
    assert.equal(minimal.status, 'pending');
  });

  test('invalid input is a 400 with details.field and details.allowed_values, nothing stored', async () => {
    const before = (await s.request('GET', '/api/v1/tasks', { token: alice.accessToken })).body.total;
    const bad = await s.request('POST', '/api/v1/tasks', { token: alice.accessToken, body: { title: 'x', priority: 'urgent' } });
    assertFaceError(bad, 'tasks', 'VALIDATION_ERROR');
    assert.equal(bad.body.error.details.field, 'priority');
    assert.deepEqual(bad.body.error.details.allowed_values, ['low', 'normal', 'high', 'critical']);
    const badType = await s.request('POST', '/api/v1/tasks', { token: alice.accessToken, body: { title: 'x', type: 'cooking' } });
    assert.equal(badType.body.error.details.field, 'type');
    assert.ok(badType.body.error.details.allowed_values.includes('porting'));
    for (const body of [{}, { title: '' }, { title: 5 }, { title: 'x', depends_on: ['task_missing'] }, { title: 'x', max_retries: -1 }]) {
      assertFaceError(await s.request('POST', '/api/v1/tasks', { token: alice.accessToken, body }), 'tasks', 'VALIDATION_ERROR', JSON.stringify(body));
    }
    assertFaceError(await s.request('POST', '/api/v1/tasks', { token: alice.accessToken, rawBody: '{"title":' }), 'tasks', 'VALIDATION_ERROR', 'malformed');
    assert.equal((await s.request('GET', '/api/v1/tasks', { token: alice.accessToken })).body.total, before);
  });

  test('list filters and paginates; another user sees none of it and gets 404; admins see all', async () => {
    const user = await registerUser(s);
    const ids = [];
    for (const priority of ['low', 'high', 'high', 'critical']) ids.push((await create(user.accessToken, { title: `t-${priority}`, priority, type: 'testing', project_id: 'p1' })).id);
    const all = await s.request('GET', '/api/v1/tasks?limit=2&offset=1', { token: user.accessToken });
    assert.equal(all.body.total, 4);
    assert.equal(all.body.tasks.length, 2);
    assert.equal(all.body.limit, 2);
    assert.equal(all.body.offset, 1);
    const high = await s.request('GET', '/api/v1/tasks?priority=high&status=pending&project_id=p1', { token: user.accessToken });
    assert.equal(high.body.total, 2);
    assertFaceError(await s.request('GET', '/api/v1/tasks?status=exploded', { token: user.accessToken }), 'tasks', 'VALIDATION_ERROR');
    assertFaceError(await s.request('GET', '/api/v1/tasks?limit=501', { token: user.accessToken }), 'tasks', 'VALIDATION_ERROR');
    for (const [method, body] of [['GET'], ['PUT', { status: 'cancelled' }], ['DELETE']] as const) {
      assertFaceError(await s.request(method, `/api/v1/tasks/${ids[0]}`, { token: bob.accessToken, body }), 'tasks', 'NOT_FOUND', `${method} as another user`);
    }
    assert.equal((await s.request('GET', '/api/v1/tasks?project_id=p1', { token: bob.accessToken })).body.total, 0);
    assert.equal((await s.request('GET', `/api/v1/tasks/${ids[0]}`, { token: adminToken })).status, 200, 'admin sees any task');
    assert.equal((await s.request('GET', `/api/v1/tasks/${ids[0]}`, { token: user.accessToken })).body.status, 'pending', 'untouched');
    assertFaceError(await s.request('GET', '/api/v1/tasks'), 'tasks', 'AUTH_REQUIRED');
  });

  test('status changes follow the transitions; completion is idempotent; DELETE answers 204', async () => {
    const t = await create(alice.accessToken, { title: 'transitions' });
    assertFaceError(await s.request('PUT', `/api/v1/tasks/${t.id}`, { token: alice.accessToken, body: { status: 'completed' } }), 'tasks', 'CONFLICT', 'pending -> completed');
    assertFaceError(await s.request('PUT', `/api/v1/tasks/${t.id}`, { token: alice.accessToken, body: { progress: 10 } }), 'tasks', 'CONFLICT', 'progress on pending');
    assert.equal((await s.request('PUT', `/api/v1/tasks/${t.id}`, { token: alice.accessToken, body: { status: 'running' } })).body.status, 'running');
    const prog = await s.request('PUT', `/api/v1/tasks/${t.id}`, { token: alice.accessToken, body: { progress: 45 } });
    assert.equal(prog.body.progress, 45);
    const done = await s.request('PUT', `/api/v1/tasks/${t.id}`, { token: alice.accessToken, body: { status: 'completed', progress: 100, result: { success: true } } });
    assert.equal(done.status, 200);
    assert.equal(done.body.status, 'completed');
    assert.equal(done.body.progress, 100);
    assert.deepEqual(done.body.result, { success: true });
    assert.ok(done.body.completed_at);
    const again = await s.request('PUT', `/api/v1/tasks/${t.id}`, { token: alice.accessToken, body: { status: 'completed', progress: 100 } });
    assert.equal(again.status, 200, 'completing twice is accepted');
    assert.equal(again.body.completed_at, done.body.completed_at, 'and changes nothing');
    assertFaceError(await s.request('PUT', `/api/v1/tasks/${t.id}`, { token: alice.accessToken, body: { status: 'running' } }), 'tasks', 'CONFLICT', 'completed -> running');
    assertFaceError(await s.request('PUT', `/api/v1/tasks/${t.id}`, { token: alice.accessToken, body: {} }), 'tasks', 'VALIDATION_ERROR', 'empty');
    const del = await s.request('DELETE', `/api/v1/tasks/${t.id}`, { token: alice.accessToken });
    assert.equal(del.status, 204);
    assertFaceError(await s.request('GET', `/api/v1/tasks/${t.id}`, { token: alice.accessToken }), 'tasks', 'NOT_FOUND');
  });
});

describe('workers', () => {
  test('heartbeat hands out the highest-priority, oldest task the worker can run; reports must come from the holder', async () => {
    const user = await registerUser(s);
    const w = await register(user.accessToken, 'node-a', ['building', 'testing', 'gpu']);
    const again = await register(user.accessToken, 'node-a', ['building', 'testing', 'gpu']);
    assert.equal(again, w, 're-registering a hostname keeps its id');
    const other = await register(user.accessToken, 'node-b', ['building', 'testing', 'gpu']);
    const low = await create(user.accessToken, { title: 'low', type: 'building', priority: 'low' });
    const high1 = await create(user.accessToken, { title: 'high-1', type: 'building', priority: 'high' });
    const high2 = await create(user.accessToken, { title: 'high-2', type: 'testing', priority: 'high' });
    const design = await create(user.accessToken, { title: 'design', type: 'design', priority: 'critical' });
    const needsCuda = await create(user.accessToken, { title: 'cuda', type: 'building', priority: 'critical', required_capabilities: ['cuda'] });

    const first = await heartbeat(user.accessToken, w);
    assert.equal(first?.id, high1.id, 'critical tasks this worker cannot run are skipped; oldest high first');
    assert.equal(first?.status, 'running');
    assert.equal(first?.assigned_worker, w);
    assert.equal(await heartbeat(user.accessToken, w, { status: 'busy', current_task: first!.id }), null, 'a busy worker gets nothing');
    assertFaceError(
      await s.request('PUT', `/api/v1/tasks/${first!.id}`, { token: user.accessToken, body: { status: 'completed', worker_id: other } }),
      'tasks',
      'CONFLICT',
      'completion from a worker that does not hold the task',
    );
    const done = await s.request('PUT', `/api/v1/tasks/${first!.id}`, { token: user.accessToken, body: { status: 'completed', worker_id: w, result: { output: 'ok' } } });
    assert.equal(done.status, 200);
    assert.equal((await heartbeat(user.accessToken, w))?.id, high2.id);
    assert.equal((await heartbeat(user.accessToken, other))?.id, low.id);
    assert.equal(await heartbeat(user.accessToken, other), null, 'design and cuda tasks need capabilities nobody has');
    const list = await s.request('GET', '/api/v1/workers', { token: user.accessToken });
    const me = list.body.workers.find((x: { id: string }) => x.id === w);
    assert.deepEqual(me.capabilities, ['building', 'testing', 'gpu']);
    assert.equal(me.status, 'busy');
    assert.ok(Date.parse(me.last_heartbeat) > Date.now() - 10_000);
    assert.equal((await s.request('GET', `/api/v1/tasks/${design.id}`, { token: user.accessToken })).body.status, 'pending');
    assert.equal((await s.request('GET', `/api/v1/tasks/${needsCuda.id}`, { token: user.accessToken })).body.status, 'pending');
  });

  test('dependencies hold a task back until they complete', async () => {
    const user = await registerUser(s);
    const w = await register(user.accessToken, 'deps', ['planning']);
    const a = await create(user.accessToken, { title: 'a', priority: 'low' });
    const b = await create(user.accessToken, { title: 'b', priority: 'critical', depends_on: [a.id] });
    assert.equal((await heartbeat(user.accessToken, w))?.id, a.id, 'b waits for a although it is critical');
    assert.equal(await heartbeat(user.accessToken, w), null);
    await s.request('PUT', `/api/v1/tasks/${a.id}`, { token: user.accessToken, body: { status: 'completed', worker_id: w } });
    assert.equal((await heartbeat(user.accessToken, w))?.id, b.id);
  });

  test("a user's worker never receives another user's task; an admin's worker serves everyone", async () => {
    const u1 = await registerUser(s);
    const u2 = await registerUser(s);
    const w1 = await register(u1.accessToken, 'u1-node', ['deployment']);
    const t2 = await create(u2.accessToken, { title: 'u2 deploy', type: 'deployment' });
    assert.equal(await heartbeat(u1.accessToken, w1), null);
    assertFaceError(
      await s.request('POST', '/api/v1/workers/heartbeat', { token: u2.accessToken, body: { worker_id: w1, status: 'idle' } }),
      'tasks',
      'NOT_FOUND',
      "heartbeat for another user's worker",
    );
    assert.ok(!(await s.request('GET', '/api/v1/workers', { token: u2.accessToken })).body.workers.some((x: { id: string }) => x.id === w1));
    const shared = await register(adminToken, `shared-${Date.now()}`, ['deployment']);
    const got = await heartbeat(adminToken, shared);
    assert.equal(got?.id, t2.id);
    assertFaceError(await s.request('POST', '/api/v1/workers/heartbeat', { token: u1.accessToken, body: { worker_id: 'worker_nope', status: 'idle' } }), 'tasks', 'NOT_FOUND');
    assertFaceError(await s.request('POST', '/api/v1/workers/register', { token: u1.accessToken, body: { hostname: 'x', capabilities: [] } }), 'tasks', 'VALIDATION_ERROR');
  });

  test('eight workers heartbeating at once: every task is handed out exactly once', async () => {
    const user = await registerUser(s);
    const workers = await Promise.all(Array.from({ length: 8 }, (_, i) => register(user.accessToken, `race-${i}`, ['porting'])));
    const created = new Set<string>();
    for (let i = 0; i < 60; i++) created.add((await create(user.accessToken, { title: `race ${i}`, type: 'porting' })).id);
    const assigned: string[] = [];
    await Promise.all(
      workers.map(async (w) => {
        for (;;) {
          const t = await heartbeat(user.accessToken, w);
          if (!t) return;
          assigned.push(t.id);
          await s.request('PUT', `/api/v1/tasks/${t.id}`, { token: user.accessToken, body: { status: 'completed', worker_id: w } });
        }
      }),
    );
    assert.equal(assigned.length, 60);
    assert.equal(new Set(assigned).size, 60, 'no task went to two workers');
    assert.deepEqual([...assigned].sort(), [...created].sort());
  });

  test('a long-polling heartbeat wakes when a task is created', async () => {
    const user = await registerUser(s);
    const w = await register(user.accessToken, 'poller', ['diagram']);
    const started = Date.now();
    const polling = heartbeat(user.accessToken, w, { wait: 10 });
    await new Promise((r) => setTimeout(r, 300));
    const t = await create(user.accessToken, { title: 'wake up', type: 'diagram' });
    const got = await polling;
    assert.equal(got?.id, t.id);
    assert.ok(Date.now() - started < 3000, `picked up after ${Date.now() - started} ms`);
    const empty = Date.now();
    assert.equal(await heartbeat(user.accessToken, w, { wait: 1 }), null);
    assert.ok(Date.now() - empty >= 900, 'an empty long-poll waits its time');
  });

  test('a silent worker goes offline and its task returns to the queue, then fails when retries run out', async () => {
    const user = await registerUser(s);
    const w = await register(user.accessToken, 'flaky', ['refactoring']);
    const w2 = await register(user.accessToken, 'steady', ['refactoring']);
    const t = await create(user.accessToken, { title: 'lease', type: 'refactoring', max_retries: 1 });
    assert.equal((await heartbeat(user.accessToken, w))?.id, t.id);
    await new Promise((r) => setTimeout(r, 2300));
    await s.ctx.tasks.reapExpired();
    const back = await s.request('GET', `/api/v1/tasks/${t.id}`, { token: user.accessToken });
    assert.equal(back.body.status, 'pending');
    assert.equal(back.body.retry_count, 1);
    assert.equal(back.body.assigned_worker, null);
    const workers = (await s.request('GET', '/api/v1/workers', { token: user.accessToken })).body.workers;
    assert.equal(workers.find((x: { id: string }) => x.id === w).status, 'offline');
    assertFaceError(
      await s.request('PUT', `/api/v1/tasks/${t.id}`, { token: user.accessToken, body: { status: 'completed', worker_id: w } }),
      'tasks',
      'CONFLICT',
      'the lost worker may not complete it',
    );
    assert.equal((await heartbeat(user.accessToken, w2))?.id, t.id, 'another worker picks it up');
    await new Promise((r) => setTimeout(r, 2300));
    await s.ctx.tasks.reapExpired();
    const failed = await s.request('GET', `/api/v1/tasks/${t.id}`, { token: user.accessToken });
    assert.equal(failed.body.status, 'failed');
    assert.match(failed.body.error, /retries exhausted/);
  });

  test('a completion with claim_next hands back the next task, claimed under the heartbeat rules', async () => {
    const user = await registerUser(s);
    const other = await registerUser(s);
    // Events are written for owners with a webhook (checked at the end); deliveries are not started here.
    const hook = await s.request('POST', '/api/v1/webhooks', { token: user.accessToken, body: { url: 'http://127.0.0.1:9/hook', events: ['task.*'] } });
    assert.equal(hook.status, 201, hook.text);
    const w = await register(user.accessToken, 'chain', ['testing']);
    const first = await create(user.accessToken, { title: 'first', type: 'testing' });
    const second = await create(user.accessToken, { title: 'second', type: 'testing', priority: 'low' });
    await create(user.accessToken, { title: 'not mine to run', type: 'design', priority: 'critical' });
    await create(user.accessToken, { title: 'needs cuda', type: 'testing', priority: 'critical', required_capabilities: ['cuda'] });
    await create(other.accessToken, { title: "another user's", type: 'testing', priority: 'critical' });
    const put = (id: string, body: Record<string, unknown>, token = user.accessToken) => s.request('PUT', `/api/v1/tasks/${id}`, { token, body });

    assert.equal((await heartbeat(user.accessToken, w))?.id, first.id);
    const plain = await put(first.id, { progress: 50, worker_id: w, claim_next: true });
    assert.equal(plain.status, 200, plain.text);
    assert.equal(plain.body.next_task, null, 'a progress report keeps the task: no next one');
    const done = await put(first.id, { status: 'completed', worker_id: w, result: { n: 1 }, claim_next: true });
    assert.equal(done.status, 200, done.text);
    assert.equal(done.body.status, 'completed');
    assert.deepEqual(done.body.result, { n: 1 });
    assert.equal(done.body.next_task.id, second.id, "skips what the worker cannot run and other users' tasks");
    assert.equal(done.body.next_task.status, 'running');
    assert.equal(done.body.next_task.assigned_worker, w);
    const retried = await put(first.id, { status: 'completed', worker_id: w, result: { n: 1 }, claim_next: true });
    assert.equal(retried.body.next_task.id, second.id, 'a retried report (lost answer) gets the same next task, not another');
    const me = (await s.request('GET', '/api/v1/workers', { token: user.accessToken })).body.workers.find((x: { id: string }) => x.id === w);
    assert.equal(me.status, 'busy');
    assert.equal(me.current_task, second.id);
    assert.equal(me.tasks_completed, 1);

    const failed = await put(second.id, { status: 'failed', error: 'boom', worker_id: w, claim_next: true });
    assert.equal(failed.body.status, 'failed');
    assert.equal(failed.body.next_task, null, 'nothing left this worker may take');
    const again = await put(second.id, { status: 'failed', error: 'boom', worker_id: w });
    assert.equal(again.status, 200, 'a repeated final report is still a no-op');
    assert.equal('next_task' in again.body, false, 'next_task only when asked for');
    const idle = (await s.request('GET', '/api/v1/workers', { token: user.accessToken })).body.workers.find((x: { id: string }) => x.id === w);
    assert.equal(idle.status, 'idle');
    assert.equal(idle.current_task, null);

    assertFaceError(await put(second.id, { status: 'completed', claim_next: true }), 'tasks', 'VALIDATION_ERROR', 'claim_next without worker_id');
    const third = await create(user.accessToken, { title: 'third', type: 'testing' });
    assert.equal((await heartbeat(user.accessToken, w))?.id, third.id);
    assertFaceError(await put(third.id, { status: 'completed', worker_id: 'worker_nope', claim_next: true }), 'tasks', 'CONFLICT', 'not the holder');
    assertFaceError(await put(third.id, { status: 'completed', worker_id: w, claim_next: true }, other.accessToken), 'tasks', 'NOT_FOUND', "another user's task");
    assert.equal((await s.request('GET', `/api/v1/tasks/${third.id}`, { token: user.accessToken })).body.status, 'running');

    // An admin completing a user's task held by the user's worker: done, but the worker is not the admin's.
    await create(user.accessToken, { title: 'fourth', type: 'testing' });
    const byAdmin = await put(third.id, { status: 'completed', worker_id: w, claim_next: true }, adminToken);
    assert.equal(byAdmin.body.status, 'completed');
    assert.equal(byAdmin.body.next_task, null, "the next task is claimed only for the caller's own worker");

    const events = await s.ctx.db.query<{ type: string; data: Record<string, unknown> }>(
      // A report that finishes one task and claims the next writes both events in one statement, often
      // within the same clock tick: order by task, then started before its outcome.
      `SELECT type, data FROM events WHERE data->>'task_id' = ANY($1::text[]) AND type IN ('task.started', 'task.completed', 'task.failed')
        ORDER BY array_position($1::text[], data->>'task_id'), type <> 'task.started', created_at`,
      [[first.id, second.id, third.id]],
    );
    assert.deepEqual(
      events.rows.map((e) => [e.type, e.data]),
      [
        ['task.started', { task_id: first.id, worker_id: w }],
        ['task.completed', { task_id: first.id, status: 'completed', result: { n: 1 } }],
        ['task.started', { task_id: second.id, worker_id: w }],
        ['task.failed', { task_id: second.id, status: 'failed', error: 'boom' }],
        ['task.started', { task_id: third.id, worker_id: w }],
        ['task.completed', { task_id: third.id, status: 'completed' }],
      ],
      'every change has its event, in the catalogue payload',
    );
  });

  test('eight workers chaining completions with claim_next: every task is handed out exactly once', async () => {
    const user = await registerUser(s);
    const workers = await Promise.all(Array.from({ length: 8 }, (_, i) => register(user.accessToken, `chain-${i}`, ['deployment', 'gpu'])));
    const created = new Set<string>();
    for (let i = 0; i < 80; i++) created.add((await create(user.accessToken, { title: `chain ${i}`, type: 'deployment', required_capabilities: i % 2 ? ['gpu'] : [] })).id);
    const assigned: string[] = [];
    await Promise.all(
      workers.map(async (w) => {
        let t = await heartbeat(user.accessToken, w);
        while (t) {
          assert.equal(t.assigned_worker, w);
          assigned.push(t.id);
          const res = await s.request('PUT', `/api/v1/tasks/${t.id}`, { token: user.accessToken, body: { status: 'completed', worker_id: w, claim_next: true } });
          assert.equal(res.status, 200, res.text);
          t = res.body.next_task;
        }
      }),
    );
    assert.equal(assigned.length, 80);
    assert.equal(new Set(assigned).size, 80, 'no task went to two workers');
    assert.deepEqual([...assigned].sort(), [...created].sort());
    const list = (await s.request('GET', '/api/v1/tasks?status=completed&limit=500', { token: user.accessToken })).body;
    assert.equal(list.total, 80);
  });

  test('a burst of new tasks wakes enough long-polls to take them all at once', async () => {
    const user = await registerUser(s);
    const workers = await Promise.all(Array.from({ length: 4 }, (_, i) => register(user.accessToken, `burst-${i}`, ['porting'])));
    const polls = workers.map((w) => heartbeat(user.accessToken, w, { wait: 10 }));
    await new Promise((r) => setTimeout(r, 300));
    const started = Date.now();
    const ids = await Promise.all(Array.from({ length: 4 }, (_, i) => create(user.accessToken, { title: `burst ${i}`, type: 'porting' }).then((t) => t.id)));
    const got = await Promise.all(polls);
    assert.deepEqual(got.map((t) => t?.id).sort(), [...ids].sort());
    assert.ok(Date.now() - started < 900, `all picked up after ${Date.now() - started} ms (not by the one-second poll)`);
  });

  test('concurrent creations (written together) each get their own task, event and answer', async () => {
    const user = await registerUser(s);
    const other = await registerUser(s);
    const hook = await s.request('POST', '/api/v1/webhooks', { token: user.accessToken, body: { url: 'http://127.0.0.1:9/hook', events: ['task.created'] } });
    assert.equal(hook.status, 201, hook.text);
    const bodies = Array.from({ length: 40 }, (_, i) => ({
      title: `burst ${i}`,
      type: 'testing',
      priority: (['low', 'normal', 'high', 'critical'] as const)[i % 4],
      ...(i % 3 === 0 ? { payload: { n: i } } : {}),
      ...(i % 5 === 0 ? { required_capabilities: ['gpu', 'gpu'] } : {}),
    }));
    const answers = await Promise.all(bodies.map((body, i) => s.request('POST', '/api/v1/tasks', { token: (i % 2 ? other : user).accessToken, body })));
    for (const [i, a] of answers.entries()) {
      assert.equal(a.status, 201, a.text);
      assert.equal(a.body.title, `burst ${i}`);
      assert.equal(a.body.priority, bodies[i]!.priority);
      const stored = await s.request('GET', `/api/v1/tasks/${a.body.id}`, { token: (i % 2 ? other : user).accessToken });
      assert.deepEqual(stored.body.payload ?? null, i % 3 === 0 ? { n: i } : null);
      assert.deepEqual(stored.body.required_capabilities, i % 5 === 0 ? ['gpu'] : []);
      assert.equal((await s.request('GET', `/api/v1/tasks/${a.body.id}`, { token: (i % 2 ? user : other).accessToken })).status, 404, 'owned by its creator only');
    }
    assert.equal(new Set(answers.map((a) => a.body.id)).size, 40);
    const events = await s.ctx.db.query<{ owner_id: string; n: number }>(
      `SELECT owner_id, count(*)::int AS n FROM events WHERE type = 'task.created' AND data->>'task_id' = ANY($1::text[]) GROUP BY owner_id`,
      [answers.map((a) => a.body.id)],
    );
    assert.deepEqual(events.rows, [{ owner_id: user.id, n: 20 }], "events for the subscribed owner's tasks only");
  });

  test('concurrent final reports (written together) each finish their task and get a next task of their own', async () => {
    const user = await registerUser(s);
    const workers = await Promise.all(Array.from({ length: 6 }, (_, i) => register(user.accessToken, `batch-${i}`, ['testing'])));
    const firsts = [];
    for (let i = 0; i < 6; i++) firsts.push(await create(user.accessToken, { title: `first ${i}`, type: 'testing', priority: 'critical' }));
    const held = await Promise.all(workers.map((w) => heartbeat(user.accessToken, w)));
    assert.equal(new Set(held.map((t) => t?.id)).size, 6, 'one task per worker');
    const nexts = new Set<string>();
    for (let i = 0; i < 6; i++) nexts.add((await create(user.accessToken, { title: `next ${i}`, type: 'testing' })).id);
    // Five real holders report at once; the sixth report names a task its worker does not hold.
    const reports = workers.map((w, i) =>
      s.request('PUT', `/api/v1/tasks/${held[i === 5 ? 0 : i]!.id}`, {
        token: user.accessToken,
        body: { status: 'completed', worker_id: w, result: { i }, claim_next: true },
      }),
    );
    const answers = await Promise.all(reports);
    for (let i = 0; i < 5; i++) {
      assert.equal(answers[i]!.status, 200, answers[i]!.text);
      assert.equal(answers[i]!.body.status, 'completed');
      assert.deepEqual(answers[i]!.body.result, { i });
      assert.ok(nexts.has(answers[i]!.body.next_task.id), 'the next task is one of the new ones');
      assert.equal(answers[i]!.body.next_task.assigned_worker, workers[i]);
    }
    assertFaceError(answers[5]!, 'tasks', 'CONFLICT', 'a report for a task another worker holds');
    assert.equal(new Set(answers.slice(0, 5).map((a) => a.body.next_task.id)).size, 5, 'no next task handed to two workers');
    const sixth = (await s.request('GET', `/api/v1/tasks/${held[5]!.id}`, { token: user.accessToken })).body;
    assert.equal(sixth.status, 'running', "the sixth worker's own task is untouched");
    const listed = (await s.request('GET', '/api/v1/workers', { token: user.accessToken })).body.workers;
    for (let i = 0; i < 5; i++) assert.equal(listed.find((x: { id: string }) => x.id === workers[i]).tasks_completed, 1);
  });

  test('a creation that fails inside a batch fails alone', async () => {
    const user = await registerUser(s);
    const input = (title: string) => ({ title, type: 'testing' as const });
    const results = await Promise.allSettled([
      s.ctx.tasks.create({ userId: user.id, admin: false }, input('a')),
      s.ctx.tasks.create({ userId: 'usr_no_such_user', admin: false }, input('ghost')),
      s.ctx.tasks.create({ userId: user.id, admin: false }, input('b')),
      s.ctx.tasks.create({ userId: user.id, admin: false }, input('c')),
    ]);
    assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
    const titles = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value.title] : []));
    assert.deepEqual(titles, ['a', 'b', 'c']);
    const listed = await s.request('GET', '/api/v1/tasks?limit=10', { token: user.accessToken });
    assert.deepEqual(listed.body.tasks.map((t: { title: string }) => t.title).sort(), ['a', 'b', 'c']);
  });

  test('event rows are written only for an owner with an active webhook', async () => {
    const user = await registerUser(s);
    const w = await register(user.accessToken, 'quiet', ['testing']);
    const eventsOf = async (taskIds: string[]) =>
      (await s.ctx.db.query<{ type: string }>(`SELECT type FROM events WHERE data->>'task_id' = ANY($1::text[]) ORDER BY created_at, id`, [taskIds])).rows.map((r) => r.type);
    const run = async (title: string) => {
      const t = await create(user.accessToken, { title, type: 'testing' });
      assert.equal((await heartbeat(user.accessToken, w))?.id, t.id);
      const done = await s.request('PUT', `/api/v1/tasks/${t.id}`, { token: user.accessToken, body: { status: 'completed', worker_id: w, claim_next: true } });
      assert.equal(done.body.status, 'completed');
      return t.id as string;
    };
    const unheard = await run('nobody listens');
    assert.deepEqual(await eventsOf([unheard]), [], 'no subscription: no outbox rows');

    const hook = await s.request('POST', '/api/v1/webhooks', { token: user.accessToken, body: { url: 'http://127.0.0.1:9/hook', events: ['task.completed'] } });
    assert.equal(hook.status, 201, hook.text);
    const heard = await run('someone listens');
    assert.deepEqual(await eventsOf([heard]), ['task.created', 'task.started', 'task.completed']);

    // A paused (inactive) subscription hears nothing, so nothing is written either.
    const paused = await s.request('PUT', `/api/v1/webhooks/${hook.body.id}`, { token: user.accessToken, body: { active: false } });
    assert.equal(paused.status, 200, paused.text);
    const quietAgain = await run('paused');
    assert.deepEqual(await eventsOf([quietAgain]), []);
  });

  test('task events reach a webhook in the document payload', async () => {
    const r = await startReceiver();
    const user = await registerUser(s);
    s.ctx.deliveries.start();
    try {
      const hook = await s.request('POST', '/api/v1/webhooks', { token: user.accessToken, body: { url: r.url, events: ['task.completed', 'task.failed'] } });
      assert.equal(hook.status, 201);
      const w = await register(user.accessToken, 'events', ['testing']);
      const t = await create(user.accessToken, { title: 'ev', type: 'testing' });
      await heartbeat(user.accessToken, w);
      await s.request('PUT', `/api/v1/tasks/${t.id}`, { token: user.accessToken, body: { status: 'completed', worker_id: w, result: { success: true, output: 'Task completed successfully' } } });
      const [got] = await r.waitFor(1);
      const body = JSON.parse(got!.body);
      assert.equal(body.event, 'task.completed');
      assert.deepEqual(body.data, { task_id: t.id, status: 'completed', result: { success: true, output: 'Task completed successfully' } });
      assert.match(body.signature, /^sha256=[0-9a-f]{64}$/);
    } finally {
      await s.ctx.deliveries.stop();
      await r.close();
    }
  });
});
