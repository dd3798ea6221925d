/**
 * The configured model providers: which are set up, how a request's `provider`/`model` resolves to
 * one of them, the SDK model objects (all sharing the resilient fetch), and live availability.
 */
import { createAnthropic } from '@ai-sdk/anthropic';
import { createOpenAI } from '@ai-sdk/openai';
import type { EmbeddingModel, LanguageModel } from 'ai';
import { createOllama } from 'ollama-ai-provider-v2';
import { AI_PROVIDERS, type AiConfig, type AiProviderId } from '../../config.ts';
import { AppError } from '../errors.ts';
import { CircuitBreaker, resilientFetch } from './fetch.ts';

export const PROVIDER_NAMES: Record<AiProviderId, string> = {
  openai: 'OpenAI (or a compatible server)',
  anthropic: 'Anthropic',
  ollama: 'Ollama',
};

/** The settings that configure each provider, named in errors. */
export const PROVIDER_SETTINGS: Record<AiProviderId, string> = {
  openai: 'OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible server such as vLLM, LM Studio or llama.cpp)',
  anthropic: 'ANTHROPIC_API_KEY',
  ollama: 'OLLAMA_HOST (e.g. http://127.0.0.1:11434)',
};

export const NO_PROVIDER_MESSAGE =
  'No AI provider is configured: set OPENAI_API_KEY (with OPENAI_BASE_URL for a compatible server), ANTHROPIC_API_KEY, or OLLAMA_HOST, then restart the server';

export interface Resolved {
  provider: AiProviderId;
  model: string;
}

export interface Availability {
  id: AiProviderId;
  name: string;
  configured: boolean;
  available: boolean;
  /** Base URL requests go to (no credentials). */
  baseUrl: string | null;
  defaultModel: string;
  /** Milliseconds the live check took; null when not configured. */
  latencyMs: number | null;
  error: string | null;
  /** Models the provider lists, when it lists them. */
  models: string[] | null;
  version: string | null;
  breaker: 'closed' | 'open' | 'half_open';
}

function noProvider(): AppError {
  return new AppError('SERVICE_UNAVAILABLE', NO_PROVIDER_MESSAGE, { details: { settings: ['OPENAI_API_KEY', 'OPENAI_BASE_URL', 'ANTHROPIC_API_KEY', 'OLLAMA_HOST'] } });
}

function normalizeOllamaHost(host: string): string {
  const withScheme = /^https?:\/\//.test(host) ? host : `http://${host}`;
  return withScheme.replace(/\/+$/, '').replace(/\/api$/, '');
}

function anthropicBase(url: string | undefined): string {
  if (!url) return 'https://api.anthropic.com/v1';
  const trimmed = url.replace(/\/+$/, '');
  return trimmed.endsWith('/v1') ? trimmed : `${trimmed}/v1`;
}

/** Provider ids the Arrotech document lists that this server does not speak natively. */
const UNSUPPORTED_PROVIDERS = ['gemini', 'google', 'huggingface', 'togetherai', 'together', 'groq', 'mistral', 'cohere'];

const CHECK_TIMEOUT_MS = 3000;
const CHECK_CACHE_MS = 10_000;

export class Providers {
  readonly config: AiConfig;
  readonly breakers: Record<AiProviderId, CircuitBreaker>;
  private readonly openai;
  private readonly anthropic;
  private readonly ollama;
  private readonly baseUrls: Record<AiProviderId, string | null>;
  private readonly checks = new Map<AiProviderId, { at: number; value: Promise<Availability> }>();

