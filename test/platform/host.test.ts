/** Host readers: parsing of recorded /proc and /sys samples, fallbacks, and the CPU meter's sampling rules. */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { availableParallelism, totalmem } from 'node:os';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  CpuUsageMeter,
  cpuUsagePercent,
  HostMonitor,
  parseMeminfo,
  parseMillidegrees,
  parseNetDev,
  parseProcStat,
  readCpuTemperature,
  readCpuTimes,
  readDisk,
  readMemory,
  readNetwork,
  type CpuTimes,
} from '../../src/platform/host/index.ts';

const MIB = 1024 * 1024;

const PROC_STAT = `cpu  321700 50 85710 567197 6325 10 12150 1049 900 40
cpu0 160747 25 41138 287552 1543 5 5433 560 450 20
cpu1 160953 25 44571 279645 4782 5 6717 488 450 20
intr 123456 0 0
ctxt 987654
btime 1700000000
processes 4242
`;

const MEMINFO = `MemTotal:       24684084 kB
MemFree:        22076108 kB
MemAvailable:   22920492 kB
Buffers:          123456 kB
Cached:           654321 kB
Active(anon):      11111 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
`;

const NET_DEV = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 6231628155 17755021    0    0    0     0          0         0 6231628155 17755021    0    0    0     0       0          0
  eth0: 397680452   12422    0    0    0     0          0         0  1547338    9667    0    0    0     0       0          0
 wlan0:      1000      10    0    0    0     0          0         0      2000      20    0    0    0     0       0          0
