#!/usr/bin/env node
/** Command line: `serve` (default), `migrate`, `admin create-user`, `admin set-password`. */
import { parseArgs } from 'node:util';
import { buildApp, closeContext, createContext } from './app.ts';
import { ConfigError, TIERS, loadConfig, type Tier } from './config.ts';
import { MIGRATIONS } from './migrations.ts';
import { migrate, openDb } from './platform/db/index.ts';
import { AppError } from './platform/errors.ts';

const USAGE = `Usage: mainspring <command>

Commands:
  serve                         start the HTTP server (default)
  migrate                       apply pending database migrations and exit
  admin create-user --email E --password P [--username U] [--role admin|user] [--tier T]
                                create an account
  worker --server URL --token T --capabilities a,b [--concurrency N] [--hostname H] [--allow-shell] [--allow-private CIDRS|true]
                                run a task worker against a server (see \`worker --help\`)
`;

// Long-polls last at most 25 s; a shutdown waits this long for in-flight requests.
const SHUTDOWN_GRACE_MS = 8000;

async function serve(): Promise<void> {
  const config = loadConfig();
  const ctx = await createContext(config);
  const app = await buildApp(ctx);
  ctx.deliveries.start(app.log);
  await ctx.jobs.start();
  ctx.scheduler.start();
  ctx.monitorEngine.start();
  ctx.tasks.start();
  ctx.cluster.start();
  const admin = await ctx.identity.ensureAdmin();
  if (admin.created) {
    if (admin.generatedPassword) {
      app.log.warn(`Created user "admin" with generated password: ${admin.generatedPassword} (shown once; set MAINSPRING_ADMIN_PASSWORD to choose it)`);
    } else {
      app.log.info('Created user "admin" with the password from MAINSPRING_ADMIN_PASSWORD');
    }
  }
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    app.log.info({ signal }, 'shutting down');
    // In-flight requests (long-polls included) may finish, but a connection that turns idle after
    // close() began would otherwise linger until its keep-alive timeout: sweep those, and cut
    // whatever is still open after the grace period.
    const sweep = setInterval(() => app.server.closeIdleConnections(), 200);
    const cutoff = setTimeout(() => app.server.closeAllConnections(), SHUTDOWN_GRACE_MS);
    await app.close();
    clearInterval(sweep);
    clearTimeout(cutoff);
    await closeContext(ctx);
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  await app.listen({ port: config.port, host: config.host });
  app.log.info({ engine: config.engine, dataDir: config.engine === 'pglite' ? config.dataDir : undefined }, 'Mainspring is serving');
}

async function runMigrate(): Promise<void> {
  const config = loadConfig();
  const db = await openDb({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  try {
    const applied = await migrate(db, MIGRATIONS);
    console.log(applied.length ? `Applied migrations: ${applied.join(', ')}` : 'Database is up to date');
  } finally {
    await db.close();
  }
}

async function adminCommand(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  if (sub !== 'create-user') throw new UsageError(`Unknown admin command: ${sub ?? '(none)'}`);
  const { values } = parseArgs({
    args: rest,
    options: { email: { type: 'string' }, password: { type: 'string' }, username: { type: 'string' }, role: { type: 'string' }, tier: { type: 'string' } },
  });
  if (!values.email || !values.password) throw new UsageError('--email and --password are required');
  if (values.role && values.role !== 'admin' && values.role !== 'user') throw new UsageError('--role must be admin or user');
  if (values.tier && !(TIERS as readonly string[]).includes(values.tier)) throw new UsageError(`--tier must be one of ${TIERS.join(', ')}`);
  const ctx = await createContext(loadConfig());
  try {
    const user = await ctx.identity.createUser({
      email: values.email,
      password: values.password,
      username: values.username,
      role: (values.role as 'admin' | 'user' | undefined) ?? 'user',
      tier: values.tier as Tier | undefined,
    });
    console.log(`Created ${user.role} ${user.id} <${user.email}> (tier ${user.tier})`);
  } finally {
    await closeContext(ctx);
  }
}

class UsageError extends Error {}

async function main(argv: string[]): Promise<void> {
  const [command = 'serve', ...rest] = argv;
  if (command === 'serve') return serve();
  if (command === 'migrate') return runMigrate();
  if (command === 'admin') return adminCommand(rest);
  if (command === 'worker') {
    const cli = await import('./worker/cli.ts');
    if (rest.includes('--help') || rest.includes('-h')) return void process.stdout.write(cli.WORKER_USAGE);
    return cli.runWorkerCli(rest).catch((err: unknown) => {
      throw err instanceof cli.WorkerUsageError ? new UsageError(err.message) : err;
    });
  }
  if (command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(USAGE);
    return;
  }
  throw new UsageError(`Unknown command: ${command}`);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof ConfigError) {
    console.error(err.message);
    process.exit(78);
  }
  if (err instanceof AppError) {
    console.error(`Error: ${err.message}`);
    process.exit(1);
  }
  if (err instanceof UsageError) {
    console.error(`${err.message}\n\n${USAGE}`);
    process.exit(64);
  }
  console.error(err);
  process.exit(1);
});
