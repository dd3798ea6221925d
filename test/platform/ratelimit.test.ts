/**
 * The request counters: exact under concurrency. On PostgreSQL, concurrent requests of one subject
 * are coalesced into one write; each must still get its own place in the window.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PostgresDb } from '../../src/platform/db/index.ts';
import { RateLimits } from '../../src/platform/ratelimit/index.ts';
import { ENGINE, freshDb, type TestDb } from '../helpers/engine.ts';

let t: TestDb;
let limits: RateLimits;
before(async () => {
  t = await freshDb();
  limits = new RateLimits(t.db instanceof PostgresDb ? { kind: 'postgres', pool: t.db.pool } : { kind: 'memory' });
});
after(async () => {
  await limits.close();
  await t.drop();
});

test(`concurrent requests over the limit: exactly the limit is allowed, each with its own remaining count (${ENGINE === 'postgres' ? 'PostgreSQL store' : 'memory store'})`, async () => {
  const policy = { points: 5, windowSeconds: 60 };
  const decisions = await Promise.all(Array.from({ length: 12 }, () => limits.consume('test', 'u:concurrent', policy)));
  assert.equal(decisions.filter((d) => d.allowed).length, 5);
  assert.deepEqual(
    decisions.filter((d) => d.allowed).map((d) => d.remaining).sort(),
    [0, 1, 2, 3, 4],
  );
  for (const d of decisions.filter((x) => !x.allowed)) {
    assert.equal(d.remaining, 0);
    assert.ok(d.retryAfterSeconds >= 1 && d.retryAfterSeconds <= 60);
    assert.ok(d.resetAtMs > Date.now());
  }
  const next = await limits.consume('test', 'u:concurrent', policy);
  assert.equal(next.allowed, false, 'the window stays closed');
  const other = await limits.consume('test', 'u:someone-else', policy);
  assert.equal(other.allowed, true, 'another subject has its own window');
  assert.equal(other.remaining, 4);
});

test('requests arriving while a write is in flight share the next write and keep their exact places', async () => {
  const policy = { points: 20, windowSeconds: 60 };
  const waves: Promise<{ remaining: number; allowed: boolean }>[] = [];
  for (let wave = 0; wave < 5; wave++) {
    for (let i = 0; i < 5; i++) waves.push(limits.consume('test', 'u:waves', policy));
    // The next wave starts on a later turn of the event loop, while the previous write may be running.
    await new Promise((r) => setImmediate(r));
  }
  const decisions = await Promise.all(waves);
  assert.equal(decisions.filter((d) => d.allowed).length, 20);
  assert.deepEqual(
    decisions.filter((d) => d.allowed).map((d) => d.remaining).sort((a, b) => a - b),
    Array.from({ length: 20 }, (_, i) => i),
    'every allowed request has its own remaining count',
  );
  // In arrival order: the first 20 were allowed, the last 5 refused.
  assert.deepEqual(decisions.map((d) => d.allowed), [...Array(20).fill(true), ...Array(5).fill(false)]);
  assert.equal((await limits.peek('test', 'u:waves', policy)).remaining, 0);
});

test('subjects longer than the store column are counted, not refused', async () => {
  const long = `name:${'x'.repeat(400)}|127.0.0.1`;
  const policy = { points: 2, windowSeconds: 60 };
  assert.equal((await limits.consume('test', long, policy)).remaining, 1);
  assert.equal((await limits.consume('test', long, policy)).remaining, 0);
  assert.equal((await limits.consume('test', long, policy)).allowed, false);
  assert.equal((await limits.peek('test', long, policy)).allowed, false);
});

test('unlimited policies never touch the store', async () => {
  const d = await limits.consume('test', 'u:admin', { points: null, windowSeconds: 60 });
  assert.equal(d.allowed, true);
  assert.equal(d.limit, null);
});