  constructor(config: AiConfig, onAttempt?: (provider: AiProviderId, outcome: 'ok' | 'retry' | 'error', status: number | null) => void) {
    this.config = config;
    this.breakers = {
      openai: new CircuitBreaker(config.breakerThreshold, config.breakerCooldownMs),
      anthropic: new CircuitBreaker(config.breakerThreshold, config.breakerCooldownMs),
      ollama: new CircuitBreaker(config.breakerThreshold, config.breakerCooldownMs),
    };
    const fetchFor = (provider: AiProviderId) =>
      resilientFetch({
        provider,
        breaker: this.breakers[provider],
        timeoutMs: config.timeoutMs,
        maxRetries: config.maxRetries,
        retryMaxWaitMs: config.retryMaxWaitMs,
        onAttempt: onAttempt && ((outcome, status) => onAttempt(provider, outcome, status)),
      });
    this.baseUrls = {
      openai: this.isConfigured('openai') ? (config.openai.baseUrl ?? 'https://api.openai.com/v1').replace(/\/+$/, '') : null,
      anthropic: this.isConfigured('anthropic') ? anthropicBase(config.anthropic.baseUrl) : null,
      ollama: config.ollama.host ? normalizeOllamaHost(config.ollama.host) : null,
    };
    // A compatible server often needs no key; the SDK insists on one, and such servers ignore it.
    this.openai = this.baseUrls.openai
      ? createOpenAI({ apiKey: config.openai.apiKey ?? 'not-needed', baseURL: this.baseUrls.openai, fetch: fetchFor('openai') })
      : null;
    this.anthropic = this.baseUrls.anthropic
      ? createAnthropic({ apiKey: config.anthropic.apiKey, baseURL: this.baseUrls.anthropic, fetch: fetchFor('anthropic') })
      : null;
    this.ollama = this.baseUrls.ollama ? createOllama({ baseURL: `${this.baseUrls.ollama}/api`, fetch: fetchFor('ollama') }) : null;
  }

  isConfigured(id: AiProviderId): boolean {
    if (id === 'openai') return Boolean(this.config.openai.apiKey || this.config.openai.baseUrl);
    if (id === 'anthropic') return Boolean(this.config.anthropic.apiKey);
    return Boolean(this.config.ollama.host);
  }

  configured(): AiProviderId[] {
    return AI_PROVIDERS.filter((p) => this.isConfigured(p));
  }

  /** The provider used when neither request nor user names one; null when none is configured. */
  defaultProvider(): AiProviderId | null {
    const d = this.config.defaultProvider;
    if (d && this.isConfigured(d)) return d;
    return this.configured()[0] ?? null;
  }

  defaultModel(id: AiProviderId): string {
    return this.config[id].model;
  }

  baseUrl(id: AiProviderId): string | null {
    return this.baseUrls[id];
  }

  /**
   * Resolves a request's `provider` and `model` (either may be absent) against the user's setting and
   * the server default. `provider` may be a provider id (`openai`), `provider/model`, or — as clients
   * of the Arrotech API send — a bare model name (`gpt-4o`, `claude-3-5-sonnet`).
   */
  resolve(req: { provider?: string | null; model?: string | null }, user: { provider: string | null; model: string | null } = { provider: null, model: null }): Resolved {
    if (!this.configured().length) throw noProvider();
    let provider: AiProviderId | null = null;
    let model = req.model?.trim() || null;
    const asked = req.provider?.trim() || null;
    if (asked) {
      const slash = asked.indexOf('/');
      const head = (slash > 0 ? asked.slice(0, slash) : asked).toLowerCase();
      if ((AI_PROVIDERS as readonly string[]).includes(head)) {
        provider = head as AiProviderId;
        if (slash > 0) model = asked.slice(slash + 1) || model;
      } else if (UNSUPPORTED_PROVIDERS.includes(head)) {
        throw new AppError(
          'VALIDATION_ERROR',
          `Provider '${head}' is not supported by this server; use ${AI_PROVIDERS.join(', ')} (an OpenAI-compatible endpoint of another vendor can be set as OPENAI_BASE_URL)`,
          { details: { field: 'provider', value: asked, allowed_values: [...AI_PROVIDERS] } },
        );
      } else {
        const inferred = this.inferProvider(asked);
        if (!inferred) {
          throw new AppError('VALIDATION_ERROR', `Unknown provider '${asked}'; use one of ${AI_PROVIDERS.join(', ')}, provider/model, or a model name`, {
            details: { field: 'provider', value: asked, allowed_values: [...AI_PROVIDERS] },
          });
        }
        provider = inferred;
        model = asked;
      }
    } else if (model) {
      provider = this.inferProvider(model, user.provider);
    }
    if (!provider && user.provider && (AI_PROVIDERS as readonly string[]).includes(user.provider)) {
      provider = user.provider as AiProviderId;
    }
    provider ??= this.defaultProvider();
    if (!provider) throw noProvider();
    if (!this.isConfigured(provider)) {
      throw new AppError('SERVICE_UNAVAILABLE', `The ${provider} provider is not configured on this server: set ${PROVIDER_SETTINGS[provider]}`, {
        details: { provider, configured: this.configured() },
      });
    }
    if (!model && user.model && user.provider === provider) model = user.model;
    return { provider, model: model ?? this.defaultModel(provider) };
  }

