/**
 * Identity: users, passwords, sessions with rotating refresh tokens, API keys, login throttling.
 * Every auth event is written to the audit trail in the same transaction as the change.
 */
import type { FaceName, Tier } from '../../config.ts';
import { generatePassword, newId, newSecretToken, sha256Hex, type PasswordHasher } from '../../platform/crypto/index.ts';
import { UNIQUE_VIOLATION, sqlState, type Db, type InvalidationBus, type Queryable } from '../../platform/db/index.ts';
import { AppError } from '../../platform/errors.ts';
import type { Mailer } from '../../platform/mail/index.ts';
import type { LimitPolicy, RateLimits } from '../../platform/ratelimit/index.ts';
import { recordAuditEvent, type RequestContext } from '../audit/service.ts';
import type { AccessTokenSigner } from './tokens.ts';

export type Role = 'admin' | 'user';

export interface User {
  id: string;
  email: string;
  username: string | null;
  name: string | null;
  company: string | null;
  role: Role;
  tier: Tier;
  verified: boolean;
  active: boolean;
  createdAt: Date;
  lastLoginAt: Date | null;
}

/** Who is calling: a user, and how they proved it. */
export interface Principal {
  user: User;
  via: 'access_token' | 'api_key';
  sessionId: string | null;
  apiKeyId: string | null;
}

export interface IssuedTokens {
  sessionId: string;
  accessToken: string;
  accessTokenExpiresAt: Date;
  accessTokenTtlSeconds: number;
  refreshToken: string;
  refreshTokenExpiresAt: Date;
}

export interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  createdAt: Date;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
}

export interface IdentityOptions {
  refreshTokenTtlDays: number;
  defaultTier: Tier;
  adminEmail: string;
  adminPassword: string | undefined;
  loginFailures: LimitPolicy;
  publicUrl: string | undefined;
  /** How long a resolved credential may be served from memory (0 = never). */
  principalCacheTtlMs: number;
}

interface UserRow {
  id: string;
  email: string;
  username: string | null;
  name: string | null;
  company: string | null;
  role: Role;
  tier: Tier;
  verified: boolean;
  active: boolean;
  created_at: Date;
  last_login_at: Date | null;
}

const USER_COLUMNS = 'u.id, u.email, u.username, u.name, u.company, u.role, u.tier, u.verified, u.active, u.created_at, u.last_login_at';
const EMAIL_RE = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;
const USERNAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{2,31}$/;
const API_KEY_PREFIX = 'msk';
const REFRESH_PREFIX = 'msr';
const DEFAULT_KEY_NAME = 'default';
const PRINCIPAL_CACHE_MAX = 10_000;

interface CachedPrincipal {
  principal: Principal;
  /** Invalidation tags this entry depends on: `session:<id>`, `key:<id>`, `user:<id>`. */
  tags: string[];
  expiresAt: number;
  lastUsedWrittenAt: number;
}
// Keeps a constant-time shape for unknown accounts: a real argon2id hash of a random password.
let dummyHash: Promise<string> | undefined;

function toUser(r: UserRow): User {
  return {
    id: r.id,
    email: r.email,
    username: r.username,
    name: r.name,
    company: r.company,
    role: r.role,
    tier: r.tier,
    verified: r.verified,
    active: r.active,
    createdAt: r.created_at,
    lastLoginAt: r.last_login_at,
  };
}

export interface RegisterInput {
  email: string;
  password: string;
  name?: string | null;
  company?: string | null;
  username?: string | null;
}

interface PreparedUser {
  email: string;
  username: string | null;
  name: string | null;
  company: string | null;
  passwordHash: string;
  role: Role;
  tier: Tier;
  verified: boolean;
  /** Registration logs the new user in at once. */
  loggedIn: boolean;
}

export class IdentityService {
  private readonly db: Db;
  private readonly hasher: PasswordHasher;
  private readonly signer: AccessTokenSigner;
  private readonly mailer: Mailer;
  private readonly limits: RateLimits;
  private readonly opts: IdentityOptions;
  private readonly bus: InvalidationBus;
  private readonly principals = new Map<string, CachedPrincipal>();
  // Bumped by every invalidation: a lookup that raced with one is not cached.
  private generation = 0;

