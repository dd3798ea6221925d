/**
 * Arrotech Hub's model endpoints over the AI layer: `/chat/providers`, the Ollama status and
 * diagnostic, `/chat/test/direct-response`, each user's default provider and model
 * (`/settings/ai`) and their usage (`/chat/usage`).
 */
import type { ServerResponse } from 'node:http';
import { z } from 'zod';
import { recordAuditEvent } from '../../domains/audit/service.ts';
import type { Availability } from '../../platform/ai/index.ts';
import type { AppContext } from '../shared/context.ts';
import { principalOf, requestContext } from '../shared/conventions.ts';
import type { FaceApp } from '../shared/plugin.ts';
import { arrotechOk } from './wire.ts';

function envelope<T extends z.ZodType>(data: T) {
  return z.object({ success: z.literal(true), data, message: z.string().optional() });
}

const providerRow = z.object({
  id: z.string(),
  name: z.string(),
  available: z.boolean(),
  configured: z.boolean(),
  default_model: z.string(),
  latency_ms: z.number().nullable(),
  error: z.string().nullable(),
});

/** `MessageCreate` of the Arrotech document. */
const messageCreate = z.object({
  content: z.string().min(1).max(100_000),
  provider: z.string().min(1).max(200).nullish(),
});

const setting = z.object({ provider: z.string().nullable(), model: z.string().nullable() });

function ollamaChecks(a: Availability, ctx: AppContext) {
  const models = a.models ?? [];
  const has = (name: string) => models.some((m) => m === name || m === `${name}:latest` || m.split(':')[0] === name);
  const chatModel = ctx.config.ai.ollama.model;
  const embedModel = ctx.config.ai.ollama.embeddingModel;
  const checks = [
    { name: 'configured', ok: a.configured, detail: a.configured ? 'OLLAMA_HOST is set' : 'OLLAMA_HOST is not set' },
    { name: 'reachable', ok: a.available, detail: a.available ? `answered in ${a.latencyMs} ms` : (a.error ?? 'not checked') },
    { name: 'chat_model_pulled', ok: a.available && has(chatModel), detail: chatModel },
    { name: 'embedding_model_pulled', ok: a.available && has(embedModel), detail: embedModel },
  ];
  const recommendations: string[] = [];
  if (!a.configured) recommendations.push('Set OLLAMA_HOST to the Ollama server (for example http://127.0.0.1:11434) and restart.');
  else if (!a.available) recommendations.push('Start Ollama (`ollama serve`) or fix OLLAMA_HOST so this server can reach it.');
  else {
    if (!has(chatModel)) recommendations.push(`Pull the chat model: \`ollama pull ${chatModel}\` (or set OLLAMA_MODEL to one of the pulled models).`);
    if (!has(embedModel)) recommendations.push(`Pull the embedding model: \`ollama pull ${embedModel}\` (or set OLLAMA_EMBEDDING_MODEL).`);
  }
  return { checks, recommendations };
}

