/**
 * One interface over the configured model providers, for every face: chat (whole or streamed as
 * text deltas), a tool-calling loop, structured output validated by a zod schema, and embeddings.
 * Every call is recorded per user (tokens, cost, time) and every failure becomes one catalogue error.
 */
import {
  APICallError,
  embedMany,
  generateText,
  jsonSchema,
  type JSONSchema7,
  type JSONValue,
  type LanguageModelUsage,
  type ModelMessage,
  Output,
  streamText,
  tool,
  type ToolSet,
} from 'ai';
import type { z } from 'zod';
import type { AiConfig, AiProviderId } from '../../config.ts';
import type { Db, InvalidationBus } from '../db/index.ts';
import { AppError, isAppError } from '../errors.ts';
import { CircuitOpenError, ProviderTimeoutError, ProviderUnreachableError } from './fetch.ts';
import { LOCAL_EMBEDDING_DIMENSIONS, LOCAL_EMBEDDING_MODEL, localEmbedding, localTokenCount } from './local-embedding.ts';
import { PriceTable } from './prices.ts';
import { type Availability, Providers, type Resolved } from './providers.ts';
import { type UsageRecord, UsageStore, type UsageSummary, type UserAiSetting } from './usage.ts';

export interface AiToolCall {
  id: string;
  name: string;
  arguments: unknown;
}

export interface AiMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
  /** Assistant messages: the tools the model called. */
  toolCalls?: AiToolCall[];
  /** Tool messages: which call this answers, and whether it is an error. */
  toolCallId?: string;
  toolName?: string;
  isError?: boolean;
}

export interface AiCallOptions {
  /** Whose usage this is, and whose provider setting applies. */
  userId?: string | null;
  provider?: string | null;
  model?: string | null;
  temperature?: number;
  maxTokens?: number;
  signal?: AbortSignal;
  /** Free-form label stored with the usage record (e.g. `helomatic.chat`). */
  purpose?: string;
}

export interface AiUsage {
  inputTokens: number;
  outputTokens: number;
  totalTokens: number;
}

export interface ChatResult {
  text: string;
  provider: AiProviderId;
  model: string;
  usage: AiUsage;
  /** USD; null when the model has no known price. */
  cost: number | null;
  finishReason: string;
  durationMs: number;
}

export interface ChatStream {
  /** Text deltas as the model produces them; throws the catalogue error if the call fails. */
  deltas: AsyncIterable<string>;
  /** Settles after the stream ends (also when nobody iterates `deltas`). */
  result: Promise<ChatResult>;
}

export interface ToolSpec {
  name: string;
  description?: string;
  /** JSON Schema of the arguments (an object schema). */
  parameters: Record<string, unknown>;
}

/** Runs one tool call; a throw is reported to the model as the tool's error, not to the caller. */
export type ToolExecutor = (call: AiToolCall, ctx: { signal?: AbortSignal; step: number }) => Promise<unknown>;

export interface ToolStep {
  /** Model call (1-based) that asked for this tool. */
  step: number;
  toolCallId: string;
  tool: string;
  arguments: unknown;
  ok: boolean;
  result: unknown;
  error: string | null;
  startedAt: Date;
  durationMs: number;
}

export type ToolRunEvent =
  | { type: 'text-delta'; text: string }
  | { type: 'tool-start'; step: number; call: AiToolCall }
  | { type: 'tool-result'; step: ToolStep }
  | { type: 'model-call-finished'; step: number; finishReason: string; usage: AiUsage };

export interface ToolRunOptions extends AiCallOptions {
  tools: ToolSpec[];
  execute: ToolExecutor;
  /** Model calls allowed (default 8); the loop stops there even if the model wants more tools. */
  maxSteps?: number;
  onEvent?: (event: ToolRunEvent) => void;
}

export interface ToolRunResult extends ChatResult {
  steps: ToolStep[];
  modelCalls: number;
  stoppedBy: 'answer' | 'step_limit';
  /** What the loop added to the conversation: assistant tool calls, tool results, the final answer. */
  messages: AiMessage[];
}

export interface ObjectResult<T> extends ChatResult {
  object: T;
  /** True when the first answer was invalid and the repair attempt produced the object. */
  repaired: boolean;
}

