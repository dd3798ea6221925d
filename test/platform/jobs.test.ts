/**
 * Background jobs over pg-boss on the test engine (PGlite by default, PostgreSQL by env switch):
 * round trip, retries with backoff into the dead-letter queue, sends that roll back with their
 * transaction, graceful stop (in process and on SIGTERM of a real process), metrics.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { Registry } from 'prom-client';
import { deadLetterQueueName, Jobs } from '../../src/platform/jobs/index.ts';
import { ENGINE, freshDb, type TestDb } from '../helpers/engine.ts';

interface TestJobs {
  roundtrip: { n: number };
  flaky: { label: string };
  outbox: { n: number };
  parked: { n: number };
  deferred: { n: number };
  dedupe: { n: number };
  slow: { n: number };
  stuck: { n: number };
}

const loggedErrors: { obj: object; msg: string }[] = [];
const logger = { error: (obj: object, msg: string) => void loggedErrors.push({ obj, msg }) };

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

function metricValue(text: string, line: string): number | undefined {
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found === undefined ? undefined : Number(found.slice(line.length + 1));
}

let test_: TestDb;
let jobs: Jobs<TestJobs>;
let registry: Registry;

before(async () => {
  test_ = await freshDb();
  registry = new Registry();
  jobs = new Jobs<TestJobs>({ db: test_.db, registry, logger, pollingIntervalSeconds: 0.5, monitorIntervalSeconds: 1, metricsIntervalMs: 0 });
  await jobs.define('roundtrip');
  await jobs.define('flaky', { retryLimit: 2, retryDelaySeconds: 1, backoff: true, deadLetter: true });
  await jobs.define('outbox');
  await jobs.define('parked');
  await jobs.define('deferred');
  await jobs.define('dedupe', { policy: 'short' });
  const started = Date.now();
  await jobs.start();
  console.log(`# pg-boss start on ${ENGINE} (schema install): ${Date.now() - started} ms`);
});

after(async () => {
  await jobs.stop({ timeoutMs: 1000 });
  await test_.drop();
});

describe('jobs', () => {
  test('send and work: the payload arrives once', async () => {
    const seen: { n: number; attempt: number }[] = [];
    await jobs.work('roundtrip', async (payload, job) => {
      seen.push({ n: payload.n, attempt: job.attempt });
    });
    const sentAt = Date.now();
    const id = await jobs.send('roundtrip', { n: 7 });
    assert.ok(id);
    await waitFor('the job to run', () => seen.length === 1);
    console.log(`# send → handler on ${ENGINE} (0.5 s polling): ${Date.now() - sentAt} ms`);
    assert.deepEqual(seen, [{ n: 7, attempt: 1 }]);
    await sleep(700);
    assert.equal(seen.length, 1, 'a completed job is not run again');
  });

  test('a failing job is retried with exponential backoff, then dead-lettered', async () => {
    const attempts: { at: number; attempt: number }[] = [];
    await jobs.work('flaky', async (_payload, job) => {
      attempts.push({ at: Date.now(), attempt: job.attempt });
      throw new Error(`flaky failure ${job.attempt}`);
    });
    const id = await jobs.send('flaky', { label: 'always fails' });
    assert.ok(id);
    const dead = deadLetterQueueName('flaky');
    await waitFor('the job in the dead-letter queue', async () => (await jobs.boss.findJobs<{ label: string }>(dead)).length === 1, 15_000);
    assert.deepEqual(
      attempts.map((a) => a.attempt),
      [1, 2, 3],
      'first attempt plus retryLimit (2) retries',
    );
    // Backoff: the first retry waits 1-2 s, the second 2-4 s (pg-boss: retryDelay × 2^n / 2 × (1 + random)).
    const gap1 = attempts[1]!.at - attempts[0]!.at;
    const gap2 = attempts[2]!.at - attempts[1]!.at;
    console.log(`# retry gaps with backoff: ${gap1} ms, ${gap2} ms`);
    assert.ok(gap1 >= 950, `first retry after ${gap1} ms`);
    assert.ok(gap2 >= 1950, `second retry after ${gap2} ms`);
    const [deadJob] = await jobs.boss.findJobs<{ label: string }>(dead);
    assert.deepEqual(deadJob!.data, { label: 'always fails' });
    assert.equal(deadJob!.sourceId, id);
    const [original] = await jobs.boss.findJobs('flaky', { id: id! });
    assert.equal(original!.state, 'failed');
    assert.equal(loggedErrors.filter((e) => e.msg === 'job attempt failed').length, 3, 'each failed attempt is logged');
  });

  test('a send inside a rolled-back transaction is never delivered; a committed one is', async () => {
    const seen: number[] = [];
    await jobs.work('outbox', async (payload) => {
      seen.push(payload.n);
    });
    await assert.rejects(
      test_.db.transaction(async (tx) => {
        await tx.query('SELECT 1');
        const id = await jobs.send('outbox', { n: 1 }, { tx });
        assert.ok(id, 'the insert ran inside the transaction');
        throw new Error('roll back');
      }),
      /roll back/,
    );
    await test_.db.transaction(async (tx) => {
      await jobs.send('outbox', { n: 2 }, { tx });
    });
    await waitFor('the committed job', () => seen.includes(2));
    await sleep(1200); // more than two polls: a leaked job would have run by now
    assert.deepEqual(seen, [2]);
    const stored = await jobs.boss.findJobs<{ n: number }>('outbox');
    assert.deepEqual(
      stored.map((j) => j.data.n),
      [2],
      'the rolled-back job does not exist at all',
    );
  });

  test('startAfter defers a job; a short queue keeps one queued job per singletonKey', async () => {
    const seen: number[] = [];
    await jobs.work('deferred', async (payload) => {
      seen.push(payload.n);
    });
    const sentAt = Date.now();
    await jobs.send('deferred', { n: 1 }, { startAfter: new Date(sentAt + 1500) });
    await sleep(900);
    assert.deepEqual(seen, [], 'not before its start time');
    await waitFor('the deferred job', () => seen.length === 1);
    assert.ok(Date.now() - sentAt >= 1500);

    const first = await jobs.send('dedupe', { n: 1 }, { singletonKey: 'k' });
    const second = await jobs.send('dedupe', { n: 2 }, { singletonKey: 'k' });
    assert.ok(first);
    assert.equal(second, null, 'deduplicated');
  });

  test('metrics: queued, active, failed and duration per queue', async () => {
    for (let n = 0; n < 3; n++) await jobs.send('parked', { n });
    // pg-boss recounts queues on its monitor pass (every second here); the gauge reads that count.
    await waitFor(
      'jobs_queued for the parked queue',
      async () => {
        await jobs.refreshMetrics();
        return metricValue(await registry.metrics(), 'jobs_queued{queue="parked"}') === 3;
      },
      10_000,
    );
    const text = await registry.metrics();
    assert.equal(metricValue(text, 'jobs_failed_total{queue="flaky"}'), 3);
    assert.equal(metricValue(text, 'job_duration_seconds_count{queue="roundtrip"}'), 1);
    assert.equal(metricValue(text, 'jobs_active{queue="roundtrip"}'), 0);
    assert.equal(metricValue(text, `jobs_queued{queue="${deadLetterQueueName('flaky')}"}`), 1);
    assert.match(text, /# TYPE job_duration_seconds histogram/);
    // pg-boss reports its own loop failures as events; they are logged and counted, never thrown.
    jobs.boss.emit('error', new Error('simulated maintenance failure'));
    assert.ok(loggedErrors.some((e) => e.msg === 'pg-boss background error'));
    assert.equal(metricValue(await registry.metrics(), 'jobs_background_errors_total{source="pgboss"}'), 1);
    const sizes = await jobs.queueSizes();
    assert.equal(sizes.find((s) => s.queue === 'parked')?.queued, 3);
  });

  test('definitions are checked', async () => {
    const other = new Jobs<{ 'bad name!': { n: number }; ok: { n: number } }>({ db: test_.db, registry: new Registry(), logger });
    await assert.rejects(other.define('bad name!'), /invalid job name/);
    await assert.rejects(other.define('ok', { retryDelaySeconds: 0.5 }), /retryDelaySeconds must be an integer/);
    await assert.rejects(other.send('ok', { n: 1 }), /not defined/);
    await other.define('ok');
    await assert.rejects(other.send('ok', { n: 1 }), /not started/);
    await other.stop();
  });

  test('graceful stop lets an in-flight job finish', async () => {
    const local = new Jobs<TestJobs>({ db: test_.db, registry: new Registry(), logger, pollingIntervalSeconds: 0.5, metricsIntervalMs: 0 });
    await local.define('slow');
    let started = false;
    let finished = false;
    await local.work('slow', async () => {
      started = true;
      await sleep(1500);
      finished = true;
    });
    await local.start();
    const id = await local.send('slow', { n: 1 });
    await waitFor('the slow job to start', () => started);
    const stopAt = Date.now();
    await local.stop({ timeoutMs: 10_000 });
    console.log(`# graceful stop with a 1.5 s job in flight took ${Date.now() - stopAt} ms`);
    assert.equal(finished, true, 'stop waited for the handler');
    const [job] = await jobs.boss.findJobs('slow', { id: id! });
    assert.equal(job!.state, 'completed');
  });

  test('a job still running when the stop timeout passes is released back for a retry', async () => {
    const local = new Jobs<TestJobs>({ db: test_.db, registry: new Registry(), logger, pollingIntervalSeconds: 0.5, metricsIntervalMs: 0 });
    await local.define('stuck', { retryLimit: 3 });
    let started = false;
    let aborted = false;
    await local.work('stuck', async (_payload, job) => {
      started = true;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 10_000);
        job.signal.addEventListener('abort', () => {
          aborted = true;
          clearTimeout(timer);
          resolve();
        });
      });
    });
    await local.start();
    const id = await local.send('stuck', { n: 1 });
    await waitFor('the stuck job to start', () => started);
    const stopAt = Date.now();
    await local.stop({ timeoutMs: 1000 });
    const took = Date.now() - stopAt;
    assert.ok(took < 3000, `stop returned after ${took} ms`);
    assert.equal(aborted, true, "the handler's signal was aborted");
    const [job] = await jobs.boss.findJobs('stuck', { id: id! });
    assert.equal(job!.state, 'retry', 'back in the queue for another worker');
  });

  test('SIGTERM: a real process finishes its in-flight job before exiting', { timeout: 60_000 }, async () => {
    const jobsModule = new URL('../../src/platform/jobs/index.ts', import.meta.url).href;
    const dbModule = new URL('../../src/platform/db/index.ts', import.meta.url).href;
    const child = `
      import { setTimeout as sleep } from 'node:timers/promises';
      import { Registry } from 'prom-client';
      import { Jobs } from ${JSON.stringify(jobsModule)};
      import { PgliteDb, PostgresDb } from ${JSON.stringify(dbModule)};
      const say = (event, extra = {}) => console.log(JSON.stringify({ event, ...extra }));
      const url = process.env.JOBS_CHILD_DB_URL;
      const db = url ? new PostgresDb(url, { max: 4 }) : await PgliteDb.open({});
      const jobs = new Jobs({ db, registry: new Registry(), logger: { error: (o, m) => console.error(m) }, pollingIntervalSeconds: 0.5, metricsIntervalMs: 0 });
      await jobs.define('term');
      await jobs.work('term', async () => { say('started'); await sleep(1500); say('finished'); });
      await jobs.start();
      let id;
      process.on('SIGTERM', async () => {
        say('sigterm');
        await jobs.stop({ timeoutMs: 10000 });
        const { rows } = await db.query('SELECT state FROM pgboss.job WHERE id = $1', [id]);
        say('stopped', { state: rows[0]?.state });
        await db.close();
        process.exit(0);
      });
      say('ready');
      id = await jobs.send('term', { n: 1 });
    `;
    const proc = spawn(process.execPath, ['--input-type=module', '-e', child], {
      cwd: new URL('../../', import.meta.url).pathname,
      env: { ...process.env, JOBS_CHILD_DB_URL: test_.url ?? '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const events: { event: string; state?: string }[] = [];
    let stderr = '';
    let buffered = '';
    proc.stdout.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) if (line.startsWith('{')) events.push(JSON.parse(line) as { event: string; state?: string });
    });
    proc.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
    try {
      await waitFor('the child to start its job', () => events.some((e) => e.event === 'started'), 40_000).catch((err: Error) => {
        throw new Error(`${err.message}\n${stderr}`);
      });
      proc.kill('SIGTERM');
      const code = await exited;
      assert.equal(code, 0, stderr);
      assert.deepEqual(
        events.map((e) => e.event),
        ['ready', 'started', 'sigterm', 'finished', 'stopped'],
      );
      assert.equal(events.at(-1)!.state, 'completed');
    } finally {
      if (proc.exitCode === null) proc.kill('SIGKILL');
    }
  });
});
