/** The worker's view of the HelixCode task API: plain JSON over HTTP with a Bearer token. */

/** A task as the server hands it out (only the fields a worker reads). */
export interface AssignedTask {
  id: string;
  title: string;
  type: string;
  payload: unknown;
  timeout_seconds: number | null;
  retry_count: number;
}

/** The server answered with a non-2xx status. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string | undefined;
  constructor(status: number, code: string | undefined, message: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/** True for failures worth retrying: no answer at all, a timeout, 429 or a 5xx. */
export function isTransient(err: unknown): boolean {
  if (err instanceof ApiError) return err.status === 429 || err.status >= 500;
  return true;
}

export interface TaskReport {
  status?: 'completed' | 'failed' | 'pending';
  progress?: number;
  result?: unknown;
  error?: string;
  worker_id: string;
  /** With a final status: also claim this worker's next task, handed back as `next_task`. */
  claim_next?: boolean;
}

export interface HeartbeatBody {
  worker_id: string;
  status: 'idle' | 'busy';
  current_task: string | null;
  wait?: number;
}

export class TaskApi {
  private readonly base: string;
  private readonly token: string;
  constructor(server: string, token: string) {
    this.base = server.replace(/\/+$/, '');
    this.token = token;
  }

  register(body: { hostname: string; capabilities: string[]; resources: Record<string, unknown> }, signal?: AbortSignal) {
    return this.call<{ worker_id: string; registered_at: string }>('POST', '/api/v1/workers/register', body, 15_000, signal);
  }

  /** A heartbeat; with `wait` the server holds the request until a task arrives or the wait ends. */
  heartbeat(body: HeartbeatBody, signal?: AbortSignal) {
    const timeout = 15_000 + (body.wait ?? 0) * 1000;
    return this.call<{ acknowledged: true; assigned_task: AssignedTask | null }>('POST', '/api/v1/workers/heartbeat', body, timeout, signal);
  }

  report(taskId: string, body: TaskReport, signal?: AbortSignal) {
    return this.call<{ id: string; status: string; next_task?: AssignedTask | null }>('PUT', `/api/v1/tasks/${encodeURIComponent(taskId)}`, body, 15_000, signal);
  }

  listRunning(signal?: AbortSignal) {
    return this.call<{ tasks: { id: string; assigned_worker: string | null }[] }>('GET', '/api/v1/tasks?status=running&limit=500', undefined, 15_000, signal);
  }

  private async call<T>(method: string, path: string, body: unknown, timeoutMs: number, signal?: AbortSignal): Promise<T> {
    const timeout = AbortSignal.timeout(timeoutMs);
    const headers: Record<string, string> = { authorization: `Bearer ${this.token}`, accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${this.base}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: signal ? AbortSignal.any([timeout, signal]) : timeout,
    });
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!res.ok) {
      const error = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error;
      throw new ApiError(res.status, error?.code, `${method} ${path} answered ${res.status}${error?.message ? `: ${error.message}` : ''}`);
    }
    return parsed as T;
  }
}
