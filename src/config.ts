/**
 * The one typed configuration object. Environment variables are read here and nowhere else,
 * validated once at start; a bad value stops the process with a message naming the variable.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { type AllowPrivate, parseAllowPrivate } from './platform/http-out/address.ts';

export const TIERS = ['free', 'developer', 'pro', 'team', 'enterprise'] as const;
export type Tier = (typeof TIERS)[number];
export const FACES = ['tasks', 'monitoring', 'databases', 'automation'] as const;
export type FaceName = (typeof FACES)[number];
export const SECURITY_LEVELS = ['standard', 'enhanced', 'strict'] as const;
export type SecurityLevel = (typeof SECURITY_LEVELS)[number];
export const TOGGLES = ['enabled', 'disabled'] as const;
export type Toggle = (typeof TOGGLES)[number];
export const PRECISIONS = ['FP32', 'FP16', 'INT8'] as const;
export type Precision = (typeof PRECISIONS)[number];

/** A rate-limit policy: `points` requests per `windowSeconds`; null points = unlimited. */
export interface LimitPolicy {
  points: number | null;
  windowSeconds: number;
}
export type FaceLimits = Record<Tier | 'anonymous', LimitPolicy>;

const HOUR = 3600;
const DAY = 86400;
const MINUTE = 60;

/** Published per-face policies (seed documents); tiers a document does not name take the nearest one. */
export const DEFAULT_RATE_LIMITS: Record<FaceName, FaceLimits> = {
  tasks: {
    anonymous: { points: 100, windowSeconds: HOUR },
    free: { points: 1000, windowSeconds: HOUR },
    developer: { points: 1000, windowSeconds: HOUR },
    pro: { points: 1000, windowSeconds: HOUR },
    team: { points: 1000, windowSeconds: HOUR },
    enterprise: { points: 1000, windowSeconds: HOUR },
  },
  databases: {
    anonymous: { points: 100, windowSeconds: MINUTE },
    free: { points: 100, windowSeconds: MINUTE },
    developer: { points: 1000, windowSeconds: MINUTE },
    pro: { points: 1000, windowSeconds: MINUTE },
    team: { points: 10000, windowSeconds: MINUTE },
    enterprise: { points: null, windowSeconds: MINUTE },
  },
  monitoring: {
    anonymous: { points: 100, windowSeconds: HOUR },
    free: { points: 100, windowSeconds: HOUR },
    developer: { points: 1000, windowSeconds: HOUR },
    pro: { points: 1000, windowSeconds: HOUR },
    team: { points: 10000, windowSeconds: HOUR },
    enterprise: { points: 10000, windowSeconds: HOUR },
  },
  automation: {
    anonymous: { points: 100, windowSeconds: DAY },
    free: { points: 100, windowSeconds: DAY },
    developer: { points: 10000, windowSeconds: DAY },
    pro: { points: 10000, windowSeconds: DAY },
    team: { points: 10000, windowSeconds: DAY },
    enterprise: { points: null, windowSeconds: DAY },
  },
};

const limitOverride = z.union([
  z.number().int().positive(),
  z.null(),
  z.object({ points: z.number().int().positive().nullable(), windowSeconds: z.number().int().positive().optional() }),
]);
const rateLimitsOverride = z.partialRecord(
  z.enum(FACES),
  z.partialRecord(z.enum([...TIERS, 'anonymous']), limitOverride),
);

const boolish = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

const aiPricesOverride = z.record(
  z.string().regex(/^(openai|anthropic|ollama)\/.+$/, 'keys are provider/model'),
  z.object({ input: z.number().min(0), output: z.number().min(0).default(0) }),
);

