/**
 * Conventions every face shares: request ids, authentication, per-face rate limits with headers,
 * security headers, metrics, and one error handler that speaks each face's wire format.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors, isResponseSerializationError } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { FaceName } from '../../config.ts';
import type { Principal } from '../../domains/identity/service.ts';
import { sqlState } from '../../platform/db/index.ts';
import { AppError, isAppError, type ErrorCode } from '../../platform/errors.ts';
import type { LimitPolicy } from '../../platform/ratelimit/index.ts';
import { automationWire } from '../automation/wire.ts';
import { databasesWire } from '../databases/wire.ts';
import { monitoringWire } from '../monitoring/wire.ts';
import { tasksWire } from '../tasks/wire.ts';
import type { AppContext } from './context.ts';
import './types.ts';
import { faceForUrl, type FaceWire, type FieldIssue } from './wire.ts';

export const WIRES: Record<FaceName, FaceWire> = {
  tasks: tasksWire,
  monitoring: monitoringWire,
  databases: databasesWire,
  automation: automationWire,
};

export const FIELD_REQUIRED = 'Field required';

// Wording for absent fields that reads the same in every face (FastAPI's, which Arrotech clients know).
z.config({
  customError: (issue) => (issue.code === 'invalid_type' && issue.input === undefined ? FIELD_REQUIRED : undefined),
});

const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

/** Honours a caller's `X-Request-Id` when it is sane, else makes one. */
export function genRequestId(req: { headers: Record<string, string | string[] | undefined> }): string {
  const given = req.headers['x-request-id'];
  if (typeof given === 'string' && REQUEST_ID_RE.test(given)) return given;
  return `req_${randomBytes(9).toString('base64url')}`;
}

function bearer(req: FastifyRequest): string | null | undefined {
  const h = req.headers.authorization;
  if (h === undefined) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m ? m[1]! : null;
}

function policyFor(ctx: AppContext, face: FaceName, principal: Principal | null): LimitPolicy {
  const limits = ctx.config.rateLimits[face];
  if (!principal) return limits.anonymous;
  if (principal.user.role === 'admin') return { points: null, windowSeconds: limits.free.windowSeconds };
  return limits[principal.user.tier];
}

export function installConventions(app: FastifyInstance, ctx: AppContext): void {
  // Clients often send `Content-Type: application/json` with no body on refresh/logout; treat that as
  // "no body" instead of a parse error. Everything else goes through Fastify's safe JSON parser.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') return done(null, undefined);
    return parseJson(req, text, (err, parsed) => {
      if (err) return done(err, undefined);
      // PostgreSQL cannot store U+0000 in text or jsonb: refuse it at the door rather than fail later.
      if ((text.includes('u0000') || text.includes('\0')) && containsNul(parsed)) {
        return done(new AppError('VALIDATION_ERROR', 'Text must not contain the NUL character (\\u0000)'), undefined);
      }
      return done(null, parsed);
    });
  });

  app.decorateRequest('principal', null);
  app.decorateRequest('authError', null);
  app.decorateRequest('face', 'automation');

  app.addHook('onRequest', async (req, reply) => {
    const cfg = req.routeOptions.config;
    req.face = cfg.face ?? faceForUrl(req.url);
    setCommonHeaders(req, reply);
    if (cfg.rateLimit === false && cfg.auth === undefined) return;

    const credential = bearer(req);
    if (credential === null) {
      req.authError = new AppError('AUTH_REQUIRED', 'Authorization header must be "Bearer <token>"');
    } else if (credential !== undefined) {
      try {
        req.principal = await ctx.identity.authenticate(credential);
      } catch (err) {
        if (!isAppError(err)) throw err;
        req.authError = err;
      }
    }

    if (cfg.rateLimit !== false) {
      const policy = policyFor(ctx, req.face, req.principal);
      const subject = req.principal ? `u:${req.principal.user.id}` : `ip:${req.ip}`;
      try {
        const d = await ctx.limits.consume(req.face, subject, policy);
        if (d.limit !== null) {
          const unit = WIRES[req.face].resetHeaderUnit;
          reply.header('X-RateLimit-Limit', d.limit);
          reply.header('X-RateLimit-Remaining', d.remaining);
          reply.header('X-RateLimit-Reset', unit === 'ms' ? d.resetAtMs : Math.ceil(d.resetAtMs / 1000));
        }
        if (!d.allowed) {
          throw new AppError('RATE_LIMITED', `Rate limit of ${d.limit} requests per ${policy.windowSeconds} s exceeded`, {
            retryAfterSeconds: d.retryAfterSeconds,
            details: { limit: d.limit, window_seconds: policy.windowSeconds },
          });
        }
      } catch (err) {
        if (isAppError(err)) throw err;
        // A broken counter store must not take the API down: let the request through, count it, log it.
        ctx.metrics.rateLimitStoreErrors.inc();
        req.log.error({ err }, 'rate-limit store failed; request allowed');
      }
    }

    if (cfg.auth === 'required' && !req.principal) {
      throw req.authError ?? new AppError('AUTH_REQUIRED', 'Authentication required');
    }
  });

  app.addHook('onResponse', async (req, reply) => {
    const labels = {
      method: req.method,
      route: req.routeOptions.url ?? 'unmatched',
      status: String(reply.statusCode),
      face: req.face,
    };
    ctx.metrics.httpRequests.inc(labels);
    ctx.metrics.httpDuration.observe(labels, reply.elapsedTime / 1000);
  });

  app.setNotFoundHandler(async (req) => {
    throw new AppError('NOT_FOUND', `Route ${req.method} ${req.url.split('?')[0]} not found`);
  });

  app.setErrorHandler(async (rawErr: FastifyError, req, reply) => {
    const { err, issues } = normalizeError(rawErr);
    if (err.code === 'INTERNAL_ERROR') req.log.error({ err: rawErr }, 'unhandled error');
    const wire = WIRES[req.face ?? faceForUrl(req.url)];
    if (err.retryAfterSeconds) reply.header('Retry-After', err.retryAfterSeconds);
    if (err.code === 'AUTH_REQUIRED' || err.code === 'AUTH_EXPIRED') {
      reply.header('WWW-Authenticate', err.code === 'AUTH_EXPIRED' ? 'Bearer error="invalid_token", error_description="expired"' : 'Bearer');
    }
    return sendError(reply, wire, err, req, issues);
  });
}