  constructor(deps: {
    db: Db;
    hasher: PasswordHasher;
    signer: AccessTokenSigner;
    mailer: Mailer;
    limits: RateLimits;
    invalidation: InvalidationBus;
    options: IdentityOptions;
  }) {
    this.db = deps.db;
    this.bus = deps.invalidation;
    this.bus.subscribe((tag) => {
      this.generation++;
      if (tag === null) this.principals.clear();
      else for (const [k, v] of this.principals) if (v.tags.includes(tag)) this.principals.delete(k);
    });
    this.hasher = deps.hasher;
    this.signer = deps.signer;
    this.mailer = deps.mailer;
    this.limits = deps.limits;
    this.opts = deps.options;
  }

  /** Creates an account and its first session; sends a verification mail when mail is configured. */
  async register(input: RegisterInput, ctx: RequestContext, face: FaceName): Promise<{ user: User; tokens: IssuedTokens; verificationSent: boolean }> {
    const prepared = await this.prepareUser(input);
    const verificationToken = newSecretToken('msv');
    const result = await this.insertUser(prepared, async (tx, user) => {
      await tx.query(
        `INSERT INTO email_verifications (token_hash, user_id, expires_at) VALUES ($1, $2, now() + interval '7 days')`,
        [sha256Hex(verificationToken), user.id],
      );
      await recordAuditEvent(tx, { eventType: 'authentication', action: 'register', result: 'success', userId: user.id, context: ctx, metadata: { face } });
      return this.openSession(tx, user.id, ctx);
    });
    const verificationSent = await this.mailer.send({
      to: result.user.email,
      subject: 'Verify your Mainspring account',
      text: verificationText(verificationToken, this.opts.publicUrl),
    });
    return { user: result.user, tokens: result.extra, verificationSent };
  }

  /** Operator path (CLI): creates a verified account with a chosen role and tier, without a session. */
  async createUser(input: RegisterInput & { role: Role; tier?: Tier }): Promise<User> {
    const prepared = await this.prepareUser(input);
    const { user } = await this.insertUser({ ...prepared, role: input.role, tier: input.tier ?? this.opts.defaultTier, verified: true, loggedIn: false }, async (tx, u) => {
      await recordAuditEvent(tx, { eventType: 'config_change', action: 'user_created', result: 'success', userId: u.id, metadata: { role: u.role, tier: u.tier, via: 'cli' } });
    });
    return user;
  }

  private async prepareUser(input: RegisterInput): Promise<PreparedUser> {
    const email = input.email.trim();
    if (!EMAIL_RE.test(email) || email.length > 254) throw new AppError('VALIDATION_ERROR', 'Invalid email format', { details: { field: 'email' } });
    validatePassword(input.password);
    const username = input.username?.trim() || null;
    if (username !== null && !USERNAME_RE.test(username)) {
      throw new AppError('VALIDATION_ERROR', 'Username must be 3-32 characters: letters, digits, dot, dash, underscore', { details: { field: 'username' } });
    }
    return {
      email,
      username,
      name: input.name?.trim() || null,
      company: input.company?.trim() || null,
      passwordHash: await this.hasher.hash(input.password),
      role: 'user',
      tier: this.opts.defaultTier,
      verified: false,
      loggedIn: true,
    };
  }

  private async insertUser<E>(p: PreparedUser, then: (tx: Queryable, user: User) => Promise<E>): Promise<{ user: User; extra: E }> {
    try {
      return await this.db.transaction(async (tx) => {
        const { rows } = await tx.query<UserRow>(
          `INSERT INTO users AS u (id, email, username, name, company, role, tier, password_hash, verified, last_login_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, CASE WHEN $10::boolean THEN now() END)
           RETURNING ${USER_COLUMNS}`,
          [newId('usr'), p.email, p.username, p.name, p.company, p.role, p.tier, p.passwordHash, p.verified, p.loggedIn],
        );
        const user = toUser(rows[0]!);
        return { user, extra: await then(tx, user) };
      });
    } catch (err) {
      if (sqlState(err) === UNIQUE_VIOLATION) {
        const field = String((err as { constraint?: string }).constraint ?? '').includes('username') ? 'username' : 'email';
        throw new AppError('CONFLICT', field === 'email' ? 'Email already registered' : 'Username already taken', { details: { field } });
      }
      throw err;
    }
  }