export function automationChatRoutes(app: FaceApp, ctx: AppContext): void {
  app.get('/chat/providers', {
    schema: {
      summary: 'Model providers: which are configured and answering now, and your default',
      response: {
        200: envelope(
          z.object({
            providers: z.array(z.string()),
            all_providers: z.array(providerRow),
            default: z.string().nullable(),
            default_model: z.string().nullable(),
          }),
        ),
      },
    },
    handler: async (req) => {
      const user = principalOf(req).user;
      const [all, mine] = await Promise.all([ctx.ai.availability(), ctx.ai.getUserSetting(user.id)]);
      let def: { provider: string; model: string } | null = null;
      try {
        def = ctx.ai.providers.resolve({}, mine);
      } catch {
        def = null; // nothing configured
      }
      return arrotechOk({
        providers: all.filter((p) => p.available).map((p) => p.id),
        all_providers: all.map((p) => ({
          id: p.id,
          name: p.name,
          available: p.available,
          configured: p.configured,
          default_model: p.defaultModel,
          latency_ms: p.latencyMs,
          error: p.error,
        })),
        default: def?.provider ?? null,
        default_model: def?.model ?? null,
      });
    },
  });

  app.get('/chat/ollama/status', {
    config: { auth: 'optional' },
    schema: {
      summary: 'Whether the configured Ollama server answers',
      response: {
        200: z.object({
          status: z.enum(['running', 'unreachable', 'not_configured']),
          available: z.boolean(),
          version: z.string().nullable(),
          model_count: z.number().int(),
          default_model: z.string(),
          latency_ms: z.number().nullable(),
          error: z.string().nullable(),
        }),
      },
    },
    handler: async () => {
      const a = await ctx.ai.providers.check('ollama', true);
      return {
        status: a.available ? ('running' as const) : a.configured ? ('unreachable' as const) : ('not_configured' as const),
        available: a.available,
        version: a.version,
        model_count: a.models?.length ?? 0,
        default_model: a.defaultModel,
        latency_ms: a.latencyMs,
        error: a.error,
      };
    },
  });

  app.get('/chat/ollama/diagnostic', {
    config: { auth: 'optional' },
    schema: {
      summary: 'Ollama in detail: reachability, version, pulled models, whether the configured models are pulled, and what to do',
      response: {
        200: z.object({
          status: z.enum(['running', 'unreachable', 'not_configured']),
          version: z.string().nullable(),
          latency_ms: z.number().nullable(),
          models: z.array(z.string()),
          chat_model: z.string(),
          embedding_model: z.string(),
          checks: z.array(z.object({ name: z.string(), ok: z.boolean(), detail: z.string() })),
          recommendations: z.array(z.string()),
          breaker: z.enum(['closed', 'open', 'half_open']),
        }),
      },
    },
    handler: async () => {
      const a = await ctx.ai.providers.check('ollama', true);
      return {
        status: a.available ? ('running' as const) : a.configured ? ('unreachable' as const) : ('not_configured' as const),
        version: a.version,
        latency_ms: a.latencyMs,
        models: a.models ?? [],
        chat_model: ctx.config.ai.ollama.model,
        embedding_model: ctx.config.ai.ollama.embeddingModel,
        ...ollamaChecks(a, ctx),
        breaker: a.breaker,
      };
    },
  });

  app.post('/chat/test/direct-response', {
    schema: {
      summary: 'One model answer to `content`, without tools (provider: an id, provider/model, or a model name)',
      body: messageCreate,
      response: {
        200: envelope(
          z.object({
            content: z.string(),
            provider: z.string(),
            model: z.string(),
            tokens_used: z.number().int(),
            input_tokens: z.number().int(),
            output_tokens: z.number().int(),
            cost: z.number().nullable(),
            finish_reason: z.string(),
            duration_ms: z.number(),
          }),
        ),
      },
    },
    handler: async (req, reply) => {
      const user = principalOf(req).user;
      const r = await ctx.ai.chat([{ role: 'user', content: req.body.content }], {
        userId: user.id,
        provider: req.body.provider,
        purpose: 'arrotech.direct-response',
        signal: abortOnClose(reply.raw),
      });
      return arrotechOk({
        content: r.text,
        provider: r.provider,
        model: r.model,
        tokens_used: r.usage.totalTokens,
        input_tokens: r.usage.inputTokens,
        output_tokens: r.usage.outputTokens,
        cost: r.cost,
        finish_reason: r.finishReason,
        duration_ms: Math.round(r.durationMs),
      });
    },
  });

  app.get('/settings/ai', {
    schema: { summary: 'Your default model provider and model (null: the server default)', response: { 200: envelope(setting) } },
    handler: async (req) => arrotechOk(await ctx.ai.getUserSetting(principalOf(req).user.id)),
  });

  app.put('/settings/ai', {
    schema: {
      summary: 'Set your default provider and model; the provider must be configured on this server (null clears)',
      body: z.object({
        provider: z.string().min(1).max(200).nullable(),
        model: z.string().min(1).max(200).nullish(),
      }),
      response: { 200: envelope(setting) },
    },
    handler: async (req) => {
      const user = principalOf(req).user;
      const saved = await ctx.ai.setUserSetting(user.id, { provider: req.body.provider, model: req.body.model ?? null });
      await recordAuditEvent(ctx.db, {
        eventType: 'config_change',
        action: 'ai_settings_updated',
        result: 'success',
        userId: user.id,
        context: requestContext(req),
        metadata: { provider: saved.provider, model: saved.model },
      });
      return arrotechOk(saved, 'AI settings updated');
    },
  });

  app.get('/chat/usage', {
    schema: {
      summary: 'Your model usage: calls, tokens and cost per provider and model',
      querystring: z.object({ days: z.coerce.number().int().min(1).max(366).default(30) }),
      response: {
        200: envelope(
          z.object({
            since: z.string(),
            calls: z.number().int(),
            input_tokens: z.number().int(),
            output_tokens: z.number().int(),
            cost: z.number().nullable(),
            by_model: z.array(
              z.object({
                provider: z.string(),
                model: z.string(),
                calls: z.number().int(),
                failed: z.number().int(),
                input_tokens: z.number().int(),
                output_tokens: z.number().int(),
                cost: z.number().nullable(),
              }),
            ),
          }),
        ),
      },
    },
    handler: async (req) => {
      const since = new Date(Date.now() - req.query.days * 86_400_000);
      const s = await ctx.ai.usageSummary(principalOf(req).user.id, since);
      return arrotechOk({
        since: s.since.toISOString(),
        calls: s.calls,
        input_tokens: s.inputTokens,
        output_tokens: s.outputTokens,
        cost: s.cost,
        by_model: s.byModel.map((m) => ({
          provider: m.provider,
          model: m.model,
          calls: m.calls,
          failed: m.failed,
          input_tokens: m.inputTokens,
          output_tokens: m.outputTokens,
          cost: m.cost,
        })),
      });
    },
  });
}

/** Cancels the model call when the client goes away before the answer is sent. */
function abortOnClose(res: ServerResponse): AbortSignal {
  const ctrl = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) ctrl.abort();
  });
  return ctrl.signal;
}