function containsNul(value: unknown): boolean {
  if (typeof value === 'string') return value.includes('\0');
  if (Array.isArray(value)) return value.some(containsNul);
  if (value && typeof value === 'object') return Object.entries(value).some(([k, v]) => k.includes('\0') || containsNul(v));
  return false;
}

/** Security headers and the request id, on every response including framework-level errors. */
function setCommonHeaders(req: FastifyRequest, reply: FastifyReply): void {
  reply.header('X-Request-Id', req.id);
  reply.header('X-Content-Type-Options', 'nosniff');
  reply.header('X-Frame-Options', 'DENY');
  reply.header('Referrer-Policy', 'no-referrer');
}

/**
 * Errors Fastify raises before routing (a malformed URL): same headers and the owning face's shape.
 * Passed to the Fastify constructor as `frameworkErrors`.
 */
export function handleFrameworkError(error: Error, req: FastifyRequest, reply: FastifyReply): void {
  setCommonHeaders(req, reply);
  const face = faceForUrl(req.url);
  const { err, issues } = normalizeError(error);
  void sendError(reply, WIRES[face], err, req, issues);
}

function sendError(reply: FastifyReply, wire: FaceWire, err: AppError, req: FastifyRequest, issues: FieldIssue[] | undefined) {
  reply.status(wire.status(err.code));
  return reply.send(wire.errorBody(err, req, reply, issues));
}

// Data exceptions that only input can cause: NUL or unencodable characters, text too long for a column.
const INPUT_SQLSTATES = new Set(['22021', '22P05', '22001']);

const STATUS_CODES: Record<number, ErrorCode> = {
  400: 'VALIDATION_ERROR',
  401: 'AUTH_REQUIRED',
  403: 'FORBIDDEN',
  404: 'NOT_FOUND',
  405: 'NOT_FOUND',
  406: 'VALIDATION_ERROR',
  409: 'CONFLICT',
  413: 'PAYLOAD_TOO_LARGE',
  415: 'UNSUPPORTED_MEDIA_TYPE',
  429: 'RATE_LIMITED',
  503: 'SERVICE_UNAVAILABLE',
};

/** Turns anything thrown into a catalogue error; unknown errors become INTERNAL_ERROR without leaking their text. */
export function normalizeError(err: unknown): { err: AppError; issues?: FieldIssue[] } {
  if (isAppError(err)) return { err };
  if (hasZodFastifySchemaValidationErrors(err)) {
    const issues: FieldIssue[] = err.validation.map((v) => ({
      location: err.validationContext ?? 'body',
      path: String(v.instancePath).split('/').filter(Boolean).map((p: string) => (/^\d+$/.test(p) ? Number(p) : p)),
      message: v.message ?? 'Invalid value',
      type: v.message === FIELD_REQUIRED ? 'missing' : v.keyword,
      ...(Array.isArray(v.params?.values) ? { allowedValues: v.params.values as unknown[] } : {}),
    }));
    const first = issues[0];
    const where = first && first.path.length ? `${first.path.join('.')}: ` : '';
    return { err: new AppError('VALIDATION_ERROR', `${where}${first?.message ?? 'Invalid request'}`), issues };
  }
  const state = sqlState(err);
  if (state && INPUT_SQLSTATES.has(state)) {
    return { err: new AppError('VALIDATION_ERROR', 'A value in the request cannot be stored (invalid characters or too long)', { cause: err }) };
  }
  if (isResponseSerializationError(err)) return { err: new AppError('INTERNAL_ERROR', 'Internal server error', { cause: err }) };
  const fe = err as Partial<FastifyError>;
  if (fe.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || fe.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || err instanceof SyntaxError) {
    return {
      err: new AppError('VALIDATION_ERROR', 'Request body is not valid JSON', { cause: err }),
      issues: [{ location: 'body', path: [], message: 'JSON decode error', type: 'json_invalid' }],
    };
  }
  if (fe.validation) {
    return { err: new AppError('VALIDATION_ERROR', fe.message ?? 'Invalid request', { cause: err }) };
  }
  const status = typeof fe.statusCode === 'number' ? fe.statusCode : 500;
  if (status >= 400 && status < 500) {
    return { err: new AppError(STATUS_CODES[status] ?? 'VALIDATION_ERROR', fe.message ?? 'Bad request', { cause: err }) };
  }
  return { err: new AppError('INTERNAL_ERROR', 'Internal server error', { cause: err }) };
}

/** The caller, on a route whose config demands authentication. */
export function principalOf(req: FastifyRequest): Principal {
  if (!req.principal) throw req.authError ?? new AppError('AUTH_REQUIRED', 'Authentication required');
  return req.principal;
}

/** Where a request came from, for the audit trail. */
export function requestContext(req: FastifyRequest): { ip: string; userAgent: string | undefined } {
  return { ip: req.ip, userAgent: req.headers['user-agent'] };
}
