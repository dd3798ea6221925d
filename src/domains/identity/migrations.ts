import type { Migration } from '../../platform/db/index.ts';

export const identityMigrations: Migration[] = [
  {
    version: 100,
    name: 'identity',
    sql: `
      CREATE TABLE users (
        id text PRIMARY KEY,
        email text NOT NULL,
        username text,
        name text,
        company text,
        role text NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'user')),
        tier text NOT NULL DEFAULT 'free' CHECK (tier IN ('free', 'developer', 'pro', 'team', 'enterprise')),
        password_hash text NOT NULL,
        verified boolean NOT NULL DEFAULT false,
        active boolean NOT NULL DEFAULT true,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        last_login_at timestamptz
      );
      CREATE UNIQUE INDEX users_email_ci ON users (lower(email));
      CREATE UNIQUE INDEX users_username_ci ON users (lower(username)) WHERE username IS NOT NULL;

      -- A session is one login; its refresh tokens form one rotation family.
      CREATE TABLE auth_sessions (
        id text PRIMARY KEY,
        user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        last_refreshed_at timestamptz,
        revoked_at timestamptz,
        revoke_reason text,
        ip_address text,
        user_agent text
      );
      CREATE INDEX auth_sessions_user ON auth_sessions (user_id);

      CREATE TABLE refresh_tokens (
        token_hash text PRIMARY KEY,
        session_id text NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        used_at timestamptz
      );
      CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

      CREATE TABLE api_keys (
        id text PRIMARY KEY,
        user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        name text NOT NULL,
        key_prefix text NOT NULL,
        key_hash text NOT NULL UNIQUE,
        created_at timestamptz NOT NULL DEFAULT now(),
        last_used_at timestamptz,
        revoked_at timestamptz
      );
      CREATE INDEX api_keys_user ON api_keys (user_id);

      CREATE TABLE email_verifications (
        token_hash text PRIMARY KEY,
        user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        used_at timestamptz
      );

    `,
  },
];
