/** The typed catalogue of events the core can emit, and the wildcard filters subscriptions use. */

/** Payload of each event type (`data` in a webhook body). */
export interface EventPayloads {
  'task.created': { task_id: string; title: string; priority: string };
  'task.started': { task_id: string; worker_id: string };
  'task.completed': { task_id: string; status: 'completed'; result?: unknown };
  'task.failed': { task_id: string; status: 'failed'; error?: string };
  'task.cancelled': { task_id: string };
  'worker.registered': { worker_id: string; hostname: string };
  'worker.offline': { worker_id: string; last_heartbeat: string };
  'monitor.data_changed': { source_id: string; name: string; url: string; changes: { extractor: string; old: unknown; new: unknown }[]; checked_at: string };
  'monitor.error': { source_id: string; name: string; url: string; error: string | null; http_status: number | null; attempts: number; consecutive_failures: number; checked_at: string };
  'monitor.check_completed': { source_id: string; name: string; url: string; ok: boolean; changed: boolean; values: unknown; http_status: number | null; duration_ms: number; warnings: string[]; checked_at: string };
  'database.created': { database_id: string; name: string };
  'database.deleted': { database_id: string; name: string };
  'branch.created': { database_id: string; branch: string; parent: string };
  'branch.merged': { database_id: string; source: string; target: string };
  'branch.deleted': { database_id: string; branch: string };
  'query.slow': { database_id: string; duration_ms: number; query: string };
  'usage.threshold': { metric: string; used: number; limit: number };
  'workflow.execution.started': { workflow_id: string; execution_id: string };
  'workflow.execution.completed': { workflow_id: string; execution_id: string; status: string };
  'workflow.execution.failed': { workflow_id: string; execution_id: string; error: string };
  'agent.run.completed': { agent_id: string; run_id: string; status: string };
  /** Sent to one subscription on request, to check a receiver end to end. */
  'webhook.ping': { webhook_id: string; message: string };
}

export type EventType = keyof EventPayloads;

export const EVENT_TYPES = [
  'task.created',
  'task.started',
  'task.completed',
  'task.failed',
  'task.cancelled',
  'worker.registered',
  'worker.offline',
  'monitor.data_changed',
  'monitor.error',
  'monitor.check_completed',
  'database.created',
  'database.deleted',
  'branch.created',
  'branch.merged',
  'branch.deleted',
  'query.slow',
  'usage.threshold',
  'workflow.execution.started',
  'workflow.execution.completed',
  'workflow.execution.failed',
  'agent.run.completed',
  'webhook.ping',
] as const satisfies readonly EventType[];

const PATTERN_RE = /^(\*|[a-z_]+(\.[a-z_]+)*(\.\*)?)$/;

/** `*` matches everything, `task.*` every event under `task.`, anything else one exact type. */
export function eventMatches(pattern: string, type: string): boolean {
  if (pattern === '*') return true;
  if (pattern.endsWith('.*')) return type.startsWith(pattern.slice(0, -1));
  return pattern === type;
}

/** Patterns that are malformed or match no known event type. */
export function invalidPatterns(patterns: readonly string[]): string[] {
  return patterns.filter((p) => !PATTERN_RE.test(p) || !EVENT_TYPES.some((t) => eventMatches(p, t)));
}