export interface EmbedResult {
  /** `provider/model`, e.g. `openai/text-embedding-3-small` or `local/hash-384`. */
  model: string;
  provider: 'openai' | 'ollama' | 'local';
  dimensions: number;
  embeddings: number[][];
  usage: { inputTokens: number };
  cost: number | null;
  durationMs: number;
}

const MAX_TOOL_STEPS = 25;
const MAX_TOOL_RESULT_CHARS = 100_000;
const EMBED_BATCH = 256;

function usageOf(u: LanguageModelUsage | undefined): AiUsage {
  const inputTokens = u?.inputTokens ?? 0;
  const outputTokens = u?.outputTokens ?? 0;
  return { inputTokens, outputTokens, totalTokens: u?.totalTokens ?? inputTokens + outputTokens };
}

function addUsage(a: AiUsage, b: AiUsage): AiUsage {
  return { inputTokens: a.inputTokens + b.inputTokens, outputTokens: a.outputTokens + b.outputTokens, totalTokens: a.totalTokens + b.totalTokens };
}

const ZERO: AiUsage = { inputTokens: 0, outputTokens: 0, totalTokens: 0 };

/** Our messages → the SDK's: system messages become the system prompt; tool traffic keeps its ids. */
export function toModelMessages(messages: AiMessage[]): { system: string | undefined; messages: ModelMessage[] } {
  const system: string[] = [];
  const out: ModelMessage[] = [];
  for (const m of messages) {
    if (m.role === 'system') system.push(m.content);
    else if (m.role === 'user') out.push({ role: 'user', content: m.content });
    else if (m.role === 'assistant') {
      if (m.toolCalls?.length) {
        out.push({
          role: 'assistant',
          content: [
            ...(m.content ? [{ type: 'text' as const, text: m.content }] : []),
            ...m.toolCalls.map((c) => ({ type: 'tool-call' as const, toolCallId: c.id, toolName: c.name, input: c.arguments })),
          ],
        });
      } else out.push({ role: 'assistant', content: m.content });
    } else {
      if (!m.toolCallId || !m.toolName) throw new AppError('VALIDATION_ERROR', 'A tool message needs toolCallId and toolName', { details: { field: 'messages' } });
      out.push({
        role: 'tool',
        content: [
          {
            type: 'tool-result',
            toolCallId: m.toolCallId,
            toolName: m.toolName,
            output: m.isError ? { type: 'error-text', value: m.content } : { type: 'text', value: m.content },
          },
        ],
      });
    }
  }
  return { system: system.length ? system.join('\n\n') : undefined, messages: out };
}

/**
 * Sampling settings for a call. Ollama reads them only inside `options` (its provider package puts
 * them at the top level, where Ollama ignores them), so for Ollama they are sent there too.
 */
function callSettings(r: Resolved, opts: AiCallOptions, extra: Record<string, Record<string, JSONValue>> = {}) {
  const providerOptions: Record<string, Record<string, JSONValue>> = { ...extra };
  if (r.provider === 'ollama' && (opts.temperature !== undefined || opts.maxTokens !== undefined)) {
    const options: Record<string, number> = {};
    if (opts.temperature !== undefined) options.temperature = opts.temperature;
    if (opts.maxTokens !== undefined) options.num_predict = opts.maxTokens;
    providerOptions.ollama = { options };
  }
  return { temperature: opts.temperature, maxOutputTokens: opts.maxTokens, providerOptions };
}

function stringifyResult(value: unknown): string {
  const text = typeof value === 'string' ? value : (JSON.stringify(value) ?? 'null');
  return text.length > MAX_TOOL_RESULT_CHARS ? `${text.slice(0, MAX_TOOL_RESULT_CHARS)}… [truncated ${text.length - MAX_TOOL_RESULT_CHARS} characters]` : text;
}

