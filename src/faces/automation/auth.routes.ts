/** Arrotech Hub auth: `/auth/{register,login,refresh,logout,me,verify-email}` and API keys under `/auth/me`. */
import { z } from 'zod';
import type { ApiKey, IssuedTokens, User } from '../../domains/identity/service.ts';
import type { AppContext } from '../shared/context.ts';
import { principalOf, requestContext } from '../shared/conventions.ts';
import type { FaceApp } from '../shared/plugin.ts';
import { arrotechOk } from './wire.ts';

function envelope<T extends z.ZodType>(data: T) {
  return z.object({ success: z.literal(true), data, message: z.string().optional() });
}
const userSchema = z.object({ id: z.string(), email: z.string(), name: z.string().nullable(), subscription_tier: z.string(), email_verified: z.boolean() });
const sessionData = z.object({
  token: z.string(),
  refresh_token: z.string(),
  user: userSchema,
  organizations: z.array(z.never()),
  is_new_user: z.boolean(),
});
const apiKeySchema = z.object({
  id: z.string(),
  name: z.string(),
  prefix: z.string(),
  created_at: z.string(),
  last_used_at: z.string().nullable(),
  revoked_at: z.string().nullable(),
});
const credentials = z.object({ email: z.string().min(1).max(254), password: z.string().min(1).max(256) });

function userOf(u: User) {
  return { id: u.id, email: u.email, name: u.name, subscription_tier: u.tier, email_verified: u.verified };
}
function sessionOf(user: User, tokens: IssuedTokens, isNew: boolean) {
  return { token: tokens.accessToken, refresh_token: tokens.refreshToken, user: userOf(user), organizations: [], is_new_user: isNew };
}
function keyOf(k: ApiKey) {
  return {
    id: k.id,
    name: k.name,
    prefix: k.prefix,
    created_at: k.createdAt.toISOString(),
    last_used_at: k.lastUsedAt?.toISOString() ?? null,
    revoked_at: k.revokedAt?.toISOString() ?? null,
  };
}

export function automationAuthRoutes(app: FaceApp, ctx: AppContext): void {
  app.post('/auth/register', {
    config: { auth: 'optional' },
    schema: {
      summary: 'Register',
      body: credentials.extend({ name: z.string().min(1).max(200) }),
      response: { 200: envelope(sessionData.extend({ verification_sent: z.boolean() })) },
    },
    handler: async (req) => {
      const { user, tokens, verificationSent } = await ctx.identity.register(req.body, requestContext(req), 'automation');
      return arrotechOk({ ...sessionOf(user, tokens, true), verification_sent: verificationSent });
    },
  });

  app.post('/auth/login', {
    config: { auth: 'optional' },
    schema: { summary: 'Log in', body: credentials, response: { 200: envelope(sessionData) } },
    handler: async (req) => {
      const { user, tokens } = await ctx.identity.login(req.body.email, req.body.password, requestContext(req), 'automation');
      return arrotechOk(sessionOf(user, tokens, false));
    },
  });

  app.post('/auth/refresh', {
    config: { auth: 'optional' },
    schema: {
      summary: 'Exchange a refresh token (it rotates: use the new one next time)',
      body: z.object({ refresh_token: z.string().min(1).max(512) }),
      response: { 200: envelope(z.object({ token: z.string(), refresh_token: z.string() })) },
    },
    handler: async (req) => {
      const { tokens } = await ctx.identity.refresh(req.body.refresh_token, requestContext(req));
      return arrotechOk({ token: tokens.accessToken, refresh_token: tokens.refreshToken });
    },
  });

  app.post('/auth/logout', {
    config: { auth: 'optional' },
    schema: {
      summary: 'Log out: ends the session of the bearer token, or of the refresh token in the body',
      body: z.object({ refresh_token: z.string().min(1).max(512).optional() }).nullish(),
      response: { 200: z.object({ success: z.literal(true), message: z.string() }) },
    },
    handler: async (req) => {
      await ctx.identity.logout({ principal: req.principal ?? undefined, refreshToken: req.body?.refresh_token }, requestContext(req));
      return { success: true as const, message: 'Logged out successfully' };
    },
  });

  app.get('/auth/me', {
    schema: {
      summary: 'The authenticated user',
      response: {
        200: envelope(
          userSchema.extend({
            username: z.string().nullable(),
            company: z.string().nullable(),
            effective_tier: z.string(),
            role: z.string(),
            created_at: z.string(),
            last_login: z.string().nullable(),
          }),
        ),
      },
    },
    handler: async (req) => {
      const u = principalOf(req).user;
      return arrotechOk({
        ...userOf(u),
        username: u.username,
        company: u.company,
        effective_tier: u.tier,
        role: u.role,
        created_at: u.createdAt.toISOString(),
        last_login: u.lastLoginAt?.toISOString() ?? null,
      });
    },
  });

  const verifyResponse = { 200: envelope(z.object({ email_verified: z.boolean() })) };
  const verify = async (token: string, req: Parameters<typeof requestContext>[0]) => {
    const user = await ctx.identity.verifyEmail(token, requestContext(req));
    return arrotechOk({ email_verified: user.verified }, 'Email verified');
  };
  app.post('/auth/verify-email', {
    config: { auth: 'optional' },
    schema: {
      summary: 'Confirm an email address with the token from the verification mail',
      body: z.object({ token: z.string().min(1).max(512) }),
      response: verifyResponse,
    },
    handler: (req) => verify(req.body.token, req),
  });
  app.get('/auth/verify-email', {
    config: { auth: 'optional' },
    schema: {
      summary: 'The link in the verification mail: confirms the address',
      querystring: z.object({ token: z.string().min(1).max(512) }),
      response: verifyResponse,
    },
    handler: (req) => verify(req.query.token, req),
  });

  app.post('/auth/me/regenerate-api-key', {
    schema: {
      summary: 'Replace your default API key; the new key is shown once',
      response: { 200: envelope(apiKeySchema.extend({ api_key: z.string() })) },
    },
    handler: async (req) => {
      const { key, apiKey } = await ctx.identity.regenerateApiKey(principalOf(req).user.id, requestContext(req));
      return arrotechOk({ ...keyOf(apiKey), api_key: key }, 'Store this key now: it will not be shown again.');
    },
  });

  app.get('/auth/me/api-keys', {
    schema: { summary: 'Your API keys (never the keys themselves)', response: { 200: envelope(z.array(apiKeySchema)) } },
    handler: async (req) => arrotechOk((await ctx.identity.listApiKeys(principalOf(req).user.id)).map(keyOf)),
  });

  app.post('/auth/me/api-keys', {
    schema: {
      summary: 'Create a named API key; the key is shown once',
      body: z.object({ name: z.string().min(1).max(100) }),
      response: { 201: envelope(apiKeySchema.extend({ api_key: z.string() })) },
    },
    handler: async (req, reply) => {
      const { key, apiKey } = await ctx.identity.createApiKey(principalOf(req).user.id, req.body.name, requestContext(req));
      return reply.status(201).send(arrotechOk({ ...keyOf(apiKey), api_key: key }, 'Store this key now: it will not be shown again.'));
    },
  });

  app.delete('/auth/me/api-keys/:key_id', {
    schema: {
      summary: 'Revoke one of your API keys',
      params: z.object({ key_id: z.string().min(1).max(64) }),
      response: { 200: z.object({ success: z.literal(true), message: z.string() }) },
    },
    handler: async (req) => {
      await ctx.identity.revokeApiKey(principalOf(req).user.id, req.params.key_id, requestContext(req));
      return { success: true as const, message: 'API key revoked' };
    },
  });
}