const envSchema = z.object({
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  HOST: z.string().min(1).default('0.0.0.0'),
  DATA_DIR: z.string().min(1).default('./data'),
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL').optional(),
  DATABASE_POOL_SIZE: z.coerce.number().int().min(1).max(500).default(20),
  REDIS_URL: z.string().regex(/^rediss?:\/\//, 'must be a redis:// URL').optional(),
  JWT_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  SECRETS_KEY: z.string().min(32, 'must be at least 32 characters').optional(),
  JWT_ISSUER: z.string().min(1).default('mainspring'),
  JWT_AUDIENCE: z.string().min(1).default('mainspring-api'),
  ACCESS_TOKEN_TTL_SECONDS: z.coerce.number().int().min(30).max(86400).default(3600),
  REFRESH_TOKEN_TTL_DAYS: z.coerce.number().int().min(1).max(365).default(30),
  MAINSPRING_ADMIN_PASSWORD: z.string().min(8, 'must be at least 8 characters').optional(),
  MAINSPRING_ADMIN_EMAIL: z.email().default('admin@mainspring.local'),
  DEFAULT_TIER: z.enum(TIERS).default('free'),
  RATE_LIMITS: z
    .string()
    .optional()
    .transform((raw, ctx) => {
      if (!raw) return {};
      try {
        return rateLimitsOverride.parse(JSON.parse(raw));
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: `must be JSON like {"databases":{"free":500}}: ${String(err)}` });
        return z.NEVER;
      }
    }),
  AUTH_CACHE_TTL_SECONDS: z.coerce.number().min(0).max(300).default(30),
  LOGIN_MAX_FAILURES: z.coerce.number().int().min(1).default(10),
  LOGIN_FAILURE_WINDOW_SECONDS: z.coerce.number().int().min(1).default(900),
  BODY_LIMIT_BYTES: z.coerce.number().int().min(1024).default(1_048_576),
  METRICS_TOKEN: z.string().min(1).optional(),
  SMTP_URL: z.string().regex(/^smtps?:\/\//, 'must be an smtp:// or smtps:// URL').optional(),
  MAIL_FROM: z.string().min(3).default('Mainspring <no-reply@mainspring.local>'),
  PUBLIC_URL: z.url().optional(),
  CORS_ORIGINS: z.string().optional(),
  TRUST_PROXY: boolish.default(false),
  WEBHOOK_RETRY_SCHEDULE: z
    .string()
    .regex(/^\s*\d+(\.\d+)?(\s*,\s*\d+(\.\d+)?)*\s*$/, 'must be a comma-separated list of seconds, e.g. "5,300,1800"')
    .optional(),
  WEBHOOK_TIMEOUT_MS: z.coerce.number().int().min(100).max(120_000).default(15_000),
  WEBHOOK_CONCURRENCY: z.coerce.number().int().min(1).max(1000).default(128),
  WEBHOOK_POLL_INTERVAL_MS: z.coerce.number().int().min(10).max(60_000).default(200),
  WORKER_TIMEOUT: z.coerce.number().int().min(2).max(3600).default(30),
  MAINSPRING_ENV: z.string().min(1).max(40).default('production'),
  SECURITY_LEVEL: z.enum(SECURITY_LEVELS).default('standard'),
  HARMONY_SYNC_INTERVAL: z.coerce.number().int().min(1).max(86_400).default(30),
  HARMONY_QUANTIZATION: z.enum(TOGGLES).default('disabled'),
  HARMONY_PRUNING: z.enum(TOGGLES).default('disabled'),
  HARMONY_PRECISION: z.enum(PRECISIONS).default('FP32'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  PASSWORD_HASH_MEMORY_KIB: z.coerce.number().int().min(1024).default(19456),
  OPENAI_API_KEY: z.string().min(1).optional(),
  OPENAI_BASE_URL: z.url().optional(),
  OPENAI_MODEL: z.string().min(1).max(200).default('gpt-4o-mini'),
  OPENAI_EMBEDDING_MODEL: z.string().min(1).max(200).default('text-embedding-3-small'),
  ANTHROPIC_API_KEY: z.string().min(1).optional(),
  ANTHROPIC_BASE_URL: z.url().optional(),
  ANTHROPIC_MODEL: z.string().min(1).max(200).default('claude-sonnet-4-5'),
  OLLAMA_HOST: z.string().min(1).optional(),
  OLLAMA_MODEL: z.string().min(1).max(200).default('llama3.2'),
  OLLAMA_EMBEDDING_MODEL: z.string().min(1).max(200).default('nomic-embed-text'),
  AI_DEFAULT_PROVIDER: z.enum(['openai', 'anthropic', 'ollama']).optional(),
  AI_EMBEDDING_PROVIDER: z.enum(['openai', 'ollama', 'local']).optional(),
  AI_TIMEOUT_MS: z.coerce.number().int().min(100).max(600_000).default(60_000),
  AI_MAX_RETRIES: z.coerce.number().int().min(0).max(10).default(2),
  AI_RETRY_MAX_WAIT_MS: z.coerce.number().int().min(0).max(300_000).default(20_000),
  AI_BREAKER_THRESHOLD: z.coerce.number().int().min(1).max(1000).default(5),
  AI_BREAKER_COOLDOWN_MS: z.coerce.number().int().min(100).max(3_600_000).default(30_000),
  CHROMIUM_PATH: z.string().min(1).optional(),
  MONITOR_MAX_SOURCES: z.string().optional(),
  MONITOR_MIN_INTERVAL_MINUTES: z.string().optional(),
  MONITOR_CONCURRENCY: z.coerce.number().int().min(1).max(1000).default(16),
  MONITOR_HOST_CONCURRENCY: z.coerce.number().int().min(1).max(100).default(2),
  MONITOR_MAX_BODY_BYTES: z.coerce.number().int().min(1024).max(100 * 1024 * 1024).default(5 * 1024 * 1024),
  MONITOR_HISTORY_KEEP: z.coerce.number().int().min(1).max(1_000_000).default(1000),
  MONITOR_HISTORY_DAYS: z.coerce.number().int().min(1).max(3650).default(90),
  MONITOR_RETRY_BASE_MS: z.coerce.number().int().min(10).max(60_000).default(1000),
  AI_PRICES: z
    .string()
    .optional()
    .transform((raw, ctx) => {
      if (!raw) return {};
      try {
        return aiPricesOverride.parse(JSON.parse(raw));
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: `must be JSON like {"openai/my-model":{"input":0.5,"output":1.5}} (USD per million tokens): ${String(err)}` });
        return z.NEVER;
      }
    }),
  ALLOW_PRIVATE_URLS: z
    .string()
    .optional()
    .transform((raw, ctx) => {
      try {
        return parseAllowPrivate(raw);
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: `must be "true" or comma-separated CIDR ranges: ${(err as Error).message}` });
        return z.NEVER;
      }
    }),
});

