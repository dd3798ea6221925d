/**
 * Webhook subscription routes shared by the faces that document them (HelixCode under /api/v1,
 * HeliosDB under /v1): the same behaviour, each face's own envelope.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { FaceName } from '../../config.ts';
import type { Delivery, WebhookSubscription } from '../../domains/events/webhooks.ts';
import type { AppContext } from './context.ts';
import { principalOf, requestContext } from './conventions.ts';
import type { FaceApp } from './plugin.ts';

export const webhookSchema = z.object({
  id: z.string(),
  url: z.string(),
  events: z.array(z.string()),
  description: z.string().nullable(),
  active: z.boolean(),
  disabled_reason: z.string().nullable(),
  created_at: z.string(),
  updated_at: z.string(),
});

export const deliverySchema = z.object({
  id: z.string(),
  webhook_id: z.string(),
  event_id: z.string(),
  event: z.string(),
  status: z.enum(['pending', 'succeeded', 'failed']),
  attempts: z.number().int(),
  next_attempt_at: z.string().nullable(),
  last_status_code: z.number().int().nullable(),
  last_error: z.string().nullable(),
  created_at: z.string(),
  completed_at: z.string().nullable(),
  attempt_log: z.array(
    z.object({
      attempt: z.number().int(),
      attempted_at: z.string(),
      status_code: z.number().int().nullable(),
      duration_ms: z.number().int(),
      error: z.string().nullable(),
      response: z.string().nullable(),
    }),
  ),
});

export function webhookJson(s: WebhookSubscription) {
  return {
    id: s.id,
    url: s.url,
    events: s.events,
    description: s.description,
    active: s.active,
    disabled_reason: s.disabledReason,
    created_at: s.createdAt.toISOString(),
    updated_at: s.updatedAt.toISOString(),
  };
}

export function deliveryJson(d: Delivery) {
  return {
    id: d.id,
    webhook_id: d.subscriptionId,
    event_id: d.eventId,
    event: d.eventType,
    status: d.status,
    attempts: d.attempts,
    next_attempt_at: d.nextAttemptAt?.toISOString() ?? null,
    last_status_code: d.lastStatusCode,
    last_error: d.lastError,
    created_at: d.createdAt.toISOString(),
    completed_at: d.completedAt?.toISOString() ?? null,
    attempt_log: d.attemptLog.map((a) => ({
      attempt: a.attempt,
      attempted_at: a.attemptedAt.toISOString(),
      status_code: a.statusCode,
      duration_ms: a.durationMs,
      error: a.error,
      response: a.responseSnippet,
    })),
  };
}

export interface WebhookRouteStyle {
  face: FaceName;
  prefix: string;
  /** Wraps a success body in the face's envelope (and its schema, for OpenAPI). */
  wrap<T>(req: FastifyRequest, reply: FastifyReply, data: T): unknown;
  envelope<T extends z.ZodType>(data: T): z.ZodType;
  /** How a list looks: `{webhooks:[...]}` style key. */
  listKey: { webhooks: string; deliveries: string };
  /** DELETE answers 204 with no body, or 200 with `{id, deleted}`. */
  deleteWithBody: boolean;
}

const page = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(50),
  offset: z.coerce.number().int().min(0).max(1_000_000).default(0),
});
const idParams = z.object({ id: z.string().min(1).max(64) });
const eventsField = z.array(z.string().min(1).max(100)).min(1).max(50);

