/**
 * List prices in USD per million tokens, for the vendors' own APIs. A model is priced by the
 * longest entry its id starts with (so dated snapshots such as `gpt-4o-2024-08-06` take their
 * family's price and `gpt-4o-mini` is not priced as `gpt-4o`). Unknown models, local models and
 * OpenAI-compatible servers other than OpenAI's own have no price: their cost is null, never a guess.
 * `AI_PRICES` adds or overrides entries (`{"openai/my-model":{"input":0.5,"output":1.5}}`), and those
 * apply whatever the server.
 */
export interface Price {
  input: number;
  output: number;
}

export const PRICES: Record<'openai' | 'anthropic', Record<string, Price>> = {
  openai: {
    'gpt-5': { input: 1.25, output: 10 },
    'gpt-5-mini': { input: 0.25, output: 2 },
    'gpt-5-nano': { input: 0.05, output: 0.4 },
    'gpt-4.1': { input: 2, output: 8 },
    'gpt-4.1-mini': { input: 0.4, output: 1.6 },
    'gpt-4.1-nano': { input: 0.1, output: 0.4 },
    'gpt-4o': { input: 2.5, output: 10 },
    'gpt-4o-mini': { input: 0.15, output: 0.6 },
    'gpt-4-turbo': { input: 10, output: 30 },
    'gpt-3.5-turbo': { input: 0.5, output: 1.5 },
    o1: { input: 15, output: 60 },
    'o1-mini': { input: 1.1, output: 4.4 },
    o3: { input: 2, output: 8 },
    'o3-mini': { input: 1.1, output: 4.4 },
    'o4-mini': { input: 1.1, output: 4.4 },
    'text-embedding-3-small': { input: 0.02, output: 0 },
    'text-embedding-3-large': { input: 0.13, output: 0 },
    'text-embedding-ada-002': { input: 0.1, output: 0 },
  },
  anthropic: {
    'claude-opus-4-5': { input: 5, output: 25 },
    'claude-opus-4-1': { input: 15, output: 75 },
    'claude-opus-4': { input: 15, output: 75 },
    'claude-sonnet-4': { input: 3, output: 15 },
    'claude-haiku-4-5': { input: 1, output: 5 },
    'claude-3-7-sonnet': { input: 3, output: 15 },
    'claude-3-5-sonnet': { input: 3, output: 15 },
    'claude-3-5-haiku': { input: 0.8, output: 4 },
    'claude-3-opus': { input: 15, output: 75 },
    'claude-3-haiku': { input: 0.25, output: 1.25 },
  },
};

const OFFICIAL_HOSTS: Record<string, string> = { openai: 'api.openai.com', anthropic: 'api.anthropic.com' };

export class PriceTable {
  private readonly overrides: Record<string, Price>;
  /** Provider → base URL in use (undefined = the vendor's default). */
  private readonly baseUrls: Record<string, string | undefined>;

  constructor(overrides: Record<string, Price>, baseUrls: Record<string, string | undefined>) {
    this.overrides = overrides;
    this.baseUrls = baseUrls;
  }

  priceOf(provider: string, model: string): Price | null {
    const own = this.overrides[`${provider}/${model}`];
    if (own) return own;
    const table = (PRICES as Record<string, Record<string, Price>>)[provider];
    if (!table || !this.isOfficial(provider)) return null;
    let best: string | null = null;
    for (const key of Object.keys(table)) {
      if ((model === key || model.startsWith(`${key}-`) || model.startsWith(`${key}@`)) && (!best || key.length > best.length)) best = key;
    }
    return best ? table[best]! : null;
  }

  /** USD for one call, rounded to 1e-8; null when the model has no known price. */
  costOf(provider: string, model: string, inputTokens: number, outputTokens: number): number | null {
    const p = this.priceOf(provider, model);
    if (!p) return null;
    return Math.round(((inputTokens * p.input + outputTokens * p.output) / 1e6) * 1e8) / 1e8;
  }

  private isOfficial(provider: string): boolean {
    const url = this.baseUrls[provider];
    if (!url) return true;
    try {
      return new URL(url).hostname === OFFICIAL_HOSTS[provider];
    } catch {
      return false;
    }
  }
}