export interface Config {
  port: number;
  host: string;
  dataDir: string;
  /** `pglite` when DATABASE_URL is absent (embedded default), else `postgres`. */
  engine: 'pglite' | 'postgres';
  databaseUrl: string | undefined;
  databasePoolSize: number;
  redisUrl: string | undefined;
  jwtSecret: string;
  secretsKey: string;
  jwtIssuer: string;
  jwtAudience: string;
  accessTokenTtlSeconds: number;
  refreshTokenTtlDays: number;
  adminPassword: string | undefined;
  adminEmail: string;
  defaultTier: Tier;
  rateLimits: Record<FaceName, FaceLimits>;
  /** How long a resolved token or API key may be served from memory; invalidated at once on revocation. */
  authCacheTtlSeconds: number;
  loginMaxFailures: number;
  loginFailureWindowSeconds: number;
  bodyLimitBytes: number;
  metricsToken: string | undefined;
  smtpUrl: string | undefined;
  mailFrom: string;
  publicUrl: string | undefined;
  corsOrigins: string[];
  trustProxy: boolean;
  logLevel: string;
  /** Delays before each webhook retry (seconds); undefined = the built-in schedule of about a day. */
  webhookRetrySchedule: number[] | undefined;
  webhookTimeoutMs: number;
  webhookConcurrency: number;
  webhookPollIntervalMs: number;
  /** Seconds of silence after which a worker is offline and its task returns to the queue. */
  workerTimeoutSeconds: number;
  /** Free-form deployment name shown by the status endpoint. */
  environment: string;
  passwordHashMemoryKib: number;
  /** Security level the operator declares for this deployment, reported by HelixCode's security metrics. */
  securityLevel: SecurityLevel;
  /** Seconds between device syncs that HelixCode Harmony announces; a device silent for twice that is stale. */
  harmonySyncInterval: number;
  /** Model optimisations this deployment declares, reported by `GET /api/v1/harmony/ai/acceleration`. */
  harmonyOptimizations: { quantization: Toggle; pruning: Toggle; precision: Precision };
  /** Private address ranges outbound requests (webhooks, monitored pages) may reach; none by default. */
  allowPrivateUrls: AllowPrivate;
  /** Model providers (see `src/platform/ai`); a provider is configured when its key or host is set. */
  ai: AiConfig;
  monitoring: MonitoringConfig;
}

