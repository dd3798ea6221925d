/** Real `mainspring` processes for tests: spawn `node src/main.ts`, wait for health, call HTTP, stop on SIGTERM. */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** How long a process gets after SIGTERM before it is killed. */
export const STOP_TIMEOUT_MS = 10_000;
/** Upper bound for one HTTP request made by `http()`. */
export const REQUEST_TIMEOUT_MS = 15_000;

/** How a process ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A spawned `node src/main.ts ...` with its output captured. */
export interface Proc {
  name: string;
  child: ChildProcess;
  /** Everything written to stdout so far. */
  stdout(): string;
  /** Everything written to stderr so far. */
  stderr(): string;
  /** Everything written to stdout and stderr so far, in arrival order. */
  output(): string;
  exited: Promise<Exit>;
  exit: Exit | undefined;
}

/** A `serve` process and the base URL it listens on. */
export interface ServerProcess extends Proc {
  baseUrl: string;
}

/** Processes spawned here that have not exited yet; a test file can stop the leftovers in `after`. */
export const running = new Set<Proc>();

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A port that was free a moment ago: bind port 0, read what the kernel chose, release it. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') return reject(new Error('no port assigned'));
      srv.close(() => resolve(addr.port));
    });
  });
}

/** Spawns `node src/main.ts <args>` in the repository root with a minimal environment plus `env`. */
export function spawnMain(name: string, args: string[], env: Record<string, string>): Proc {
  return spawnScript(name, 'src/main.ts', args, { LOG_LEVEL: 'info', PASSWORD_HASH_MEMORY_KIB: '4096', ...env });
}

/** Spawns `node <script> <args>` (a path from the repository root) with only PATH plus `env`. */
export function spawnScript(name: string, script: string, args: string[], env: Record<string, string> = {}): Proc {
  // A minimal environment: nothing from the caller's shell (DATABASE_URL, REDIS_URL, secrets, ...) leaks in.
  const child = spawn(process.execPath, [script, ...args], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  let all = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => {
    out += s;
    all += s;
  });
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    err += s;
    all += s;
  });
  const proc: Proc = {
    name,
    child,
    stdout: () => out,
    stderr: () => err,
    output: () => all,
    exit: undefined,
    exited: new Promise<Exit>((resolve) => {
      child.once('exit', (code, signal) => {
        proc.exit = { code, signal };
        running.delete(proc);
        resolve(proc.exit);
      });
    }),
  };
  running.add(proc);
  return proc;
}

/** Spawns `serve` listening on 127.0.0.1:`port`; `env` may add to or override the defaults. */
export function spawnServer(name: string, port: number, env: Record<string, string>): ServerProcess {
  const proc = spawnMain(name, ['serve'], { HOST: '127.0.0.1', PORT: String(port), ...env });
  return Object.assign(proc, { baseUrl: `http://127.0.0.1:${port}` });
}

/** Polls GET /health until it answers 200 "healthy"; fails at once if the process dies, or after the timeout. */
export async function waitHealthy(p: ServerProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (p.exit) throw new Error(`${p.name} exited (${JSON.stringify(p.exit)}) before becoming healthy:\n${p.output()}`);
    try {
      const res = await fetch(`${p.baseUrl}/health`, { signal: AbortSignal.timeout(2_000) });
      if (res.status === 200) {
        const body = (await res.json()) as { status?: string };
        if (body.status === 'healthy') return;
      } else {
        await res.body?.cancel();
      }
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`${p.name} not healthy within ${timeoutMs} ms:\n${p.output()}`);
}

/** SIGTERM, then wait for the exit; SIGKILL when it does not come within the timeout. */
export async function stopProc(p: Proc, timeoutMs = STOP_TIMEOUT_MS): Promise<{ exit: Exit; timedOut: boolean }> {
  if (p.exit) return { exit: p.exit, timedOut: false };
  p.child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    p.exited.then(() => false),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(true), timeoutMs))),
  ]);
  clearTimeout(timer);
  if (timedOut) p.child.kill('SIGKILL');
  return { exit: await p.exited, timedOut };
}

/** Stops every process given (e.g. `running`, in `after`) and asserts each exited 0 in time. */
export async function stopAll(procs: Iterable<Proc>, message: string): Promise<void> {
  const results = await Promise.all([...procs].map(async (p) => ({ p, ...(await stopProc(p)) })));
  const bad = results.filter((r) => r.timedOut || r.exit.code !== 0);
  assert.deepEqual(
    bad.map((r) => `${r.p.name}: ${JSON.stringify(r.exit)}${r.timedOut ? ` (no exit within ${STOP_TIMEOUT_MS / 1000} s, killed)` : ''}`),
    [],
    message,
  );
}

/** An HTTP response with its body parsed as JSON when it is JSON, else the text. */
export interface HttpResult {
  status: number;
  headers: Headers;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- assertions read arbitrary JSON
  body: any;
}

/** One JSON request to a running server; `token` becomes a Bearer header. */
export async function http(
  target: { baseUrl: string },
  method: string,
  path: string,
  opts: { token?: string; body?: unknown } = {},
): Promise<HttpResult> {
  const headers: Record<string, string> = {};
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${target.baseUrl}${path}`, {
    method,
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const text = await res.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = text;
  }
  return { status: res.status, headers: res.headers, body };
}

/** Asserts the status, showing the body when it differs. */
export function expectStatus(res: HttpResult, status: number, what: string): void {
  assert.equal(res.status, status, `${what}: expected ${status}, got ${res.status} ${JSON.stringify(res.body)}`);
}

/** The log lines that print the generated admin password. */
export function passwordLines(p: Proc): string[] {
  return `${p.stdout()}\n${p.stderr()}`.split('\n').filter((l) => l.includes('generated password'));
}
