/**
 * Webhooks end to end: subscriptions on HelixCode and HeliosDB, events from the outbox, signed
 * deliveries to a local receiver, retries, 410, Retry-After, redirects, redelivery and the log.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
// @ts-expect-error -- a plain JavaScript example for receivers, without type declarations
import { verifyWebhook } from '../../examples/verify-webhook.mjs';
import { emitEvent } from '../../src/domains/events/outbox.ts';
import { startReceiver } from '../helpers/receiver.ts';
import { registerUser, startTestServer, type TestServer } from '../helpers/server.ts';
import { assertFaceError } from '../http/face-errors.ts';

const verify = verifyWebhook as (secret: string, headers: Record<string, unknown>, body: string) => boolean;

let s: TestServer;
let alice: Awaited<ReturnType<typeof registerUser>>;
let bob: Awaited<ReturnType<typeof registerUser>>;

before(async () => {
  s = await startTestServer({
    ALLOW_PRIVATE_URLS: 'true',
    WEBHOOK_RETRY_SCHEDULE: '0.2,0.2,0.2',
    WEBHOOK_TIMEOUT_MS: '2000',
    WEBHOOK_POLL_INTERVAL_MS: '50',
  });
  s.ctx.deliveries.start();
  alice = await registerUser(s);
  bob = await registerUser(s);
});
after(async () => {
  await s.ctx.deliveries.stop();
  await s.close();
});

async function subscribe(token: string, url: string, events: string[], extra: Record<string, unknown> = {}) {
  const res = await s.request('POST', '/api/v1/webhooks', { token, body: { url, events, ...extra } });
  assert.equal(res.status, 201, res.text);
  return res.body as { id: string; secret?: string; url: string; events: string[]; created_at: string };
}

async function emit(userId: string, type: 'task.completed' | 'task.failed' | 'database.created', data: Record<string, unknown>) {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- test data for several event types
  return s.ctx.db.transaction((tx) => emitEvent(tx, userId, type as 'task.completed', data as any));
}

async function waitForDelivery(token: string, webhookId: string, pred: (d: { status: string; attempts: number; attempt_log: unknown[] }) => boolean, timeoutMs = 8000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const res = await s.request('GET', `/api/v1/webhooks/${webhookId}/deliveries`, { token });
    assert.equal(res.status, 200, res.text);
    const d = res.body.deliveries[0];
    if (d && pred(d)) return d;
    if (Date.now() > until) throw new Error(`delivery not in expected state: ${JSON.stringify(res.body)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('subscriptions', () => {
  test('HelixCode create answers 201 {id,url,events,created_at} and shows a generated secret once', async () => {
    const r = await startReceiver();
    try {
      const res = await s.request('POST', '/api/v1/webhooks', { token: alice.accessToken, body: { url: r.url, events: ['task.completed', 'task.failed'] } });
      assert.equal(res.status, 201);
      assert.match(res.body.id, /^wh_/);
      assert.equal(res.body.url, r.url);
      assert.deepEqual(res.body.events, ['task.completed', 'task.failed']);
      assert.ok(!Number.isNaN(Date.parse(res.body.created_at)));
      assert.match(res.body.secret, /^whsec_[A-Za-z0-9+/=]{40,}$/);
      const again = await s.request('GET', `/api/v1/webhooks/${res.body.id}`, { token: alice.accessToken });
      assert.equal(again.status, 200);
      assert.equal(again.body.secret, undefined, 'the secret is never shown again');
      const given = await s.request('POST', '/api/v1/webhooks', { token: alice.accessToken, body: { url: r.url, events: ['task.*'], secret: 'my-own-secret' } });
      assert.equal(given.status, 201);
      assert.equal(given.body.secret, undefined, 'a secret the user chose is not echoed');
    } finally {
      await r.close();
    }
  });

  test('bad input is refused in the face shape and nothing is stored', async () => {
    const before = await s.request('GET', '/api/v1/webhooks', { token: alice.accessToken });
    const cases: [Record<string, unknown>, string][] = [
      [{ url: 'ftp://example.com/x', events: ['task.completed'] }, 'ftp'],
      [{ url: 'not a url', events: ['task.completed'] }, 'garbage url'],
      [{ url: 'http://example.com/x', events: ['task.exploded'] }, 'unknown event'],
      [{ url: 'http://example.com/x', events: [] }, 'no events'],
      [{ events: ['task.completed'] }, 'missing url'],
      [{ url: 'http://example.com/x', events: 'task.completed' }, 'events not a list'],
      [{ url: 'http://example.com/x', events: ['task.completed'], secret: 'short' }, 'short secret'],
    ];
    for (const [body, label] of cases) {
      assertFaceError(await s.request('POST', '/api/v1/webhooks', { token: alice.accessToken, body }), 'tasks', 'VALIDATION_ERROR', label);
    }
    const unknown = await s.request('POST', '/api/v1/webhooks', { token: alice.accessToken, body: { url: 'http://example.com/x', events: ['task.exploded'] } });
    assert.ok(unknown.body.error.details.allowed_values.includes('task.completed'));
    const afterList = await s.request('GET', '/api/v1/webhooks', { token: alice.accessToken });
    assert.equal(afterList.body.total, before.body.total);
  });

  test('list, update and delete; HeliosDB sees only its own face and wraps in its envelope', async () => {
    const r = await startReceiver();
    try {
      const helix = await subscribe(bob.accessToken, r.url, ['task.*'], { description: 'ci' });
      const helios = await s.request('POST', '/v1/webhooks', { token: bob.accessToken, body: { url: r.url, events: ['database.created', 'branch.merged', 'query.slow'], secret: 'your-webhook-secret' } });
      assert.equal(helios.status, 201);
      assert.equal(helios.body.success, true);
      assert.match(helios.body.data.id, /^wh_/);
      assert.equal(typeof helios.body.meta.request_id, 'string');

      const list = await s.request('GET', '/api/v1/webhooks?limit=10', { token: bob.accessToken });
      assert.deepEqual(list.body.webhooks.map((w: { id: string }) => w.id), [helix.id]);
      assert.equal(list.body.total, 1);
      const hlist = await s.request('GET', '/v1/webhooks', { token: bob.accessToken });
      assert.deepEqual(hlist.body.data.webhooks.map((w: { id: string }) => w.id), [helios.body.data.id]);

      const upd = await s.request('PUT', `/api/v1/webhooks/${helix.id}`, { token: bob.accessToken, body: { active: false, events: ['task.failed'] } });
      assert.equal(upd.status, 200);
      assert.equal(upd.body.active, false);
      assert.deepEqual(upd.body.events, ['task.failed']);
      assertFaceError(await s.request('PUT', `/api/v1/webhooks/${helix.id}`, { token: bob.accessToken, body: {} }), 'tasks', 'VALIDATION_ERROR', 'empty update');

      const del = await s.request('DELETE', `/api/v1/webhooks/${helix.id}`, { token: bob.accessToken });
      assert.equal(del.status, 204);
      assert.equal(del.text, '');
      assertFaceError(await s.request('GET', `/api/v1/webhooks/${helix.id}`, { token: bob.accessToken }), 'tasks', 'NOT_FOUND');
      const hdel = await s.request('DELETE', `/v1/webhooks/${helios.body.data.id}`, { token: bob.accessToken });
      assert.equal(hdel.status, 200);
      assert.deepEqual(hdel.body.data, { id: helios.body.data.id, deleted: true });
    } finally {
      await r.close();
    }
  });

  test("another user's webhook is 404 on every route, and is left untouched", async () => {
    const r = await startReceiver();
    try {
      const mine = await subscribe(alice.accessToken, r.url, ['task.completed']);
      const ping = await s.request('POST', `/api/v1/webhooks/${mine.id}/ping`, { token: alice.accessToken });
      assert.equal(ping.status, 202);
      const routes: [string, string, unknown?][] = [
        ['GET', `/api/v1/webhooks/${mine.id}`],
        ['PUT', `/api/v1/webhooks/${mine.id}`, { active: false }],
        ['DELETE', `/api/v1/webhooks/${mine.id}`],
        ['GET', `/api/v1/webhooks/${mine.id}/deliveries`],
        ['POST', `/api/v1/webhooks/${mine.id}/deliveries/${ping.body.id}/redeliver`],
        ['POST', `/api/v1/webhooks/${mine.id}/ping`],
      ];
      for (const [method, url, body] of routes) {
        assertFaceError(await s.request(method, url, { token: bob.accessToken, body }), 'tasks', 'NOT_FOUND', `${method} ${url}`);
      }
      for (const [method, url] of [['GET', `/v1/webhooks/${mine.id}`], ['DELETE', `/v1/webhooks/${mine.id}`]] as const) {
        assertFaceError(await s.request(method, url, { token: bob.accessToken }), 'databases', 'NOT_FOUND', `${method} ${url}`);
      }
      const still = await s.request('GET', `/api/v1/webhooks/${mine.id}`, { token: alice.accessToken });
      assert.equal(still.status, 200);
      assert.equal(still.body.active, true);
      assertFaceError(await s.request('GET', '/api/v1/webhooks'), 'tasks', 'AUTH_REQUIRED', 'no token');
    } finally {
      await r.close();
    }
  });
});

describe('delivery', () => {
  test('an event reaches the receiver in HelixCode shape, signed three ways, and a tampered body fails', async () => {
    const r = await startReceiver();
    const user = await registerUser(s);
    try {
      const hook = await subscribe(user.accessToken, r.url, ['task.*']);
      await emit(user.id, 'database.created', { database_id: 'db_1', name: 'x' });
      await emit(user.id, 'task.completed', { task_id: 'task-456', status: 'completed', result: { success: true, output: 'done' } });
      const [got] = await r.waitFor(1);
      assert.ok(got);
      const body = JSON.parse(got.body);
      assert.equal(body.event, 'task.completed');
      assert.deepEqual(body.data, { task_id: 'task-456', status: 'completed', result: { success: true, output: 'done' } });
      assert.ok(!Number.isNaN(Date.parse(body.timestamp)));
      const secret = hook.secret!;
      const key = Buffer.from(secret.slice(6), 'base64');
      const unsigned = JSON.stringify({ event: body.event, timestamp: body.timestamp, data: body.data });
      assert.equal(body.signature, `sha256=${createHmac('sha256', key).update(unsigned).digest('hex')}`);
      assert.equal(got.headers['x-signature-256'], `sha256=${createHmac('sha256', key).update(got.body).digest('hex')}`);
      assert.match(String(got.headers['webhook-id']), /^msg_/);
      assert.match(String(got.headers['user-agent']), /Mainspring/);
      assert.equal(verify(secret, got.headers, got.body), true);
      assert.equal(verify(secret, got.headers, got.body.replace('task-456', 'task-457')), false, 'tampered body');
      assert.equal(verify('whsec_' + Buffer.from('wrong').toString('base64'), got.headers, got.body), false, 'wrong secret');
      await new Promise((res) => setTimeout(res, 300));
      assert.equal(r.received.length, 1, 'database.created does not match task.*');
      const d = await waitForDelivery(user.accessToken, hook.id, (x) => x.status === 'succeeded');
      assert.equal(d.attempts, 1);
      assert.equal(d.attempt_log[0].status_code, 200);
      assert.equal(d.attempt_log[0].response, 'ok');
    } finally {
      await r.close();
    }
  });

  test('HeliosDB deliveries carry {id,event,timestamp,data}; a chosen secret signs as UTF-8', async () => {
    const r = await startReceiver();
    const user = await registerUser(s);
    try {
      const res = await s.request('POST', '/v1/webhooks', { token: user.accessToken, body: { url: r.url, events: ['database.created'], secret: 'your-webhook-secret' } });
      assert.equal(res.status, 201);
      const eventId = await emit(user.id, 'database.created', { database_id: 'db_9', name: 'my-app-db' });
      const [got] = await r.waitFor(1);
      assert.deepEqual(JSON.parse(got!.body), { id: eventId, event: 'database.created', timestamp: JSON.parse(got!.body).timestamp, data: { database_id: 'db_9', name: 'my-app-db' } });
      assert.equal(verify('your-webhook-secret', got!.headers, got!.body), true);
    } finally {
      await r.close();
    }
  });

  test('failures are retried with the same webhook-id until 2xx; every attempt is logged', async () => {
    const r = await startReceiver((_req, i) => (i < 2 ? { status: 500, body: `boom ${i}` } : { status: 202, body: 'accepted' }));
    const user = await registerUser(s);
    try {
      const hook = await subscribe(user.accessToken, r.url, ['task.failed']);
      await emit(user.id, 'task.failed', { task_id: 't1', status: 'failed', error: 'x' });
      const got = await r.waitFor(3);
      const ids = new Set(got.map((g) => g.headers['webhook-id']));
      assert.equal(ids.size, 1, 'same webhook-id on every retry');
      assert.equal(new Set(got.map((g) => g.body)).size, 1, 'identical body on every retry');
      const d = await waitForDelivery(user.accessToken, hook.id, (x) => x.status === 'succeeded');
      assert.equal(d.attempts, 3);
      assert.deepEqual(d.attempt_log.map((a: { status_code: number }) => a.status_code), [500, 500, 202]);
      assert.equal(d.attempt_log[0].response, 'boom 0');
      assert.ok(d.attempt_log.every((a: { duration_ms: number }) => a.duration_ms >= 0));
      assert.ok(got[1]!.at - got[0]!.at >= 150, 'backoff between attempts');
    } finally {
      await r.close();
    }
  });

  test('retries stop after the schedule; redeliver sends again with the same id', async () => {
    const r = await startReceiver(() => ({ status: 500 }));
    const user = await registerUser(s);
    try {
      const hook = await subscribe(user.accessToken, r.url, ['task.failed']);
      await emit(user.id, 'task.failed', { task_id: 't2', status: 'failed' });
      const d = await waitForDelivery(user.accessToken, hook.id, (x) => x.status === 'failed');
      assert.equal(d.attempts, 4, 'three retries after the first attempt');
      assert.equal(r.received.length, 4);
      r.respond = () => ({ status: 200 });
      const re = await s.request('POST', `/api/v1/webhooks/${hook.id}/deliveries/${d.id}/redeliver`, { token: user.accessToken });
      assert.equal(re.status, 202);
      assert.equal(re.body.status, 'pending');
      await r.waitFor(5);
      assert.equal(r.received[4]!.headers['webhook-id'], d.id);
      await waitForDelivery(user.accessToken, hook.id, (x) => x.status === 'succeeded');
      assertFaceError(await s.request('POST', `/api/v1/webhooks/${hook.id}/deliveries/msg_nope/redeliver`, { token: user.accessToken }), 'tasks', 'NOT_FOUND');
    } finally {
      await r.close();
    }
  });

  test('410 Gone disables the subscription; redirects are not followed', async () => {
    const gone = await startReceiver(() => ({ status: 410 }));
    const redirect = await startReceiver(() => ({ status: 302, headers: { location: 'http://127.0.0.1:1/elsewhere' } }));
    const user = await registerUser(s);
    try {
      const g = await subscribe(user.accessToken, gone.url, ['task.completed']);
      const rd = await subscribe(user.accessToken, redirect.url, ['task.completed']);
      await emit(user.id, 'task.completed', { task_id: 't3', status: 'completed' });
      await waitForDelivery(user.accessToken, g.id, (x) => x.status === 'failed');
      const sub = await s.request('GET', `/api/v1/webhooks/${g.id}`, { token: user.accessToken });
      assert.equal(sub.body.active, false);
      assert.match(sub.body.disabled_reason, /410/);
      await emit(user.id, 'task.completed', { task_id: 't4', status: 'completed' });
      const rdd = await waitForDelivery(user.accessToken, rd.id, (x) => x.attempt_log.length >= 1);
      assert.notEqual(rdd.status, 'succeeded');
      assert.equal(rdd.attempt_log[0].status_code, 302);
      assert.match(rdd.attempt_log[0].error, /redirect/);
      await new Promise((res) => setTimeout(res, 300));
      assert.equal(gone.received.length, 1, 'no delivery to a disabled subscription');
      assertFaceError(await s.request('POST', `/api/v1/webhooks/${g.id}/ping`, { token: user.accessToken }).then(async (p) => {
        assert.equal(p.status, 202);
        return s.request('POST', `/api/v1/webhooks/${g.id}/deliveries/${p.body.id}/redeliver`, { token: user.accessToken });
      }), 'tasks', 'CONFLICT', 'redeliver to a disabled webhook');
    } finally {
      await gone.close();
      await redirect.close();
    }
  });

  test('429 with Retry-After waits that long before the next attempt', async () => {
    const r = await startReceiver((_req, i) => (i === 0 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 200 }));
    const user = await registerUser(s);
    try {
      await subscribe(user.accessToken, r.url, ['task.completed']);
      await emit(user.id, 'task.completed', { task_id: 't5', status: 'completed' });
      const got = await r.waitFor(2, 8000);
      assert.ok(got[1]!.at - got[0]!.at >= 950, `waited ${got[1]!.at - got[0]!.at} ms`);
    } finally {
      await r.close();
    }
  });

  test('an event in a rolled-back transaction is never delivered (outbox)', async () => {
    const r = await startReceiver();
    const user = await registerUser(s);
    try {
      await subscribe(user.accessToken, r.url, ['task.completed']);
      await assert.rejects(
        s.ctx.db.transaction(async (tx) => {
          await emitEvent(tx, user.id, 'task.completed', { task_id: 'ghost', status: 'completed' });
          throw new Error('change failed');
        }),
        /change failed/,
      );
      await emit(user.id, 'task.completed', { task_id: 'real', status: 'completed' });
      await r.waitFor(1);
      await new Promise((res) => setTimeout(res, 300));
      assert.deepEqual(r.received.map((g) => JSON.parse(g.body).data.task_id), ['real']);
    } finally {
      await r.close();
    }
  });
});