export interface MonitoringConfig {
  /** Chromium for `fetcher: browser`; unset = look in the usual places (Debian's /usr/bin/chromium). */
  chromiumPath: string | undefined;
  /** Most sources a user of each tier may have. */
  maxSources: Record<Tier, number>;
  /** Shortest check interval per tier, minutes. */
  minIntervalMinutes: Record<Tier, number>;
  concurrency: number;
  hostConcurrency: number;
  maxBodyBytes: number;
  /** History kept per source: the newest N entries, and none older than D days. */
  historyKeep: number;
  historyDays: number;
  /** Delay before the first retry of a failed fetch; each further retry doubles it. */
  retryBaseMs: number;
}

export const DEFAULT_MONITOR_MAX_SOURCES: Record<Tier, number> = { free: 25, developer: 50, pro: 100, team: 1000, enterprise: 10000 };
export const DEFAULT_MONITOR_MIN_INTERVAL: Record<Tier, number> = { free: 5, developer: 5, pro: 1, team: 1, enterprise: 1 };

/** `free=20,pro=500` → per-tier values over the defaults. */
function tierNumbers(raw: string | undefined, defaults: Record<Tier, number>, name: string): Record<Tier, number> {
  const out = { ...defaults };
  if (!raw) return out;
  for (const part of raw.split(',')) {
    const [k, v] = part.split('=').map((x) => x.trim());
    if (!k || !(TIERS as readonly string[]).includes(k) || !v || !/^\d+$/.test(v)) {
      throw new ConfigError(`Invalid configuration:\n  ${name}: must be tier=number pairs like "free=20,pro=500" (tiers: ${TIERS.join(', ')})`);
    }
    out[k as Tier] = Number(v);
  }
  return out;
}

export const AI_PROVIDERS = ['openai', 'anthropic', 'ollama'] as const;
export type AiProviderId = (typeof AI_PROVIDERS)[number];

export interface AiConfig {
  openai: { apiKey: string | undefined; baseUrl: string | undefined; model: string; embeddingModel: string };
  anthropic: { apiKey: string | undefined; baseUrl: string | undefined; model: string };
  ollama: { host: string | undefined; model: string; embeddingModel: string };
  /** Provider used when neither the request nor the user's setting names one; else the first configured. */
  defaultProvider: AiProviderId | undefined;
  /** Where embeddings come from; default: OpenAI when configured, else Ollama when configured, else local. */
  embeddingProvider: 'openai' | 'ollama' | 'local' | undefined;
  timeoutMs: number;
  maxRetries: number;
  /** Longest Retry-After the layer waits out before giving the error to the caller instead. */
  retryMaxWaitMs: number;
  breakerThreshold: number;
  breakerCooldownMs: number;
  /** Extra or overriding prices, USD per million tokens, keyed `provider/model`. */
  prices: Record<string, { input: number; output: number }>;
}

