/**
 * Schedules on their own due-time table, on the test engine (PGlite by default, PostgreSQL by env
 * switch): next-run math (cron with zones across DST, intervals, named, once), validation, firing
 * within a second of the due time, one catch-up after downtime, pause/resume/delete, handler errors,
 * a firing that enqueues a job in its transaction, and no double fire with two schedulers on PostgreSQL.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { Registry } from 'prom-client';
import { migrate, PostgresDb, type Db } from '../../src/platform/db/index.ts';
import { isAppError } from '../../src/platform/errors.ts';
import {
  deleteSchedule,
  getSchedule,
  Jobs,
  jobsMigrations,
  listScheduleRuns,
  listSchedules,
  nextRunTimes,
  normalizeScheduleSpec,
  pauseSchedule,
  resumeSchedule,
  Scheduler,
  upcomingRunTimes,
  upsertSchedule,
  type FiringHandler,
  type ScheduleFiring,
  type ScheduleSpec,
} from '../../src/platform/jobs/index.ts';
import { ENGINE, freshDb, type TestDb } from '../helpers/engine.ts';

const loggedErrors: { obj: object; msg: string }[] = [];
const logger = { error: (obj: object, msg: string) => void loggedErrors.push({ obj, msg }) };

let t: TestDb;
let db: Db;

before(async () => {
  t = await freshDb();
  db = t.db;
  await migrate(db, jobsMigrations);
});

after(async () => {
  await t.drop();
});

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

interface Seen {
  firing: ScheduleFiring;
  /** Wall clock inside the handler. */
  at: number;
}

/** A scheduler with one recording handler for `entityType`, stopped by the returned function. */
function startRecording(entityType: string, opts: { handler?: FiringHandler; registry?: Registry } = {}) {
  const seen: Seen[] = [];
  const scheduler = new Scheduler({ db, logger, registry: opts.registry });
  scheduler.on(entityType, async (firing, tx) => {
    seen.push({ firing, at: Date.now() });
    await opts.handler?.(firing, tx);
  });
  scheduler.start();
  return { seen, scheduler, stop: () => scheduler.stop() };
}

const iso = (d: Date) => d.toISOString();
const owner = 'usr_schedule_owner';

function summarize(lagsMs: number[]): string {
  const sorted = [...lagsMs].sort((a, b) => a - b);
  const pct = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
  return `n=${sorted.length} p50=${pct(50)} ms p99=${pct(99)} ms max=${sorted.at(-1)} ms`;
}

