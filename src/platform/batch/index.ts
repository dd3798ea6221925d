/**
 * Write batching for hot statements: items submitted while `concurrency` batches are being written
 * wait, then go together in the next call. Alone, an item goes at once (next turn of the event
 * loop); under load many items share one round trip and one commit. When a batch call fails, each of
 * its items is run alone, so only the item at fault sees an error.
 */
export interface BatcherOptions<I, R> {
  /** Items per call at most. */
  max: number;
  /** Batches written at the same time at most (1 by default): more lets the database use more cores. */
  concurrency?: number;
  /** Writes several items in one call; answers one result per item, in the items' order. */
  runBatch(items: I[]): Promise<R[]>;
  /** Writes one item (a batch of one, and the retry of a failed batch's items). */
  runOne(item: I): Promise<R>;
  /** Called once per written batch with the results that succeeded. */
  afterBatch?(results: R[]): void;
}

interface Entry<I, R> {
  item: I;
  resolve(result: R): void;
  reject(err: unknown): void;
}

export class InFlightBatcher<I, R> {
  private readonly opts: BatcherOptions<I, R>;
  private readonly queue: Entry<I, R>[] = [];
  private writers = 0;

  constructor(opts: BatcherOptions<I, R>) {
    this.opts = opts;
  }

  submit(item: I): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (this.writers >= (this.opts.concurrency ?? 1)) return;
      this.writers++;
      setImmediate(() => void this.drain());
    });
  }

  private async drain(): Promise<void> {
    try {
      await this.drainQueue();
    } finally {
      this.writers--;
    }
  }

  private async drainQueue(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.opts.max);
      const done: R[] = [];
      if (batch.length === 1) {
        await this.runAlone(batch[0]!, done);
      } else {
        let results: R[] | null = null;
        try {
          results = await this.opts.runBatch(batch.map((e) => e.item));
          if (results.length !== batch.length) throw new Error(`batch of ${batch.length} answered ${results.length} results`);
        } catch {
          results = null;
        }
        if (results) {
          batch.forEach((e, i) => e.resolve(results[i]!));
          done.push(...results);
        } else {
          for (const e of batch) await this.runAlone(e, done);
        }
      }
      if (done.length) this.opts.afterBatch?.(done);
    }
  }

  private async runAlone(e: Entry<I, R>, done: R[]): Promise<void> {
    try {
      const result = await this.opts.runOne(e.item);
      done.push(result);
      e.resolve(result);
    } catch (err) {
      e.reject(err);
    }
  }
}