  /** Checks a password for an email or username; 10 failures per account and IP in 15 minutes lock further tries. */
  async login(identifier: string, password: string, ctx: RequestContext, face: FaceName): Promise<{ user: User; tokens: IssuedTokens }> {
    const id = identifier.trim().toLowerCase();
    const { rows } = await this.db.query<UserRow & { password_hash: string }>(
      `SELECT ${USER_COLUMNS}, u.password_hash FROM users u WHERE lower(u.email) = $1 OR lower(u.username) = $1 LIMIT 1`,
      [id],
    );
    const row = rows[0];
    // Count failures per account (whichever of email or username was typed), else per typed name.
    const throttleKey = `${row ? `acct:${row.id}` : `name:${id}`}|${ctx.ip ?? 'unknown'}`;
    const throttle = await this.limits.peek('login-failures', throttleKey, this.opts.loginFailures);
    const auditFailure = (reason: string) =>
      recordAuditEvent(this.db, {
        eventType: 'authentication',
        action: 'login',
        result: 'failure',
        userId: row?.id ?? null,
        context: ctx,
        metadata: { identifier: id, reason, face },
      });
    if (!throttle.allowed) {
      await auditFailure('throttled');
      throw new AppError('RATE_LIMITED', 'Too many failed login attempts; try again later', { retryAfterSeconds: throttle.retryAfterSeconds });
    }
    dummyHash ??= this.hasher.hash(generatePassword());
    const ok = await this.hasher.verify(row?.password_hash ?? (await dummyHash), password);
    if (!row || !ok || !row.active) {
      await this.limits.consume('login-failures', throttleKey, this.opts.loginFailures);
      await auditFailure(!row ? 'unknown_account' : !ok ? 'wrong_password' : 'deactivated');
      throw new AppError('AUTH_REQUIRED', 'Invalid credentials');
    }
    return this.db.transaction(async (tx) => {
      const updated = await tx.query<UserRow>(`UPDATE users u SET last_login_at = now() WHERE id = $1 RETURNING ${USER_COLUMNS}`, [row.id]);
      await this.bus.publish(tx, `user:${row.id}`);
      await recordAuditEvent(tx, { eventType: 'authentication', action: 'login', result: 'success', userId: row.id, context: ctx, metadata: { face } });
      const tokens = await this.openSession(tx, row.id, ctx);
      return { user: toUser(updated.rows[0]!), tokens };
    });
  }