function findCause<T>(err: unknown, cls: abstract new (...args: never[]) => T): T | undefined {
  let e: unknown = err;
  for (let i = 0; i < 8 && e; i++) {
    if (e instanceof cls) return e;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

function providerMessage(body: string | undefined): string | null {
  if (!body) return null;
  try {
    const j = JSON.parse(body) as { error?: { message?: string } | string; message?: string };
    const m = typeof j.error === 'string' ? j.error : (j.error?.message ?? j.message);
    return m ? String(m).slice(0, 300) : null;
  } catch {
    return body.slice(0, 300);
  }
}

/** Any failure of a model call → one catalogue error a face can show as it is. */
export function mapAiError(err: unknown, provider: string, model: string): AppError {
  if (isAppError(err)) return err;
  const open = findCause(err, CircuitOpenError);
  if (open) {
    return new AppError('SERVICE_UNAVAILABLE', `The ${provider} provider is failing; it is paused and will be retried shortly`, {
      retryAfterSeconds: Math.max(1, Math.ceil(open.retryAfterMs / 1000)),
      details: { provider, reason: 'circuit_open' },
    });
  }
  const timeout = findCause(err, ProviderTimeoutError);
  if (timeout) return new AppError('SERVICE_UNAVAILABLE', `The ${provider} provider did not answer in time`, { details: { provider, reason: 'timeout' } });
  const unreachable = findCause(err, ProviderUnreachableError);
  if (unreachable) return new AppError('SERVICE_UNAVAILABLE', unreachable.message, { details: { provider, reason: 'unreachable' } });
  const api = findCause(err, APICallError);
  if (api) {
    const status = api.statusCode;
    const said = providerMessage(api.responseBody);
    const details = { provider, model, provider_status: status ?? null, ...(said ? { provider_message: said } : {}) };
    if (status === 429) {
      const ra = Number(api.responseHeaders?.['retry-after']);
      return new AppError('RATE_LIMITED', `The ${provider} provider is rate limiting this server`, {
        details,
        retryAfterSeconds: Number.isFinite(ra) && ra > 0 ? Math.ceil(ra) : 30,
      });
    }
    if (status === 401 || status === 403) {
      return new AppError('SERVICE_UNAVAILABLE', `The ${provider} provider rejected this server's credentials; check its API key setting`, { details });
    }
    if (status === 404) {
      return new AppError('VALIDATION_ERROR', `The ${provider} provider has no model '${model}'${said ? `: ${said}` : ''}`, { details: { ...details, field: 'model' } });
    }
    if (status !== undefined && status >= 400 && status < 500) {
      return new AppError('VALIDATION_ERROR', `The ${provider} provider refused the request${said ? `: ${said}` : ''}`, { details });
    }
    if (status === undefined) return new AppError('SERVICE_UNAVAILABLE', `The ${provider} provider could not be reached`, { details: { ...details, reason: 'unreachable' } });
    return new AppError('SERVICE_UNAVAILABLE', `The ${provider} provider failed (HTTP ${status})`, { details });
  }
  if ((err as Error)?.name === 'AbortError') return new AppError('SERVICE_UNAVAILABLE', 'The model call was cancelled', { details: { provider, reason: 'cancelled' } });
  return new AppError('SERVICE_UNAVAILABLE', `The ${provider} provider gave an answer that could not be read: ${(err as Error)?.message ?? String(err)}`, {
    details: { provider, model, reason: 'bad_response' },
  });
}

export interface AiServiceDeps {
  config: AiConfig;
  db: Db;
  /** Evicts cached user settings in every process; without it settings are read on every call. */
  bus?: InvalidationBus;
  log?: { error(obj: unknown, msg: string): void };
  /** Called per HTTP attempt to a provider (for metrics). */
  onAttempt?: (provider: AiProviderId, outcome: 'ok' | 'retry' | 'error', status: number | null) => void;
  /** Called per completed call (for metrics). */
  onCall?: (r: UsageRecord) => void;
}

export class AiService {
  readonly providers: Providers;
  readonly prices: PriceTable;
  readonly usage: UsageStore;
  private readonly config: AiConfig;
  private readonly onCall: AiServiceDeps['onCall'];

  constructor(deps: AiServiceDeps) {
    this.config = deps.config;
    this.providers = new Providers(deps.config, deps.onAttempt);
    this.prices = new PriceTable(deps.config.prices, {
      openai: deps.config.openai.baseUrl,
      anthropic: deps.config.anthropic.baseUrl,
      ollama: deps.config.ollama.host,
    });
    this.usage = new UsageStore(deps.db, deps.bus, (err) => deps.log?.error({ err }, 'recording AI usage failed'));
    this.onCall = deps.onCall;
  }

  /** Which provider and model a call with these options would use. */
  async resolve(opts: AiCallOptions): Promise<Resolved> {
    const setting = opts.userId && !(opts.provider && opts.model) ? await this.usage.getSetting(opts.userId) : { provider: null, model: null };
    return this.providers.resolve({ provider: opts.provider, model: opts.model }, setting);
  }

  availability(fresh = false): Promise<Availability[]> {
    return this.providers.availability(fresh);
  }

  getUserSetting(userId: string): Promise<UserAiSetting> {
    return this.usage.getSetting(userId);
  }

  /** Stores a user's default provider/model; the provider must be one this server has configured. */
  async setUserSetting(userId: string, s: UserAiSetting): Promise<UserAiSetting> {
    if (s.provider) {
      const r = this.providers.resolve({ provider: s.provider, model: s.model });
      s = { provider: r.provider, model: s.model ?? (s.provider.includes('/') ? r.model : null) };
    } else if (s.model) {
      s = { provider: this.providers.resolve({ model: s.model }).provider, model: s.model };
    }
    await this.usage.setSetting(userId, s);
    return s;
  }

  usageSummary(userId: string, since: Date): Promise<UsageSummary> {
    return this.usage.summary(userId, since);
  }

  async chat(messages: AiMessage[], opts: AiCallOptions = {}): Promise<ChatResult> {
    const r = await this.resolve(opts);
    const started = performance.now();
    try {
      const prompt = toModelMessages(messages);
      const res = await generateText({
        model: this.providers.language(r),
        system: prompt.system,
        messages: prompt.messages,
        ...callSettings(r, opts),
        maxRetries: 0,
        abortSignal: opts.signal,
      });
      const result = this.finish(r, res.text, usageOf(res.usage), String(res.finishReason), started);
      this.record(opts, r, 'chat', result.usage, result.cost, started, null);
      return result;
    } catch (err) {
      throw await this.fail(err, opts, r, 'chat', started);
    }
  }

  /** Streams the answer as text deltas. Errors before the first delta surface from iterating `deltas`. */
  async stream(messages: AiMessage[], opts: AiCallOptions = {}): Promise<ChatStream> {
    const r = await this.resolve(opts);
    const started = performance.now();
    const prompt = toModelMessages(messages);
    const res = streamText({
      model: this.providers.language(r),
      system: prompt.system,
      messages: prompt.messages,
      ...callSettings(r, opts),
      maxRetries: 0,
      abortSignal: opts.signal,
      // Errors reach the caller through the stream as catalogue errors; the SDK's default prints them.
      onError: () => {},
    });
    let settle!: { resolve: (v: ChatResult) => void; reject: (e: unknown) => void };
    const result = new Promise<ChatResult>((resolve, reject) => (settle = { resolve, reject }));
    result.catch(() => undefined);
    let consumed = false;
    const source = this.streamDeltas(res.fullStream, opts, r, started, settle);
    const iterable = (async function* () {
      consumed = true;
      yield* source;
    })();
    return {
      deltas: iterable,
      get result() {
        // Nobody iterating: drain it so the result still settles.
        if (!consumed) void (async () => {
          try {
            for await (const _ of iterable) void _;
          } catch {
            /* reported through result */
          }
        })();
        return result;
      },
    };
  }

  private async *streamDeltas(
    parts: AsyncIterable<{ type: string; text?: string; error?: unknown; totalUsage?: LanguageModelUsage; finishReason?: unknown }>,
    opts: AiCallOptions,
    r: Resolved,
    started: number,
    settle: { resolve: (v: ChatResult) => void; reject: (e: unknown) => void },
  ): AsyncGenerator<string> {
    let text = '';
    let usage = ZERO;
    let finishReason = 'unknown';
    try {
      for await (const part of parts) {
        if (part.type === 'text-delta' && part.text) {
          text += part.text;
          yield part.text;
        } else if (part.type === 'error') throw part.error;
        else if (part.type === 'finish') {
          usage = usageOf(part.totalUsage);
          finishReason = String(part.finishReason);
        }
      }
    } catch (err) {
      const mapped = await this.fail(err, opts, r, 'stream', started);
      settle.reject(mapped);
      throw mapped;
    }
    const out = this.finish(r, text, usage, finishReason, started);
    this.record(opts, r, 'stream', out.usage, out.cost, started, null);
    settle.resolve(out);
  }

  /**
   * The tool loop: the model answers or asks for tools; each asked tool runs through `execute`, its
   * result — or its error, so the model can react — goes back to the model, until the model answers
   * without tools or `maxSteps` model calls were made. Every tool call is recorded with its timing.
   */
  async runTools(messages: AiMessage[], opts: ToolRunOptions): Promise<ToolRunResult> {
    const maxSteps = Math.min(Math.max(1, opts.maxSteps ?? 8), MAX_TOOL_STEPS);
    const r = await this.resolve(opts);
    const started = performance.now();
    const toolSet: ToolSet = {};
    for (const t of opts.tools) {
      if (!/^[a-zA-Z0-9_-]{1,64}$/.test(t.name)) {
        throw new AppError('VALIDATION_ERROR', `Tool name '${t.name}' must be 1-64 letters, digits, '_' or '-'`, { details: { field: 'tools', tool: t.name } });
      }
      toolSet[t.name] = tool({ description: t.description, inputSchema: jsonSchema(t.parameters as JSONSchema7) });
    }
    const transcript: AiMessage[] = [...messages];
    const added: AiMessage[] = [];
    const steps: ToolStep[] = [];
    let usage = ZERO;
    let text = '';
    let finishReason = 'unknown';
    let modelCalls = 0;
    try {
      while (true) {
        modelCalls++;
        const prompt = toModelMessages(transcript);
        const res = streamText({
          model: this.providers.language(r),
          system: prompt.system,
          messages: prompt.messages,
          tools: toolSet,
          ...callSettings(r, opts),
          maxRetries: 0,
          abortSignal: opts.signal,
          onError: () => {},
        });
        let stepText = '';
        const calls: AiToolCall[] = [];
        let stepUsage = ZERO;
        for await (const part of res.fullStream) {
          if (part.type === 'text-delta') {
            stepText += part.text;
            opts.onEvent?.({ type: 'text-delta', text: part.text });
          } else if (part.type === 'tool-call') calls.push({ id: part.toolCallId, name: part.toolName, arguments: part.input });
          else if (part.type === 'error') throw part.error;
          else if (part.type === 'finish') {
            stepUsage = usageOf(part.totalUsage);
            finishReason = String(part.finishReason);
          }
        }
        usage = addUsage(usage, stepUsage);
        text = stepText;
        opts.onEvent?.({ type: 'model-call-finished', step: modelCalls, finishReason, usage: stepUsage });
        const assistant: AiMessage = { role: 'assistant', content: stepText, ...(calls.length ? { toolCalls: calls } : {}) };
        transcript.push(assistant);
        added.push(assistant);
        if (!calls.length) break;
        for (const call of calls) {
          opts.onEvent?.({ type: 'tool-start', step: modelCalls, call });
          const at = new Date();
          const t0 = performance.now();
          let step: ToolStep;
          if (!toolSet[call.name]) {
            step = { step: modelCalls, toolCallId: call.id, tool: call.name, arguments: call.arguments, ok: false, result: null, error: `Unknown tool '${call.name}'`, startedAt: at, durationMs: 0 };
          } else {
            try {
              const result = await opts.execute(call, { signal: opts.signal, step: modelCalls });
              step = { step: modelCalls, toolCallId: call.id, tool: call.name, arguments: call.arguments, ok: true, result, error: null, startedAt: at, durationMs: performance.now() - t0 };
            } catch (err) {
              const message = (err as Error)?.message ?? String(err);
              step = { step: modelCalls, toolCallId: call.id, tool: call.name, arguments: call.arguments, ok: false, result: null, error: message, startedAt: at, durationMs: performance.now() - t0 };
            }
          }
          step.durationMs = Math.round(step.durationMs * 1000) / 1000;
          steps.push(step);
          opts.onEvent?.({ type: 'tool-result', step });
          const toolMsg: AiMessage = {
            role: 'tool',
            toolCallId: call.id,
            toolName: call.name,
            isError: !step.ok,
            content: step.ok ? stringifyResult(step.result) : `Error: ${step.error}`,
          };
          transcript.push(toolMsg);
          added.push(toolMsg);
        }
        if (modelCalls >= maxSteps) break;
      }
    } catch (err) {
      throw await this.fail(err, opts, r, 'tools', started, usage);
    }
    const out = this.finish(r, text, usage, finishReason, started);
    this.record(opts, r, 'tools', out.usage, out.cost, started, null);
    const last = added.at(-1);
    return { ...out, steps, modelCalls, stoppedBy: last?.role === 'assistant' && !last.toolCalls ? 'answer' : 'step_limit', messages: added };
  }

  /**
   * An object that satisfies `schema`. When the model's answer is not valid JSON or fails the schema,
   * the model is shown its answer and the problems and asked once more; if that fails too, the
   * error names the problems.
   */
  async object<S extends z.ZodType>(messages: AiMessage[], schema: S, opts: AiCallOptions & { name?: string; description?: string } = {}): Promise<ObjectResult<z.infer<S>>> {
    const r = await this.resolve(opts);
    const started = performance.now();
    let usage = ZERO;
    let transcript = messages;
    for (let attempt = 0; attempt < 2; attempt++) {
      let raw: string;
      let finishReason: string;
      try {
        const prompt = toModelMessages(transcript);
        const res = await generateText({
          model: this.providers.language(r),
          system: prompt.system,
          messages: prompt.messages,
          output: Output.object({ schema, name: opts.name, description: opts.description }),
          ...callSettings(r, opts, { openai: { strictJsonSchema: false } }),
          maxRetries: 0,
          abortSignal: opts.signal,
        }).catch(async (err: unknown) => {
          // The SDK refuses text that is not JSON; that text is what the repair prompt needs.
          const text = (err as { text?: string }).text;
          if (typeof text === 'string' && !findCause(err, APICallError)) return { text, usage: (err as { usage?: LanguageModelUsage }).usage, finishReason: 'stop', invalidJson: true };
          throw err;
        });
        raw = res.text;
        finishReason = String(res.finishReason);
        usage = addUsage(usage, usageOf(res.usage));
      } catch (err) {
        throw await this.fail(err, opts, r, 'object', started, usage);
      }
      const problems = validate(raw, schema);
      if (problems.ok) {
        const out = this.finish(r, raw, usage, finishReason, started);
        this.record(opts, r, 'object', out.usage, out.cost, started, null);
        return { ...out, object: problems.value as z.infer<S>, repaired: attempt > 0 };
      }
      if (attempt === 1) {
        const cost = this.prices.costOf(r.provider, r.model, usage.inputTokens, usage.outputTokens);
        this.record(opts, r, 'object', usage, cost, started, 'INVALID_OUTPUT');
        throw new AppError('SERVICE_UNAVAILABLE', `The model did not produce valid output after one repair attempt: ${problems.summary}`, {
          details: { provider: r.provider, model: r.model, reason: 'invalid_output', issues: problems.issues, output: raw.slice(0, 2000) },
        });
      }
      transcript = [
        ...messages,
        { role: 'assistant', content: raw },
        {
          role: 'user',
          content: `That answer is not valid: ${problems.summary}. Reply again with only the corrected JSON value, no prose and no code fences.`,
        },
      ];
    }
    throw new AppError('INTERNAL_ERROR', 'unreachable');
  }

  /** Embeddings for `texts`, in order, from the configured embedding provider or the local model. */
  async embed(texts: string[], opts: { userId?: string | null; purpose?: string; signal?: AbortSignal } = {}): Promise<EmbedResult> {
    if (!Array.isArray(texts) || texts.some((t) => typeof t !== 'string')) throw new AppError('VALIDATION_ERROR', 'texts must be a list of strings', { details: { field: 'texts' } });
    const started = performance.now();
    const provider = this.embeddingProvider();
    if (provider === 'local') {
      const embeddings = texts.map((t) => localEmbedding(t));
      const inputTokens = localTokenCount(texts);
      const durationMs = performance.now() - started;
      this.record(opts, { provider: 'local' as AiProviderId, model: 'hash-384' }, 'embed', { inputTokens, outputTokens: 0, totalTokens: inputTokens }, null, started, null);
      return { model: LOCAL_EMBEDDING_MODEL, provider: 'local', dimensions: LOCAL_EMBEDDING_DIMENSIONS, embeddings, usage: { inputTokens }, cost: null, durationMs };
    }
    const model = provider === 'openai' ? this.config.openai.embeddingModel : this.config.ollama.embeddingModel;
    const r = { provider, model } as Resolved;
    try {
      const embeddings: number[][] = [];
      let inputTokens = 0;
      for (let i = 0; i < texts.length; i += EMBED_BATCH) {
        const res = await embedMany({ model: this.providers.embedding(provider, model), values: texts.slice(i, i + EMBED_BATCH), maxRetries: 0, abortSignal: opts.signal });
        embeddings.push(...res.embeddings);
        inputTokens += res.usage?.tokens ?? 0;
      }
      const cost = this.prices.costOf(provider, model, inputTokens, 0);
      this.record(opts, r, 'embed', { inputTokens, outputTokens: 0, totalTokens: inputTokens }, cost, started, null);
      return { model: `${provider}/${model}`, provider, dimensions: embeddings[0]?.length ?? 0, embeddings, usage: { inputTokens }, cost, durationMs: performance.now() - started };
    } catch (err) {
      throw await this.fail(err, opts, r, 'embed', started);
    }
  }

  /** `local` when no embedding provider is configured. */
  embeddingProvider(): 'openai' | 'ollama' | 'local' {
    const chosen = this.config.embeddingProvider;
    if (chosen === 'local') return 'local';
    if (chosen) {
      if (!this.providers.isConfigured(chosen)) {
        throw new AppError('SERVICE_UNAVAILABLE', `AI_EMBEDDING_PROVIDER is ${chosen} but that provider is not configured`, { details: { provider: chosen } });
      }
      return chosen;
    }
    if (this.providers.isConfigured('openai')) return 'openai';
    if (this.providers.isConfigured('ollama')) return 'ollama';
    return 'local';
  }

  private finish(r: Resolved, text: string, usage: AiUsage, finishReason: string, started: number): ChatResult {
    return {
      text,
      provider: r.provider,
      model: r.model,
      usage,
      cost: this.prices.costOf(r.provider, r.model, usage.inputTokens, usage.outputTokens),
      finishReason,
      durationMs: Math.round((performance.now() - started) * 1000) / 1000,
    };
  }

  private async fail(err: unknown, opts: { userId?: string | null; purpose?: string }, r: Resolved, op: UsageRecord['operation'], started: number, usage = ZERO): Promise<AppError> {
    const mapped = mapAiError(err, r.provider, r.model);
    const cost = usage.totalTokens ? this.prices.costOf(r.provider, r.model, usage.inputTokens, usage.outputTokens) : null;
    this.record(opts, r, op, usage, cost, started, mapped.code);
    return mapped;
  }

  private record(
    opts: { userId?: string | null; purpose?: string },
    r: Resolved,
    operation: UsageRecord['operation'],
    usage: AiUsage,
    cost: number | null,
    started: number,
    errorCode: string | null,
  ): void {
    const rec: UsageRecord = {
      userId: opts.userId ?? null,
      provider: r.provider,
      model: r.model,
      operation,
      purpose: opts.purpose ?? null,
      inputTokens: usage.inputTokens,
      outputTokens: usage.outputTokens,
      cost,
      durationMs: performance.now() - started,
      ok: errorCode === null,
      errorCode,
    };
    this.onCall?.(rec);
    this.usage.record(rec);
  }

  /** Writes pending usage rows (call before shutdown). */
  flush(): Promise<void> {
    return this.usage.flush();
  }
}

type Validation = { ok: true; value: unknown } | { ok: false; summary: string; issues: { path: string; message: string }[] };

/** Parses model text as JSON (tolerating a code fence around it) and checks it against the schema. */
export function validate(raw: string, schema: z.ZodType): Validation {
  let text = raw.trim();
  const fence = /^```(?:json)?\s*\n?([\s\S]*?)\n?```$/i.exec(text);
  if (fence) text = fence[1]!.trim();
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { ok: false, summary: `it is not JSON (${(err as Error).message})`, issues: [{ path: '', message: 'not valid JSON' }] };
  }
  const parsed = schema.safeParse(value);
  if (parsed.success) return { ok: true, value: parsed.data };
  const issues = parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message }));
  return { ok: false, summary: issues.map((i) => `${i.path || '(root)'}: ${i.message}`).join('; '), issues };
}
