/**
 * What makes one published API's wire format different from another: how errors look, which
 * status each catalogue code takes, and how the rate-limit reset header is written.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FaceName } from '../../config.ts';
import type { AppError, ErrorCode } from '../../platform/errors.ts';

export const DEFAULT_STATUS: Record<ErrorCode, number> = {
  VALIDATION_ERROR: 400,
  AUTH_REQUIRED: 401,
  AUTH_EXPIRED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  RATE_LIMITED: 429,
  QUOTA_EXCEEDED: 402,
  QUERY_ERROR: 400,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  INTERNAL_ERROR: 500,
  SERVICE_UNAVAILABLE: 503,
};

/** One validation problem, face-neutral. */
export interface FieldIssue {
  /** Where: `body`, `query`, `params` or `headers`. */
  location: string;
  path: (string | number)[];
  message: string;
  type: string;
  /** For a value outside an enumeration: the values that are accepted. */
  allowedValues?: readonly unknown[];
}

export interface FaceWire {
  name: FaceName;
  /** `X-RateLimit-Reset` in epoch seconds or epoch milliseconds. */
  resetHeaderUnit: 's' | 'ms';
  status(code: ErrorCode): number;
  errorBody(err: AppError, req: FastifyRequest, reply: FastifyReply, issues: FieldIssue[] | undefined): unknown;
}

/** Which face owns a URL that matched no route (for 404s and errors before routing). */
export function faceForUrl(url: string): FaceName {
  if (url === '/api/v1' || url.startsWith('/api/v1/') || url.startsWith('/api/v1?')) return 'tasks';
  if (url.startsWith('/api/') || url === '/api') return 'monitoring';
  if (url.startsWith('/v1/') || url === '/v1') return 'databases';
  if (url === '/health' || url.startsWith('/metrics') || url.startsWith('/openapi') || url.startsWith('/docs')) return 'monitoring';
  return 'automation';
}

export function issuesToDetails(issues: FieldIssue[] | undefined): Record<string, unknown> | undefined {
  if (!issues?.length) return undefined;
  const first = issues[0]!;
  return {
    field: first.path.join('.') || first.location,
    ...(first.allowedValues ? { allowed_values: first.allowedValues } : {}),
    issues: issues.map((i) => ({ field: i.path.join('.') || i.location, message: i.message })),
  };
}
