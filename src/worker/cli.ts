/** `mainspring worker ...`: runs a task worker against a server until SIGTERM or SIGINT. */
import { parseArgs } from 'node:util';
import { parseAllowPrivate } from '../platform/http-out/index.ts';
import { createWorker, httpHandler, shellHandler, type TaskHandler, type WorkerLog } from './index.ts';

export const WORKER_USAGE = `Usage: mainspring worker --server URL --token T --capabilities a,b [options]

Options:
  --server URL              the Mainspring server, e.g. http://localhost:8080
  --token T                 a HelixCode access token (POST /api/v1/auth/login)
  --capabilities a,b        task types and capabilities this worker takes, e.g. building,testing
  --concurrency N           tasks run at once (default 1)
  --hostname H              worker name, unique per process (default <host>-<pid>)
  --allow-shell             enable the "shell" handler (runs commands from task payloads)
  --allow-private CIDRS|true  let the "http" handler reach these private ranges (default: none)
  --heartbeat-seconds S     busy heartbeat interval, keep it below WORKER_TIMEOUT / 2 (default 10)
  --grace-seconds S         on SIGTERM, time running tasks get before they go back to the queue (default 20)
`;

export class WorkerUsageError extends Error {}

const line: WorkerLog = (level, message, fields) => {
  const text = `${new Date().toISOString()} ${level.toUpperCase()} ${message}${fields && Object.keys(fields).length ? ` ${JSON.stringify(fields)}` : ''}\n`;
  (level === 'info' ? process.stdout : process.stderr).write(text);
};

function positive(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new WorkerUsageError(`${flag} must be a positive number`);
  return n;
}

/** Parses the arguments, starts the worker and stops it on SIGTERM/SIGINT; `extraHandlers` are added to the built-ins. */
export async function runWorkerCli(args: string[], extraHandlers: Record<string, TaskHandler> = {}): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        server: { type: 'string' },
        token: { type: 'string' },
        capabilities: { type: 'string' },
        concurrency: { type: 'string' },
        hostname: { type: 'string' },
        'allow-shell': { type: 'boolean', default: false },
        'allow-private': { type: 'string' },
        'heartbeat-seconds': { type: 'string' },
        'grace-seconds': { type: 'string' },
      },
    }));
  } catch (err) {
    throw new WorkerUsageError((err as Error).message);
  }
  if (!values.server || !values.token || !values.capabilities) throw new WorkerUsageError('--server, --token and --capabilities are required');
  const capabilities = values.capabilities.split(',').map((c) => c.trim()).filter(Boolean);
  if (capabilities.length === 0) throw new WorkerUsageError('--capabilities needs at least one name');
  const concurrency = positive(values.concurrency, '--concurrency', 1);
  if (!Number.isInteger(concurrency)) throw new WorkerUsageError('--concurrency must be a whole number');
  let allowPrivate;
  try {
    allowPrivate = parseAllowPrivate(values['allow-private']);
  } catch (err) {
    throw new WorkerUsageError(`--allow-private: ${(err as Error).message}`);
  }
  const heartbeatSeconds = positive(values['heartbeat-seconds'], '--heartbeat-seconds', 10);
  const graceSeconds = values['grace-seconds'] === '0' ? 0 : positive(values['grace-seconds'], '--grace-seconds', 20);

  const handlers: Record<string, TaskHandler> = { http: httpHandler({ allowPrivate }), ...extraHandlers };
  if (values['allow-shell']) handlers.shell = shellHandler();
  const worker = createWorker({
    server: values.server,
    token: values.token,
    capabilities,
    hostname: values.hostname,
    concurrency,
    handlers,
    heartbeatSeconds,
    waitSeconds: Math.min(20, heartbeatSeconds * 2),
    graceSeconds,
    disabledHandlers: values['allow-shell'] ? {} : { shell: 'The "shell" handler is disabled on this worker (start it with --allow-shell to enable it)' },
    log: line,
  });

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    line('info', 'shutting down', { signal });
    worker.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        line('error', 'shutdown failed', { error: String(err) });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  try {
    await worker.start();
  } catch (err) {
    line('error', 'could not register the worker', { error: err instanceof Error ? err.message : String(err) });
    process.exit(1);
  }
  line('info', 'worker is taking tasks', { worker_id: worker.id, handlers: Object.keys(handlers) });
}