describe('next run times (pure)', () => {
  test("cron '0 9 * * *' in America/New_York stays at 09:00 local across both DST changes", () => {
    const spring = nextRunTimes({ kind: 'cron', expression: '0 9 * * *', timezone: 'America/New_York' }, new Date('2025-03-07T00:00:00Z'), 4);
    // EST (UTC-5) until Sunday 9 March 2025, EDT (UTC-4) from then.
    assert.deepEqual(spring.map(iso), ['2025-03-07T14:00:00.000Z', '2025-03-08T14:00:00.000Z', '2025-03-09T13:00:00.000Z', '2025-03-10T13:00:00.000Z']);
    const autumn = nextRunTimes({ kind: 'cron', expression: '0 9 * * *', timezone: 'America/New_York' }, new Date('2025-10-31T00:00:00Z'), 4);
    // Back to EST on Sunday 2 November 2025.
    assert.deepEqual(autumn.map(iso), ['2025-10-31T13:00:00.000Z', '2025-11-01T13:00:00.000Z', '2025-11-02T14:00:00.000Z', '2025-11-03T14:00:00.000Z']);
  });

  test('a cron time inside the spring-forward gap runs once, right after the gap; Europe/Berlin and UTC', () => {
    const gap = nextRunTimes({ kind: 'cron', expression: '30 2 * * *', timezone: 'America/New_York' }, new Date('2025-03-08T12:00:00Z'), 2);
    assert.deepEqual(gap.map(iso), ['2025-03-09T07:00:00.000Z', '2025-03-10T06:30:00.000Z']);
    const berlin = nextRunTimes({ kind: 'cron', expression: '0 9 * * 1', timezone: 'Europe/Berlin' }, new Date('2025-03-20T00:00:00Z'), 2);
    assert.deepEqual(berlin.map(iso), ['2025-03-24T08:00:00.000Z', '2025-03-31T07:00:00.000Z']);
    const utc = nextRunTimes({ kind: 'cron', expression: '*/15 * * * *' }, new Date('2025-01-01T00:00:00Z'), 3);
    assert.deepEqual(utc.map(iso), ['2025-01-01T00:15:00.000Z', '2025-01-01T00:30:00.000Z', '2025-01-01T00:45:00.000Z']);
    const seconds = nextRunTimes({ kind: 'cron', expression: '*/10 * * * * *', timezone: 'UTC' }, new Date('2025-01-01T00:00:00Z'), 2);
    assert.deepEqual(seconds.map(iso), ['2025-01-01T00:00:10.000Z', '2025-01-01T00:00:20.000Z'], 'six fields: seconds first');
  });

  test('interval, named and once', () => {
    const from = new Date('2025-06-01T12:00:00Z');
    assert.deepEqual(nextRunTimes({ kind: 'interval', seconds: 90 }, from, 2).map(iso), ['2025-06-01T12:01:30.000Z', '2025-06-01T12:03:00.000Z']);
    assert.deepEqual(nextRunTimes({ kind: 'named', name: 'hourly' }, from, 1).map(iso), ['2025-06-01T13:00:00.000Z']);
    assert.deepEqual(nextRunTimes({ kind: 'named', name: 'daily' }, from, 1).map(iso), ['2025-06-02T12:00:00.000Z']);
    assert.deepEqual(nextRunTimes({ kind: 'named', name: 'weekly' }, from, 1).map(iso), ['2025-06-08T12:00:00.000Z']);
    assert.deepEqual(nextRunTimes({ kind: 'once', at: '2025-06-01T12:30:00Z' }, from, 3).map(iso), ['2025-06-01T12:30:00.000Z']);
    assert.deepEqual(nextRunTimes({ kind: 'once', at: '2025-06-01T11:30:00Z' }, from, 3), [], 'a past once has no next run');
  });

  test('invalid expressions, zones and values are rejected with clear messages', () => {
    const rejects = (spec: unknown, pattern: RegExp) =>
      assert.throws(
        () => normalizeScheduleSpec(spec as ScheduleSpec),
        (err: unknown) => isAppError(err) && err.code === 'VALIDATION_ERROR' && pattern.test(err.message),
      );
    rejects({ kind: 'cron', expression: '61 * * * *', timezone: 'UTC' }, /Invalid cron expression "61 \* \* \* \*": Invalid value for minute: 61/);
    rejects({ kind: 'cron', expression: 'every day', timezone: 'UTC' }, /Invalid cron expression "every day"/);
    rejects({ kind: 'cron', expression: '* * * * * * *', timezone: 'UTC' }, /Invalid cron expression/);
    rejects({ kind: 'cron', expression: '', timezone: 'UTC' }, /Cron expression is required/);
    rejects({ kind: 'cron', expression: '0 9 * * *', timezone: 'Mars/Olympus_Mons' }, /Unknown time zone "Mars\/Olympus_Mons"/);
    rejects({ kind: 'cron', expression: '0 9 * * *', timezone: '+05:00' }, /Unknown time zone/);
    rejects({ kind: 'interval', seconds: 0 }, /at least 1/);
    rejects({ kind: 'interval', seconds: 1.5 }, /whole number/);
    rejects({ kind: 'named', name: 'monthly' }, /hourly, daily or weekly/);
    rejects({ kind: 'once', at: 'tomorrow-ish' }, /ISO 8601/);
    rejects({ kind: 'sometimes' }, /interval, cron, named or once/);
  });

  test('upsert rejects bad input before touching the table', async () => {
    const base = { entityType: 'invalid', entityId: 'x', ownerId: owner };
    await assert.rejects(upsertSchedule(db, { ...base, spec: { kind: 'cron', expression: '0 9 * * *', timezone: 'Nowhere/City' } }), /Unknown time zone/);
    await assert.rejects(upsertSchedule(db, { ...base, spec: { kind: 'interval', seconds: 60 }, jitterSeconds: 60 }), /shorter than the time between runs/);
    await assert.rejects(upsertSchedule(db, { ...base, spec: { kind: 'cron', expression: '*/5 * * * *' }, jitterSeconds: 300 }), /shorter than the time between runs/);
    await assert.rejects(upsertSchedule(db, { ...base, ownerId: '', spec: { kind: 'interval', seconds: 60 } }), /ownerId is required/);
    assert.equal(await getSchedule(db, base), undefined);
  });
});

