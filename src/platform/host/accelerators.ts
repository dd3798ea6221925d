/**
 * AI accelerators of the host: NVIDIA GPUs through `nvidia-smi` (model and utilisation), NPUs
 * through the Linux compute-accelerator class (`/sys/class/accel`, model = its kernel driver; the
 * kernel exposes no utilisation for them). Absent tools or devices read as unavailable.
 */
import { execFile } from 'node:child_process';
import { readdir, readlink } from 'node:fs/promises';
import { basename, join } from 'node:path';

export interface Accelerator {
  available: boolean;
  model: string | null;
  /** Percent busy, or null when it cannot be measured. */
  utilization: number | null;
}

export interface Accelerators {
  gpu: Accelerator;
  npu: Accelerator;
}

const NONE: Accelerator = { available: false, model: null, utilization: null };

/**
 * Parses `nvidia-smi --query-gpu=name,utilization.gpu --format=csv,noheader,nounits`: one line per
 * GPU. Several GPUs report the first one's model (with a count) and their mean utilisation.
 */
export function parseNvidiaSmi(out: string): Accelerator {
  const gpus = out
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => {
      const i = l.lastIndexOf(',');
      const name = (i < 0 ? l : l.slice(0, i)).trim();
      const util = i < 0 ? NaN : Number(l.slice(i + 1).trim());
      return { name, util: Number.isFinite(util) ? util : null };
    })
    .filter((g) => g.name.length > 0);
  if (!gpus.length) return NONE;
  const utils = gpus.map((g) => g.util).filter((u): u is number => u !== null);
  return {
    available: true,
    model: gpus.length > 1 ? `${gpus[0]!.name} (x${gpus.length})` : gpus[0]!.name,
    utilization: utils.length ? Math.round((utils.reduce((a, b) => a + b, 0) / utils.length) * 10) / 10 : null,
  };
}

function run(cmd: string, args: string[], timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, windowsHide: true, maxBuffer: 64 * 1024 }, (err, stdout) => resolve(err ? null : stdout));
  });
}

export async function detectGpu(opts: { command?: string; timeoutMs?: number } = {}): Promise<Accelerator> {
  const out = await run(opts.command ?? 'nvidia-smi', ['--query-gpu=name,utilization.gpu', '--format=csv,noheader,nounits'], opts.timeoutMs ?? 2000);
  return out === null ? NONE : parseNvidiaSmi(out);
}

export async function detectNpu(sysRoot = '/sys'): Promise<Accelerator> {
  const dir = join(sysRoot, 'class', 'accel');
  let entries: string[];
  try {
    entries = (await readdir(dir)).filter((e) => e.startsWith('accel')).sort();
  } catch {
    return NONE;
  }
  if (!entries.length) return NONE;
  let model: string | null = null;
  try {
    model = basename(await readlink(join(dir, entries[0]!, 'device', 'driver')));
  } catch {
    model = entries[0]!;
  }
  return { available: true, model, utilization: null };
}

/** Detects both, caching the answer for `cacheMs` (probing spawns a process). */
export class AcceleratorProbe {
  private cached: { at: number; value: Promise<Accelerators> } | null = null;
  private readonly opts: { cacheMs: number; gpuCommand?: string; sysRoot?: string };

  constructor(opts: { cacheMs?: number; gpuCommand?: string; sysRoot?: string } = {}) {
    this.opts = { cacheMs: opts.cacheMs ?? 5000, gpuCommand: opts.gpuCommand, sysRoot: opts.sysRoot };
  }

  detect(): Promise<Accelerators> {
    const now = Date.now();
    if (this.cached && now - this.cached.at < this.opts.cacheMs) return this.cached.value;
    const value = Promise.all([detectGpu({ command: this.opts.gpuCommand }), detectNpu(this.opts.sysRoot)]).then(([gpu, npu]) => ({ gpu, npu }));
    this.cached = { at: now, value };
    return value;
  }
}