  /** Trades a refresh token for a new pair. A token used twice revokes its whole session (family). */
  async refresh(refreshToken: string, ctx: RequestContext): Promise<{ user: User; tokens: IssuedTokens }> {
    const hash = sha256Hex(refreshToken);
    const outcome = await this.db.transaction(async (tx) => {
      const claimed = await tx.query<{ session_id: string }>(
        `UPDATE refresh_tokens SET used_at = now()
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
         RETURNING session_id`,
        [hash],
      );
      const sessionId = claimed.rows[0]?.session_id;
      if (!sessionId) {
        const old = await tx.query<{ session_id: string; used_at: Date | null; user_id: string }>(
          `SELECT t.session_id, t.used_at, s.user_id FROM refresh_tokens t JOIN auth_sessions s ON s.id = t.session_id WHERE t.token_hash = $1`,
          [hash],
        );
        const reused = old.rows[0];
        if (reused?.used_at) {
          await tx.query(
            `UPDATE auth_sessions SET revoked_at = now(), revoke_reason = 'refresh_token_reuse' WHERE id = $1 AND revoked_at IS NULL`,
            [reused.session_id],
          );
          await this.bus.publish(tx, `session:${reused.session_id}`);
          await recordAuditEvent(tx, {
            eventType: 'authentication',
            action: 'refresh_token_reuse',
            result: 'failure',
            userId: reused.user_id,
            context: ctx,
            metadata: { session_id: reused.session_id },
          });
        }
        return { kind: 'rejected' as const };
      }
      const session = await tx.query<UserRow & { revoked_at: Date | null; session_expires_at: Date }>(
        `SELECT ${USER_COLUMNS}, s.revoked_at, s.expires_at AS session_expires_at
         FROM auth_sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1`,
        [sessionId],
      );
      const row = session.rows[0];
      if (!row || row.revoked_at || !row.active || row.session_expires_at <= new Date()) return { kind: 'rejected' as const };
      const tokens = await this.issueTokens(tx, sessionId, row.id);
      await tx.query(`UPDATE auth_sessions SET last_refreshed_at = now(), expires_at = $2 WHERE id = $1`, [sessionId, tokens.refreshTokenExpiresAt]);
      await recordAuditEvent(tx, { eventType: 'authentication', action: 'refresh', result: 'success', userId: row.id, context: ctx, metadata: { session_id: sessionId } });
      return { kind: 'ok' as const, user: toUser(row), tokens };
    });
    if (outcome.kind === 'rejected') throw new AppError('AUTH_REQUIRED', 'Invalid or expired refresh token');
    return { user: outcome.user, tokens: outcome.tokens };
  }

  /** A fresh access token for the caller's still-valid session (for faces that refresh with the bearer token). */
  async reissueAccessToken(principal: Principal, ctx: RequestContext): Promise<{ accessToken: string; accessTokenExpiresAt: Date }> {
    if (!principal.sessionId) throw new AppError('VALIDATION_ERROR', 'API keys do not expire and cannot be refreshed');
    const { token, expiresAt } = await this.signer.sign({ userId: principal.user.id, sessionId: principal.sessionId });
    await recordAuditEvent(this.db, {
      eventType: 'authentication',
      action: 'refresh',
      result: 'success',
      userId: principal.user.id,
      context: ctx,
      metadata: { session_id: principal.sessionId, via: 'access_token' },
    });
    return { accessToken: token, accessTokenExpiresAt: expiresAt };
  }

  /** Ends a session, found by the caller's access token or by a refresh token. Idempotent. */
  async logout(by: { principal?: Principal; refreshToken?: string }, ctx: RequestContext): Promise<{ revoked: boolean }> {
    return this.db.transaction(async (tx) => {
      let sessionId = by.principal?.sessionId ?? null;
      let userId = by.principal?.user.id ?? null;
      if (!sessionId && by.refreshToken) {
        const r = await tx.query<{ session_id: string; user_id: string }>(
          `SELECT t.session_id, s.user_id FROM refresh_tokens t JOIN auth_sessions s ON s.id = t.session_id WHERE t.token_hash = $1`,
          [sha256Hex(by.refreshToken)],
        );
        sessionId = r.rows[0]?.session_id ?? null;
        userId = r.rows[0]?.user_id ?? null;
      }
      if (!sessionId) return { revoked: false };
      const res = await tx.query(`UPDATE auth_sessions SET revoked_at = now(), revoke_reason = 'logout' WHERE id = $1 AND revoked_at IS NULL`, [sessionId]);
      await this.bus.publish(tx, `session:${sessionId}`);
      await recordAuditEvent(tx, { eventType: 'authentication', action: 'logout', result: 'success', userId, context: ctx, metadata: { session_id: sessionId } });
      return { revoked: res.rowCount > 0 };
    });
  }

