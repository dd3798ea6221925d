/**
 * Helomatic AI and data endpoints: `POST /api/ai/chat` (whole or streamed as server-sent events,
 * stored as conversations), the conversation list, reading and deletion (additions to the
 * document), and `POST /api/data/enrich`.
 */
import type { ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { z } from 'zod';
import type { StoredMessage } from '../../domains/conversations/service.ts';
import type { EnrichmentResult } from '../../domains/enrichment/service.ts';
import type { ChatResult } from '../../platform/ai/index.ts';
import type { AppContext } from '../shared/context.ts';
import { normalizeError, principalOf } from '../shared/conventions.ts';
import type { FaceApp } from '../shared/plugin.ts';
import { helomaticOk } from './wire.ts';

function envelope<T extends z.ZodType>(data: T) {
  return z.object({ success: z.literal(true), data, message: z.string().optional(), timestamp: z.string() });
}

/** Characters of message content one chat request may carry, all messages together. */
const MAX_CHAT_CHARS = 100_000;

const chatBody = z
  .object({
    messages: z
      .array(
        z.object({
          role: z.enum(['system', 'user', 'assistant']),
          content: z.string().min(1).max(MAX_CHAT_CHARS),
        }),
      )
      .min(1)
      .max(200),
    task: z.string().trim().min(1).max(100).optional().describe('Task category (e.g. `automation`): stored with the conversation and given to the model as a hint'),
    options: z
      .object({
        temperature: z.number().min(0).max(2).optional(),
        max_tokens: z.number().int().min(1).max(32_000).optional(),
        model: z.string().trim().min(1).max(200).optional().describe('A model name (`gpt-4`), a provider (`openai`, `anthropic`, `ollama`) or `provider/model`'),
        stream: z.boolean().optional().describe('Answer as server-sent events'),
      })
      .optional(),
    conversation_id: z.string().min(1).max(64).optional().describe('Continue this conversation: its stored messages go to the model before the new ones'),
  })
  .superRefine((body, issue) => {
    const total = body.messages.reduce((n, m) => n + m.content.length, 0);
    if (total > MAX_CHAT_CHARS) {
      issue.addIssue({ code: 'custom', path: ['messages'], message: `Messages may carry at most ${MAX_CHAT_CHARS} characters together (got ${total})` });
    }
    if (!body.messages.some((m) => m.role === 'user')) {
      issue.addIssue({ code: 'custom', path: ['messages'], message: 'At least one message must have the role user' });
    }
  });

const usageSchema = z.object({ tokens_used: z.number().int(), model: z.string(), cost: z.number().nullable() });

const conversationSchema = z.object({
  id: z.string(),
  title: z.string(),
  task: z.string().nullable(),
  message_count: z.number().int(),
  created_at: z.string(),
  updated_at: z.string(),
});

const messageSchema = z.object({
  role: z.enum(['system', 'user', 'assistant']),
  content: z.string(),
  model: z.string().nullable(),
  tokens_used: z.number().int().nullable(),
  cost: z.number().nullable(),
  created_at: z.string(),
});

const enrichBody = z
  .object({
    email: z.email().max(254).optional(),
    domain: z.string().trim().min(1).max(253).optional().describe('The company domain, e.g. `techcorp.com`'),
    company: z.string().trim().min(1).max(200).optional(),
    website: z.string().trim().min(1).max(2048).optional().describe('The company website: a URL or a host name'),
  })
  .refine((b) => !!(b.email || b.domain || b.company || b.website), { message: 'Give at least one of email, domain, company or website' });

const personSchema = z.object({ name: z.string(), role: z.string(), email: z.string().optional() });

const enrichedSchema = z.object({
  company: z.string().nullable(),
  email: z.string().nullable(),
  website: z.string().nullable(),
  website_url: z.string().optional(),
  industry: z.string().optional(),
  employee_count: z.string().optional(),
  founded: z.string().optional(),
  headquarters: z.string().optional(),
  revenue_range: z.string().optional(),
  key_contacts: z.array(personSchema).optional(),
  description: z.string().optional(),
  address: z
    .object({ street: z.string().nullable(), locality: z.string().nullable(), region: z.string().nullable(), postal_code: z.string().nullable(), country: z.string().nullable() })
    .optional(),
  logo: z.string().optional(),
  social_links: z.record(z.string(), z.string()).optional(),
  contacts: z.object({ emails: z.array(z.string()), phones: z.array(z.string()) }).optional(),
  email_provider: z.string().optional(),
  mx_records: z.array(z.object({ exchange: z.string(), priority: z.number().int() })).optional(),
});

const enrichResponse = z.object({
  enriched_data: enrichedSchema,
  confidence_scores: z.object({ industry: z.number().optional(), employee_count: z.number().optional(), revenue_range: z.number().optional() }),
  processing_time: z.number(),
  sources_used: z.array(z.string()),
  warnings: z.array(z.object({ source: z.string(), reason: z.string(), message: z.string() })).optional(),
});

function usageOf(r: ChatResult) {
  return { tokens_used: r.usage.totalTokens, model: r.model, cost: r.cost };
}

function messageOf(m: StoredMessage) {
  return { role: m.role, content: m.content, model: m.model, tokens_used: m.tokensUsed, cost: m.cost, created_at: m.createdAt.toISOString() };
}

function enrichmentWire(r: EnrichmentResult) {
  const d = r.data;
  const enriched = {
    company: d.company,
    email: d.email,
    website: d.website,
    ...(d.websiteUrl !== undefined && { website_url: d.websiteUrl }),
    ...(d.industry !== undefined && { industry: d.industry }),
    ...(d.employeeCount !== undefined && { employee_count: d.employeeCount }),
    ...(d.founded !== undefined && { founded: d.founded }),
    ...(d.headquarters !== undefined && { headquarters: d.headquarters }),
    ...(d.revenueRange !== undefined && { revenue_range: d.revenueRange }),
    ...(d.keyContacts !== undefined && { key_contacts: d.keyContacts }),
    ...(d.description !== undefined && { description: d.description }),
    ...(d.address !== undefined && {
      address: { street: d.address.street, locality: d.address.locality, region: d.address.region, postal_code: d.address.postalCode, country: d.address.country },
    }),
    ...(d.logo !== undefined && { logo: d.logo }),
    ...(d.socialLinks !== undefined && { social_links: d.socialLinks }),
    ...(d.contacts !== undefined && { contacts: d.contacts }),
    ...(d.emailProvider !== undefined && { email_provider: d.emailProvider }),
    ...(d.mxRecords !== undefined && { mx_records: d.mxRecords }),
  };
  const c = r.confidenceScores;
  return {
    enriched_data: enriched,
    confidence_scores: {
      ...(c.industry !== undefined && { industry: c.industry }),
      ...(c.employeeCount !== undefined && { employee_count: c.employeeCount }),
      ...(c.revenueRange !== undefined && { revenue_range: c.revenueRange }),
    },
    processing_time: r.processingSeconds,
    sources_used: r.sourcesUsed,
    ...(r.warnings.length > 0 && { warnings: r.warnings }),
  };
}

const sse = (data: unknown): string => `data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`;

export function monitoringAiRoutes(app: FaceApp, ctx: AppContext): void {
  const conversations = ctx.conversations;

  app.post('/api/ai/chat', {
    schema: {
      summary: 'Send messages to a model and receive its answer; the turn is stored as a conversation',
      description: [
        'Without `conversation_id` a new conversation is started; with it, the conversation\'s stored messages go to the model before the new ones.',
        'With `options.stream: true` the answer comes as `text/event-stream`: `data: {"type":"delta","content":"..."}` per piece,',
        'then `data: {"type":"done","conversation_id":"...","usage":{...}}` and `data: [DONE]`; a failure after the first piece is',
        '`data: {"type":"error","error":"...","code":"..."}`. Failures before the first piece are ordinary JSON errors (503 when no model provider is configured).',
        '`usage.cost` is in US dollars, null when the model has no known price.',
      ].join(' '),
      body: chatBody,
      response: {
        200: envelope(
          z.object({
            response: z.object({ role: z.literal('assistant'), content: z.string() }),
            usage: usageSchema,
            conversation_id: z.string(),
          }),
        ),
      },
    },
    handler: async (req, reply) => {
      const user = principalOf(req).user;
      const { messages, task, options, conversation_id } = req.body;
      const turn = { messages, task, conversationId: conversation_id };
      const opts = {
        model: options?.model,
        temperature: options?.temperature,
        maxTokens: options?.max_tokens,
        signal: abortOnClose(reply.raw),
        purpose: 'helomatic.chat',
      };
      if (!options?.stream) {
        const { conversationId, result } = await conversations.chat(user.id, turn, opts);
        return helomaticOk({ response: { role: 'assistant' as const, content: result.text }, usage: usageOf(result), conversation_id: conversationId });
      }

      const s = await conversations.stream(user.id, turn, opts);
      const pieces = s.deltas[Symbol.asyncIterator]();
      // The first piece is awaited before answering, so a provider that fails at once gets the JSON error.
      const first = await pieces.next();
      async function* events(): AsyncGenerator<string> {
        try {
          for (let next = first; !next.done; next = await pieces.next()) yield sse({ type: 'delta', content: next.value });
          const done = await s.done;
          yield sse({ type: 'done', conversation_id: done.conversationId, usage: usageOf(done.result) });
          yield sse('[DONE]');
        } catch (raw) {
          const { err } = normalizeError(raw);
          if (err.code === 'INTERNAL_ERROR') req.log.error({ err: raw }, 'chat stream failed');
          yield sse({ type: 'error', error: err.message, code: err.code });
        } finally {
          // The client left early: end the model call's stream too (a finished one ignores this).
          await pieces.return?.(undefined);
        }
      }
      reply.header('content-type', 'text/event-stream; charset=utf-8').header('cache-control', 'no-cache').header('x-accel-buffering', 'no');
      // A stream is piped as it is (the JSON schema above describes the non-streamed answer only).
      return reply.send(Readable.from(events(), { objectMode: false }) as never);
    },
  });

  app.get('/api/ai/conversations', {
    schema: {
      summary: 'Your AI conversations, most recently active first (an addition to the Helomatic document)',
      querystring: z.object({
        page: z.coerce.number().int().min(1).default(1),
        limit: z.coerce.number().int().min(1).max(100).default(20),
      }),
      response: {
        200: envelope(
          z.object({
            conversations: z.array(conversationSchema),
            pagination: z.object({ page: z.number().int(), limit: z.number().int(), total: z.number().int(), has_more: z.boolean() }),
          }),
        ),
      },
    },
    handler: async (req) => {
      const { page, limit } = req.query;
      const { conversations: list, total } = await conversations.list(principalOf(req).user.id, { page, limit });
      return helomaticOk({
        conversations: list.map((c) => ({
          id: c.id,
          title: c.title,
          task: c.task,
          message_count: c.messageCount,
          created_at: c.createdAt.toISOString(),
          updated_at: c.updatedAt.toISOString(),
        })),
        pagination: { page, limit, total, has_more: (page - 1) * limit + list.length < total },
      });
    },
  });

  app.get('/api/ai/conversations/:id', {
    schema: {
      summary: 'One of your AI conversations with its messages, oldest first (an addition to the Helomatic document)',
      params: z.object({ id: z.string().min(1).max(64) }),
      response: { 200: envelope(conversationSchema.extend({ messages: z.array(messageSchema) })) },
    },
    handler: async (req) => {
      const { conversation: c, messages } = await conversations.getOrThrow(principalOf(req).user.id, req.params.id);
      return helomaticOk({
        id: c.id,
        title: c.title,
        task: c.task,
        message_count: c.messageCount,
        created_at: c.createdAt.toISOString(),
        updated_at: c.updatedAt.toISOString(),
        messages: messages.map(messageOf),
      });
    },
  });

  app.delete('/api/ai/conversations/:id', {
    schema: {
      summary: 'Delete one of your AI conversations and its messages (an addition to the Helomatic document)',
      params: z.object({ id: z.string().min(1).max(64) }),
      response: { 200: envelope(z.object({ id: z.string(), deleted: z.literal(true) })) },
    },
    handler: async (req) => {
      await conversations.remove(principalOf(req).user.id, req.params.id);
      return helomaticOk({ id: req.params.id, deleted: true as const }, 'Conversation deleted');
    },
  });

  app.post('/api/data/enrich', {
    schema: {
      summary: 'Enrich a company from its website, its DNS and (when a model provider is configured) a model\'s estimate',
      description: [
        'Give at least one of `email`, `domain`, `company`, `website`. The company website (`website`, else `domain`, else the email\'s domain unless it is a',
        'free-mail provider) is read for its title, description, OpenGraph tags, schema.org JSON-LD (name, founding date, address, employees, founders,',
        'sameAs profiles, contacts) and linked social profiles; the MX records of the mail domain give `email_provider`. With a model provider configured,',
        '`industry`, `employee_count` (when the site does not state it) and `revenue_range` are estimated from those facts only.',
        '`confidence_scores` lists only model-estimated fields; facts read from a source are not scored. `sources_used` lists only sources that contributed',
        '(`company_website`, `json_ld`, `opengraph`, `dns_mx`, `ai_inference:<provider>/<model>`). A source that fails is a `warnings` entry, not an error:',
        'when nothing could be read the answer is 200 with the input echoed, empty `sources_used` and the warnings. `processing_time` is in seconds.',
      ].join(' '),
      body: enrichBody,
      response: { 200: envelope(enrichResponse) },
    },
    handler: async (req, reply) => {
      const result = await ctx.enrichment.enrich(principalOf(req).user.id, req.body, abortOnClose(reply.raw));
      return helomaticOk(enrichmentWire(result));
    },
  });
}

/** Cancels the work when the client goes away before the answer is sent. */
function abortOnClose(res: ServerResponse): AbortSignal {
  const ctrl = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) ctrl.abort();
  });
  return ctrl.signal;
}