describe('schedules table and scheduler', () => {
  test('upsert stores the spec and next run; an unchanged upsert keeps it, a changed one starts over', async () => {
    const ref = { entityType: 'stored', entityId: 'e1' };
    const before = Date.now();
    const created = await upsertSchedule(db, { ...ref, ownerId: owner, spec: { kind: 'cron', expression: '0 9 * * *', timezone: 'Asia/Tokyo' } });
    assert.deepEqual(created.spec, { kind: 'cron', expression: '0 9 * * *', timezone: 'Asia/Tokyo' });
    assert.equal(created.status, 'active');
    assert.equal(created.nextRunAt!.getUTCHours(), 0, '09:00 in Tokyo is 00:00 UTC');
    assert.ok(created.nextRunAt!.getTime() > before && created.nextRunAt!.getTime() <= before + 86_400_000);
    const again = await upsertSchedule(db, { ...ref, ownerId: owner, spec: { kind: 'cron', expression: '0  9 * * *', timezone: 'Asia/Tokyo' } });
    assert.equal(again.id, created.id);
    assert.equal(again.nextRunAt!.getTime(), created.nextRunAt!.getTime());
    const changed = await upsertSchedule(db, { ...ref, ownerId: owner, spec: { kind: 'interval', seconds: 120 } });
    assert.equal(changed.id, created.id);
    assert.ok(Math.abs(changed.nextRunAt!.getTime() - (Date.now() + 120_000)) < 2000);
    const upcoming = upcomingRunTimes(changed, 3);
    assert.deepEqual(
      upcoming.map((d) => d.getTime() - changed.nextRunAt!.getTime()),
      [0, 120_000, 240_000],
    );
    const listed = await listSchedules(db, { ownerId: owner, entityType: 'stored' });
    assert.deepEqual(
      listed.map((s) => s.entityId),
      ['e1'],
    );
  });

  test('an interval schedule fires every second, each within 1 s of its due time', async () => {
    const rec = startRecording('interval1');
    try {
      await upsertSchedule(db, { entityType: 'interval1', entityId: 'a', ownerId: owner, spec: { kind: 'interval', seconds: 1 } });
      await waitFor('four firings', () => rec.seen.length >= 4, 6000);
    } finally {
      await rec.stop();
    }
    const dues = rec.seen.map((s) => s.firing.dueAt.getTime());
    for (let i = 1; i < dues.length; i++) assert.equal(dues[i]! - dues[i - 1]!, 1000, 'consecutive slots, none skipped or repeated');
    const lags = rec.seen.map((s) => s.at - s.firing.dueAt.getTime());
    console.log(`# interval 1 s on ${ENGINE}, due → handler: ${summarize(lags)}`);
    for (const lag of lags) assert.ok(lag >= 0 && lag < 1000, `fired ${lag} ms after due`);
    const [first] = rec.seen;
    assert.equal(first!.firing.nextRunAt!.getTime(), first!.firing.dueAt.getTime() + 1000);
  });

  test('a once schedule fires once and is then done', async () => {
    const rec = startRecording('once');
    const at = new Date(Date.now() + 300);
    try {
      await upsertSchedule(db, { entityType: 'once', entityId: 'o', ownerId: owner, spec: { kind: 'once', at } });
      await waitFor('the firing', () => rec.seen.length === 1);
      await sleep(800);
    } finally {
      await rec.stop();
    }
    assert.equal(rec.seen.length, 1);
    assert.equal(rec.seen[0]!.firing.dueAt.getTime(), at.getTime());
    assert.equal(rec.seen[0]!.firing.nextRunAt, null);
    assert.ok(rec.seen[0]!.at - at.getTime() < 1000);
    const stored = await getSchedule(db, { entityType: 'once', entityId: 'o' });
    assert.equal(stored!.status, 'done');
    assert.equal(stored!.nextRunAt, null);
    assert.equal(stored!.runCount, 1);
    // Upserting the same once schedule again does not re-arm it; a new time does.
    const same = await upsertSchedule(db, { entityType: 'once', entityId: 'o', ownerId: owner, spec: { kind: 'once', at } });
    assert.equal(same.status, 'done');
    const later = await upsertSchedule(db, { entityType: 'once', entityId: 'o', ownerId: owner, spec: { kind: 'once', at: new Date(Date.now() + 3_600_000) } });
    assert.equal(later.status, 'active');
  });

  test('named schedules: hourly, daily and weekly periods; a named schedule fires at its start and moves on by its period', async () => {
    for (const [name, seconds] of [['hourly', 3600], ['daily', 86_400], ['weekly', 604_800]] as const) {
      const s = await upsertSchedule(db, { entityType: 'named-periods', entityId: name, ownerId: owner, spec: { kind: 'named', name } });
      assert.ok(Math.abs(s.nextRunAt!.getTime() - (Date.now() + seconds * 1000)) < 2000, name);
    }
    const rec = startRecording('named');
    const startAt = new Date(Date.now() + 200);
    try {
      await upsertSchedule(db, { entityType: 'named', entityId: 'h', ownerId: owner, spec: { kind: 'named', name: 'hourly' }, startAt });
      await waitFor('the firing', () => rec.seen.length === 1);
    } finally {
      await rec.stop();
    }
    assert.equal(rec.seen[0]!.firing.dueAt.getTime(), startAt.getTime());
    const stored = await getSchedule(db, { entityType: 'named', entityId: 'h' });
    assert.equal(stored!.nextRunAt!.getTime(), startAt.getTime() + 3_600_000);
  });

  test('after downtime a schedule that missed several slots fires exactly once, then keeps its phase', async () => {
    const ref = { entityType: 'catchup', entityId: 'c' };
    await upsertSchedule(db, { ...ref, ownerId: owner, spec: { kind: 'interval', seconds: 10 } });
    // As if the process had been down for 35 s: four slots missed.
    const missed = new Date(Date.now() - 35_000);
    await db.query('UPDATE schedules SET next_slot_at = $1, next_run_at = $1 WHERE entity_type = $2', [missed.toISOString(), ref.entityType]);
    const rec = startRecording('catchup');
    try {
      await waitFor('the catch-up firing', () => rec.seen.length >= 1);
      await sleep(1000);
    } finally {
      await rec.stop();
    }
    assert.equal(rec.seen.length, 1, 'one firing for all missed slots');
    const { firing } = rec.seen[0]!;
    assert.equal(firing.dueAt.getTime(), missed.getTime());
    const next = firing.nextRunAt!.getTime();
    assert.ok(next > Date.now() - 1000 && next <= firing.firedAt.getTime() + 10_000, 'next run computed from now');
    assert.equal((next - missed.getTime()) % 10_000, 0, 'on the original 10 s grid');
    const runs = await listScheduleRuns(db, firing.scheduleId);
    assert.equal(runs.length, 1);
  });

  test('pause stops firing at once; resume continues from the next slot', async () => {
    const ref = { entityType: 'pausable', entityId: 'p' };
    const rec = startRecording('pausable');
    try {
      await upsertSchedule(db, { ...ref, ownerId: owner, spec: { kind: 'interval', seconds: 1 }, startAt: new Date(Date.now() + 100) });
      await waitFor('a firing', () => rec.seen.length >= 1);
      const paused = await pauseSchedule(db, ref);
      const count = rec.seen.length;
      assert.equal(paused!.status, 'paused');
      assert.equal(paused!.nextRunAt, null);
      await sleep(2500);
      assert.equal(rec.seen.length, count, 'no firing after pause');
      const resumed = await resumeSchedule(db, ref);
      assert.equal(resumed!.status, 'active');
      assert.ok(resumed!.nextRunAt!.getTime() > Date.now() - 50 && resumed!.nextRunAt!.getTime() <= Date.now() + 1000);
      await waitFor('a firing after resume', () => rec.seen.length > count, 3000);
    } finally {
      await rec.stop();
    }
  });

  test('delete stops firing at once', async () => {
    const ref = { entityType: 'deletable', entityId: 'd' };
    const rec = startRecording('deletable');
    try {
      await upsertSchedule(db, { ...ref, ownerId: owner, spec: { kind: 'interval', seconds: 1 }, startAt: new Date(Date.now() + 100) });
      await waitFor('a firing', () => rec.seen.length >= 1);
      assert.equal(await deleteSchedule(db, ref), true);
      const count = rec.seen.length;
      await sleep(2500);
      assert.equal(rec.seen.length, count, 'no firing after delete');
      assert.equal(await getSchedule(db, ref), undefined);
      assert.equal(await deleteSchedule(db, ref), false);
    } finally {
      await rec.stop();
    }
  });

  test('a throwing handler loses only its own firing: it is recorded with the error and the loop goes on', async () => {
    const registry = new Registry();
    const rec = startRecording('fragile', {
      registry,
      handler: async (firing, tx) => {
        await tx.query('SELECT 1');
        if (firing.entityId === 'bad') throw new Error('handler exploded');
      },
    });
    try {
      const startAt = new Date(Date.now() + 100);
      await upsertSchedule(db, { entityType: 'fragile', entityId: 'bad', ownerId: owner, spec: { kind: 'interval', seconds: 1 }, startAt });
      await upsertSchedule(db, { entityType: 'fragile', entityId: 'good', ownerId: owner, spec: { kind: 'interval', seconds: 1 }, startAt });
      await waitFor('two rounds of firings', () => rec.seen.length >= 4, 4000);
    } finally {
      await rec.stop();
    }
    const bad = (await getSchedule(db, { entityType: 'fragile', entityId: 'bad' }))!;
    const runs = await listScheduleRuns(db, bad.id);
    assert.ok(runs.length >= 2);
    assert.ok(runs.every((r) => r.error === 'handler exploded'));
    const good = (await getSchedule(db, { entityType: 'fragile', entityId: 'good' }))!;
    assert.ok((await listScheduleRuns(db, good.id)).every((r) => r.error === null));
    assert.ok(loggedErrors.some((e) => e.msg === 'schedule handler failed'));
    const text = await registry.metrics();
    assert.match(text, /schedule_errors_total\{stage="handler"\} [1-9]/);
    assert.match(text, /schedule_firings_total\{entity_type="fragile"\} [1-9]/);
    assert.match(text, /schedule_fire_delay_seconds_count [1-9]/);
  });

  test('a handler enqueues a job in the claiming transaction (outbox); a rolled-back firing enqueues nothing', async () => {
    const jobs = new Jobs<{ 'scheduled.check': { entityId: string; dueAt: string } }>({
      db,
      registry: new Registry(),
      logger,
      pollingIntervalSeconds: 0.5,
      metricsIntervalMs: 0,
    });
    await jobs.define('scheduled.check');
    const ran: { entityId: string; dueAt: string }[] = [];
    await jobs.work('scheduled.check', async (payload) => {
      ran.push(payload);
    });
    await jobs.start();
    const rec = startRecording('checked', {
      handler: async (firing, tx) => {
        await jobs.send('scheduled.check', { entityId: firing.entityId, dueAt: firing.dueAt.toISOString() }, { tx });
        // The job insert is part of this savepoint: a throw after it takes the job back out.
        if (firing.entityId === 'fails-after-send') throw new Error('after send');
      },
    });
    const at = new Date(Date.now() + 100);
    try {
      await upsertSchedule(db, { entityType: 'checked', entityId: 'ok', ownerId: owner, spec: { kind: 'once', at } });
      await upsertSchedule(db, { entityType: 'checked', entityId: 'fails-after-send', ownerId: owner, spec: { kind: 'once', at } });
      await waitFor('the scheduled job to run', () => ran.length >= 1, 5000);
      await sleep(1200);
    } finally {
      await rec.stop();
      await jobs.stop({ timeoutMs: 1000 });
    }
    assert.equal(rec.seen.length, 2, 'both fired');
    assert.deepEqual(ran, [{ entityId: 'ok', dueAt: at.toISOString() }]);
  });

  test('an unreachable database is logged and counted; the loop keeps trying and still stops', async () => {
    const unreachable = new PostgresDb('postgres://nobody@127.0.0.1:1/nothing', { max: 1 });
    const registry = new Registry();
    const errors: string[] = [];
    const scheduler = new Scheduler({ db: unreachable, registry, pollIntervalMs: 50, logger: { error: (_obj, msg) => void errors.push(msg) } });
    scheduler.on('anything', async () => {});
    scheduler.start();
    try {
      await waitFor('two failed claims', () => errors.length >= 2, 5000);
    } finally {
      await scheduler.stop();
      await unreachable.close();
    }
    assert.ok(errors.every((m) => m === 'schedule claim failed'));
    assert.match(await registry.metrics(), /schedule_errors_total\{stage="claim"\} [2-9]/);
  });

  test(
    'no double fire: two schedulers on two pools, 50 one-second schedules for about 5 s',
    { skip: ENGINE === 'pglite' ? 'needs PostgreSQL: PGlite has one connection, so two schedulers cannot contend' : false, timeout: 30_000 },
    async () => {
      await db.query('CREATE TABLE IF NOT EXISTS test_firings (schedule_id text NOT NULL, due_at timestamptz NOT NULL, fired_by text NOT NULL, lag_ms integer NOT NULL)');
      const second = new PostgresDb(t.url!, { max: 5 });
      const record =
        (name: string): FiringHandler =>
        async (firing, tx) => {
          await tx.query('INSERT INTO test_firings (schedule_id, due_at, fired_by, lag_ms) VALUES ($1, $2, $3, $4)', [
            firing.scheduleId,
            firing.dueAt.toISOString(),
            name,
            Date.now() - firing.dueAt.getTime(),
          ]);
        };
      const schedulers = [new Scheduler({ db, logger }).on('race', record('A')), new Scheduler({ db: second, logger }).on('race', record('B'))];
      const base = Date.now() + 500;
      const count = 50;
      for (let i = 0; i < count; i++) {
        // Spread over the second so claims overlap at every moment, not only on the boundary.
        await upsertSchedule(db, { entityType: 'race', entityId: `r${i}`, ownerId: owner, spec: { kind: 'interval', seconds: 1 }, startAt: new Date(base + i * 20) });
      }
      for (const s of schedulers) s.start();
      await sleep(5600);
      // Stop admitting new slots, then let both finish what they hold.
      const pausedAt = Date.now();
      await db.query(`UPDATE schedules SET status = 'paused', next_run_at = NULL WHERE entity_type = 'race'`);
      await Promise.all(schedulers.map((s) => s.stop()));
      await second.close();

      const { rows } = await db.query<{ schedule_id: string; due_at: Date; fired_by: string; lag_ms: number }>(
        'SELECT schedule_id, due_at, fired_by, lag_ms FROM test_firings ORDER BY schedule_id, due_at',
      );
      const seen = new Map<string, number>();
      for (const r of rows) {
        const key = `${r.schedule_id}@${r.due_at.toISOString()}`;
        seen.set(key, (seen.get(key) ?? 0) + 1);
      }
      const doubles = [...seen].filter(([, n]) => n > 1);
      assert.deepEqual(doubles, [], 'every (schedule, due_at) fired exactly once');
      assert.ok(rows.length >= 200, `${rows.length} firings`);

      // None missed: each schedule's due times are consecutive slots from its start, and the last
      // slot fired is the one just before the pause.
      const bySchedule = new Map<string, number[]>();
      for (const r of rows) bySchedule.set(r.schedule_id, [...(bySchedule.get(r.schedule_id) ?? []), r.due_at.getTime()]);
      assert.equal(bySchedule.size, count);
      const schedules = await listSchedules(db, { ownerId: owner, entityType: 'race', limit: 100 });
      for (const s of schedules) {
        const dues = bySchedule.get(s.id)!;
        const start = base + Number(s.entityId.slice(1)) * 20;
        assert.equal(dues[0], start, `${s.entityId} fired its first slot`);
        for (let i = 1; i < dues.length; i++) assert.equal(dues[i]! - dues[i - 1]!, 1000, `${s.entityId} skipped or repeated a slot`);
        // Every slot due a second or more before the pause has fired (each fires within 1 s).
        assert.ok(dues.at(-1)! > pausedAt - 2000, `${s.entityId} stopped firing early`);
        assert.equal(s.lastDueAt!.getTime(), dues.at(-1), `${s.entityId}: the table agrees with the handler`);
        assert.equal(s.runCount, dues.length);
      }
      const runs = await db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM schedule_runs r JOIN schedules s ON s.id = r.schedule_id WHERE s.entity_type = 'race'`,
      );
      assert.equal(runs.rows[0]!.n, rows.length, 'schedule_runs holds one row per firing');
      const byA = rows.filter((r) => r.fired_by === 'A').length;
      const lags = rows.map((r) => r.lag_ms);
      console.log(`# two schedulers: ${rows.length} firings (A ${byA}, B ${rows.length - byA}), due → handler: ${summarize(lags)}`);
      assert.ok(
        lags.every((l) => l < 1000),
        'every firing within 1 s of its due time',
      );
    },
  );
});
