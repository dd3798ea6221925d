/** Helomatic auth: `POST /api/auth/{register,login,refresh,logout}` in the `{success,data,message,timestamp}` envelope. */
import { z } from 'zod';
import type { IssuedTokens } from '../../domains/identity/service.ts';
import type { AppContext } from '../shared/context.ts';
import { principalOf, requestContext } from '../shared/conventions.ts';
import type { FaceApp } from '../shared/plugin.ts';
import { helomaticOk } from './wire.ts';

const tokensSchema = z.object({
  access_token: z.string(),
  refresh_token: z.string(),
  expires_in: z.number().int(),
  token_type: z.literal('Bearer'),
});
function envelope<T extends z.ZodType>(data: T) {
  return z.object({ success: z.literal(true), data, message: z.string().optional(), timestamp: z.string() });
}

/** `expires_in` is the access token's lifetime in seconds, as Helomatic documents it (3600). */
function tokensOf(t: IssuedTokens) {
  return { access_token: t.accessToken, refresh_token: t.refreshToken, expires_in: t.accessTokenTtlSeconds, token_type: 'Bearer' as const };
}

export function monitoringAuthRoutes(app: FaceApp, ctx: AppContext): void {
  app.post('/api/auth/register', {
    config: { auth: 'optional' },
    schema: {
      summary: 'Register a new user account',
      body: z.object({
        email: z.string().max(254),
        password: z.string().min(1).max(256),
        name: z.string().max(200).optional(),
        company: z.string().max(200).optional(),
      }),
      response: {
        201: envelope(
          z.object({
            user: z.object({
              id: z.string(),
              email: z.string(),
              name: z.string().nullable(),
              company: z.string().nullable(),
              role: z.string(),
              verified: z.boolean(),
              created_at: z.string(),
            }),
            tokens: tokensSchema,
            verification_sent: z.boolean(),
          }),
        ),
      },
    },
    handler: async (req, reply) => {
      const { user, tokens, verificationSent } = await ctx.identity.register(req.body, requestContext(req), 'monitoring');
      const data = {
        user: {
          id: user.id,
          email: user.email,
          name: user.name,
          company: user.company,
          role: user.role,
          verified: user.verified,
          created_at: user.createdAt.toISOString(),
        },
        tokens: tokensOf(tokens),
        verification_sent: verificationSent,
      };
      const message = verificationSent ? 'Registration successful. Please verify your email.' : 'Registration successful.';
      return reply.status(201).send(helomaticOk(data, message));
    },
  });

  app.post('/api/auth/login', {
    config: { auth: 'optional' },
    schema: {
      summary: 'Authenticate a user and receive access tokens',
      body: z.object({ email: z.string().min(1).max(254), password: z.string().min(1).max(256) }),
      response: {
        200: envelope(
          z.object({
            user: z.object({ id: z.string(), email: z.string(), name: z.string().nullable(), role: z.string(), last_login: z.string().nullable() }),
            tokens: tokensSchema,
            session: z.object({ session_id: z.string(), expires_at: z.string() }),
          }),
        ),
      },
    },
    handler: async (req) => {
      const { user, tokens } = await ctx.identity.login(req.body.email, req.body.password, requestContext(req), 'monitoring');
      return helomaticOk(
        {
          user: { id: user.id, email: user.email, name: user.name, role: user.role, last_login: user.lastLoginAt?.toISOString() ?? null },
          tokens: tokensOf(tokens),
          session: { session_id: tokens.sessionId, expires_at: tokens.accessTokenExpiresAt.toISOString() },
        },
        'Login successful',
      );
    },
  });

  app.post('/api/auth/refresh', {
    config: { auth: 'optional' },
    schema: {
      summary: 'Exchange a refresh token for new tokens (the refresh token rotates)',
      body: z.object({ refresh_token: z.string().min(1).max(512) }),
      response: { 200: envelope(z.object({ tokens: tokensSchema })) },
    },
    handler: async (req) => {
      const { tokens } = await ctx.identity.refresh(req.body.refresh_token, requestContext(req));
      return helomaticOk({ tokens: tokensOf(tokens) }, 'Token refreshed');
    },
  });

  app.post('/api/auth/logout', {
    schema: {
      summary: 'End the current session',
      response: { 200: envelope(z.object({ logged_out: z.boolean() })) },
    },
    handler: async (req) => {
      const { revoked } = await ctx.identity.logout({ principal: principalOf(req) }, requestContext(req));
      return helomaticOk({ logged_out: revoked }, revoked ? 'Logout successful' : 'API keys have no session to end; revoke the key instead');
    },
  });
}
