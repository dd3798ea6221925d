/** Logging and metrics shared by the job and schedule loops. */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** The logger background loops report to (pino's shape). */
export interface BackgroundLogger {
  error(obj: unknown, msg: string): void;
  warn?(obj: unknown, msg: string): void;
}

// Several Jobs or Scheduler instances may share one registry (two schedulers in one process, a
// restart in tests); prom-client refuses a second metric of the same name, so reuse the first.

/** The registry's counter of this name, created on first use. */
export function counter<L extends string>(registry: Registry, name: string, help: string, labelNames: L[]): Counter<L> {
  return (registry.getSingleMetric(name) as Counter<L> | undefined) ?? new Counter({ name, help, labelNames, registers: [registry] });
}

/** The registry's gauge of this name, created on first use. */
export function gauge<L extends string>(registry: Registry, name: string, help: string, labelNames: L[]): Gauge<L> {
  return (registry.getSingleMetric(name) as Gauge<L> | undefined) ?? new Gauge({ name, help, labelNames, registers: [registry] });
}

/** The registry's histogram of this name, created on first use. */
export function histogram<L extends string>(registry: Registry, name: string, help: string, labelNames: L[], buckets: number[]): Histogram<L> {
  return (registry.getSingleMetric(name) as Histogram<L> | undefined) ?? new Histogram({ name, help, labelNames, buckets, registers: [registry] });
}
