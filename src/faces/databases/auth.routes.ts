/** HeliosDB auth: `POST /v1/auth/{signup,login,refresh,logout}` in the `{success,data,meta}` envelope. */
import { z } from 'zod';
import type { AppContext } from '../shared/context.ts';
import { principalOf, requestContext } from '../shared/conventions.ts';
import type { FaceApp } from '../shared/plugin.ts';
import { heliosEnvelope, heliosOk } from './wire.ts';

const envelope = heliosEnvelope;
const tokenData = z.object({
  token: z.string(),
  token_type: z.literal('bearer'),
  expires_at: z.string(),
  refresh_token: z.string().optional(),
  user: z.object({ id: z.string(), email: z.string() }).optional(),
});

export function databasesAuthRoutes(app: FaceApp, ctx: AppContext): void {
  app.post('/v1/auth/signup', {
    config: { auth: 'optional' },
    schema: {
      summary: 'Create a new account',
      body: z.object({ email: z.string().max(254), password: z.string().min(1).max(256), name: z.string().max(200).optional() }),
      response: { 201: envelope(z.object({ user_id: z.string(), email: z.string(), verification_sent: z.boolean() })) },
    },
    handler: async (req, reply) => {
      const { user, verificationSent } = await ctx.identity.register(req.body, requestContext(req), 'databases');
      return reply.status(201).send(heliosOk(req, reply, { user_id: user.id, email: user.email, verification_sent: verificationSent }));
    },
  });

  app.post('/v1/auth/login', {
    config: { auth: 'optional' },
    schema: {
      summary: 'Authenticate and receive a token',
      body: z.object({ email: z.string().min(1).max(254), password: z.string().min(1).max(256) }),
      response: { 200: envelope(tokenData) },
    },
    handler: async (req, reply) => {
      const { user, tokens } = await ctx.identity.login(req.body.email, req.body.password, requestContext(req), 'databases');
      return heliosOk(req, reply, {
        token: tokens.accessToken,
        token_type: 'bearer' as const,
        expires_at: tokens.accessTokenExpiresAt.toISOString(),
        refresh_token: tokens.refreshToken,
        user: { id: user.id, email: user.email },
      });
    },
  });

  app.post('/v1/auth/refresh', {
    config: { auth: 'optional' },
    schema: {
      summary: 'Refresh an expiring token (bearer token), or rotate a refresh token given in the body',
      body: z.object({ refresh_token: z.string().min(1).max(512).optional() }).nullish(),
      response: { 200: envelope(tokenData) },
    },
    handler: async (req, reply) => {
      const refreshToken = req.body?.refresh_token;
      if (refreshToken) {
        const { user, tokens } = await ctx.identity.refresh(refreshToken, requestContext(req));
        return heliosOk(req, reply, {
          token: tokens.accessToken,
          token_type: 'bearer' as const,
          expires_at: tokens.accessTokenExpiresAt.toISOString(),
          refresh_token: tokens.refreshToken,
          user: { id: user.id, email: user.email },
        });
      }
      const principal = principalOf(req);
      const access = await ctx.identity.reissueAccessToken(principal, requestContext(req));
      return heliosOk(req, reply, {
        token: access.accessToken,
        token_type: 'bearer' as const,
        expires_at: access.accessTokenExpiresAt.toISOString(),
        user: { id: principal.user.id, email: principal.user.email },
      });
    },
  });

  app.post('/v1/auth/logout', {
    schema: { summary: 'Invalidate the current token', response: { 200: envelope(z.object({ logged_out: z.boolean() })) } },
    handler: async (req, reply) => {
      const { revoked } = await ctx.identity.logout({ principal: principalOf(req) }, requestContext(req));
      return heliosOk(req, reply, { logged_out: revoked });
    },
  });
}
