/**
 * Baseline for the authenticated-GET benchmark: the least a server can do for the same request.
 * A bare Fastify 5 app with one route that verifies the HS256 access token with `jose` (same
 * secret, issuer and audience as Mainspring) and runs one primary-key query through a `pg` pool.
 *
 * Environment: DATABASE_URL, JWT_SECRET, JWT_ISSUER, JWT_AUDIENCE, HOST, PORT.
 * Stops on SIGTERM/SIGINT, and when the process that started it goes away (IPC channel closes).
 */
import Fastify from 'fastify';
import { jwtVerify } from 'jose';
import pg from 'pg';

function required(name: string): string {
  const v = process.env[name];
  if (!v) {
    console.error(`${name} is required`);
    process.exit(78);
  }
  return v;
}

const databaseUrl = required('DATABASE_URL');
const key = new TextEncoder().encode(required('JWT_SECRET'));
const issuer = process.env.JWT_ISSUER ?? 'mainspring';
const audience = process.env.JWT_AUDIENCE ?? 'mainspring-api';
const host = process.env.HOST ?? '127.0.0.1';
const port = Number(process.env.PORT ?? 8090);

const pool = new pg.Pool({ connectionString: databaseUrl, max: 20, application_name: 'mainspring-bench-baseline' });
pool.on('error', () => {});

const app = Fastify({ logger: false });

interface UserRow {
  id: string;
  email: string;
  role: string;
  tier: string;
}

app.get('/api/v1/users/me', async (req, reply) => {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
  if (!m) return reply.status(401).send({ error: 'unauthorized' });
  let sub: string;
  try {
    const { payload } = await jwtVerify(m[1]!, key, { algorithms: ['HS256'], issuer, audience });
    if (typeof payload.sub !== 'string') throw new Error('no subject');
    sub = payload.sub;
  } catch {
    return reply.status(401).send({ error: 'unauthorized' });
  }
  const { rows } = await pool.query<UserRow>('SELECT id, email, role, tier FROM users WHERE id = $1', [sub]);
  const user = rows[0];
  if (!user) return reply.status(404).send({ error: 'not found' });
  return { user };
});

app.get('/health', async () => ({ status: 'healthy' }));

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await app.close();
  await pool.end();
  process.exit(0);
}
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
process.on('disconnect', () => void stop());

await app.listen({ host, port });
