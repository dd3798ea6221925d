/**
 * Parsers for the Linux `/proc` files the host monitor reads. Pure functions over the file text, so
 * they are tested on recorded samples; a file in an unexpected shape yields null, never a guess.
 */

/** Cumulative CPU time over all cores, in clock ticks (USER_HZ), as counted since boot. */
export interface CpuTimes {
  /** Ticks spent idle or waiting for I/O. */
  idle: number;
  /** All ticks (busy + idle). */
  total: number;
}

/**
 * Reads the aggregate `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq steal
 * [guest guest_nice]. Guest time is already counted in user and nice, so it is left out of the total.
 */
export function parseProcStat(text: string): CpuTimes | null {
  const line = text.split('\n').find((l) => /^cpu\s/.test(l));
  if (!line) return null;
  const fields = line.trim().split(/\s+/).slice(1, 9).map(Number);
  if (fields.length < 4 || fields.some((n) => !Number.isFinite(n) || n < 0)) return null;
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = fields;
  return { idle: idle + iowait, total: user + nice + system + idle + iowait + irq + softirq + steal };
}

/** Busy share of the CPU time that passed between two readings, in percent with one decimal. */
export function cpuUsagePercent(before: CpuTimes, after: CpuTimes): number {
  const total = after.total - before.total;
  const idle = after.idle - before.idle;
  // Every core adds a tick per jiffy whether busy or idle, so a zero total only happens when the two
  // readings are the same one; counters that went backwards (a reset) give no information either.
  if (total <= 0 || idle < 0) return 0;
  return clampPercent(((total - idle) / total) * 100);
}

/** Memory as `/proc/meminfo` reports it, in bytes. */
export interface MemInfo {
  totalBytes: number;
  /** Memory a new workload could use without swapping (the kernel's MemAvailable estimate). */
  availableBytes: number;
}

/** Reads MemTotal and MemAvailable (kernels before 3.14 lack it: MemFree + Buffers + Cached then). */
export function parseMeminfo(text: string): MemInfo | null {
  const kib = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^(\w+(?:\(\w+\))?):\s+(\d+)(?:\s+kB)?\s*$/.exec(line.trim());
    if (m) kib.set(m[1]!, Number(m[2]));
  }
  const total = kib.get('MemTotal');
  if (total === undefined || total <= 0) return null;
  let available = kib.get('MemAvailable');
  if (available === undefined) {
    const free = kib.get('MemFree');
    if (free === undefined) return null;
    available = free + (kib.get('Buffers') ?? 0) + (kib.get('Cached') ?? 0);
  }
  return { totalBytes: total * 1024, availableBytes: Math.min(available, total) * 1024 };
}

/** Bytes received and sent since boot, summed over every interface but loopback. */
export interface NetTotals {
  rxBytes: number;
  txBytes: number;
}

/**
 * Reads `/proc/net/dev`: two header lines, then `iface: <8 receive fields> <8 transmit fields>`, with
 * bytes first in each group. Loopback traffic never leaves the host, so `lo` is not counted.
 */
export function parseNetDev(text: string): NetTotals | null {
  let rxBytes = 0;
  let txBytes = 0;
  let interfaces = 0;
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim();
    if (!name || name.includes('|')) continue;
    const fields = line.slice(colon + 1).trim().split(/\s+/).map(Number);
    if (fields.length < 16 || fields.some((n) => !Number.isFinite(n))) continue;
    interfaces++;
    if (name === 'lo') continue;
    rxBytes += fields[0]!;
    txBytes += fields[8]!;
  }
  return interfaces > 0 ? { rxBytes, txBytes } : null;
}

/**
 * A sysfs temperature (`thermal_zone<n>/temp`, `hwmon<n>/temp<i>_input`): an integer in millidegrees
 * Celsius. Sensors that are absent or broken report errors, 0 or absurd values; those yield null.
 */
export function parseMillidegrees(text: string): number | null {
  const raw = text.trim();
  if (!/^-?\d+$/.test(raw)) return null;
  const celsius = Number(raw) / 1000;
  if (celsius <= -40 || celsius === 0 || celsius >= 150) return null;
  return Math.round(celsius * 10) / 10;
}

/** Clamps to 0–100 and rounds to one decimal. */
export function clampPercent(value: number): number {
  if (!Number.isFinite(value)) return 0;
  return Math.round(Math.min(100, Math.max(0, value)) * 10) / 10;
}
