/**
 * CPU temperature from sysfs, when the host exposes a sensor for it. Virtual machines and most
 * containers expose none; then the answer is null rather than some other sensor's reading.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseMillidegrees } from './proc.ts';

// hwmon drivers whose sensors measure the CPU package or die (Intel, AMD, Raspberry Pi and other SoCs).
const CPU_HWMON = new Set(['coretemp', 'k10temp', 'zenpower', 'cpu_thermal', 'cpu-thermal', 'soc_thermal', 'soc-thermal']);
// Thermal-zone types that name the CPU; ACPI zones (`acpitz`) often report a board or fixed value.
const CPU_ZONE = /x86_pkg_temp|cpu|soc|core|package|tctl/i;

async function readText(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return null;
  }
}

async function entries(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  } catch {
    return [];
  }
}

/** The first CPU sensor of the hwmon drivers: `temp1_input` (the package on coretemp, Tctl on k10temp) or the hottest. */
async function fromHwmon(sysRoot: string): Promise<number | null> {
  const base = join(sysRoot, 'class', 'hwmon');
  for (const hw of await entries(base)) {
    const dir = join(base, hw);
    const name = (await readText(join(dir, 'name')))?.trim();
    if (!name || !CPU_HWMON.has(name)) continue;
    const inputs = (await entries(dir)).filter((f) => /^temp\d+_input$/.test(f));
    const first = inputs.includes('temp1_input') ? await readText(join(dir, 'temp1_input')) : null;
    const firstValue = first === null ? null : parseMillidegrees(first);
    if (firstValue !== null) return firstValue;
    const values: number[] = [];
    for (const f of inputs) {
      const text = await readText(join(dir, f));
      const v = text === null ? null : parseMillidegrees(text);
      if (v !== null) values.push(v);
    }
    if (values.length) return Math.max(...values);
  }
  return null;
}

/** The first thermal zone whose type names the CPU. */
async function fromThermalZones(sysRoot: string): Promise<number | null> {
  const base = join(sysRoot, 'class', 'thermal');
  for (const zone of (await entries(base)).filter((z) => z.startsWith('thermal_zone'))) {
    const type = (await readText(join(base, zone, 'type')))?.trim();
    if (!type || !CPU_ZONE.test(type)) continue;
    const text = await readText(join(base, zone, 'temp'));
    const v = text === null ? null : parseMillidegrees(text);
    if (v !== null) return v;
  }
  return null;
}

/** CPU temperature in °C (one decimal), or null when the host exposes no CPU sensor. */
export async function readCpuTemperature(sysRoot = '/sys'): Promise<number | null> {
  return (await fromHwmon(sysRoot)) ?? (await fromThermalZones(sysRoot));
}