  /** Which configured provider serves a bare model name; null when it cannot be told. */
  private inferProvider(model: string, preferred: string | null = null): AiProviderId | null {
    const m = model.toLowerCase();
    if (/^(gpt-|chatgpt|o\d|text-embedding-|davinci|babbage)/.test(m)) return 'openai';
    if (m.startsWith('claude')) return 'anthropic';
    if (preferred && (AI_PROVIDERS as readonly string[]).includes(preferred) && this.isConfigured(preferred as AiProviderId)) return preferred as AiProviderId;
    if (this.isConfigured('ollama')) return 'ollama';
    return this.defaultProvider();
  }

  language(r: Resolved): LanguageModel {
    if (r.provider === 'openai' && this.openai) return this.openai.chat(r.model);
    if (r.provider === 'anthropic' && this.anthropic) return this.anthropic(r.model);
    if (r.provider === 'ollama' && this.ollama) return this.ollama.chat(r.model);
    throw new AppError('SERVICE_UNAVAILABLE', `The ${r.provider} provider is not configured on this server: set ${PROVIDER_SETTINGS[r.provider]}`);
  }

  embedding(provider: 'openai' | 'ollama', model: string): EmbeddingModel {
    if (provider === 'openai' && this.openai) return this.openai.embedding(model);
    if (provider === 'ollama' && this.ollama) return this.ollama.embedding(model);
    throw new AppError('SERVICE_UNAVAILABLE', `The ${provider} provider is not configured on this server: set ${PROVIDER_SETTINGS[provider]}`);
  }

  /** Live availability of every provider (cached for a few seconds; `fresh` bypasses the cache). */
  async availability(fresh = false): Promise<Availability[]> {
    return Promise.all(AI_PROVIDERS.map((id) => this.check(id, fresh)));
  }

  check(id: AiProviderId, fresh = false): Promise<Availability> {
    const cached = this.checks.get(id);
    if (!fresh && cached && Date.now() - cached.at < CHECK_CACHE_MS) return cached.value;
    const value = this.probe(id);
    this.checks.set(id, { at: Date.now(), value });
    return value;
  }

  private async probe(id: AiProviderId): Promise<Availability> {
    const base: Availability = {
      id,
      name: PROVIDER_NAMES[id],
      configured: this.isConfigured(id),
      available: false,
      baseUrl: this.baseUrls[id],
      defaultModel: this.defaultModel(id),
      latencyMs: null,
      error: null,
      models: null,
      version: null,
      breaker: this.breakers[id].state,
    };
    if (!base.configured || !base.baseUrl) return { ...base, error: `not configured: set ${PROVIDER_SETTINGS[id]}` };
    const started = performance.now();
    try {
      if (id === 'ollama') {
        const [version, tags] = await Promise.all([
          getJson(`${base.baseUrl}/api/version`, {}),
          getJson(`${base.baseUrl}/api/tags`, {}),
        ]);
        const models = ((tags as { models?: { name?: string }[] }).models ?? []).map((m) => String(m.name));
        return { ...base, available: true, latencyMs: ms(started), models, version: String((version as { version?: string }).version ?? '') || null };
      }
      const headers: Record<string, string> =
        id === 'openai'
          ? this.config.openai.apiKey
            ? { authorization: `Bearer ${this.config.openai.apiKey}` }
            : {}
          : { 'x-api-key': this.config.anthropic.apiKey ?? '', 'anthropic-version': '2023-06-01' };
      const list = (await getJson(`${base.baseUrl}/models`, headers)) as { data?: { id?: string }[] };
      return { ...base, available: true, latencyMs: ms(started), models: (list.data ?? []).map((m) => String(m.id)) };
    } catch (err) {
      return { ...base, latencyMs: ms(started), error: (err as Error).message };
    }
  }
}

function ms(started: number): number {
  return Math.round((performance.now() - started) * 10) / 10;
}

async function getJson(url: string, headers: Record<string, string>): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(url, { headers, signal: AbortSignal.timeout(CHECK_TIMEOUT_MS) });
  } catch (err) {
    const e = err as Error & { cause?: { code?: string } };
    throw new Error(e.name === 'TimeoutError' ? `no answer within ${CHECK_TIMEOUT_MS} ms` : `unreachable (${e.cause?.code ?? e.message})`);
  }
  const text = await res.text();
  if (!res.ok) {
    throw new Error(res.status === 401 || res.status === 403 ? `credentials rejected (HTTP ${res.status})` : `HTTP ${res.status}: ${text.slice(0, 200)}`);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new Error('answered with something other than JSON');
  }
}
