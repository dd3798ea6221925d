/** Liveness, the Helomatic System Status document with measured checks, and Prometheus metrics. */
import { z } from 'zod';
import { AppError } from '../../platform/errors.ts';
import { safeEqual } from '../../platform/crypto/index.ts';
import type { AppContext } from '../shared/context.ts';
import type { FaceApp } from '../shared/plugin.ts';

const componentSchema = z.object({
  status: z.enum(['operational', 'degraded', 'down']),
  latency: z.number().optional(),
  store: z.string().optional(),
  error: z.string().optional(),
  last_check: z.string(),
});

async function measure(check: () => Promise<unknown>): Promise<z.infer<typeof componentSchema>> {
  const started = performance.now();
  try {
    await check();
    return { status: 'operational', latency: Math.round((performance.now() - started) * 100) / 100, last_check: new Date().toISOString() };
  } catch (err) {
    return {
      status: 'down',
      latency: Math.round((performance.now() - started) * 100) / 100,
      error: err instanceof Error ? err.message.slice(0, 200) : 'check failed',
      last_check: new Date().toISOString(),
    };
  }
}

export function systemRoutes(app: FaceApp, ctx: AppContext): void {
  app.get('/health', {
    config: { rateLimit: false, auth: undefined },
    schema: {
      summary: 'Liveness: the process is up and serving',
      response: { 200: z.object({ status: z.literal('healthy'), version: z.string(), uptime_seconds: z.number(), timestamp: z.string() }) },
    },
    handler: async () => ({
      status: 'healthy' as const,
      version: ctx.version,
      uptime_seconds: Math.round((Date.now() - ctx.startedAt.getTime()) / 1000),
      timestamp: new Date().toISOString(),
    }),
  });

  app.get('/api/status', {
    config: { auth: 'optional' },
    schema: {
      summary: 'System status with component checks and measured latencies (ms)',
      response: {
        200: z.object({
          status: z.enum(['operational', 'degraded', 'down']),
          environment: z.string(),
          timestamp: z.string(),
          version: z.string(),
          engine: z.enum(['pglite', 'postgres']),
          components: z.object({ database: componentSchema, kv_storage: componentSchema, rate_limiter: componentSchema }),
          security: z.object({
            headers_enabled: z.boolean(),
            cors_configured: z.boolean(),
            rate_limiting: z.string(),
            ssl_enforced: z.boolean(),
          }),
        }),
      },
    },
    handler: async () => {
      const database = await measure(() => ctx.db.query('SELECT 1'));
      const kv = await measure(() => ctx.limits.ping());
      const probe = await measure(() =>
        ctx.limits.peek('status-probe', 'probe', { points: 1, windowSeconds: 1 }),
      );
      const rateLimiter = { status: probe.status, store: ctx.limits.kind, last_check: probe.last_check, ...(probe.error ? { error: probe.error } : {}) };
      const parts = [database.status, kv.status, rateLimiter.status];
      const status = database.status === 'down' ? 'down' : parts.every((p) => p === 'operational') ? 'operational' : 'degraded';
      return {
        status,
        environment: ctx.config.environment,
        timestamp: new Date().toISOString(),
        version: ctx.version,
        engine: ctx.config.engine,
        components: { database, kv_storage: { ...kv, store: ctx.limits.kind }, rate_limiter: rateLimiter },
        security: {
          headers_enabled: true,
          cors_configured: ctx.config.corsOrigins.length > 0,
          rate_limiting: 'active',
          ssl_enforced: false,
        },
      } as const;
    },
  });

  app.get('/metrics', {
    config: { rateLimit: false, auth: undefined },
    schema: { summary: 'Prometheus metrics (bearer METRICS_TOKEN when configured)', produces: ['text/plain'] },
    handler: async (req, reply) => {
      const token = ctx.config.metricsToken;
      if (token) {
        const given = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1] ?? '';
        if (!safeEqual(given, token)) throw new AppError('AUTH_REQUIRED', 'Metrics require the metrics token');
      }
      reply.type(ctx.metrics.registry.contentType);
      return ctx.metrics.registry.metrics();
    },
  });
}