  /**
   * Resolves a bearer credential (access token or API key) to a principal, or throws
   * AUTH_REQUIRED/AUTH_EXPIRED. The signature and expiry of a token are checked on every call; the
   * session and user behind it may come from memory for a few seconds. Logout, revocation and user
   * changes invalidate that memory at once in every process (see InvalidationBus).
   */
  async authenticate(credential: string): Promise<Principal> {
    if (credential.startsWith(`${API_KEY_PREFIX}_`)) return this.authenticateApiKey(credential);
    const claims = await this.signer.verify(credential);
    const cacheKey = `s:${claims.sessionId}`;
    const hit = this.cached(cacheKey);
    if (hit && hit.principal.user.id === claims.userId) return hit.principal;
    const generation = this.generation;
    const { rows } = await this.db.query<UserRow & { revoked_at: Date | null }>(
      `SELECT ${USER_COLUMNS}, s.revoked_at FROM auth_sessions s JOIN users u ON u.id = s.user_id
       WHERE s.id = $1 AND s.user_id = $2`,
      [claims.sessionId, claims.userId],
    );
    const row = rows[0];
    if (!row || row.revoked_at) throw new AppError('AUTH_REQUIRED', 'Session has ended; log in again');
    if (!row.active) throw new AppError('AUTH_REQUIRED', 'Account is deactivated');
    const principal: Principal = { user: toUser(row), via: 'access_token', sessionId: claims.sessionId, apiKeyId: null };
    this.remember(cacheKey, principal, [`session:${claims.sessionId}`, `user:${row.id}`], generation, Date.now());
    return principal;
  }

  private async authenticateApiKey(key: string): Promise<Principal> {
    const hash = sha256Hex(key);
    const cacheKey = `k:${hash}`;
    const hit = this.cached(cacheKey);
    if (hit) {
      // Writing on every request would turn reads into writes; a minute's precision is enough.
      if (Date.now() - hit.lastUsedWrittenAt > 60_000) {
        hit.lastUsedWrittenAt = Date.now();
        await this.db.query(`UPDATE api_keys SET last_used_at = now() WHERE id = $1`, [hit.principal.apiKeyId]);
      }
      return hit.principal;
    }
    const generation = this.generation;
    const { rows } = await this.db.query<UserRow & { key_id: string; last_used_at_key: Date | null }>(
      `SELECT ${USER_COLUMNS}, k.id AS key_id, k.last_used_at AS last_used_at_key
       FROM api_keys k JOIN users u ON u.id = k.user_id
       WHERE k.key_hash = $1 AND k.revoked_at IS NULL`,
      [hash],
    );
    const row = rows[0];
    if (!row) throw new AppError('AUTH_REQUIRED', 'Invalid API key');
    if (!row.active) throw new AppError('AUTH_REQUIRED', 'Account is deactivated');
    let lastWritten = row.last_used_at_key?.getTime() ?? 0;
    if (Date.now() - lastWritten > 60_000) {
      await this.db.query(`UPDATE api_keys SET last_used_at = now() WHERE id = $1`, [row.key_id]);
      lastWritten = Date.now();
    }
    const principal: Principal = { user: toUser(row), via: 'api_key', sessionId: null, apiKeyId: row.key_id };
    this.remember(cacheKey, principal, [`key:${row.key_id}`, `user:${row.id}`], generation, lastWritten);
    return principal;
  }

