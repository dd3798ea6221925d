/**
 * Measurements of the machine the server runs on: CPU load and temperature, memory, the disk that
 * holds the data directory, and network traffic. Linux `/proc` and `/sys` first; `node:os` where
 * those are missing (other systems), and null where nothing can be measured.
 */
import { cpus, availableParallelism, freemem, totalmem } from 'node:os';
import { readFile, statfs, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { cpuUsagePercent, clampPercent, parseMeminfo, parseNetDev, parseProcStat, type CpuTimes } from './proc.ts';
import { readCpuTemperature } from './thermal.ts';

export { cpuUsagePercent, parseMeminfo, parseMillidegrees, parseNetDev, parseProcStat, type CpuTimes } from './proc.ts';
export { readCpuTemperature } from './thermal.ts';

/** Sizes in MiB (the unit HelixCode documents as MB); `percentage` is `used / total`, one decimal. */
export interface Capacity {
  total: number;
  used: number;
  available: number;
  percentage: number;
}

export interface SystemSnapshot {
  cpu: { usage: number; cores: number; temperature: number | null };
  memory: Capacity;
  disk: Capacity;
  network: { rxBytes: number | null; txBytes: number | null };
}

export interface HostMonitorOptions {
  /** The data directory; the disk figures are those of the filesystem that holds it. */
  dataDir: string;
  procRoot?: string;
  sysRoot?: string;
  /** How long a fresh CPU measurement samples, in ms (default 200). */
  cpuSampleMs?: number;
  /** A previous reading this recent (ms) is used as the start of the next measurement (default 5000). */
  cpuReuseMs?: number;
}

const MIB = 1024 * 1024;

async function readText(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return null;
  }
}

/** CPU times from `/proc/stat`, or from `os.cpus()` where there is no procfs. */
export async function readCpuTimes(procRoot = '/proc'): Promise<CpuTimes> {
  const text = await readText(join(procRoot, 'stat'));
  const parsed = text === null ? null : parseProcStat(text);
  if (parsed) return parsed;
  let idle = 0;
  let total = 0;
  for (const c of cpus()) {
    idle += c.times.idle;
    total += c.times.user + c.times.nice + c.times.sys + c.times.idle + c.times.irq;
  }
  return { idle, total };
}

/** Memory from `/proc/meminfo` (MemAvailable), or from `os` where there is no procfs. */
export async function readMemory(procRoot = '/proc'): Promise<Capacity> {
  const text = await readText(join(procRoot, 'meminfo'));
  const info = (text === null ? null : parseMeminfo(text)) ?? { totalBytes: totalmem(), availableBytes: freemem() };
  const c = capacity(info.totalBytes, info.totalBytes - info.availableBytes, info.availableBytes);
  // Rounded separately, used + available could miss total by 1 MiB; memory has no reserved share.
  return { ...c, used: c.total - c.available };
}

/**
 * The filesystem holding `path` (or, if it does not exist yet, its nearest existing parent).
 * `available` is what an unprivileged process may still write; root-reserved blocks count in neither.
 */
export async function readDisk(path: string): Promise<Capacity> {
  let dir = resolve(path);
  for (;;) {
    try {
      await stat(dir);
      break;
    } catch {
      const parent = dirname(dir);
      if (parent === dir) break;
      dir = parent;
    }
  }
  const s = await statfs(dir);
  return capacity(s.blocks * s.bsize, (s.blocks - s.bfree) * s.bsize, s.bavail * s.bsize);
}

/** Bytes received and sent over non-loopback interfaces since boot; nulls where `/proc/net/dev` is absent. */
export async function readNetwork(procRoot = '/proc'): Promise<{ rxBytes: number | null; txBytes: number | null }> {
  const text = await readText(join(procRoot, 'net', 'dev'));
  const totals = text === null ? null : parseNetDev(text);
  return { rxBytes: totals?.rxBytes ?? null, txBytes: totals?.txBytes ?? null };
}

function capacity(totalBytes: number, usedBytes: number, availableBytes: number): Capacity {
  return {
    total: Math.round(totalBytes / MIB),
    used: Math.round(usedBytes / MIB),
    available: Math.round(availableBytes / MIB),
    percentage: totalBytes > 0 ? clampPercent((usedBytes / totalBytes) * 100) : 0,
  };
}

/**
 * CPU load is a rate, so it needs two readings. Each measurement starts from the previous reading when
 * that is recent (a dashboard polling every few seconds gets the load since its last poll at once),
 * else samples for `sampleMs`; callers arriving during a measurement share it. No timer runs between
 * calls, so there is nothing to stop at shutdown.
 */
export class CpuUsageMeter {
  #last: { at: number; times: CpuTimes } | undefined;
  #inFlight: Promise<number> | undefined;
  readonly #read: () => Promise<CpuTimes>;
  readonly #sampleMs: number;
  readonly #reuseMs: number;

  constructor(read: () => Promise<CpuTimes>, opts: { sampleMs?: number; reuseMs?: number } = {}) {
    this.#read = read;
    this.#sampleMs = opts.sampleMs ?? 200;
    this.#reuseMs = opts.reuseMs ?? 5000;
  }

  /** Busy percentage of all cores over the last `sampleMs` to `reuseMs` milliseconds. */
  usage(): Promise<number> {
    this.#inFlight ??= this.#measure().finally(() => {
      this.#inFlight = undefined;
    });
    return this.#inFlight;
  }

  async #measure(): Promise<number> {
    let start = this.#last;
    const age = start ? performance.now() - start.at : Infinity;
    if (!start || age > this.#reuseMs) {
      start = { at: performance.now(), times: await this.#read() };
      await sleep(this.#sampleMs);
    } else if (age < this.#sampleMs) {
      await sleep(this.#sampleMs - age);
    }
    const end = { at: performance.now(), times: await this.#read() };
    this.#last = end;
    return cpuUsagePercent(start.times, end.times);
  }
}

/** Reads the host's figures on demand. */
export class HostMonitor {
  readonly #opts: Required<Pick<HostMonitorOptions, 'dataDir' | 'procRoot' | 'sysRoot'>>;
  readonly #cpu: CpuUsageMeter;

  constructor(opts: HostMonitorOptions) {
    this.#opts = { dataDir: opts.dataDir, procRoot: opts.procRoot ?? '/proc', sysRoot: opts.sysRoot ?? '/sys' };
    this.#cpu = new CpuUsageMeter(() => readCpuTimes(this.#opts.procRoot), { sampleMs: opts.cpuSampleMs, reuseMs: opts.cpuReuseMs });
  }

  /** All figures at once; the CPU sample (at most `cpuSampleMs`) overlaps the other reads. */
  async snapshot(): Promise<SystemSnapshot> {
    const [usage, temperature, memory, disk, network] = await Promise.all([
      this.#cpu.usage(),
      readCpuTemperature(this.#opts.sysRoot),
      readMemory(this.#opts.procRoot),
      readDisk(this.#opts.dataDir),
      readNetwork(this.#opts.procRoot),
    ]);
    return { cpu: { usage, cores: availableParallelism(), temperature }, memory, disk, network };
  }
}