export class ConfigError extends Error {}

type Env = Record<string, string | undefined>;

/** Reads and validates configuration from `env` (default: the process environment). */
export function loadConfig(env: Env = process.env): Config {
  const cleaned: Env = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && v !== '') cleaned[k] = v;
  const parsed = envSchema.safeParse(cleaned);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.') || '(env)'}: ${i.message}`);
    throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`);
  }
  const e = parsed.data;
  const engine = e.DATABASE_URL ? 'postgres' : 'pglite';
  const dataDir = resolve(e.DATA_DIR);
  let jwtSecret = e.JWT_SECRET;
  let secretsKey = e.SECRETS_KEY;
  if (engine === 'postgres') {
    const missing = [!jwtSecret && 'JWT_SECRET', !secretsKey && 'SECRETS_KEY'].filter(Boolean);
    if (missing.length) {
      throw new ConfigError(
        `Invalid configuration:\n  ${missing.join(', ')}: required when DATABASE_URL is set (every server process must share them)`,
      );
    }
  } else if (!jwtSecret || !secretsKey) {
    const persisted = loadOrCreateSecrets(dataDir);
    jwtSecret ??= persisted.jwtSecret;
    secretsKey ??= persisted.secretsKey;
  }
  return {
    port: e.PORT,
    host: e.HOST,
    dataDir,
    engine,
    databaseUrl: e.DATABASE_URL,
    databasePoolSize: e.DATABASE_POOL_SIZE,
    redisUrl: e.REDIS_URL,
    jwtSecret: jwtSecret!,
    secretsKey: secretsKey!,
    jwtIssuer: e.JWT_ISSUER,
    jwtAudience: e.JWT_AUDIENCE,
    accessTokenTtlSeconds: e.ACCESS_TOKEN_TTL_SECONDS,
    refreshTokenTtlDays: e.REFRESH_TOKEN_TTL_DAYS,
    adminPassword: e.MAINSPRING_ADMIN_PASSWORD,
    adminEmail: e.MAINSPRING_ADMIN_EMAIL,
    defaultTier: e.DEFAULT_TIER,
    rateLimits: mergeRateLimits(e.RATE_LIMITS),
    authCacheTtlSeconds: e.AUTH_CACHE_TTL_SECONDS,
    loginMaxFailures: e.LOGIN_MAX_FAILURES,
    loginFailureWindowSeconds: e.LOGIN_FAILURE_WINDOW_SECONDS,
    bodyLimitBytes: e.BODY_LIMIT_BYTES,
    metricsToken: e.METRICS_TOKEN,
    smtpUrl: e.SMTP_URL,
    mailFrom: e.MAIL_FROM,
    publicUrl: e.PUBLIC_URL,
    corsOrigins: (e.CORS_ORIGINS ?? '').split(',').map((s) => s.trim()).filter(Boolean),
    trustProxy: e.TRUST_PROXY,
    logLevel: e.LOG_LEVEL,
    environment: e.MAINSPRING_ENV,
    workerTimeoutSeconds: e.WORKER_TIMEOUT,
    webhookRetrySchedule: e.WEBHOOK_RETRY_SCHEDULE?.split(',').map((v) => Number(v.trim())),
    webhookTimeoutMs: e.WEBHOOK_TIMEOUT_MS,
    webhookConcurrency: e.WEBHOOK_CONCURRENCY,
    webhookPollIntervalMs: e.WEBHOOK_POLL_INTERVAL_MS,
    passwordHashMemoryKib: e.PASSWORD_HASH_MEMORY_KIB,
    securityLevel: e.SECURITY_LEVEL,
    harmonySyncInterval: e.HARMONY_SYNC_INTERVAL,
    harmonyOptimizations: { quantization: e.HARMONY_QUANTIZATION, pruning: e.HARMONY_PRUNING, precision: e.HARMONY_PRECISION },
    allowPrivateUrls: e.ALLOW_PRIVATE_URLS,
    ai: {
      openai: { apiKey: e.OPENAI_API_KEY, baseUrl: e.OPENAI_BASE_URL, model: e.OPENAI_MODEL, embeddingModel: e.OPENAI_EMBEDDING_MODEL },
      anthropic: { apiKey: e.ANTHROPIC_API_KEY, baseUrl: e.ANTHROPIC_BASE_URL, model: e.ANTHROPIC_MODEL },
      ollama: { host: e.OLLAMA_HOST, model: e.OLLAMA_MODEL, embeddingModel: e.OLLAMA_EMBEDDING_MODEL },
      defaultProvider: e.AI_DEFAULT_PROVIDER,
      embeddingProvider: e.AI_EMBEDDING_PROVIDER,
      timeoutMs: e.AI_TIMEOUT_MS,
      maxRetries: e.AI_MAX_RETRIES,
      retryMaxWaitMs: e.AI_RETRY_MAX_WAIT_MS,
      breakerThreshold: e.AI_BREAKER_THRESHOLD,
      breakerCooldownMs: e.AI_BREAKER_COOLDOWN_MS,
      prices: e.AI_PRICES,
    },
    monitoring: {
      chromiumPath: e.CHROMIUM_PATH,
      maxSources: tierNumbers(e.MONITOR_MAX_SOURCES, DEFAULT_MONITOR_MAX_SOURCES, 'MONITOR_MAX_SOURCES'),
      minIntervalMinutes: tierNumbers(e.MONITOR_MIN_INTERVAL_MINUTES, DEFAULT_MONITOR_MIN_INTERVAL, 'MONITOR_MIN_INTERVAL_MINUTES'),
      concurrency: e.MONITOR_CONCURRENCY,
      hostConcurrency: e.MONITOR_HOST_CONCURRENCY,
      maxBodyBytes: e.MONITOR_MAX_BODY_BYTES,
      historyKeep: e.MONITOR_HISTORY_KEEP,
      historyDays: e.MONITOR_HISTORY_DAYS,
      retryBaseMs: e.MONITOR_RETRY_BASE_MS,
    },
  };
}

function mergeRateLimits(overrides: z.infer<typeof rateLimitsOverride>): Record<FaceName, FaceLimits> {
  const merged = structuredClone(DEFAULT_RATE_LIMITS);
  for (const [face, tiers] of Object.entries(overrides) as [FaceName, Record<string, unknown>][]) {
    for (const [tier, value] of Object.entries(tiers) as [Tier | 'anonymous', z.infer<typeof limitOverride>][]) {
      const current = merged[face][tier];
      if (value === null || typeof value === 'number') current.points = value;
      else {
        current.points = value.points;
        if (value.windowSeconds) current.windowSeconds = value.windowSeconds;
      }
    }
  }
  return merged;
}

/** Embedded mode keeps its generated secrets beside the data so restarts keep tokens valid. */
function loadOrCreateSecrets(dataDir: string): { jwtSecret: string; secretsKey: string } {
  const file = join(dataDir, 'secrets.json');
  if (existsSync(file)) {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new ConfigError(`Invalid configuration:\n  ${file}: is not valid JSON (${(err as Error).message}); restore it or set JWT_SECRET and SECRETS_KEY`);
    }
    const r = (raw ?? {}) as { jwtSecret?: unknown; secretsKey?: unknown };
    if (typeof r.jwtSecret === 'string' && typeof r.secretsKey === 'string') {
      return { jwtSecret: r.jwtSecret, secretsKey: r.secretsKey };
    }
    throw new ConfigError(`Invalid configuration:\n  ${file}: exists but does not hold jwtSecret and secretsKey`);
  }
  mkdirSync(dataDir, { recursive: true });
  const secrets = { jwtSecret: randomBytes(48).toString('base64url'), secretsKey: randomBytes(32).toString('base64url') };
  // Write then rename, so a crash during the first start never leaves a half-written file behind.
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(secrets, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, file);
  return secrets;
}
