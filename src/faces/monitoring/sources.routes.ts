/**
 * Helomatic monitoring sources: `/api/monitoring/sources` and `/{id}` (GET, PUT, PATCH, DELETE),
 * `/{id}/check`, `/{id}/pause`, `/{id}/resume`, `/{id}/history`. Request bodies use the document's
 * camelCase (`webhookUrl`, `retryAttempts`); responses its snake_case (`webhook_url`, `next_check`).
 */
import { z } from 'zod';
import type { CheckEntry, Source, SourceInput } from '../../domains/monitoring/service.ts';
import { EXTRACTOR_TYPES, METHODS, WEBHOOK_EVENTS } from '../../domains/monitoring/service.ts';
import type { AppContext } from '../shared/context.ts';
import { principalOf, requestContext } from '../shared/conventions.ts';
import type { FaceApp } from '../shared/plugin.ts';
import { helomaticOk } from './wire.ts';

function envelope<T extends z.ZodType>(data: T) {
  return z.object({ success: z.literal(true), data, message: z.string().optional(), timestamp: z.string() });
}

const extractorIn = z.object({
  type: z.enum(EXTRACTOR_TYPES),
  selector: z.string().min(1).max(2000),
  name: z
    .string()
    .min(1)
    .max(100)
    .regex(/^[A-Za-z0-9_.-]+$/, 'use letters, digits, "_", "-" or "."'),
  attribute: z.string().min(1).max(100).optional(),
  multiple: z.boolean().optional(),
});

const sourceFields = {
  name: z.string().trim().min(1).max(200),
  url: z.string().trim().min(1).max(2048),
  schedule: z.string().trim().min(1).max(100),
  extractors: z.array(extractorIn).min(1).max(50),
  webhookUrl: z.string().trim().min(1).max(2048).nullable(),
  webhookEvents: z.array(z.enum(WEBHOOK_EVENTS)).max(3),
  webhookSecret: z.string().min(8).max(256),
  retryAttempts: z.number().int().min(0).max(10),
  timeout: z.number().int().min(1000).max(120_000),
  tags: z.array(z.string().trim().min(1).max(50)).max(20),
  method: z.enum(METHODS),
  headers: z.record(z.string().min(1).max(100), z.string().max(4000)).refine((h) => Object.keys(h).length <= 30, 'at most 30 headers'),
  body: z.string().max(100_000).nullable(),
  fetcher: z.enum(['http', 'browser']),
};

const createBody = z
  .object(sourceFields)
  .partial()
  .required({ name: true, url: true, schedule: true, extractors: true })
  .strict();
const patchBody = z.object(sourceFields).partial().strict();

const extractorOut = z.object({
  type: z.string(),
  selector: z.string(),
  name: z.string(),
  attribute: z.string().optional(),
  multiple: z.boolean().optional(),
  last_value: z.unknown(),
});
const sourceOut = z.object({
  id: z.string(),
  name: z.string(),
  url: z.string(),
  schedule: z.string(),
  status: z.enum(['active', 'paused', 'error']),
  last_check: z.string().nullable(),
  next_check: z.string().nullable(),
  extractors: z.array(extractorOut),
  webhook_url: z.string().nullable(),
  webhook_events: z.array(z.string()),
  retry_attempts: z.number().int(),
  timeout: z.number().int(),
  tags: z.array(z.string()),
  method: z.string(),
  headers: z.record(z.string(), z.string()),
  fetcher: z.string(),
  consecutive_failures: z.number().int(),
  last_success: z.string().nullable(),
  last_error: z.string().nullable(),
  created_at: z.string(),
  updated_at: z.string(),
});
const checkOut = z.object({
  id: z.string(),
  trigger: z.string(),
  due_at: z.string().nullable(),
  started_at: z.string(),
  checked_at: z.string(),
  success: z.boolean(),
  http_status: z.number().int().nullable(),
  duration_ms: z.number().int(),
  attempts: z.number().int(),
  not_modified: z.boolean(),
  values: z.record(z.string(), z.unknown()).nullable(),
  changed: z.boolean(),
  changes: z.array(z.object({ extractor: z.string(), old: z.unknown(), new: z.unknown() })),
  warnings: z.array(z.string()),
  error: z.string().nullable(),
});
const pagination = z.object({ page: z.number().int(), limit: z.number().int(), total: z.number().int(), has_more: z.boolean() });
const idParams = z.object({ id: z.string().min(1).max(64) });
const pageQuery = {
  page: z.coerce.number().int().min(1).max(100_000).default(1),
  limit: z.coerce.number().int().min(1).max(100).default(20),
};

