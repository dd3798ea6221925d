/** The built-in task handlers: `http` (through the SSRF-safe outbound client) and `shell` (opt-in). */
import { spawn } from 'node:child_process';
import { ALLOW_NO_PRIVATE, createHttpOut, type AllowPrivate } from '../platform/http-out/index.ts';

/** What a handler is given besides the task's payload. */
export interface HandlerContext {
  taskId: string;
  /** The task as it was assigned. */
  task: { id: string; title: string; type: string; timeout_seconds: number | null; retry_count: number };
  /** Reports progress (0-100) to the server; best effort, never throws. */
  progress(percent: number): void;
  /** Aborted when the task times out or the worker gives the task back on shutdown. */
  signal: AbortSignal;
}

/** Runs one task: the resolved value becomes the task's `result`, a rejection its `error`. */
export type TaskHandler = (payload: Record<string, unknown>, ctx: HandlerContext) => Promise<unknown>;

/** A payload that does not fit the handler: the task fails with this message. */
export class PayloadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PayloadError';
  }
}

const TEXT_CAP = 256 * 1024;
const OUTPUT_CAP = 64 * 1024;

function str(payload: Record<string, unknown>, key: string, required: true): string;
function str(payload: Record<string, unknown>, key: string, required?: false): string | undefined;
function str(payload: Record<string, unknown>, key: string, required = false): string | undefined {
  const v = payload[key];
  if (v === undefined || v === null) {
    if (required) throw new PayloadError(`payload.${key} is required`);
    return undefined;
  }
  if (typeof v !== 'string') throw new PayloadError(`payload.${key} must be a string`);
  return v;
}

function seconds(payload: Record<string, unknown>, key: string): number | undefined {
  const v = payload[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new PayloadError(`payload.${key} must be a positive number`);
  return v;
}

/** `http`: payload `{url, method?, headers?, body?, timeout_seconds?}` → `{status, headers, body, body_truncated?}`. */
export function httpHandler(opts: { allowPrivate?: AllowPrivate; userAgent?: string } = {}): TaskHandler {
  const out = createHttpOut({
    allowPrivate: opts.allowPrivate ?? ALLOW_NO_PRIVATE,
    userAgent: opts.userAgent ?? 'Mainspring-Worker/0.1',
    maxResponseBytes: 5 * 1024 * 1024,
  });
  return async (payload, ctx) => {
    const url = str(payload, 'url', true);
    const method = (str(payload, 'method') ?? 'GET').toUpperCase();
    const headers: Record<string, string> = {};
    const given = payload.headers;
    if (given !== undefined && given !== null) {
      if (typeof given !== 'object' || Array.isArray(given)) throw new PayloadError('payload.headers must be an object of strings');
      for (const [k, v] of Object.entries(given)) {
        if (typeof v !== 'string') throw new PayloadError(`payload.headers.${k} must be a string`);
        headers[k] = v;
      }
    }
    let body: string | undefined;
    if (payload.body !== undefined && payload.body !== null) {
      if (typeof payload.body === 'string') body = payload.body;
      else {
        body = JSON.stringify(payload.body);
        if (!Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) headers['content-type'] = 'application/json';
      }
    }
    const timeout = seconds(payload, 'timeout_seconds') ?? 30;
    const res = await out.request(url, { method, headers, body, timeoutMs: timeout * 1000, signal: ctx.signal });
    const text = res.body.toString('utf8');
    const truncated = text.length > TEXT_CAP;
    return { status: res.status, headers: res.headers, body: truncated ? text.slice(0, TEXT_CAP) : text, ...(truncated ? { body_truncated: true } : {}) };
  };
}

/** Collects a stream's text up to `cap` characters. */
function capped(cap: number) {
  let text = '';
  let truncated = false;
  return {
    add(chunk: string) {
      if (text.length >= cap) {
        truncated = true;
        return;
      }
      text += chunk;
      if (text.length > cap) {
        text = text.slice(0, cap);
        truncated = true;
      }
    },
    get text() {
      return text;
    },
    get truncated() {
      return truncated;
    },
  };
}

/**
 * `shell`: payload `{command, args?, cwd?, timeout_seconds?}` → `{exit_code, stdout, stderr}`. The
 * command runs without a shell (no expansion); a non-zero exit is a result, not a failure; a
 * timeout kills the process and fails the task.
 */
export function shellHandler(): TaskHandler {
  return (payload, ctx) => {
    const command = str(payload, 'command', true);
    const rawArgs = payload.args ?? [];
    if (!Array.isArray(rawArgs) || rawArgs.some((a) => typeof a !== 'string')) throw new PayloadError('payload.args must be an array of strings');
    const args = rawArgs as string[];
    const cwd = str(payload, 'cwd');
    const timeout = seconds(payload, 'timeout_seconds') ?? ctx.task.timeout_seconds ?? 300;
    return new Promise((resolve, reject) => {
      const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], shell: false });
      const stdout = capped(OUTPUT_CAP);
      const stderr = capped(OUTPUT_CAP);
      child.stdout.setEncoding('utf8').on('data', (s: string) => stdout.add(s));
      child.stderr.setEncoding('utf8').on('data', (s: string) => stderr.add(s));
      let killedFor: string | null = null;
      const kill = (why: string) => {
        killedFor ??= why;
        child.kill('SIGKILL');
      };
      const timer = setTimeout(() => kill(`timed out after ${timeout} s`), timeout * 1000);
      const onAbort = () => kill('aborted');
      ctx.signal.addEventListener('abort', onAbort, { once: true });
      const finish = () => {
        clearTimeout(timer);
        ctx.signal.removeEventListener('abort', onAbort);
      };
      child.once('error', (err) => {
        finish();
        reject(new Error(`could not run ${command}: ${err.message}`));
      });
      child.once('close', (code, signal) => {
        finish();
        if (killedFor) return reject(new Error(`${command} ${killedFor}`));
        resolve({
          exit_code: code ?? (signal ? 128 : 1),
          ...(signal ? { signal } : {}),
          stdout: stdout.text,
          stderr: stderr.text,
          ...(stdout.truncated || stderr.truncated ? { output_truncated: true } : {}),
        });
      });
    });
  };
}
