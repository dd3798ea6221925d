/** The in-flight write batcher: alone at once, together under load, a failed batch retried item by item. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InFlightBatcher } from '../../src/platform/batch/index.ts';

function recorder(opts: { failBatchWhen?: (items: number[]) => boolean; failOne?: (item: number) => boolean; delayMs?: number } = {}) {
  const calls: { kind: 'batch' | 'one'; items: number[] }[] = [];
  const after: number[][] = [];
  const batcher = new InFlightBatcher<number, string>({
    max: 5,
    runBatch: async (items) => {
      calls.push({ kind: 'batch', items });
      await new Promise((r) => setTimeout(r, opts.delayMs ?? 5));
      if (opts.failBatchWhen?.(items)) throw new Error('batch failed');
      return items.map((i) => `r${i}`);
    },
    runOne: async (item) => {
      calls.push({ kind: 'one', items: [item] });
      await new Promise((r) => setTimeout(r, opts.delayMs ?? 5));
      if (opts.failOne?.(item)) throw new Error(`item ${item} failed`);
      return `r${item}`;
    },
    afterBatch: (results) => after.push(results.map((r) => Number(r.slice(1)))),
  });
  return { batcher, calls, after };
}

describe('InFlightBatcher', () => {
  test('an item alone is written alone', async () => {
    const { batcher, calls } = recorder();
    assert.equal(await batcher.submit(1), 'r1');
    assert.deepEqual(calls, [{ kind: 'one', items: [1] }]);
  });

  test('items submitted while a batch is written go together in the next one, at most max per call, in order', async () => {
    const { batcher, calls, after } = recorder();
    const first = batcher.submit(0);
    await new Promise((r) => setImmediate(r)); // item 0 is now being written
    const rest = Array.from({ length: 7 }, (_, i) => batcher.submit(i + 1));
    assert.deepEqual(await Promise.all([first, ...rest]), ['r0', 'r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7']);
    assert.deepEqual(calls, [
      { kind: 'one', items: [0] },
      { kind: 'batch', items: [1, 2, 3, 4, 5] },
      { kind: 'batch', items: [6, 7] },
    ]);
    assert.deepEqual(after, [[0], [1, 2, 3, 4, 5], [6, 7]]);
  });

  test('a failed batch is retried item by item: only the item at fault is rejected', async () => {
    const { batcher, calls, after } = recorder({ failBatchWhen: (items) => items.includes(3), failOne: (i) => i === 3 });
    const results = await Promise.allSettled([1, 2, 3, 4].map((i) => batcher.submit(i)));
    assert.deepEqual(
      results.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as Error).message)),
      ['r1', 'r2', 'item 3 failed', 'r4'],
    );
    assert.deepEqual(calls.map((c) => c.kind), ['batch', 'one', 'one', 'one', 'one']);
    assert.deepEqual(after, [[1, 2, 4]]);
  });

  test('a batch answering the wrong number of results counts as failed', async () => {
    const calls: string[] = [];
    const batcher = new InFlightBatcher<number, number>({
      max: 10,
      runBatch: async (items) => {
        calls.push(`batch ${items.length}`);
        return items.slice(1);
      },
      runOne: async (item) => {
        calls.push(`one ${item}`);
        return item * 10;
      },
    });
    assert.deepEqual(await Promise.all([batcher.submit(1), batcher.submit(2)]), [10, 20]);
    assert.deepEqual(calls, ['batch 2', 'one 1', 'one 2']);
  });

  test('after the queue drains, the next item goes at once again', async () => {
    const { batcher, calls } = recorder();
    await Promise.all([batcher.submit(1), batcher.submit(2)]);
    await batcher.submit(3);
    assert.deepEqual(calls, [{ kind: 'batch', items: [1, 2] }, { kind: 'one', items: [3] }]);
  });

  test('with concurrency 2, a second batch is written while the first is in flight', async () => {
    let inFlight = 0;
    let most = 0;
    const calls: number[][] = [];
    const batcher = new InFlightBatcher<number, number>({
      max: 10,
      concurrency: 2,
      runBatch: async (items) => {
        calls.push(items);
        most = Math.max(most, ++inFlight);
        await new Promise((r) => setTimeout(r, 20));
        inFlight--;
        return items;
      },
      runOne: async (item) => {
        calls.push([item]);
        most = Math.max(most, ++inFlight);
        await new Promise((r) => setTimeout(r, 20));
        inFlight--;
        return item;
      },
    });
    const first = batcher.submit(1);
    await new Promise((r) => setImmediate(r));
    const second = batcher.submit(2);
    await new Promise((r) => setImmediate(r));
    const rest = [3, 4, 5].map((i) => batcher.submit(i));
    assert.deepEqual(await Promise.all([first, second, ...rest]), [1, 2, 3, 4, 5]);
    assert.equal(most, 2, 'two calls in flight at most');
    assert.deepEqual(calls, [[1], [2], [3, 4, 5]], 'the third batch waited for a free writer and gathered the rest');
  });
});