function sourceJson(s: Source) {
  return {
    id: s.id,
    name: s.name,
    url: s.url,
    schedule: s.schedule,
    status: s.status,
    last_check: s.lastCheck?.toISOString() ?? null,
    next_check: s.nextCheck?.toISOString() ?? null,
    extractors: s.extractors.map((e) => ({
      type: e.type,
      selector: e.selector,
      name: e.name,
      ...(e.attribute !== undefined ? { attribute: e.attribute } : {}),
      ...(e.multiple !== undefined ? { multiple: e.multiple } : {}),
      last_value: s.lastValues && e.name in s.lastValues ? s.lastValues[e.name] : null,
    })),
    webhook_url: s.webhookUrl,
    webhook_events: s.webhookEvents,
    retry_attempts: s.retryAttempts,
    timeout: s.timeoutMs,
    tags: s.tags,
    method: s.method,
    headers: s.headers,
    fetcher: s.fetcher,
    consecutive_failures: s.consecutiveFailures,
    last_success: s.lastSuccess?.toISOString() ?? null,
    last_error: s.lastError,
    created_at: s.createdAt.toISOString(),
    updated_at: s.updatedAt.toISOString(),
  };
}

export function checkJson(c: CheckEntry) {
  return {
    id: c.id,
    trigger: c.trigger,
    due_at: c.dueAt?.toISOString() ?? null,
    started_at: c.startedAt.toISOString(),
    checked_at: c.checkedAt.toISOString(),
    success: c.ok,
    http_status: c.httpStatus,
    duration_ms: c.durationMs,
    attempts: c.attempts,
    not_modified: c.notModified,
    values: c.values,
    changed: c.changed,
    changes: c.changes,
    warnings: c.warnings,
    error: c.error,
  };
}

function withSecret(source: Source, secret: string | null) {
  return { source: sourceJson(source), ...(secret ? { webhook_secret: secret } : {}) };
}

