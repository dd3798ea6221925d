import type { Migration } from '../../platform/db/index.ts';

export const conversationsMigrations: Migration[] = [
  {
    version: 800,
    name: 'conversations',
    sql: `
      CREATE TABLE conversations (
        id text PRIMARY KEY,
        user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        title text NOT NULL,
        task text,
        -- Also the last used sequence number of conversation_messages: appends claim seq ranges from it.
        message_count integer NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
      );
      CREATE INDEX conversations_user_updated ON conversations (user_id, updated_at DESC, id DESC);
      CREATE TABLE conversation_messages (
        conversation_id text NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        seq integer NOT NULL,
        role text NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
        content text NOT NULL,
        -- Assistant messages: which model answered, its token count and cost (USD; NULL when unknown).
        provider text,
        model text,
        tokens_used integer,
        cost_usd numeric(16, 8),
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (conversation_id, seq)
      );
    `,
  },
];
