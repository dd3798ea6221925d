/**
 * Composition root: `createContext` opens storage and builds the services; `buildApp` builds the
 * HTTP server over them. `main.ts` listens; tests call `app.inject()`.
 */
import { readFileSync } from 'node:fs';
import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import Fastify, { LogController, type FastifyInstance } from 'fastify';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import type { Config } from './config.ts';
import { createAccessTokenSigner } from './domains/identity/tokens.ts';
import { IdentityService } from './domains/identity/service.ts';
import { automationAuthRoutes } from './faces/automation/auth.routes.ts';
import { automationChatRoutes } from './faces/automation/chat.routes.ts';
import { databasesAuthRoutes } from './faces/databases/auth.routes.ts';
import { monitoringAuthRoutes } from './faces/monitoring/auth.routes.ts';
import { monitoringAiRoutes } from './faces/monitoring/ai.routes.ts';
import type { AppContext, AppJobs } from './faces/shared/context.ts';
import { genRequestId, handleFrameworkError, installConventions } from './faces/shared/conventions.ts';
import { registerFace } from './faces/shared/plugin.ts';
import { createAi } from './platform/ai/index.ts';
import { createBrowserFetcher } from './domains/monitoring/browser.ts';
import { MonitorEngine } from './domains/monitoring/engine.ts';
import { ConversationService } from './domains/conversations/service.ts';
import { EnrichmentService } from './domains/enrichment/service.ts';
import { MonitoringService, SOURCE_ENTITY } from './domains/monitoring/service.ts';
import { monitoringSourceRoutes } from './faces/monitoring/sources.routes.ts';
import { systemRoutes } from './faces/system/routes.ts';
import { tasksAuroraRoutes } from './faces/tasks/aurora.routes.ts';
import { tasksAuthRoutes } from './faces/tasks/auth.routes.ts';
import { tasksHarmonyRoutes } from './faces/tasks/harmony.routes.ts';
import { ClusterService } from './domains/cluster/service.ts';
import { MIGRATIONS } from './migrations.ts';
import { DEFAULT_RETRY_SCHEDULE, DeliveryEngine } from './domains/events/delivery.ts';
import { WebhookService } from './domains/events/webhooks.ts';
import { TaskService } from './domains/tasks/service.ts';
import { databasesWebhookRoutes } from './faces/databases/webhooks.routes.ts';
import { tasksRoutes } from './faces/tasks/tasks.routes.ts';
import { tasksWebhookRoutes } from './faces/tasks/webhooks.routes.ts';
import { createPasswordHasher } from './platform/crypto/index.ts';
import { createSecretBox } from './platform/crypto/secretbox.ts';
import { Jobs, Scheduler } from './platform/jobs/index.ts';
import { createHttpOut } from './platform/http-out/index.ts';
import { createInvalidationBus, migrate, openDb, PostgresDb, type Db } from './platform/db/index.ts';
import { createMailer } from './platform/mail/index.ts';
import { createMetrics } from './platform/metrics/index.ts';
import { RateLimits } from './platform/ratelimit/index.ts';