  private cached(cacheKey: string): CachedPrincipal | undefined {
    if (!this.bus.reliable) return undefined;
    const entry = this.principals.get(cacheKey);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      this.principals.delete(cacheKey);
      return undefined;
    }
    return entry;
  }

  private remember(cacheKey: string, principal: Principal, tags: string[], generation: number, lastUsedWrittenAt: number): void {
    if (this.opts.principalCacheTtlMs <= 0 || generation !== this.generation || !this.bus.reliable) return;
    if (this.principals.size >= PRINCIPAL_CACHE_MAX) {
      const oldest = this.principals.keys().next().value;
      if (oldest !== undefined) this.principals.delete(oldest);
    }
    this.principals.set(cacheKey, { principal, tags, expiresAt: Date.now() + this.opts.principalCacheTtlMs, lastUsedWrittenAt });
  }

  /** Creates an API key; the plain key is returned here once and only its hash is kept. */
  async createApiKey(userId: string, name: string, ctx: RequestContext): Promise<{ key: string; apiKey: ApiKey }> {
    const trimmed = name.trim();
    if (!trimmed || trimmed.length > 100) throw new AppError('VALIDATION_ERROR', 'Key name must be 1-100 characters', { details: { field: 'name' } });
    return this.db.transaction((tx) => this.insertApiKey(tx, userId, trimmed, ctx));
  }

  /** Revokes the user's default key(s) and creates a new default key, in one transaction. */
  async regenerateApiKey(userId: string, ctx: RequestContext): Promise<{ key: string; apiKey: ApiKey }> {
    return this.db.transaction(async (tx) => {
      const revoked = await tx.query<{ id: string }>(
        `UPDATE api_keys SET revoked_at = now() WHERE user_id = $1 AND name = $2 AND revoked_at IS NULL RETURNING id`,
        [userId, DEFAULT_KEY_NAME],
      );
      for (const r of revoked.rows) {
        await this.bus.publish(tx, `key:${r.id}`);
        await recordAuditEvent(tx, { eventType: 'authentication', action: 'api_key_revoked', result: 'success', userId, context: ctx, metadata: { key_id: r.id, reason: 'regenerated' } });
      }
      return this.insertApiKey(tx, userId, DEFAULT_KEY_NAME, ctx);
    });
  }

  private async insertApiKey(tx: Queryable, userId: string, name: string, ctx: RequestContext): Promise<{ key: string; apiKey: ApiKey }> {
    const key = newSecretToken(API_KEY_PREFIX);
    const id = newId('key');
    const { rows } = await tx.query<{ created_at: Date }>(
      `INSERT INTO api_keys (id, user_id, name, key_prefix, key_hash) VALUES ($1, $2, $3, $4, $5) RETURNING created_at`,
      [id, userId, name, key.slice(0, 12), sha256Hex(key)],
    );
    await recordAuditEvent(tx, { eventType: 'authentication', action: 'api_key_created', result: 'success', userId, context: ctx, metadata: { key_id: id, name } });
    return { key, apiKey: { id, name, prefix: key.slice(0, 12), createdAt: rows[0]!.created_at, lastUsedAt: null, revokedAt: null } };
  }

  async listApiKeys(userId: string): Promise<ApiKey[]> {
    const { rows } = await this.db.query<{ id: string; name: string; key_prefix: string; created_at: Date; last_used_at: Date | null; revoked_at: Date | null }>(
      `SELECT id, name, key_prefix, created_at, last_used_at, revoked_at FROM api_keys WHERE user_id = $1 ORDER BY created_at DESC, id`,
      [userId],
    );
    return rows.map((r) => ({ id: r.id, name: r.name, prefix: r.key_prefix, createdAt: r.created_at, lastUsedAt: r.last_used_at, revokedAt: r.revoked_at }));
  }

  /** Revokes one of the user's keys; another user's key id is NOT_FOUND. */
  async revokeApiKey(userId: string, keyId: string, ctx: RequestContext): Promise<void> {
    await this.db.transaction(async (tx) => {
      const res = await tx.query(`UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL`, [keyId, userId]);
      if (res.rowCount === 0) throw new AppError('NOT_FOUND', 'API key not found');
      await this.bus.publish(tx, `key:${keyId}`);
      await recordAuditEvent(tx, { eventType: 'authentication', action: 'api_key_revoked', result: 'success', userId, context: ctx, metadata: { key_id: keyId } });
    });
  }

  /** Marks the account verified from the token mailed at registration. */
  async verifyEmail(token: string, ctx: RequestContext): Promise<User> {
    return this.db.transaction(async (tx) => {
      const r = await tx.query<{ user_id: string }>(
        `UPDATE email_verifications SET used_at = now() WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING user_id`,
        [sha256Hex(token)],
      );
      const userId = r.rows[0]?.user_id;
      if (!userId) throw new AppError('VALIDATION_ERROR', 'Invalid or expired verification token', { details: { field: 'token' } });
      const u = await tx.query<UserRow>(`UPDATE users u SET verified = true, updated_at = now() WHERE id = $1 RETURNING ${USER_COLUMNS}`, [userId]);
      await this.bus.publish(tx, `user:${userId}`);
      await recordAuditEvent(tx, { eventType: 'config_change', action: 'email_verified', result: 'success', userId, context: ctx });
      return toUser(u.rows[0]!);
    });
  }

  /** Sessions neither revoked nor expired, for one user or (undefined) everyone. */
  async countActiveSessions(userId: string | undefined): Promise<number> {
    const { rows } = await this.db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM auth_sessions WHERE revoked_at IS NULL AND expires_at > now() AND ($1::text IS NULL OR user_id = $1)`,
      [userId ?? null],
    );
    return rows[0]?.n ?? 0;
  }

  async getUserOrThrow(id: string): Promise<User> {
    const { rows } = await this.db.query<UserRow>(`SELECT ${USER_COLUMNS} FROM users u WHERE id = $1`, [id]);
    if (!rows[0]) throw new AppError('NOT_FOUND', 'User not found');
    return toUser(rows[0]);
  }

  /** First start: creates the `admin` account. Returns the generated password when none was configured. */
  async ensureAdmin(): Promise<{ created: boolean; generatedPassword?: string }> {
    const existing = await this.db.query(`SELECT 1 FROM users WHERE lower(username) = 'admin'`);
    if (existing.rows.length) return { created: false };
    const password = this.opts.adminPassword ?? generatePassword();
    const hash = await this.hasher.hash(password);
    // ON CONFLICT: several processes starting together on one PostgreSQL create it once.
    const res = await this.db.query(
      `INSERT INTO users (id, email, username, name, role, tier, password_hash, verified)
       VALUES ($1, $2, 'admin', 'Administrator', 'admin', 'enterprise', $3, true)
       ON CONFLICT DO NOTHING`,
      [newId('usr'), this.opts.adminEmail, hash],
    );
    if (res.rowCount === 0) return { created: false };
    return this.opts.adminPassword ? { created: true } : { created: true, generatedPassword: password };
  }

  private async openSession(tx: Queryable, userId: string, ctx: RequestContext): Promise<IssuedTokens> {
    const sessionId = newId('sess');
    await tx.query(
      `INSERT INTO auth_sessions (id, user_id, expires_at, ip_address, user_agent) VALUES ($1, $2, now() + make_interval(days => $3), $4, $5)`,
      [sessionId, userId, this.opts.refreshTokenTtlDays, ctx.ip ?? null, ctx.userAgent?.slice(0, 512) ?? null],
    );
    return this.issueTokens(tx, sessionId, userId);
  }

  private async issueTokens(tx: Queryable, sessionId: string, userId: string): Promise<IssuedTokens> {
    const refreshToken = newSecretToken(REFRESH_PREFIX);
    const refreshTokenExpiresAt = new Date(Date.now() + this.opts.refreshTokenTtlDays * 86_400_000);
    await tx.query(`INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)`, [sha256Hex(refreshToken), sessionId, refreshTokenExpiresAt]);
    const access = await this.signer.sign({ userId, sessionId });
    return {
      sessionId,
      accessToken: access.token,
      accessTokenExpiresAt: access.expiresAt,
      accessTokenTtlSeconds: access.ttlSeconds,
      refreshToken,
      refreshTokenExpiresAt,
    };
  }
}

function validatePassword(password: string): void {
  if (password.length < 8) throw new AppError('VALIDATION_ERROR', 'Password must be at least 8 characters', { details: { field: 'password' } });
  if (password.length > 256) throw new AppError('VALIDATION_ERROR', 'Password must be at most 256 characters', { details: { field: 'password' } });
}

function verificationText(token: string, publicUrl: string | undefined): string {
  const base = publicUrl?.replace(/\/$/, '');
  const how = base
    ? `open ${base}/auth/verify-email?token=${encodeURIComponent(token)}`
    : `POST {"token":"${token}"} to /auth/verify-email on your Mainspring server.`;
  return `Welcome to Mainspring.\n\nConfirm your email address: ${how}\n\nThe link is valid for 7 days.\n`;
}