`;

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'ms-host-'));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Writes `files` (path relative to a new root → content) and returns the root. */
function tree(files: Record<string, string>): string {
  const root = tempDir();
  for (const [rel, content] of Object.entries(files)) {
    const path = join(root, rel);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, content);
  }
  return root;
}

describe('/proc parsers', () => {
  test('parseProcStat sums the aggregate line without double-counting guest time', () => {
    const t = parseProcStat(PROC_STAT);
    // idle + iowait; user..steal (guest and guest_nice are already inside user and nice).
    assert.deepEqual(t, { idle: 567197 + 6325, total: 321700 + 50 + 85710 + 567197 + 6325 + 10 + 12150 + 1049 });
  });

  test('parseProcStat accepts the four-field form of old kernels and refuses text without a cpu line', () => {
    assert.deepEqual(parseProcStat('cpu 10 20 30 40\n'), { idle: 40, total: 100 });
    assert.equal(parseProcStat('cpu0 1 2 3 4\nintr 5\n'), null);
    assert.equal(parseProcStat('cpu  1 2 x 4\n'), null);
    assert.equal(parseProcStat(''), null);
  });

  test('cpuUsagePercent is the busy share of the ticks between two readings', () => {
    const a: CpuTimes = { idle: 1000, total: 2000 };
    assert.equal(cpuUsagePercent(a, { idle: 1075, total: 2100 }), 25);
    assert.equal(cpuUsagePercent(a, { idle: 1000, total: 2300 }), 100);
    assert.equal(cpuUsagePercent(a, { idle: 1300, total: 2300 }), 0);
    assert.equal(cpuUsagePercent(a, { idle: 1002, total: 2003 }), 33.3);
    // No ticks between the readings, or counters that went backwards: nothing to report but 0.
    assert.equal(cpuUsagePercent(a, a), 0);
    assert.equal(cpuUsagePercent(a, { idle: 900, total: 2100 }), 0);
  });

  test('parseMeminfo reads MemTotal and MemAvailable in bytes', () => {
    assert.deepEqual(parseMeminfo(MEMINFO), { totalBytes: 24684084 * 1024, availableBytes: 22920492 * 1024 });
  });

  test('parseMeminfo estimates available memory on kernels without MemAvailable', () => {
    const old = 'MemTotal: 1000 kB\nMemFree: 200 kB\nBuffers: 50 kB\nCached: 250 kB\n';
    assert.deepEqual(parseMeminfo(old), { totalBytes: 1000 * 1024, availableBytes: 500 * 1024 });
    assert.equal(parseMeminfo('MemFree: 200 kB\n'), null);
    assert.equal(parseMeminfo('MemTotal: 1000 kB\n'), null);
  });

  test('parseNetDev sums bytes over every interface but loopback', () => {
    assert.deepEqual(parseNetDev(NET_DEV), { rxBytes: 397680452 + 1000, txBytes: 1547338 + 2000 });
    const loopbackOnly = NET_DEV.split('\n').slice(0, 3).join('\n');
    assert.deepEqual(parseNetDev(loopbackOnly), { rxBytes: 0, txBytes: 0 });
    assert.equal(parseNetDev('Inter-|   Receive\n face |bytes\n'), null);
    assert.equal(parseNetDev('eth0: 1 2 3\n'), null);
  });

  test('parseMillidegrees converts to °C and drops absent or absurd readings', () => {
    assert.equal(parseMillidegrees('45200\n'), 45.2);
    assert.equal(parseMillidegrees('38875'), 38.9);
    assert.equal(parseMillidegrees('-5000'), -5);
    assert.equal(parseMillidegrees('0'), null);
    assert.equal(parseMillidegrees('200000'), null);
    assert.equal(parseMillidegrees('-273150'), null);
    assert.equal(parseMillidegrees('N/A'), null);
    assert.equal(parseMillidegrees(''), null);
  });
});

describe('readers over a host tree', () => {
  test('readMemory reports MiB with used + available = total', async () => {
    const proc = tree({ meminfo: 'MemTotal: 16777216 kB\nMemFree: 1000 kB\nMemAvailable: 4194304 kB\n' });
    assert.deepEqual(await readMemory(proc), { total: 16384, used: 12288, available: 4096, percentage: 75 });
  });

  test('readMemory falls back to the os figures where there is no meminfo', async () => {
    const m = await readMemory(join(tempDir(), 'no-proc'));
    assert.equal(m.total, Math.round(totalmem() / MIB));
    assert.equal(m.used + m.available, m.total);
    assert.ok(m.percentage >= 0 && m.percentage <= 100);
  });

  test('readNetwork sums the interfaces, and is null where /proc/net/dev is absent', async () => {
    assert.deepEqual(await readNetwork(tree({ 'net/dev': NET_DEV })), { rxBytes: 397681452, txBytes: 1549338 });
    assert.deepEqual(await readNetwork(join(tempDir(), 'no-proc')), { rxBytes: null, txBytes: null });
  });

  test('readCpuTimes reads /proc/stat, and os.cpus() where it is absent', async () => {
    assert.deepEqual(await readCpuTimes(tree({ stat: 'cpu 10 20 30 40 0 0 0 0\n' })), { idle: 40, total: 100 });
    const fallback = await readCpuTimes(join(tempDir(), 'no-proc'));
    assert.ok(fallback.total > 0 && fallback.idle >= 0 && fallback.idle <= fallback.total, JSON.stringify(fallback));
  });

  test('readDisk measures the filesystem holding the path, or its nearest existing parent', async () => {
    const dir = tempDir();
    const s = await statfs(dir);
    const expected = {
      total: Math.round((s.blocks * s.bsize) / MIB),
      used: Math.round(((s.blocks - s.bfree) * s.bsize) / MIB),
      available: Math.round((s.bavail * s.bsize) / MIB),
    };
    const disk = await readDisk(join(dir, 'not', 'yet', 'created'));
    assert.ok(disk.total > 0);
    // Another process may write between the two readings; a few MiB of slack.
    assert.equal(disk.total, expected.total);
    assert.ok(Math.abs(disk.used - expected.used) <= 64, `${disk.used} vs ${expected.used}`);
    assert.ok(Math.abs(disk.available - expected.available) <= 64, `${disk.available} vs ${expected.available}`);
    assert.ok(Math.abs(disk.percentage - (disk.used / disk.total) * 100) <= 0.1, JSON.stringify(disk));
  });

  test('readCpuTemperature prefers a CPU hwmon driver, package sensor first', async () => {
    const sys = tree({
      'class/hwmon/hwmon0/name': 'nvme\n',
      'class/hwmon/hwmon0/temp1_input': '30000\n',
      'class/hwmon/hwmon1/name': 'coretemp\n',
      'class/hwmon/hwmon1/temp1_input': '52500\n',
      'class/hwmon/hwmon1/temp2_input': '61000\n',
      'class/thermal/thermal_zone0/type': 'x86_pkg_temp\n',
      'class/thermal/thermal_zone0/temp': '48000\n',
    });
    assert.equal(await readCpuTemperature(sys), 52.5);
  });

  test('readCpuTemperature takes the hottest core when the driver has no package sensor', async () => {
    const sys = tree({
      'class/hwmon/hwmon2/name': 'k10temp\n',
      'class/hwmon/hwmon2/temp3_input': '41000\n',
      'class/hwmon/hwmon2/temp4_input': '44500\n',
    });
    assert.equal(await readCpuTemperature(sys), 44.5);
  });

  test('readCpuTemperature falls back to a CPU thermal zone, skipping board zones', async () => {
    const sys = tree({
      'class/thermal/thermal_zone0/type': 'acpitz\n',
      'class/thermal/thermal_zone0/temp': '27800\n',
      'class/thermal/thermal_zone1/type': 'x86_pkg_temp\n',
      'class/thermal/thermal_zone1/temp': '45200\n',
    });
    assert.equal(await readCpuTemperature(sys), 45.2);
  });

  test('readCpuTemperature is null when the host exposes no CPU sensor', async () => {
    const boardOnly = tree({ 'class/thermal/thermal_zone0/type': 'acpitz\n', 'class/thermal/thermal_zone0/temp': '27800\n' });
    assert.equal(await readCpuTemperature(boardOnly), null);
    const broken = tree({ 'class/thermal/thermal_zone0/type': 'cpu-thermal\n', 'class/thermal/thermal_zone0/temp': '0\n' });
    assert.equal(await readCpuTemperature(broken), null);
    assert.equal(await readCpuTemperature(join(tempDir(), 'no-sys')), null);
  });
});

describe('CpuUsageMeter', () => {
  /** A reader that returns the scripted readings in order and counts its calls. */
  function scripted(readings: CpuTimes[]) {
    const r = { calls: 0, read: async () => readings[Math.min(r.calls++, readings.length - 1)]! };
    return r;
  }

  test('the first measurement samples over sampleMs between two readings', async () => {
    const src = scripted([
      { idle: 0, total: 0 },
      { idle: 60, total: 100 },
    ]);
    const meter = new CpuUsageMeter(src.read, { sampleMs: 40 });
    const t0 = performance.now();
    assert.equal(await meter.usage(), 40);
    assert.ok(performance.now() - t0 >= 35, 'waited for the sample');
    assert.equal(src.calls, 2);
  });

  test('callers during a measurement share it', async () => {
    const src = scripted([
      { idle: 0, total: 0 },
      { idle: 10, total: 100 },
    ]);
    const meter = new CpuUsageMeter(src.read, { sampleMs: 30 });
    const results = await Promise.all([meter.usage(), meter.usage(), meter.usage()]);
    assert.deepEqual(results, [90, 90, 90]);
    assert.equal(src.calls, 2);
  });

  test('a recent reading starts the next measurement, so it takes one more reading only', async () => {
    const src = scripted([
      { idle: 0, total: 0 },
      { idle: 50, total: 100 },
      { idle: 50, total: 200 },
    ]);
    const meter = new CpuUsageMeter(src.read, { sampleMs: 100, reuseMs: 5000 });
    assert.equal(await meter.usage(), 50);
    await new Promise((r) => setTimeout(r, 110));
    const t0 = performance.now();
    // From the second reading to the third: 100 ticks, none idle.
    assert.equal(await meter.usage(), 100);
    assert.ok(performance.now() - t0 < 80, 'no new sampling wait');
    assert.equal(src.calls, 3);
  });

  test('a stale reading is not reused: the meter samples afresh', async () => {
    const src = scripted([
      { idle: 0, total: 0 },
      { idle: 50, total: 100 },
      { idle: 1000, total: 10000 },
      { idle: 1075, total: 10100 },
    ]);
    const meter = new CpuUsageMeter(src.read, { sampleMs: 10, reuseMs: 20 });
    assert.equal(await meter.usage(), 50);
    await new Promise((r) => setTimeout(r, 40));
    assert.equal(await meter.usage(), 25);
    assert.equal(src.calls, 4);
  });
});

describe('HostMonitor', () => {
  test('a snapshot combines every reader over the given host tree', async () => {
    const proc = tree({
      stat: PROC_STAT,
      meminfo: 'MemTotal: 8388608 kB\nMemAvailable: 2097152 kB\n',
      'net/dev': NET_DEV,
    });
    const sys = tree({ 'class/thermal/thermal_zone0/type': 'cpu-thermal\n', 'class/thermal/thermal_zone0/temp': '45200\n' });
    const dataDir = tempDir();
    const monitor = new HostMonitor({ dataDir, procRoot: proc, sysRoot: sys, cpuSampleMs: 10 });
    const s = await monitor.snapshot();
    // The recorded /proc/stat does not change between the two readings: no ticks, usage 0.
    assert.deepEqual(s.cpu, { usage: 0, cores: availableParallelism(), temperature: 45.2 });
    assert.deepEqual(s.memory, { total: 8192, used: 6144, available: 2048, percentage: 75 });
    assert.deepEqual(s.network, { rxBytes: 397681452, txBytes: 1549338 });
    assert.equal(s.disk.total, (await readDisk(dataDir)).total);
    assert.ok(s.disk.total > 0 && s.disk.used >= 0 && s.disk.available >= 0 && s.disk.used <= s.disk.total);
  });
});