export const VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** Opens the database (or uses the one given), migrates it, and wires the services. */
export async function createContext(
  config: Config,
  opts: { db?: Db; onMailError?: (err: unknown) => void; log?: { error(obj: unknown, msg: string): void } } = {},
): Promise<AppContext> {
  const db = opts.db ?? (await openDb({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, poolSize: config.databasePoolSize }));
  await migrate(db, MIGRATIONS);
  const limits = new RateLimits(
    config.redisUrl
      ? { kind: 'redis', redisUrl: config.redisUrl }
      : db instanceof PostgresDb
        ? { kind: 'postgres', pool: db.pool }
        : { kind: 'memory' },
  );
  const mailer = createMailer({ smtpUrl: config.smtpUrl, from: config.mailFrom, onError: opts.onMailError });
  const metrics = createMetrics();
  const log = opts.log ?? { error: (obj: unknown, msg: string) => console.error(msg, obj) };
  const jobs = new Jobs<AppJobs>({ db, registry: metrics.registry, logger: log });
  const scheduler = new Scheduler({ db, registry: metrics.registry, logger: log });
  const secretBox = createSecretBox(config.secretsKey);
  const httpOut = createHttpOut({
    allowPrivate: config.allowPrivateUrls,
    userAgent: `Mainspring/${VERSION} (+webhooks)`,
    timeoutMs: config.webhookTimeoutMs,
  });
  // Requests on users' behalf other than webhooks (monitored pages, enrichment), per call limits.
  const outbound = createHttpOut({ allowPrivate: config.allowPrivateUrls, userAgent: `Mainspring/${VERSION}`, timeoutMs: 30_000 });
  const webhooks = new WebhookService({ db, secretBox, allowPrivate: config.allowPrivateUrls });
  const deliveries = new DeliveryEngine({
    db,
    secretBox,
    transport: httpOut,
    registry: metrics.registry,
    log,
    options: {
      retryScheduleSeconds: config.webhookRetrySchedule ?? DEFAULT_RETRY_SCHEDULE,
      timeoutMs: config.webhookTimeoutMs,
      concurrency: config.webhookConcurrency,
      batchSize: 200,
      pollIntervalMs: config.webhookPollIntervalMs,
    },
  });
  const invalidation = createInvalidationBus(db, (err) => log.error({ err }, 'invalidation listener lost its connection; reconnecting'));
  const tasks = new TaskService({
    db,
    invalidation,
    log,
    // Embedded mode is one process; on PostgreSQL the cluster heartbeat tells whether others share the queue.
    peers: () => db.engine === 'postgres' && cluster.peersAlive(),
    options: { workerTimeoutSeconds: config.workerTimeoutSeconds, reapIntervalMs: Math.min(5000, config.workerTimeoutSeconds * 250) },
  });
  const identity = new IdentityService({
    db,
    invalidation,
    hasher: createPasswordHasher(config.passwordHashMemoryKib),
    signer: createAccessTokenSigner({
      secret: config.jwtSecret,
      issuer: config.jwtIssuer,
      audience: config.jwtAudience,
      ttlSeconds: config.accessTokenTtlSeconds,
    }),
    mailer,
    limits,
    options: {
      refreshTokenTtlDays: config.refreshTokenTtlDays,
      defaultTier: config.defaultTier,
      adminEmail: config.adminEmail,
      adminPassword: config.adminPassword,
      loginFailures: { points: config.loginMaxFailures, windowSeconds: config.loginFailureWindowSeconds },
      publicUrl: config.publicUrl,
      principalCacheTtlMs: config.authCacheTtlSeconds * 1000,
    },
  });
  const cluster = new ClusterService({ db, version: VERSION, log });
  const monitorHttp = createHttpOut({ allowPrivate: config.allowPrivateUrls, userAgent: `Mainspring/${VERSION} (+monitoring)`, maxResponseBytes: config.monitoring.maxBodyBytes });
  // Chromium is launched on first use only; every request it makes goes through monitorHttp.
  const browser = createBrowserFetcher({ executablePath: config.monitoring.chromiumPath, httpOut: monitorHttp });
  const monitoring = new MonitoringService({
    db,
    config: config.monitoring,
    secretBox,
    allowPrivate: config.allowPrivateUrls,
    browserAvailable: async () => {
      const a = await browser.available();
      return a.ok ? { ok: true } : { ok: false, reason: a.reason };
    },
  });
  const monitorEngine = new MonitorEngine({
    db,
    http: monitorHttp,
    browser,
    config: config.monitoring,
    registry: metrics.registry,
    log,
    retryBaseMs: config.monitoring.retryBaseMs,
  });
  scheduler.on(SOURCE_ENTITY, monitorEngine.onFiring);
  const ai = createAi({ config: config.ai, db, bus: invalidation, registry: metrics.registry, log });
  const conversations = new ConversationService({ db, ai });
  const enrichment = new EnrichmentService({ outbound, ai });
  return { config, db, invalidation, identity, tasks, cluster, webhooks, deliveries, jobs, scheduler, limits, metrics, mailer, ai, outbound, monitoring, monitorEngine, browser, conversations, enrichment, version: VERSION, startedAt: new Date() };
}

export async function closeContext(ctx: AppContext): Promise<void> {
  ctx.tasks.stop();
  await ctx.cluster.stop();
  await ctx.deliveries.stop();
  await ctx.scheduler.stop();
  await ctx.monitorEngine.stop();
  await ctx.browser.close();
  await ctx.jobs.stop();
  await ctx.ai.flush();
  await ctx.invalidation.close();
  ctx.mailer.close();
  await ctx.limits.close();
  await ctx.db.close();
}

/** Builds the HTTP server with all four faces. Does not listen. */
export async function buildApp(ctx: AppContext, opts: { logger?: boolean } = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: opts.logger === false ? false : { level: ctx.config.logLevel },
    genReqId: genRequestId,
    requestIdHeader: false,
    bodyLimit: ctx.config.bodyLimitBytes,
    trustProxy: ctx.config.trustProxy,
    frameworkErrors: handleFrameworkError,
    // Per-request lines only at debug level: at load they cost more than the request itself.
    logController: new LogController({ disableRequestLogging: ctx.config.logLevel !== 'debug' && ctx.config.logLevel !== 'trace' }),
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Mainspring',
        version: VERSION,
        description:
          'One server, four published APIs: HelixCode (tasks, /api/v1), Helomatic (monitoring, /api), HeliosDB (databases, /v1) and Arrotech Hub (automation, /). One account and one token work on all of them.',
      },
      components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', description: 'Access token (JWT) or API key' } } },
    },
    transform: jsonSchemaTransform,
  });
  await app.register(fastifySwaggerUi, { routePrefix: '/docs', uiConfig: { deepLinking: false } });
  app.addHook('onRoute', (route) => {
    if (route.url.startsWith('/docs')) route.config = { ...route.config, rateLimit: false };
  });

  installConventions(app, ctx);

  registerFace(app, ctx, 'monitoring', systemRoutes);
  registerFace(app, ctx, 'tasks', tasksAuthRoutes);
  registerFace(app, ctx, 'tasks', tasksWebhookRoutes);
  registerFace(app, ctx, 'tasks', tasksAuroraRoutes);
  registerFace(app, ctx, 'tasks', tasksHarmonyRoutes);
  registerFace(app, ctx, 'tasks', tasksRoutes);
  registerFace(app, ctx, 'databases', databasesWebhookRoutes);
  registerFace(app, ctx, 'monitoring', monitoringAuthRoutes);
  registerFace(app, ctx, 'monitoring', monitoringAiRoutes);
  registerFace(app, ctx, 'monitoring', monitoringSourceRoutes);
  registerFace(app, ctx, 'databases', databasesAuthRoutes);
  registerFace(app, ctx, 'automation', automationAuthRoutes);
  registerFace(app, ctx, 'automation', automationChatRoutes);

  app.get('/openapi.json', { config: { rateLimit: false }, schema: { hide: true } }, async () => app.swagger());
  await app.ready();
  return app;
}
