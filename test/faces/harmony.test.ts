/**
 * HelixCode Harmony through the real HTTP API: cluster status from the leader lease and the
 * workers table, leader election and takeover, distribution strategies honoured by the claim,
 * estimated completion from measured run times, device sync cursors and staleness, accelerators.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config.ts';
import { ClusterService } from '../../src/domains/cluster/service.ts';
import { PostgresDb } from '../../src/platform/db/index.ts';
import { detectGpu, parseNvidiaSmi } from '../../src/platform/host/accelerators.ts';
import { ENGINE, freshDb } from '../helpers/engine.ts';
import { registerUser, startTestServer, type TestServer } from '../helpers/server.ts';
import { assertFaceError } from '../http/face-errors.ts';

let s: TestServer;
const quiet = { error: () => {} };

before(async () => {
  s = await startTestServer({ WORKER_TIMEOUT: '2', HARMONY_QUANTIZATION: 'enabled', HARMONY_PRECISION: 'FP16' });
});
after(() => s.close());

type User = Awaited<ReturnType<typeof registerUser>>;

const create = async (u: User, body: Record<string, unknown>) => {
  const res = await s.request('POST', '/api/v1/tasks', { token: u.accessToken, body });
  assert.equal(res.status, 201, res.text);
  return res.body.id as string;
};
const register = async (u: User, hostname: string, capabilities: string[], resources: Record<string, unknown> = { cpu: 8 }) => {
  const res = await s.request('POST', '/api/v1/workers/register', { token: u.accessToken, body: { hostname, capabilities, resources } });
  assert.equal(res.status, 200, res.text);
  return res.body.worker_id as string;
};
const heartbeat = async (u: User, worker_id: string) => {
  const res = await s.request('POST', '/api/v1/workers/heartbeat', { token: u.accessToken, body: { worker_id, status: 'idle', current_task: null } });
  assert.equal(res.status, 200, res.text);
  return res.body.assigned_task as { id: string; assigned_worker: string } | null;
};
const complete = async (u: User, id: string) => {
  const res = await s.request('PUT', `/api/v1/tasks/${id}`, { token: u.accessToken, body: { status: 'completed', progress: 100 } });
  assert.equal(res.status, 200, res.text);
};
const distribute = async (u: User, body: Record<string, unknown>) => s.request('POST', '/api/v1/harmony/distribute', { token: u.accessToken, body });
const waitFor = async (cond: () => boolean, ms: number, what: string) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(20);
  }
};

describe('harmony cluster status', () => {
  test('this process is the master with its real uptime; worker nodes are the caller\'s workers with real completions', async () => {
    const u = await registerUser(s);
    const other = await registerUser(s);
    const none = await s.request('GET', '/api/v1/harmony/cluster/status', { token: u.accessToken });
    assert.equal(none.status, 200, none.text);
    assert.equal(none.body.master_node, null, 'no process has taken the lease yet');
    assert.deepEqual(none.body.worker_nodes, []);
    assert.equal(none.body.total_nodes, 0);

    s.ctx.cluster.start();
    await waitFor(() => s.ctx.cluster.isLeader(), 5000, 'leadership');
    await sleep(1100);
    const w1 = await register(u, 'node-1', ['building']);
    const w2 = await register(u, 'node-2', ['building'], { cpu: 4, concurrency: 4 });
    await register(other, 'foreign', ['building']);
    for (let i = 0; i < 2; i++) {
      const t = await create(u, { title: `done ${i}`, type: 'building' });
      assert.equal((await heartbeat(u, w1))?.id, t);
      await complete(u, t);
    }
    const running = await create(u, { title: 'running', type: 'building' });
    assert.equal((await heartbeat(u, w2))?.id, running);

    const res = await s.request('GET', '/api/v1/harmony/cluster/status', { token: u.accessToken });
    assert.equal(res.status, 200, res.text);
    const b = res.body;
    assert.equal(b.master_node.id, s.ctx.cluster.nodeId);
    assert.equal(b.master_node.status, 'active');
    assert.ok(Number.isInteger(b.master_node.uptime) && b.master_node.uptime >= 1, `uptime ${b.master_node.uptime}`);
    assert.ok(b.master_node.uptime < 600);
    assert.deepEqual(
      b.worker_nodes.map((w: { id: string }) => w.id),
      [w1, w2],
      'only the caller\'s workers',
    );
    assert.deepEqual(b.worker_nodes[0], { id: w1, status: 'active', tasks_completed: 2, current_load: 0 });
    assert.deepEqual(b.worker_nodes[1], { id: w2, status: 'active', tasks_completed: 0, current_load: 0.25 }, 'one running task over four slots');
    assert.equal(b.total_nodes, 3);
    assert.equal(b.active_nodes, 3);

    // A silent worker goes offline (WORKER_TIMEOUT 2 s) and stops counting as active.
    await s.request('PUT', `/api/v1/tasks/${running}`, { token: u.accessToken, body: { status: 'cancelled' } });
    await sleep(2200);
    await heartbeat(u, w2);
    await s.ctx.tasks.reapExpired();
    const later = (await s.request('GET', '/api/v1/harmony/cluster/status', { token: u.accessToken })).body;
    assert.equal(later.worker_nodes.find((w: { id: string }) => w.id === w1).status, 'offline');
    assert.equal(later.total_nodes, 3);
    assert.equal(later.active_nodes, 2);
    assert.ok(later.master_node.uptime >= b.master_node.uptime + 2);
    assertFaceError(await s.request('GET', '/api/v1/harmony/cluster/status'), 'tasks', 'AUTH_REQUIRED');
  });

  test('a crashed leader\'s lease expires and a running node takes over', async () => {
    const test = await freshDb();
    const crashed = new ClusterService({ db: test.db, version: 't', log: quiet, options: { leaseSeconds: 1 } });
    const standby = new ClusterService({ db: test.db, version: 't', log: quiet, options: { heartbeatMs: 100, leaseSeconds: 1 } });
    try {
      assert.equal(await crashed.tick(), true, 'the first node takes the free lease');
      standby.start();
      await sleep(300);
      assert.equal(standby.isLeader(), false, 'a live lease is not taken');
      assert.equal((await standby.master())?.id, crashed.nodeId);
      await waitFor(() => standby.isLeader(), 3000, 'takeover after expiry');
      assert.equal((await crashed.master())?.id, standby.nodeId);
      assert.equal(await crashed.tick(), false, 'the old leader does not take it back');
    } finally {
      await standby.stop();
      await test.drop();
    }
  });

  test('two server nodes on PostgreSQL (two pools, one database): exactly one master, the other takes over when it stops', { skip: ENGINE === 'postgres' ? false : 'needs PostgreSQL: set MAINSPRING_TEST_DATABASE_URL' }, async () => {
    const test = await freshDb();
    const poolA = new PostgresDb(test.url!, { max: 2 });
    const poolB = new PostgresDb(test.url!, { max: 2 });
    const a = new ClusterService({ db: poolA, version: 't', log: quiet, options: { heartbeatMs: 100, leaseSeconds: 5 } });
    const b = new ClusterService({ db: poolB, version: 't', log: quiet, options: { heartbeatMs: 100, leaseSeconds: 5 } });
    try {
      a.start();
      b.start();
      await waitFor(() => a.isLeader() || b.isLeader(), 3000, 'a leader');
      for (let i = 0; i < 5; i++) {
        await sleep(120);
        assert.equal(Number(a.isLeader()) + Number(b.isLeader()), 1, 'exactly one master');
      }
      const [leader, follower] = a.isLeader() ? [a, b] : [b, a];
      assert.equal((await follower.master())?.id, leader.nodeId);
      await leader.stop();
      await waitFor(() => follower.isLeader(), 2000, 'takeover well before the 5 s lease would expire');
      assert.equal((await leader.master())?.id, follower.nodeId);
    } finally {
      await a.stop();
      await b.stop();
      await poolA.close();
      await poolB.close();
      await test.drop();
    }
  });
});

describe('harmony distribute', () => {
  test('each strategy reserves the task for the right worker, and only that worker receives it', async () => {
    const u = await registerUser(s);
    const plain = await register(u, 'plain', ['building', 'testing']);
    const gpu = await register(u, 'gpu', ['building', 'testing', 'gpu', 'ai_acceleration']);
    const planner = await register(u, 'planner', ['planning']);

    // capability_match: only the GPU worker has what is asked.
    const t1 = await create(u, { title: 'gpu job', type: 'building' });
    const r1 = await distribute(u, { task_id: t1, distribution_strategy: 'capability_match', required_capabilities: ['gpu', 'ai_acceleration'] });
    assert.equal(r1.status, 200, r1.text);
    assert.deepEqual(r1.body, { distributed: true, assigned_nodes: [gpu], estimated_completion: null });
    assert.equal(await heartbeat(u, plain), null, 'a reserved task is not given to another worker');
    assert.equal(await heartbeat(u, planner), null);
    const got = await heartbeat(u, gpu);
    assert.equal(got?.id, t1);
    assert.equal(got?.assigned_worker, gpu);
    await complete(u, t1);

    // capability_match without extras: the tightest fit (no capabilities beyond those needed).
    const t2 = await create(u, { title: 'plain job', type: 'building' });
    const r2 = await distribute(u, { task_id: t2, distribution_strategy: 'capability_match' });
    assert.deepEqual(r2.body.assigned_nodes, [plain]);
    assert.equal(await heartbeat(u, gpu), null);
    assert.equal((await heartbeat(u, plain))?.id, t2, 'plain is now running t2');

    // least_loaded: plain is busy, so the GPU worker.
    const t3 = await create(u, { title: 'least loaded', type: 'testing' });
    const r3 = await distribute(u, { task_id: t3, distribution_strategy: 'least_loaded', required_capabilities: [] });
    assert.deepEqual(r3.body.assigned_nodes, [gpu]);
    assert.equal((await heartbeat(u, gpu))?.id, t3);
    await complete(u, t2);
    await complete(u, t3);

    // round_robin: eligible workers in turn (the planner cannot build).
    const order = [plain, gpu].sort();
    const rr = [];
    for (let i = 0; i < 3; i++) {
      const t = await create(u, { title: `rr ${i}`, type: 'building' });
      const r = await distribute(u, { task_id: t, distribution_strategy: 'round_robin' });
      assert.equal(r.status, 200, r.text);
      rr.push({ task: t, worker: r.body.assigned_nodes[0] as string });
    }
    assert.deepEqual(rr.map((x) => x.worker), [order[0], order[1], order[0]]);
    const second = await heartbeat(u, order[1]!);
    assert.equal(second?.id, rr[1]!.task, 'the second worker gets only the task reserved for it, not the older ones');
    assert.equal(await heartbeat(u, planner), null);
    assert.equal((await heartbeat(u, order[0]!))?.id, rr[0]!.task);
  });

  test('estimated_completion is null without history and now + the mean measured run time with it', async () => {
    const u = await registerUser(s);
    const w = await register(u, 'solo', ['debugging', 'testing']);
    const first = await create(u, { title: 'first', type: 'debugging' });
    const none = await distribute(u, { task_id: first, distribution_strategy: 'least_loaded' });
    assert.deepEqual(none.body, { distributed: true, assigned_nodes: [w], estimated_completion: null });
    assert.equal((await heartbeat(u, w))?.id, first);
    await sleep(300);
    await complete(u, first);
    const done = (await s.request('GET', `/api/v1/tasks/${first}`, { token: u.accessToken })).body;
    const measured = Date.parse(done.completed_at) - Date.parse(done.started_at);
    assert.ok(measured >= 300);

    const other = await create(u, { title: 'other type', type: 'testing' });
    assert.equal((await distribute(u, { task_id: other, distribution_strategy: 'round_robin' })).body.estimated_completion, null, 'history of another type does not count');

    const next = await create(u, { title: 'next', type: 'debugging' });
    const before = Date.now();
    const r = await distribute(u, { task_id: next, distribution_strategy: 'round_robin' });
    const after = Date.now();
    const eta = Date.parse(r.body.estimated_completion);
    assert.ok(eta >= before + measured - 5 && eta <= after + measured + 5, `eta ${eta - before} ms ahead, measured ${measured}`);
  });

  test('validation, no eligible worker, another user\'s task (404) and a task that is not pending (409)', async () => {
    const u = await registerUser(s);
    const bob = await registerUser(s);
    const t = await create(u, { title: 'x', type: 'building' });
    const bad = await distribute(u, { task_id: t, distribution_strategy: 'random' });
    assertFaceError(bad, 'tasks', 'VALIDATION_ERROR');
    assert.equal(bad.body.error.details.field, 'distribution_strategy');
    assert.deepEqual(bad.body.error.details.allowed_values, ['round_robin', 'least_loaded', 'capability_match']);
    for (const body of [{}, { distribution_strategy: 'round_robin' }, { task_id: t, distribution_strategy: 'round_robin', required_capabilities: 'gpu' }]) {
      assertFaceError(await distribute(u, body), 'tasks', 'VALIDATION_ERROR', JSON.stringify(body));
    }
    assert.deepEqual((await distribute(u, { task_id: t, distribution_strategy: 'round_robin' })).body, { distributed: false, assigned_nodes: [], estimated_completion: null }, 'no worker at all');
    const w = await register(u, 'builder', ['building']);
    await register(bob, 'bobs', ['building', 'quantum']);
    assert.deepEqual(
      (await distribute(u, { task_id: t, distribution_strategy: 'capability_match', required_capabilities: ['quantum'] })).body,
      { distributed: false, assigned_nodes: [], estimated_completion: null },
      'another user\'s worker is never chosen',
    );
    assertFaceError(await distribute(bob, { task_id: t, distribution_strategy: 'round_robin' }), 'tasks', 'NOT_FOUND');
    assertFaceError(await distribute(u, { task_id: 'task_missing', distribution_strategy: 'round_robin' }), 'tasks', 'NOT_FOUND');
    assert.equal((await heartbeat(u, w))?.id, t, 'an undistributed task stays claimable by any worker');
    const conflict = await distribute(u, { task_id: t, distribution_strategy: 'round_robin' });
    assertFaceError(conflict, 'tasks', 'CONFLICT');
  });
});

describe('harmony sync', () => {
  test('sync returns the tasks changed since the cursor and a new cursor; status reports synced and stale devices', async () => {
    const u = await registerUser(s);
    const bob = await registerUser(s);
    const empty = await s.request('GET', '/api/v1/harmony/sync/status', { token: u.accessToken });
    assert.deepEqual(empty.body, { sync_enabled: true, last_sync: null, sync_interval: 30, synced_devices: [] });

    const a = await create(u, { title: 'a' });
    const b = await create(u, { title: 'b' });
    await create(bob, { title: 'bobs' });
    const sync = (body: Record<string, unknown>, user: User = u) => s.request('POST', '/api/v1/harmony/sync', { token: user.accessToken, body });
    const first = await sync({ device_id: 'phone-1', device_type: 'phone' });
    assert.equal(first.status, 200, first.text);
    assert.deepEqual(first.body.tasks.map((t: { id: string }) => t.id), [a, b]);
    assert.equal(first.body.tasks[0].status, 'pending');
    assert.equal(first.body.has_more, false);
    assert.ok(first.body.cursor);
    assert.equal(first.body.device_id, 'phone-1');

    const again = await sync({ device_id: 'phone-1', device_type: 'phone', since: first.body.cursor });
    assert.deepEqual(again.body.tasks, []);
    assert.equal(again.body.cursor, first.body.cursor, 'nothing changed: the same cursor');

    await s.request('PUT', `/api/v1/tasks/${a}`, { token: u.accessToken, body: { status: 'cancelled' } });
    const changed = await sync({ device_id: 'tablet-1', device_type: 'tablet', since: first.body.cursor });
    assert.deepEqual(changed.body.tasks.map((t: { id: string; status: string }) => [t.id, t.status]), [[a, 'cancelled']]);
    assert.ok(changed.body.cursor > first.body.cursor);

    for (const body of [{}, { device_id: 'x' }, { device_id: '', device_type: 'phone' }, { device_id: 'x', device_type: 'phone', since: 'yesterday' }]) {
      assertFaceError(await sync(body), 'tasks', 'VALIDATION_ERROR', JSON.stringify(body));
    }

    await sync({ device_id: 'phone-1', device_type: 'phone' }, bob);
    await s.ctx.db.query(`UPDATE devices SET last_sync = now() - interval '61 seconds' WHERE owner_id = $1 AND id = 'phone-1'`, [u.id]);
    const status = await s.request('GET', '/api/v1/harmony/sync/status', { token: u.accessToken });
    assert.equal(status.status, 200, status.text);
    assert.equal(status.body.sync_interval, 30);
    assert.deepEqual(
      status.body.synced_devices.map((d: { device_id: string; device_type: string; status: string }) => [d.device_id, d.device_type, d.status]),
      [['tablet-1', 'tablet', 'synced'], ['phone-1', 'phone', 'stale']],
      'stale after twice the interval; bob\'s phone-1 is not listed',
    );
    assert.equal(status.body.last_sync, changed.body.synced_at);
    const bobs = (await s.request('GET', '/api/v1/harmony/sync/status', { token: bob.accessToken })).body;
    assert.deepEqual(bobs.synced_devices.map((d: { device_id: string; status: string }) => [d.device_id, d.status]), [['phone-1', 'synced']]);
  });
});

describe('harmony ai acceleration', () => {
  test('no GPU or NPU here reads as unavailable; optimizations come from the configuration', async () => {
    const res = await s.request('GET', '/api/v1/harmony/ai/acceleration', { token: (await registerUser(s)).accessToken });
    assert.equal(res.status, 200, res.text);
    const gpu = await detectGpu();
    if (!gpu.available) assert.deepEqual(res.body.gpu, { available: false, model: null, utilization: null });
    assert.deepEqual(res.body.npu.available ? Object.keys(res.body.npu) : res.body.npu, res.body.npu.available ? ['available', 'model', 'utilization'] : { available: false, model: null, utilization: null });
    assert.deepEqual(res.body.optimizations, { quantization: 'enabled', pruning: 'disabled', precision: 'FP16' });
    assertFaceError(await s.request('GET', '/api/v1/harmony/ai/acceleration'), 'tasks', 'AUTH_REQUIRED');
  });

  test('nvidia-smi output is parsed; a missing tool is unavailable; bad settings stop the server', async () => {
    assert.deepEqual(parseNvidiaSmi('NVIDIA A100-SXM4-40GB, 37\n'), { available: true, model: 'NVIDIA A100-SXM4-40GB', utilization: 37 });
    assert.deepEqual(parseNvidiaSmi('Tesla T4, 10\nTesla T4, 30\n'), { available: true, model: 'Tesla T4 (x2)', utilization: 20 });
    assert.deepEqual(parseNvidiaSmi(''), { available: false, model: null, utilization: null });
    assert.deepEqual(await detectGpu({ command: 'mainspring-no-such-tool' }), { available: false, model: null, utilization: null });
    const base = { JWT_SECRET: 'x'.repeat(32), SECRETS_KEY: 'y'.repeat(32), DATA_DIR: s.ctx.config.dataDir };
    assert.deepEqual(loadConfig(base).harmonyOptimizations, { quantization: 'disabled', pruning: 'disabled', precision: 'FP32' });
    assert.equal(loadConfig(base).harmonySyncInterval, 30);
    assert.throws(() => loadConfig({ ...base, HARMONY_PRECISION: 'FP8' }), ConfigError);
    assert.throws(() => loadConfig({ ...base, HARMONY_PRUNING: 'on' }), ConfigError);
  });
});