export function monitoringSourceRoutes(app: FaceApp, ctx: AppContext): void {
  const userOf = (req: Parameters<typeof principalOf>[0]) => {
    const u = principalOf(req).user;
    return { id: u.id, tier: u.tier };
  };
  const sourceData = z.object({ source: sourceOut, webhook_secret: z.string().optional() });

  app.get('/api/monitoring/sources', {
    schema: {
      summary: 'Your monitoring sources (paginated; filter by status, tag or a search in name and URL)',
      querystring: z.object({
        ...pageQuery,
        status: z.enum(['active', 'paused', 'error']).optional(),
        tag: z.string().min(1).max(50).optional(),
        search: z.string().min(1).max(200).optional(),
      }),
      response: { 200: envelope(z.object({ sources: z.array(sourceOut), pagination })) },
    },
    handler: async (req) => {
      const q = req.query;
      const { items, total } = await ctx.monitoring.list(principalOf(req).user.id, q);
      return helomaticOk({ sources: items.map(sourceJson), pagination: { page: q.page, limit: q.limit, total, has_more: q.page * q.limit < total } });
    },
  });

  app.post('/api/monitoring/sources', {
    schema: {
      summary: 'Create a monitoring source; its first check runs at `next_check` (or now with POST .../check)',
      description:
        'A generated `webhook_secret` is returned once when `webhookUrl` is given without `webhookSecret`: webhook deliveries are signed with it (Standard Webhooks headers and `X-Signature-256`).',
      body: createBody,
      response: { 201: envelope(sourceData) },
    },
    handler: async (req, reply) => {
      const { source, webhookSecret } = await ctx.monitoring.create(userOf(req), req.body as SourceInput, requestContext(req));
      return reply.status(201).send(helomaticOk(withSecret(source, webhookSecret), 'Monitoring source created successfully'));
    },
  });

  app.get('/api/monitoring/sources/:id', {
    schema: { summary: 'One monitoring source', params: idParams, response: { 200: envelope(z.object({ source: sourceOut })) } },
    handler: async (req) => helomaticOk({ source: sourceJson(await ctx.monitoring.get(principalOf(req).user.id, req.params.id)) }),
  });

  app.put('/api/monitoring/sources/:id', {
    schema: { summary: 'Replace a monitoring source (same body as create)', params: idParams, body: createBody, response: { 200: envelope(sourceData) } },
    handler: async (req) => {
      const { source, webhookSecret } = await ctx.monitoring.update(userOf(req), req.params.id, req.body as SourceInput, requestContext(req));
      return helomaticOk(withSecret(source, webhookSecret), 'Monitoring source updated successfully');
    },
  });

  app.patch('/api/monitoring/sources/:id', {
    schema: { summary: 'Change some fields of a monitoring source', params: idParams, body: patchBody, response: { 200: envelope(sourceData) } },
    handler: async (req) => {
      const { source, webhookSecret } = await ctx.monitoring.update(userOf(req), req.params.id, req.body as Partial<SourceInput>, requestContext(req));
      return helomaticOk(withSecret(source, webhookSecret), 'Monitoring source updated successfully');
    },
  });

  app.delete('/api/monitoring/sources/:id', {
    schema: {
      summary: 'Delete a monitoring source, its schedule, history and webhook',
      params: idParams,
      response: { 200: envelope(z.object({ id: z.string(), deleted: z.literal(true) })) },
    },
    handler: async (req) => {
      await ctx.monitoring.delete(principalOf(req).user.id, req.params.id, requestContext(req));
      return helomaticOk({ id: req.params.id, deleted: true as const }, 'Monitoring source deleted successfully');
    },
  });

  app.post('/api/monitoring/sources/:id/check', {
    schema: {
      summary: 'Check the source now and return the result (also stored in its history; changes fire webhooks)',
      params: idParams,
      response: { 200: envelope(z.object({ check: checkOut })) },
    },
    handler: async (req) => {
      const check = await ctx.monitorEngine.checkNow(principalOf(req).user.id, req.params.id);
      return helomaticOk({ check: checkJson(check) }, check.ok ? 'Check completed' : 'Check failed');
    },
  });

  app.post('/api/monitoring/sources/:id/pause', {
    schema: { summary: 'Pause scheduled checks', params: idParams, response: { 200: envelope(z.object({ source: sourceOut })) } },
    handler: async (req) => helomaticOk({ source: sourceJson(await ctx.monitoring.pause(principalOf(req).user.id, req.params.id)) }, 'Monitoring source paused'),
  });

  app.post('/api/monitoring/sources/:id/resume', {
    schema: { summary: 'Resume scheduled checks', params: idParams, response: { 200: envelope(z.object({ source: sourceOut })) } },
    handler: async (req) => helomaticOk({ source: sourceJson(await ctx.monitoring.resume(principalOf(req).user.id, req.params.id)) }, 'Monitoring source resumed'),
  });

  app.get('/api/monitoring/sources/:id/history', {
    schema: {
      summary: 'Check history, newest first: time, HTTP status, duration, values per extractor, changes, warnings, error',
      params: idParams,
      querystring: z.object(pageQuery),
      response: { 200: envelope(z.object({ history: z.array(checkOut), pagination })) },
    },
    handler: async (req) => {
      const q = req.query;
      const { items, total } = await ctx.monitoring.history(principalOf(req).user.id, req.params.id, q);
      return helomaticOk({ history: items.map(checkJson), pagination: { page: q.page, limit: q.limit, total, has_more: q.page * q.limit < total } });
    },
  });
}