/** Registers create/list/get/update/delete, the delivery log, redelivery and ping for one face. */
export function webhookRoutes(app: FaceApp, ctx: AppContext, style: WebhookRouteStyle): void {
  const base = `${style.prefix}/webhooks`;
  const listOf = (key: string, item: z.ZodType) =>
    style.envelope(z.object({ [key]: z.array(item), total: z.number().int(), limit: z.number().int(), offset: z.number().int() }));

  app.post(base, {
    schema: {
      summary: 'Subscribe a URL to events (a secret is generated and shown once when none is given)',
      body: z.object({
        url: z.string().min(1).max(2048),
        events: eventsField,
        secret: z.string().min(8).max(256).optional(),
        description: z.string().max(500).optional(),
        active: z.boolean().optional(),
      }),
      response: { 201: style.envelope(webhookSchema.extend({ secret: z.string().optional() })) },
    },
    handler: async (req, reply) => {
      const { subscription, generatedSecret } = await ctx.webhooks.create(principalOf(req).user.id, style.face, req.body, requestContext(req));
      const data = { ...webhookJson(subscription), ...(generatedSecret ? { secret: generatedSecret } : {}) };
      return reply.status(201).send(style.wrap(req, reply, data));
    },
  });

  app.get(base, {
    schema: { summary: 'Your webhooks', querystring: page, response: { 200: listOf(style.listKey.webhooks, webhookSchema) } },
    handler: async (req, reply) => {
      const { items, total } = await ctx.webhooks.list(principalOf(req).user.id, style.face, req.query);
      return style.wrap(req, reply, { [style.listKey.webhooks]: items.map(webhookJson), total, limit: req.query.limit, offset: req.query.offset });
    },
  });

  app.get(`${base}/:id`, {
    schema: { summary: 'One webhook', params: idParams, response: { 200: style.envelope(webhookSchema) } },
    handler: async (req, reply) => style.wrap(req, reply, webhookJson(await ctx.webhooks.getOrThrow(principalOf(req).user.id, req.params.id))),
  });

  app.put(`${base}/:id`, {
    schema: {
      summary: 'Change url, events, description or active (re-enabling a disabled webhook clears its reason)',
      params: idParams,
      body: z
        .object({ url: z.string().min(1).max(2048).optional(), events: eventsField.optional(), description: z.string().max(500).optional(), active: z.boolean().optional() })
        .refine((b) => Object.keys(b).length > 0, 'give at least one field to change'),
      response: { 200: style.envelope(webhookSchema) },
    },
    handler: async (req, reply) =>
      style.wrap(req, reply, webhookJson(await ctx.webhooks.update(principalOf(req).user.id, req.params.id, req.body, requestContext(req)))),
  });

  app.delete(`${base}/:id`, {
    schema: {
      summary: 'Delete a webhook and its delivery log',
      params: idParams,
      response: style.deleteWithBody ? { 200: style.envelope(z.object({ id: z.string(), deleted: z.boolean() })) } : { 204: z.null() },
    },
    handler: async (req, reply) => {
      await ctx.webhooks.delete(principalOf(req).user.id, req.params.id, requestContext(req));
      if (!style.deleteWithBody) return reply.status(204).send(null);
      return style.wrap(req, reply, { id: req.params.id, deleted: true });
    },
  });

  app.get(`${base}/:id/deliveries`, {
    schema: {
      summary: 'Delivery log: every attempt with time, status, duration, error and the first 1 KB of the response',
      params: idParams,
      querystring: page.extend({ status: z.enum(['pending', 'succeeded', 'failed']).optional() }),
      response: { 200: listOf(style.listKey.deliveries, deliverySchema) },
    },
    handler: async (req, reply) => {
      const { items, total } = await ctx.webhooks.deliveries(principalOf(req).user.id, req.params.id, req.query);
      return style.wrap(req, reply, { [style.listKey.deliveries]: items.map(deliveryJson), total, limit: req.query.limit, offset: req.query.offset });
    },
  });

  app.post(`${base}/:id/deliveries/:delivery_id/redeliver`, {
    schema: {
      summary: 'Send a delivery again now (same webhook-id)',
      params: idParams.extend({ delivery_id: z.string().min(1).max(64) }),
      response: { 202: style.envelope(deliverySchema) },
    },
    handler: async (req, reply) => {
      const d = await ctx.webhooks.redeliver(principalOf(req).user.id, req.params.id, req.params.delivery_id, requestContext(req));
      ctx.deliveries.wake();
      return reply.status(202).send(style.wrap(req, reply, deliveryJson(d)));
    },
  });

  app.post(`${base}/:id/ping`, {
    schema: { summary: 'Send a webhook.ping event to this webhook only', params: idParams, response: { 202: style.envelope(deliverySchema) } },
    handler: async (req, reply) => {
      const d = await ctx.webhooks.ping(principalOf(req).user.id, req.params.id);
      ctx.deliveries.wake();
      return reply.status(202).send(style.wrap(req, reply, deliveryJson(d)));
    },
  });
}
