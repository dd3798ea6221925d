/** Per-call usage records (tokens, cost, time) and each user's preferred provider and model. */
import type { Db, InvalidationBus, Migration } from '../db/index.ts';

export const aiMigrations: Migration[] = [
  {
    version: 700,
    name: 'ai_usage',
    sql: `
      CREATE TABLE ai_usage (
        id bigserial PRIMARY KEY,
        user_id text REFERENCES users(id) ON DELETE CASCADE,
        provider text NOT NULL,
        model text NOT NULL,
        operation text NOT NULL CHECK (operation IN ('chat', 'stream', 'tools', 'object', 'embed')),
        purpose text,
        input_tokens integer NOT NULL DEFAULT 0,
        output_tokens integer NOT NULL DEFAULT 0,
        -- USD; NULL when the model has no known price (local models, compatible servers).
        cost_usd numeric(16, 8),
        duration_ms integer NOT NULL,
        ok boolean NOT NULL,
        error_code text,
        created_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE INDEX ai_usage_user_time ON ai_usage (user_id, created_at);
      CREATE TABLE ai_user_settings (
        user_id text PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        provider text CHECK (provider IN ('openai', 'anthropic', 'ollama')),
        model text,
        updated_at timestamptz NOT NULL DEFAULT now()
      );
    `,
  },
];

export interface UsageRecord {
  userId: string | null;
  provider: string;
  model: string;
  operation: 'chat' | 'stream' | 'tools' | 'object' | 'embed';
  purpose: string | null;
  inputTokens: number;
  outputTokens: number;
  cost: number | null;
  durationMs: number;
  ok: boolean;
  errorCode: string | null;
}

export interface UsageSummaryRow {
  provider: string;
  model: string;
  calls: number;
  failed: number;
  inputTokens: number;
  outputTokens: number;
  /** Sum over priced calls; null when none of the calls had a price. */
  cost: number | null;
}

export interface UsageSummary {
  since: Date;
  calls: number;
  inputTokens: number;
  outputTokens: number;
  cost: number | null;
  byModel: UsageSummaryRow[];
}

export interface UserAiSetting {
  provider: string | null;
  model: string | null;
}

const FLUSH_DELAY_MS = 100;
const FLUSH_BATCH = 500;
const SETTING_TTL_MS = 30_000;

/**
 * Usage rows are written in batches off the caller's path (a model call never waits for its usage
 * row); `flush()` writes what is pending, and summaries flush first so a user sees their own calls.
 * User settings are cached briefly and evicted in every process when one changes.
 */
export class UsageStore {
  private readonly db: Db;
  private readonly bus: InvalidationBus | undefined;
  private readonly onError: (err: unknown) => void;
  private pending: UsageRecord[] = [];
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();
  private readonly settings = new Map<string, { value: UserAiSetting; at: number }>();

  constructor(db: Db, bus?: InvalidationBus, onError: (err: unknown) => void = () => {}) {
    this.db = db;
    this.bus = bus;
    this.onError = onError;
    bus?.subscribe((tag) => {
      if (tag === null) this.settings.clear();
      else if (tag.startsWith('ai-setting:')) this.settings.delete(tag.slice('ai-setting:'.length));
    });
  }

  record(r: UsageRecord): void {
    this.pending.push(r);
    if (this.pending.length >= FLUSH_BATCH) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), FLUSH_DELAY_MS);
  }

  /** Writes every pending row; resolves when they are stored (a failed batch is logged, not retried). */
  flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const batch = this.pending;
    this.pending = [];
    this.flushing = this.flushing.then(async () => {
      if (!batch.length) return;
      const col = <K extends keyof UsageRecord>(k: K) => batch.map((r) => r[k]);
      try {
        // Rows of users deleted meanwhile are dropped rather than failing the batch.
        await this.db.query(
          `INSERT INTO ai_usage (user_id, provider, model, operation, purpose, input_tokens, output_tokens, cost_usd, duration_ms, ok, error_code)
           SELECT v.* FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[], $8::numeric[], $9::int[], $10::boolean[], $11::text[])
                  AS v(user_id, provider, model, operation, purpose, input_tokens, output_tokens, cost_usd, duration_ms, ok, error_code)
            WHERE v.user_id IS NULL OR EXISTS (SELECT 1 FROM users u WHERE u.id = v.user_id)`,
          [
            col('userId'),
            col('provider'),
            col('model'),
            col('operation'),
            col('purpose'),
            col('inputTokens'),
            col('outputTokens'),
            col('cost'),
            batch.map((r) => Math.round(r.durationMs)),
            col('ok'),
            col('errorCode'),
          ],
        );
      } catch (err) {
        this.onError(err);
      }
    });
    return this.flushing;
  }

  async summary(userId: string, since: Date): Promise<UsageSummary> {
    await this.flush();
    const { rows } = await this.db.query<{
      provider: string;
      model: string;
      calls: string;
      failed: string;
      input_tokens: string;
      output_tokens: string;
      cost: string | null;
    }>(
      `SELECT provider, model, count(*) AS calls, count(*) FILTER (WHERE NOT ok) AS failed,
              coalesce(sum(input_tokens), 0) AS input_tokens, coalesce(sum(output_tokens), 0) AS output_tokens,
              sum(cost_usd) AS cost
         FROM ai_usage WHERE user_id = $1 AND created_at >= $2
        GROUP BY provider, model ORDER BY provider, model`,
      [userId, since],
    );
    const byModel = rows.map((r) => ({
      provider: r.provider,
      model: r.model,
      calls: Number(r.calls),
      failed: Number(r.failed),
      inputTokens: Number(r.input_tokens),
      outputTokens: Number(r.output_tokens),
      cost: r.cost === null ? null : Number(r.cost),
    }));
    const priced = byModel.filter((r) => r.cost !== null);
    return {
      since,
      calls: byModel.reduce((n, r) => n + r.calls, 0),
      inputTokens: byModel.reduce((n, r) => n + r.inputTokens, 0),
      outputTokens: byModel.reduce((n, r) => n + r.outputTokens, 0),
      cost: priced.length ? Math.round(priced.reduce((n, r) => n + r.cost!, 0) * 1e8) / 1e8 : null,
      byModel,
    };
  }

  async getSetting(userId: string): Promise<UserAiSetting> {
    const hit = this.settings.get(userId);
    if (hit && this.bus?.reliable && Date.now() - hit.at < SETTING_TTL_MS) return hit.value;
    const { rows } = await this.db.query<{ provider: string | null; model: string | null }>(
      'SELECT provider, model FROM ai_user_settings WHERE user_id = $1',
      [userId],
    );
    const value = rows[0] ?? { provider: null, model: null };
    if (this.bus) this.settings.set(userId, { value, at: Date.now() });
    return value;
  }

  async setSetting(userId: string, s: UserAiSetting): Promise<void> {
    await this.db.transaction(async (tx) => {
      await tx.query(
        `INSERT INTO ai_user_settings (user_id, provider, model) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET provider = EXCLUDED.provider, model = EXCLUDED.model, updated_at = now()`,
        [userId, s.provider, s.model],
      );
      if (this.bus) await this.bus.publish(tx, `ai-setting:${userId}`);
    });
    this.settings.delete(userId);
  }
}
