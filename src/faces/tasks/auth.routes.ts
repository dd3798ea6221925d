/** HelixCode auth: `POST /api/v1/auth/{register,login,refresh,logout}` and `GET /api/v1/users/me`. */
import { z } from 'zod';
import type { User } from '../../domains/identity/service.ts';
import type { AppContext } from '../shared/context.ts';
import { principalOf, requestContext } from '../shared/conventions.ts';
import type { FaceApp } from '../shared/plugin.ts';

const helixUser = z.object({ id: z.string(), username: z.string(), roles: z.array(z.string()) });
const loginResponse = z.object({
  token: z.string(),
  expires_at: z.string(),
  refresh_token: z.string().optional(),
  user: helixUser,
});
const fullUser = z.object({
  id: z.string(),
  username: z.string(),
  email: z.string(),
  display_name: z.string().nullable(),
  roles: z.array(z.string()),
  tier: z.string(),
  is_verified: z.boolean(),
  last_login: z.string().nullable(),
  created_at: z.string(),
});

function helixUserOf(u: User) {
  return { id: u.id, username: u.username ?? u.email, roles: [u.role] };
}
function fullUserOf(u: User) {
  return {
    id: u.id,
    username: u.username ?? u.email,
    email: u.email,
    display_name: u.name,
    roles: [u.role],
    tier: u.tier,
    is_verified: u.verified,
    last_login: u.lastLoginAt?.toISOString() ?? null,
    created_at: u.createdAt.toISOString(),
  };
}

export function tasksAuthRoutes(app: FaceApp, ctx: AppContext): void {
  app.post('/api/v1/auth/register', {
    config: { auth: 'optional' },
    schema: {
      summary: 'Create an account',
      body: z.object({
        username: z.string().min(3).max(32),
        email: z.string().max(254),
        password: z.string().min(1).max(256),
        display_name: z.string().max(200).optional(),
      }),
      response: { 201: z.object({ user: fullUser }) },
    },
    handler: async (req, reply) => {
      const { user } = await ctx.identity.register(
        { email: req.body.email, password: req.body.password, username: req.body.username, name: req.body.display_name },
        requestContext(req),
        'tasks',
      );
      return reply.status(201).send({ user: fullUserOf(user) });
    },
  });

  app.post('/api/v1/auth/login', {
    config: { auth: 'optional' },
    schema: {
      summary: 'Log in with a username or email',
      body: z.object({ username: z.string().min(1).max(254), password: z.string().min(1).max(256) }),
      response: { 200: loginResponse },
    },
    handler: async (req) => {
      const { user, tokens } = await ctx.identity.login(req.body.username, req.body.password, requestContext(req), 'tasks');
      return {
        token: tokens.accessToken,
        expires_at: tokens.accessTokenExpiresAt.toISOString(),
        refresh_token: tokens.refreshToken,
        user: helixUserOf(user),
      };
    },
  });

  app.post('/api/v1/auth/refresh', {
    config: { auth: 'optional' },
    schema: {
      summary: 'New access token from a refresh token (body) or from a still-valid bearer token',
      body: z.object({ refresh_token: z.string().min(1).max(512).optional() }).nullish(),
      response: { 200: loginResponse },
    },
    handler: async (req) => {
      const refreshToken = req.body?.refresh_token;
      if (refreshToken) {
        const { user, tokens } = await ctx.identity.refresh(refreshToken, requestContext(req));
        return { token: tokens.accessToken, expires_at: tokens.accessTokenExpiresAt.toISOString(), refresh_token: tokens.refreshToken, user: helixUserOf(user) };
      }
      const principal = principalOf(req);
      const access = await ctx.identity.reissueAccessToken(principal, requestContext(req));
      return { token: access.accessToken, expires_at: access.accessTokenExpiresAt.toISOString(), user: helixUserOf(principal.user) };
    },
  });

  app.post('/api/v1/auth/logout', {
    schema: {
      summary: 'End the current session',
      response: { 200: z.object({ status: z.literal('success'), message: z.string() }) },
    },
    handler: async (req) => {
      await ctx.identity.logout({ principal: principalOf(req) }, requestContext(req));
      return { status: 'success' as const, message: 'Logged out successfully' };
    },
  });

  app.get('/api/v1/users/me', {
    schema: { summary: 'The authenticated user', response: { 200: z.object({ user: fullUser }) } },
    handler: async (req) => ({ user: fullUserOf(principalOf(req).user) }),
  });
}
