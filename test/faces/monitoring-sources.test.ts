/**
 * Helomatic monitoring sources end to end: CRUD in the document's shapes, validation and quotas,
 * checks against a local site (extraction, changes, conditional GET, retries, time-outs, oversize and
 * refused redirects), signed `data_changed` webhooks through the delivery engine, schedules, pause,
 * delete, history and retention, and another user's access (404 on every route).
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startReceiver, type Receiver } from '../helpers/receiver.ts';
import { registerUser, startTestServer, type TestServer } from '../helpers/server.ts';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** A small site whose pages the tests change between checks. */
async function startSite(): Promise<{ url: string; routes: Map<string, Handler>; hits: Map<string, number>; seen: IncomingMessage[]; close(): Promise<void> }> {
  const routes = new Map<string, Handler>();
  const hits = new Map<string, number>();
  const seen: IncomingMessage[] = [];
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    hits.set(path, (hits.get(path) ?? 0) + 1);
    seen.push(req);
    const h = routes.get(path);
    if (!h) {
      res.writeHead(404).end('not found');
      return;
    }
    h(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    routes,
    hits,
    seen,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

function productPage(price: string, stock: string): string {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Widget Pro - Example Store</title>
<script>window.__state = {"price": "<span class='price-current'>0.00</span>"};</script></head>
<BODY>
  <nav><ul><li><a href=/>Home<li><a href=/shop>Shop</ul></nav>
  <div class="product" id=main>
    <h1 class="title">  Widget
        Pro  </h1>
    <p>Our best widget&nbsp;yet.
    <div class="price-box"><span class="price-current" data-price="${price}">$${price}</span></div>
    <span class="stock-status">${stock}</span>
    <table><tr><td>Color<td>Blue</tr><tr><td>Weight<td>1&nbsp;kg</tr></table>
  </div>
</BODY></html>`;
}

const EXTRACTORS = [
  { type: 'css', selector: '.price-current', name: 'current_price', attribute: 'data-price' },
  { type: 'xpath', selector: "//span[@class='stock-status']/text()", name: 'stock_status' },
  { type: 'css', selector: 'h1.title', name: 'title' },
];

function verifyStandardSignature(secret: string, headers: Record<string, unknown>, body: string): boolean {
  const key = secret.startsWith('whsec_') ? Buffer.from(secret.slice(6), 'base64') : Buffer.from(secret);
  const expected = createHmac('sha256', key).update(`${headers['webhook-id']}.${headers['webhook-timestamp']}.${body}`).digest('base64');
  return String(headers['webhook-signature']).split(' ').includes(`v1,${expected}`);
}

async function until<T>(fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('Helomatic monitoring sources', () => {
  let s: TestServer;
  let site: Awaited<ReturnType<typeof startSite>>;
  let hooks: Receiver;
  let alice: Awaited<ReturnType<typeof registerUser>>;
  let bob: Awaited<ReturnType<typeof registerUser>>;
  let price = '29.99';
  let stock = 'In stock';

  before(async () => {
    site = await startSite();
    site.routes.set('/product', (_req, res) => res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(productPage(price, stock)));
    hooks = await startReceiver();
    s = await startTestServer({
      ALLOW_PRIVATE_URLS: 'true',
      MONITOR_MIN_INTERVAL_MINUTES: 'free=0',
      MONITOR_MAX_SOURCES: 'free=100',
      MONITOR_RETRY_BASE_MS: '20',
      MONITOR_HISTORY_KEEP: '5',
      WEBHOOK_POLL_INTERVAL_MS: '20',
    });
    s.ctx.deliveries.start();
    alice = await registerUser(s);
    bob = await registerUser(s);
  });
  after(async () => {
    await s.close();
    await site.close();
    await hooks.close();
  });

  const create = (body: Record<string, unknown>, token = alice.accessToken) => s.request('POST', '/api/monitoring/sources', { token, body });

  test('create returns the document\'s shape, and the source is listed, fetched and counted', async () => {
    const res = await create({
      name: 'Competitor Price Tracker',
      url: `${site.url}/product`,
      schedule: 'daily',
      extractors: EXTRACTORS,
      webhookUrl: hooks.url,
      webhookEvents: ['data_changed', 'error'],
      retryAttempts: 3,
      timeout: 30000,
      tags: ['ecommerce', 'pricing', 'competitor'],
    });
    assert.equal(res.status, 201, res.text);
    assert.equal(res.body.success, true);
    assert.equal(res.body.message, 'Monitoring source created successfully');
    assert.ok(Date.parse(res.body.timestamp));
    const src = res.body.data.source;
    assert.match(src.id, /^mon_/);
    assert.equal(src.status, 'active');
    assert.equal(src.schedule, 'daily');
    assert.equal(src.webhook_url, hooks.url);
    assert.deepEqual(src.webhook_events, ['data_changed', 'error']);
    assert.deepEqual(src.extractors[0], { type: 'css', selector: '.price-current', name: 'current_price', attribute: 'data-price', last_value: null });
    const next = Date.parse(src.next_check);
    assert.ok(next > Date.now() + 23 * 3600_000 && next < Date.now() + 25 * 3600_000, `next_check ${src.next_check}`);
    assert.match(res.body.data.webhook_secret, /^whsec_/);

    const got = await s.request('GET', `/api/monitoring/sources/${src.id}`, { token: alice.accessToken });
    assert.equal(got.status, 200);
    assert.equal(got.body.data.source.name, 'Competitor Price Tracker');

    const list = await s.request('GET', '/api/monitoring/sources?tag=pricing', { token: alice.accessToken });
    assert.equal(list.status, 200);
    assert.ok(list.body.data.sources.some((x: { id: string }) => x.id === src.id));
    assert.deepEqual(Object.keys(list.body.data.pagination).sort(), ['has_more', 'limit', 'page', 'total']);
    const none = await s.request('GET', '/api/monitoring/sources?tag=pricing', { token: bob.accessToken });
    assert.equal(none.body.data.pagination.total, 0);
  });

  test('pagination, status and search filters', async () => {
    const owner = await registerUser(s);
    for (let i = 0; i < 5; i++) {
      const r = await create({ name: `Page ${i}`, url: `${site.url}/p${i}`, schedule: 'hourly', extractors: [{ type: 'css', selector: 'h1', name: 'h' }] }, owner.accessToken);
      assert.equal(r.status, 201);
    }
    const p1 = await s.request('GET', '/api/monitoring/sources?page=1&limit=2', { token: owner.accessToken });
    assert.deepEqual(p1.body.data.pagination, { page: 1, limit: 2, total: 5, has_more: true });
    const p3 = await s.request('GET', '/api/monitoring/sources?page=3&limit=2', { token: owner.accessToken });
    assert.equal(p3.body.data.sources.length, 1);
    assert.equal(p3.body.data.pagination.has_more, false);
    const search = await s.request('GET', '/api/monitoring/sources?search=Page%203', { token: owner.accessToken });
    assert.deepEqual(search.body.data.sources.map((x: { name: string }) => x.name), ['Page 3']);
    const first = p1.body.data.sources[0].id;
    await s.request('POST', `/api/monitoring/sources/${first}/pause`, { token: owner.accessToken });
    const paused = await s.request('GET', '/api/monitoring/sources?status=paused', { token: owner.accessToken });
    assert.deepEqual(paused.body.data.sources.map((x: { id: string }) => x.id), [first]);
    assert.equal((await s.request('GET', '/api/monitoring/sources?limit=101', { token: owner.accessToken })).status, 400);
  });

  test('check now extracts every value; a change fires exactly one signed data_changed webhook; no change fires none', async () => {
    price = '29.99';
    stock = 'In stock';
    const res = await create({ name: 'Widget', url: `${site.url}/product`, schedule: 'daily', extractors: EXTRACTORS, webhookUrl: hooks.url, webhookEvents: ['data_changed'] });
    const id = res.body.data.source.id;
    const secret = res.body.data.webhook_secret as string;
    const first = await s.request('POST', `/api/monitoring/sources/${id}/check`, { token: alice.accessToken });
    assert.equal(first.status, 200, first.text);
    const c1 = first.body.data.check;
    assert.equal(c1.success, true);
    assert.equal(c1.http_status, 200);
    assert.deepEqual(c1.values, { current_price: '29.99', stock_status: 'In stock', title: 'Widget Pro' });
    assert.equal(c1.changed, false, 'the first check is the baseline');

    const before = hooks.received.length;
    const same = await s.request('POST', `/api/monitoring/sources/${id}/check`, { token: alice.accessToken });
    assert.equal(same.body.data.check.changed, false);

    price = '24.99';
    const changed = await s.request('POST', `/api/monitoring/sources/${id}/check`, { token: alice.accessToken });
    assert.equal(changed.body.data.check.changed, true);
    assert.deepEqual(changed.body.data.check.changes, [{ extractor: 'current_price', old: '29.99', new: '24.99' }]);

    const [hook] = (await hooks.waitFor(before + 1)).slice(before);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(hooks.received.length, before + 1, 'exactly one webhook: none for the unchanged check');
    assert.ok(verifyStandardSignature(secret, hook!.headers, hook!.body), 'valid Standard Webhooks signature');
    const payload = JSON.parse(hook!.body);
    assert.equal(payload.event, 'data_changed');
    assert.equal(payload.data.source_id, id);
    assert.equal(payload.data.name, 'Widget');
    assert.equal(payload.data.url, `${site.url}/product`);
    assert.deepEqual(payload.data.changes, [{ extractor: 'current_price', old: '29.99', new: '24.99' }]);
    assert.ok(Date.parse(payload.data.checked_at));

    const listed = await s.request('GET', `/api/monitoring/sources/${id}`, { token: alice.accessToken });
    assert.equal(listed.body.data.source.extractors[0].last_value, '24.99');
    assert.ok(listed.body.data.source.last_check);

    const history = await s.request('GET', `/api/monitoring/sources/${id}/history?limit=2`, { token: alice.accessToken });
    assert.equal(history.status, 200);
    assert.equal(history.body.data.pagination.total, 3);
    assert.equal(history.body.data.history.length, 2);
    assert.equal(history.body.data.history[0].changed, true);
    assert.equal(history.body.data.history[0].trigger, 'manual');
  });

  test('JSONPath on a JSON API and a regex with a capture group, with multiple values', async () => {
    site.routes.set('/api/items', (_req, res) =>
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ store: { items: [{ sku: 'A1', price: 9.5 }, { sku: 'B2', price: 12 }] }, updated: '2026-11-23' })),
    );
    const res = await create({
      name: 'API',
      url: `${site.url}/api/items`,
      schedule: 'daily',
      extractors: [
        { type: 'jsonpath', selector: '$.store.items[*].sku', name: 'skus', multiple: true },
        { type: 'jsonpath', selector: '$.store.items[?@.price > 10].price', name: 'expensive' },
        { type: 'regex', selector: '"updated":"(\\d{4}-\\d{2}-\\d{2})"', name: 'updated' },
      ],
    });
    assert.equal(res.status, 201, res.text);
    const check = await s.request('POST', `/api/monitoring/sources/${res.body.data.source.id}/check`, { token: alice.accessToken });
    assert.deepEqual(check.body.data.check.values, { skus: ['A1', 'B2'], expensive: 12, updated: '2026-11-23' });
  });

  test('a selector that matches nothing gives null and a warning, not a failure', async () => {
    const res = await create({ name: 'Missing', url: `${site.url}/product`, schedule: 'daily', extractors: [{ type: 'css', selector: '.no-such-thing', name: 'gone' }] });
    const check = await s.request('POST', `/api/monitoring/sources/${res.body.data.source.id}/check`, { token: alice.accessToken });
    assert.equal(check.body.data.check.success, true);
    assert.deepEqual(check.body.data.check.values, { gone: null });
    assert.equal(check.body.data.check.warnings.length, 1);
    assert.match(check.body.data.check.warnings[0], /^gone: /);
  });

  test('conditional GET: the ETag is sent back and a 304 keeps the values', async () => {
    site.routes.set('/etag', (req, res) => {
      if (req.headers['if-none-match'] === '"v1"') return void res.writeHead(304).end();
      res.writeHead(200, { 'content-type': 'text/html', etag: '"v1"' }).end('<p class=v>one</p>');
    });
    const res = await create({ name: 'ETag', url: `${site.url}/etag`, schedule: 'daily', extractors: [{ type: 'css', selector: '.v', name: 'v' }] });
    const id = res.body.data.source.id;
    await s.request('POST', `/api/monitoring/sources/${id}/check`, { token: alice.accessToken });
    const second = await s.request('POST', `/api/monitoring/sources/${id}/check`, { token: alice.accessToken });
    assert.equal(second.body.data.check.http_status, 304);
    assert.equal(second.body.data.check.not_modified, true);
    assert.deepEqual(second.body.data.check.values, { v: 'one' });
    assert.equal(site.seen.filter((r) => r.url === '/etag').at(-1)!.headers['if-none-match'], '"v1"');
  });

  test('failures are retried, then an error webhook fires and the source is in error', async () => {
    let n = 0;
    site.routes.set('/flaky', (_req, res) => {
      n++;
      res.writeHead(503).end('down');
    });
    const res = await create({ name: 'Flaky', url: `${site.url}/flaky`, schedule: 'daily', retryAttempts: 2, extractors: [{ type: 'css', selector: 'p', name: 'p' }], webhookUrl: hooks.url, webhookEvents: ['error'] });
    const id = res.body.data.source.id;
    const before = hooks.received.length;
    const check = await s.request('POST', `/api/monitoring/sources/${id}/check`, { token: alice.accessToken });
    assert.equal(check.body.data.check.success, false);
    assert.equal(check.body.data.check.attempts, 3);
    assert.equal(n, 3);
    assert.match(check.body.data.check.error, /503/);
    const hook = (await hooks.waitFor(before + 1)).at(-1)!;
    const payload = JSON.parse(hook.body);
    assert.equal(payload.event, 'error');
    assert.equal(payload.data.source_id, id);
    assert.equal(payload.data.consecutive_failures, 1);
    const src = await s.request('GET', `/api/monitoring/sources/${id}`, { token: alice.accessToken });
    assert.equal(src.body.data.source.status, 'error');
    assert.equal(src.body.data.source.consecutive_failures, 1);
    // Recovers on the next good check.
    site.routes.set('/flaky', (_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<p>ok</p>'));
    await s.request('POST', `/api/monitoring/sources/${id}/check`, { token: alice.accessToken });
    const again = await s.request('GET', `/api/monitoring/sources/${id}`, { token: alice.accessToken });
    assert.equal(again.body.data.source.status, 'active');
    assert.equal(again.body.data.source.consecutive_failures, 0);
  });

  test('timeout, oversize body and a 404 are reported as failed checks, not server errors', async () => {
    site.routes.set('/slow', (_req, res) => void setTimeout(() => res.writeHead(200).end('<p>late</p>'), 3000));
    site.routes.set('/huge', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(Buffer.alloc(6 * 1024 * 1024, 'a'));
    });
    const slow = await create({ name: 'Slow', url: `${site.url}/slow`, schedule: 'daily', timeout: 1000, retryAttempts: 0, extractors: [{ type: 'css', selector: 'p', name: 'p' }] });
    const t0 = Date.now();
    const c1 = await s.request('POST', `/api/monitoring/sources/${slow.body.data.source.id}/check`, { token: alice.accessToken });
    assert.equal(c1.status, 200);
    assert.equal(c1.body.data.check.success, false);
    assert.match(c1.body.data.check.error, /did not complete within 1000 ms/);
    assert.ok(Date.now() - t0 < 2500);

    const huge = await create({ name: 'Huge', url: `${site.url}/huge`, schedule: 'daily', retryAttempts: 2, extractors: [{ type: 'css', selector: 'p', name: 'p' }] });
    const c2 = await s.request('POST', `/api/monitoring/sources/${huge.body.data.source.id}/check`, { token: alice.accessToken });
    assert.equal(c2.body.data.check.success, false);
    assert.equal(c2.body.data.check.attempts, 1, 'an oversize body is not retried');
    assert.match(c2.body.data.check.error, /large|bytes|limit/i);

    const missing = await create({ name: 'Gone', url: `${site.url}/does-not-exist`, schedule: 'daily', extractors: [{ type: 'css', selector: 'p', name: 'p' }] });
    const c3 = await s.request('POST', `/api/monitoring/sources/${missing.body.data.source.id}/check`, { token: alice.accessToken });
    assert.equal(c3.body.data.check.http_status, 404);
    assert.equal(c3.body.data.check.attempts, 1);
  });

  test('a scheduled source is checked on time; pause stops it; resume restarts it', async () => {
    s.ctx.scheduler.start();
    s.ctx.monitorEngine.start();
    site.routes.set('/tick', (_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end(`<p>${Date.now()}</p>`));
    const res = await create({ name: 'Tick', url: `${site.url}/tick`, schedule: '*/2 * * * * *', extractors: [{ type: 'css', selector: 'p', name: 'p' }] });
    const id = res.body.data.source.id;
    const history = async () => (await s.request('GET', `/api/monitoring/sources/${id}/history`, { token: alice.accessToken })).body.data;
    const h = await until(async () => ((await history()).pagination.total >= 2 ? await history() : undefined), 15_000, 'two scheduled checks');
    assert.ok(h.history.every((c: { trigger: string; success: boolean }) => c.trigger === 'schedule' && c.success));
    const lagP99 = await s.request('GET', '/metrics');
    assert.match(lagP99.text, /monitor_check_start_lag_seconds_count [1-9]/);

    await s.request('POST', `/api/monitoring/sources/${id}/pause`, { token: alice.accessToken });
    const pausedAt = (await history()).pagination.total;
    await new Promise((r) => setTimeout(r, 4500));
    const afterPause = (await history()).pagination.total;
    assert.ok(afterPause <= pausedAt + 1, `checks went on while paused: ${pausedAt} → ${afterPause}`);
    const src = await s.request('GET', `/api/monitoring/sources/${id}`, { token: alice.accessToken });
    assert.equal(src.body.data.source.status, 'paused');
    assert.equal(src.body.data.source.next_check, null);

    await s.request('POST', `/api/monitoring/sources/${id}/resume`, { token: alice.accessToken });
    await until(async () => (await history()).pagination.total > afterPause, 10_000, 'a check after resume');
  });

  test('every_1_minutes: when its time comes the check runs within seconds, and next_check moves a minute on', async () => {
    s.ctx.scheduler.start();
    s.ctx.monitorEngine.start();
    const res = await create({ name: 'Minutely', url: `${site.url}/product`, schedule: 'every_1_minutes', extractors: EXTRACTORS });
    const id = res.body.data.source.id;
    const first = Date.parse(res.body.data.source.next_check);
    assert.ok(first > Date.now() + 50_000 && first <= Date.now() + 60_000 + 7_000, `next_check ${res.body.data.source.next_check}`);
    // Bring the due time forward instead of waiting a minute.
    const { rows } = await s.ctx.db.query<{ due: Date }>(
      `UPDATE schedules SET next_slot_at = now() + interval '1.000123 seconds', next_run_at = now() + interval '1.000123 seconds'
        WHERE entity_type = 'monitor_source' AND entity_id = $1 RETURNING next_run_at AS due`,
      [id],
    );
    const due = rows[0]!.due;
    const entry = await until(async () => {
      const h = await s.request('GET', `/api/monitoring/sources/${id}/history`, { token: alice.accessToken });
      return h.body.data.history[0];
    }, 10_000, 'the scheduled check');
    assert.equal(entry.trigger, 'schedule');
    assert.ok(entry.due_at, 'a scheduled check records when it was due');
    const lag = Date.parse(entry.started_at) - Date.parse(entry.due_at);
    assert.ok(lag >= 0 && lag < 2000, `started ${lag} ms after it was due`);
    await new Promise((r) => setTimeout(r, 1500));
    const after = await s.request('GET', `/api/monitoring/sources/${id}/history`, { token: alice.accessToken });
    assert.equal(after.body.data.pagination.total, 1, 'one firing, one check');
    const pending = await s.ctx.db.query<{ check_due_at: Date | null }>('SELECT check_due_at FROM monitor_sources WHERE id = $1', [id]);
    assert.equal(pending.rows[0]!.check_due_at, null);
    const src = await s.request('GET', `/api/monitoring/sources/${id}`, { token: alice.accessToken });
    const next = Date.parse(src.body.data.source.next_check);
    assert.ok(next - due.getTime() >= 59_000 && next - due.getTime() <= 67_000, `next ${src.body.data.source.next_check}`);
  });

  test('delete removes the source, its schedule and its history', async () => {
    const res = await create({ name: 'Doomed', url: `${site.url}/product`, schedule: 'hourly', extractors: EXTRACTORS, webhookUrl: hooks.url });
    const id = res.body.data.source.id;
    await s.request('POST', `/api/monitoring/sources/${id}/check`, { token: alice.accessToken });
    const del = await s.request('DELETE', `/api/monitoring/sources/${id}`, { token: alice.accessToken });
    assert.equal(del.status, 200);
    assert.equal(del.body.message, 'Monitoring source deleted successfully');
    assert.equal((await s.request('GET', `/api/monitoring/sources/${id}`, { token: alice.accessToken })).status, 404);
    const sched = await s.ctx.db.query(`SELECT 1 FROM schedules WHERE entity_type = 'monitor_source' AND entity_id = $1`, [id]);
    assert.equal(sched.rows.length, 0);
    const checks = await s.ctx.db.query('SELECT 1 FROM monitor_checks WHERE source_id = $1', [id]);
    assert.equal(checks.rows.length, 0);
    const subs = await s.ctx.db.query('SELECT 1 FROM webhook_subscriptions WHERE entity_id = $1', [id]);
    assert.equal(subs.rows.length, 0);
  });

  test('a source deleted while it is being checked: the check answers 404, nothing is left behind', async () => {
    site.routes.set('/slow-ok', (_req, res) => void setTimeout(() => res.writeHead(200, { 'content-type': 'text/html' }).end('<p>done</p>'), 800));
    const res = await create({ name: 'Vanishing', url: `${site.url}/slow-ok`, schedule: 'daily', extractors: [{ type: 'css', selector: 'p', name: 'p' }] });
    const id = res.body.data.source.id;
    const checking = s.request('POST', `/api/monitoring/sources/${id}/check`, { token: alice.accessToken });
    await new Promise((r) => setTimeout(r, 200));
    assert.equal((await s.request('DELETE', `/api/monitoring/sources/${id}`, { token: alice.accessToken })).status, 200);
    const check = await checking;
    assert.equal(check.status, 404, check.text);
    assert.equal(check.body.code, 'NOT_FOUND');
    const left = await s.ctx.db.query('SELECT 1 FROM monitor_checks WHERE source_id = $1', [id]);
    assert.equal(left.rows.length, 0);
  });

  test('a second check while one is running is a 409 CONFLICT', async () => {
    site.routes.set('/slow-ok2', (_req, res) => void setTimeout(() => res.writeHead(200, { 'content-type': 'text/html' }).end('<p>done</p>'), 600));
    const res = await create({ name: 'Busy', url: `${site.url}/slow-ok2`, schedule: 'daily', extractors: [{ type: 'css', selector: 'p', name: 'p' }] });
    const id = res.body.data.source.id;
    const first = s.request('POST', `/api/monitoring/sources/${id}/check`, { token: alice.accessToken });
    await new Promise((r) => setTimeout(r, 150));
    const second = await s.request('POST', `/api/monitoring/sources/${id}/check`, { token: alice.accessToken });
    assert.equal(second.status, 409);
    assert.equal(second.body.code, 'CONFLICT');
    assert.equal((await first).status, 200);
  });

  test('history keeps the newest N entries', async () => {
    const res = await create({ name: 'Keep', url: `${site.url}/product`, schedule: 'daily', extractors: EXTRACTORS });
    const id = res.body.data.source.id;
    for (let i = 0; i < 7; i++) await s.request('POST', `/api/monitoring/sources/${id}/check`, { token: alice.accessToken });
    const h = await s.request('GET', `/api/monitoring/sources/${id}/history`, { token: alice.accessToken });
    assert.equal(h.body.data.pagination.total, 5);
  });

  test('PUT replaces and PATCH changes; a new schedule reschedules, a new URL starts a new baseline', async () => {
    const res = await create({ name: 'Edit me', url: `${site.url}/product`, schedule: 'daily', extractors: EXTRACTORS });
    const id = res.body.data.source.id;
    await s.request('POST', `/api/monitoring/sources/${id}/check`, { token: alice.accessToken });
    const patched = await s.request('PATCH', `/api/monitoring/sources/${id}`, { token: alice.accessToken, body: { name: 'Edited', schedule: 'hourly', tags: ['x'] } });
    assert.equal(patched.status, 200, patched.text);
    assert.equal(patched.body.data.source.name, 'Edited');
    assert.equal(patched.body.data.source.schedule, 'hourly');
    const next = Date.parse(patched.body.data.source.next_check);
    assert.ok(next < Date.now() + 3600_000 + 301_000, `rescheduled hourly: ${patched.body.data.source.next_check}`);
    assert.equal(patched.body.data.source.extractors[0].last_value, price, 'same URL keeps the baseline');
    const put = await s.request('PUT', `/api/monitoring/sources/${id}`, {
      token: alice.accessToken,
      body: { name: 'Replaced', url: `${site.url}/etag`, schedule: 'weekly', extractors: [{ type: 'css', selector: '.v', name: 'v' }] },
    });
    assert.equal(put.status, 200, put.text);
    assert.equal(put.body.data.source.name, 'Replaced');
    assert.deepEqual(put.body.data.source.tags, ['x'], 'PUT without tags keeps them');
    assert.equal(put.body.data.source.extractors[0].last_value, null, 'a new URL has no baseline');
    const bad = await s.request('PATCH', `/api/monitoring/sources/${id}`, { token: alice.accessToken, body: { schedule: 'sometimes' } });
    assert.equal(bad.status, 400);
    const still = await s.request('GET', `/api/monitoring/sources/${id}`, { token: alice.accessToken });
    assert.equal(still.body.data.source.schedule, 'weekly', 'a refused change keeps the stored source');
  });

  test('invalid input → 400 VALIDATION_ERROR with details', async () => {
    const base = { name: 'x', url: `${site.url}/product`, schedule: 'daily', extractors: EXTRACTORS };
    const cases: [Record<string, unknown>, string][] = [
      [{ ...base, url: 'not a url' }, 'url'],
      [{ ...base, url: 'ftp://example.com/file' }, 'url'],
      [{ ...base, schedule: 'every_tuesday' }, 'schedule'],
      [{ ...base, schedule: '61 * * * *' }, 'schedule'],
      [{ ...base, extractors: [{ type: 'css', selector: 'div[[', name: 'a' }] }, 'extractors.0.selector'],
      [{ ...base, extractors: [{ type: 'xpath', selector: '//span[@class=', name: 'a' }] }, 'extractors.0.selector'],
      [{ ...base, extractors: [{ type: 'regex', selector: '(unclosed', name: 'a' }] }, 'extractors.0.selector'],
      [{ ...base, extractors: [{ type: 'css', selector: 'a', name: 'same' }, { type: 'css', selector: 'b', name: 'same' }] }, 'extractors.1.name'],
    ];
    for (const [body, field] of cases) {
      const res = await create(body);
      assert.equal(res.status, 400, `${JSON.stringify(body)} → ${res.status} ${res.text}`);
      assert.equal(res.body.success, false);
      assert.equal(res.body.code, 'VALIDATION_ERROR');
      assert.equal(res.body.details.field, field, res.text);
      assert.ok(Date.parse(res.body.timestamp));
    }
    const schemaCases = [
      { ...base, extractors: [{ type: 'magic', selector: 'a', name: 'a' }] },
      { ...base, retryAttempts: 11 },
      { ...base, timeout: 10 },
      { ...base, extractors: [] },
      { url: base.url, schedule: 'daily', extractors: EXTRACTORS },
      { ...base, webhookEvents: ['exploded'] },
      { ...base, unknownField: true },
    ];
    for (const body of schemaCases) {
      const res = await create(body);
      assert.equal(res.status, 400, `${JSON.stringify(body)} → ${res.status}`);
      assert.equal(res.body.code, 'VALIDATION_ERROR');
      assert.ok(res.body.details, res.text);
    }
    assert.equal((await s.request('POST', '/api/monitoring/sources', { token: alice.accessToken, rawBody: '{"name":' })).status, 400);
  });

  test('another user gets 404 on every route, and nothing of the owner\'s changes', async () => {
    const res = await create({ name: 'Private', url: `${site.url}/product`, schedule: 'daily', extractors: EXTRACTORS });
    const id = res.body.data.source.id;
    const routes: [string, string, unknown?][] = [
      ['GET', `/api/monitoring/sources/${id}`],
      ['PUT', `/api/monitoring/sources/${id}`, { name: 'x', url: `${site.url}/x`, schedule: 'daily', extractors: EXTRACTORS }],
      ['PATCH', `/api/monitoring/sources/${id}`, { name: 'stolen' }],
      ['POST', `/api/monitoring/sources/${id}/check`],
      ['POST', `/api/monitoring/sources/${id}/pause`],
      ['POST', `/api/monitoring/sources/${id}/resume`],
      ['GET', `/api/monitoring/sources/${id}/history`],
      ['DELETE', `/api/monitoring/sources/${id}`],
    ];
    for (const [method, url, body] of routes) {
      const r = await s.request(method, url, { token: bob.accessToken, body });
      assert.equal(r.status, 404, `${method} ${url} → ${r.status}`);
      assert.equal(r.body.code, 'NOT_FOUND');
      assert.equal((await s.request(method, url, { body })).status, 401, `${method} ${url} without a token`);
    }
    const mine = await s.request('GET', `/api/monitoring/sources/${id}`, { token: alice.accessToken });
    assert.equal(mine.body.data.source.name, 'Private');
    assert.equal(mine.body.data.source.status, 'active');
  });
});

describe('Helomatic monitoring: quotas and the address policy', () => {
  let s: TestServer;
  let user: Awaited<ReturnType<typeof registerUser>>;
  let site: Awaited<ReturnType<typeof startSite>>;

  before(async () => {
    site = await startSite();
    site.routes.set('/bounce', (_req, res) => res.writeHead(302, { location: 'http://10.1.2.3/admin' }).end());
    site.routes.set('/page', (_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<p>hi</p>'));
    s = await startTestServer({ ALLOW_PRIVATE_URLS: '127.0.0.0/8', MONITOR_MAX_SOURCES: 'free=2', MONITOR_MIN_INTERVAL_MINUTES: 'free=15' });
    user = await registerUser(s);
  });
  after(async () => {
    await s.close();
    await site.close();
  });

  const body = (over: Record<string, unknown> = {}) => ({ name: 'q', url: `${site.url}/page`, schedule: 'hourly', extractors: [{ type: 'css', selector: 'p', name: 'p' }], ...over });

  test('the shortest interval per tier → QUOTA_EXCEEDED', async () => {
    const res = await s.request('POST', '/api/monitoring/sources', { token: user.accessToken, body: body({ schedule: 'every_5_minutes' }) });
    assert.equal(res.status, 402);
    assert.equal(res.body.code, 'QUOTA_EXCEEDED');
    assert.equal(res.body.details.min_interval_minutes, 15);
    const cron = await s.request('POST', '/api/monitoring/sources', { token: user.accessToken, body: body({ schedule: '*/5 * * * *' }) });
    assert.equal(cron.body.code, 'QUOTA_EXCEEDED');
  });

  test('the number of sources per tier → QUOTA_EXCEEDED', async () => {
    for (let i = 0; i < 2; i++) assert.equal((await s.request('POST', '/api/monitoring/sources', { token: user.accessToken, body: body() })).status, 201);
    const third = await s.request('POST', '/api/monitoring/sources', { token: user.accessToken, body: body() });
    assert.equal(third.status, 402);
    assert.equal(third.body.code, 'QUOTA_EXCEEDED');
    assert.equal(third.body.details.limit, 2);
  });

  test('a redirect to a private address is refused and nothing is fetched there', async () => {
    const other = await registerUser(s);
    const res = await s.request('POST', '/api/monitoring/sources', { token: other.accessToken, body: body({ url: `${site.url}/bounce` }) });
    assert.equal(res.status, 201, res.text);
    const check = await s.request('POST', `/api/monitoring/sources/${res.body.data.source.id}/check`, { token: other.accessToken });
    assert.equal(check.body.data.check.success, false);
    assert.match(check.body.data.check.error, /10\.1\.2\.3|not allowed|private/i);
    assert.equal(check.body.data.check.attempts, 1);
  });

  test('a literal private address is refused at creation', async () => {
    const other = await registerUser(s);
    const res = await s.request('POST', '/api/monitoring/sources', { token: other.accessToken, body: body({ url: 'http://169.254.169.254/latest/meta-data/' }) });
    assert.equal(res.status, 400);
    assert.equal(res.body.details.field, 'url');
  });
});

describe('Helomatic monitoring: fetcher "browser"', () => {
  let s: TestServer;
  let user: Awaited<ReturnType<typeof registerUser>>;
  let site: Awaited<ReturnType<typeof startSite>>;
  let skip: string | false = false;

  before(async () => {
    site = await startSite();
    site.routes.set('/app', (_req, res) =>
      res
        .writeHead(200, { 'content-type': 'text/html' })
        .end(`<!doctype html><div id="price"></div><script>fetch('/api/price').then(r => r.json()).then(j => { document.getElementById('price').textContent = j.price; });</script>`),
    );
    site.routes.set('/api/price', (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"price":"€ 42.00"}'));
    s = await startTestServer({ ALLOW_PRIVATE_URLS: 'true' });
    user = await registerUser(s);
    const a = await s.ctx.browser.available();
    if (!a.ok) skip = a.reason;
  });
  after(async () => {
    await s.close();
    await site.close();
  });

  test('a page that builds its content in JavaScript is rendered before extraction', async (t) => {
    if (skip) return t.skip(skip);
    const body = { name: 'SPA', url: `${site.url}/app`, schedule: 'daily', fetcher: 'browser', timeout: 15000, extractors: [{ type: 'css', selector: '#price', name: 'price' }] };
    const res = await s.request('POST', '/api/monitoring/sources', { token: user.accessToken, body });
    assert.equal(res.status, 201, res.text);
    assert.equal(res.body.data.source.fetcher, 'browser');
    const check = await s.request('POST', `/api/monitoring/sources/${res.body.data.source.id}/check`, { token: user.accessToken });
    assert.equal(check.body.data.check.success, true, check.text);
    assert.deepEqual(check.body.data.check.values, { price: '€ 42.00' });
    // The same page over plain HTTP has no price: the script never ran.
    const plain = await s.request('POST', '/api/monitoring/sources', { token: user.accessToken, body: { ...body, name: 'SPA plain', fetcher: 'http' } });
    const plainCheck = await s.request('POST', `/api/monitoring/sources/${plain.body.data.source.id}/check`, { token: user.accessToken });
    assert.deepEqual(plainCheck.body.data.check.values, { price: '' });
  });

  test('without a browser the API says so with a clear 400', async () => {
    const none = await startTestServer({ ALLOW_PRIVATE_URLS: 'true', CHROMIUM_PATH: '/nonexistent/chromium' });
    try {
      const u = await registerUser(none);
      const res = await none.request('POST', '/api/monitoring/sources', {
        token: u.accessToken,
        body: { name: 'SPA', url: `${site.url}/app`, schedule: 'daily', fetcher: 'browser', extractors: [{ type: 'css', selector: '#price', name: 'price' }] },
      });
      assert.equal(res.status, 400);
      assert.equal(res.body.code, 'VALIDATION_ERROR');
      assert.equal(res.body.details.field, 'fetcher');
      assert.match(res.body.error, /Chromium/);
    } finally {
      await none.close();
    }
  });
});
