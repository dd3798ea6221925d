/** Builds a real Mainspring server over a fresh test database; requests go through `app.inject()`. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildApp, closeContext, createContext } from '../../src/app.ts';
import { loadConfig } from '../../src/config.ts';
import type { AppContext } from '../../src/faces/shared/context.ts';
import { freshDb } from './engine.ts';

export const TEST_JWT_SECRET = 'test-jwt-secret-0123456789abcdef0123456789';

/** Limits high enough that ordinary tests never meet them; rate-limit tests pass their own. */
export const RELAXED_LIMITS = JSON.stringify({
  tasks: { anonymous: 100000, free: 100000 },
  monitoring: { anonymous: 100000, free: 100000 },
  databases: { anonymous: 100000, free: 100000 },
  automation: { anonymous: 100000, free: 100000 },
});

export interface TestServer {
  app: FastifyInstance;
  ctx: AppContext;
  /** JSON request helper; `token` becomes a Bearer header. */
  request(method: string, url: string, opts?: { body?: unknown; token?: string; headers?: Record<string, string>; rawBody?: string }): Promise<TestResponse>;
  close(): Promise<void>;
}

export interface TestResponse {
  status: number;
  headers: Record<string, string | string[] | number | undefined>;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- test assertions read arbitrary JSON
  body: any;
  text: string;
}

export async function startTestServer(env: Record<string, string> = {}): Promise<TestServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'ms-test-'));
  const test = await freshDb();
  const config = loadConfig({
    DATA_DIR: dataDir,
    JWT_SECRET: TEST_JWT_SECRET,
    SECRETS_KEY: 'test-secrets-key-0123456789abcdef0123456789',
    LOG_LEVEL: 'silent',
    PASSWORD_HASH_MEMORY_KIB: '4096',
    RATE_LIMITS: RELAXED_LIMITS,
    ...(test.url ? { DATABASE_URL: test.url } : {}),
    ...env,
  });
  const ctx = await createContext(config, { db: test.db });
  const app = await buildApp(ctx, { logger: false });
  return {
    app,
    ctx,
    async request(method, url, opts = {}) {
      const headers: Record<string, string> = { ...opts.headers };
      if (opts.token) headers.authorization = `Bearer ${opts.token}`;
      let payload: string | undefined = opts.rawBody;
      if (opts.body !== undefined) {
        payload = JSON.stringify(opts.body);
        headers['content-type'] ??= 'application/json';
      } else if (opts.rawBody !== undefined) {
        headers['content-type'] ??= 'application/json';
      }
      const res = await app.inject({ method: method as 'GET', url, headers, payload });
      let body: unknown = undefined;
      try {
        body = res.body ? JSON.parse(res.body) : undefined;
      } catch {
        body = undefined;
      }
      return { status: res.statusCode, headers: res.headers, body, text: res.body };
    },
    async close() {
      await app.close();
      await closeContext(ctx);
      await test.drop().catch(() => {});
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

let seq = 0;
/** A unique email for this process. */
export function uniqueEmail(tag = 'user'): string {
  return `${tag}.${process.pid}.${Date.now().toString(36)}.${seq++}@example.com`;
}

/** Registers through the Helomatic face and returns the user id and tokens. */
export async function registerUser(s: TestServer, opts: { email?: string; password?: string; name?: string } = {}) {
  const email = opts.email ?? uniqueEmail();
  const password = opts.password ?? 'correct-horse-battery';
  const res = await s.request('POST', '/api/auth/register', { body: { email, password, name: opts.name ?? 'Test User', company: 'Acme' } });
  if (res.status !== 201) throw new Error(`register failed: ${res.status} ${res.text}`);
  return {
    id: res.body.data.user.id as string,
    email,
    password,
    accessToken: res.body.data.tokens.access_token as string,
    refreshToken: res.body.data.tokens.refresh_token as string,
  };
}
