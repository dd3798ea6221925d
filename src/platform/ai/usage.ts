/** Per-call usage records (tokens, cost, time) and each user's preferred provider and model. */
import type { Db, Migration } from '../db/index.ts';

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

export class UsageStore {
  private readonly db: Db;
  constructor(db: Db) {
    this.db = db;
  }

  async record(r: UsageRecord): Promise<void> {
    await this.db.query(
      `INSERT INTO ai_usage (user_id, provider, model, operation, purpose, input_tokens, output_tokens, cost_usd, duration_ms, ok, error_code)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
      [r.userId, r.provider, r.model, r.operation, r.purpose, r.inputTokens, r.outputTokens, r.cost, Math.round(r.durationMs), r.ok, r.errorCode],
    );
  }

  async summary(userId: string, since: Date): Promise<UsageSummary> {
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
    const { rows } = await this.db.query<{ provider: string | null; model: string | null }>(
      'SELECT provider, model FROM ai_user_settings WHERE user_id = $1',
      [userId],
    );
    return rows[0] ?? { provider: null, model: null };
  }

  async setSetting(userId: string, s: UserAiSetting): Promise<void> {
    await this.db.query(
      `INSERT INTO ai_user_settings (user_id, provider, model) VALUES ($1, $2, $3)
       ON CONFLICT (user_id) DO UPDATE SET provider = EXCLUDED.provider, model = EXCLUDED.model, updated_at = now()`,
      [userId, s.provider, s.model],
    );
  }
}
