/**
 * Shared assertions for the four published error formats, used by the HTTP and identity tests.
 * Each face's shape is checked field by field, so a response in another face's format fails.
 */
import assert from 'node:assert/strict';
import type { TestResponse, TestServer } from '../helpers/server.ts';

export type Face = 'tasks' | 'monitoring' | 'databases' | 'automation';
export const FACES: readonly Face[] = ['tasks', 'monitoring', 'databases', 'automation'];

export type Code =
  | 'VALIDATION_ERROR'
  | 'AUTH_REQUIRED'
  | 'AUTH_EXPIRED'
  | 'NOT_FOUND'
  | 'CONFLICT'
  | 'RATE_LIMITED'
  | 'PAYLOAD_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA_TYPE';

const STATUS: Record<Code, number> = {
  VALIDATION_ERROR: 400,
  AUTH_REQUIRED: 401,
  AUTH_EXPIRED: 401,
  NOT_FOUND: 404,
  CONFLICT: 409,
  RATE_LIMITED: 429,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
};

// HelixCode documents UNAUTHORIZED, RATE_LIMIT_EXCEEDED, VALIDATION_ERROR, NOT_FOUND.
const TASKS_CODE: Record<Code, string> = {
  VALIDATION_ERROR: 'VALIDATION_ERROR',
  AUTH_REQUIRED: 'UNAUTHORIZED',
  AUTH_EXPIRED: 'UNAUTHORIZED',
  NOT_FOUND: 'NOT_FOUND',
  CONFLICT: 'CONFLICT',
  RATE_LIMITED: 'RATE_LIMIT_EXCEEDED',
  PAYLOAD_TOO_LARGE: 'VALIDATION_ERROR',
  UNSUPPORTED_MEDIA_TYPE: 'VALIDATION_ERROR',
};

// HeliosDB has no dedicated codes for oversize or wrongly typed bodies.
const DATABASES_CODE: Record<Code, string> = {
  VALIDATION_ERROR: 'VALIDATION_ERROR',
  AUTH_REQUIRED: 'AUTH_REQUIRED',
  AUTH_EXPIRED: 'AUTH_EXPIRED',
  NOT_FOUND: 'NOT_FOUND',
  CONFLICT: 'CONFLICT',
  RATE_LIMITED: 'RATE_LIMITED',
  PAYLOAD_TOO_LARGE: 'VALIDATION_ERROR',
  UNSUPPORTED_MEDIA_TYPE: 'VALIDATION_ERROR',
};

/** An authenticated route per face (the credential is checked before anything else happens). */
export const AUTH_PROBES: Record<Face, { method: string; url: string }> = {
  tasks: { method: 'GET', url: '/api/v1/users/me' },
  monitoring: { method: 'POST', url: '/api/auth/logout' },
  databases: { method: 'POST', url: '/v1/auth/logout' },
  automation: { method: 'GET', url: '/auth/me' },
};

/** A login route per face, with the body that face expects. */
export function loginRequest(face: Face, identifier: string, password: string): { url: string; body: Record<string, string> } {
  switch (face) {
    case 'tasks':
      return { url: '/api/v1/auth/login', body: { username: identifier, password } };
    case 'monitoring':
      return { url: '/api/auth/login', body: { email: identifier, password } };
    case 'databases':
      return { url: '/v1/auth/login', body: { email: identifier, password } };
    case 'automation':
      return { url: '/auth/login', body: { email: identifier, password } };
  }
}

export function header(res: TestResponse, name: string): string | undefined {
  const v = res.headers[name.toLowerCase()];
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v.join(', ') : String(v);
}

function isIsoTime(v: unknown): boolean {
  return typeof v === 'string' && /^\d{4}-\d{2}-\d{2}T/.test(v) && !Number.isNaN(Date.parse(v));
}

/** Asserts `res` is the error `code` written in `face`'s wire format with the face's status. */
export function assertFaceError(res: TestResponse, face: Face, code: Code, label = ''): void {
  const where = `${label || face} -> ${res.status} ${res.text.slice(0, 300)}`;
  const expectedStatus = face === 'automation' && code === 'VALIDATION_ERROR' ? 422 : STATUS[code];
  assert.equal(res.status, expectedStatus, `status: ${where}`);
  assert.match(header(res, 'content-type') ?? '', /^application\/json/, `content-type: ${where}`);
  const requestId = header(res, 'x-request-id');
  assert.ok(requestId, `X-Request-Id: ${where}`);
  const body = res.body as Record<string, unknown> | undefined;
  assert.ok(body && typeof body === 'object' && !Array.isArray(body), `JSON object body: ${where}`);

  switch (face) {
    case 'tasks': {
      assert.deepEqual(Object.keys(body).sort(), ['error', 'request_id'], `HelixCode keys: ${where}`);
      const error = body.error as Record<string, unknown>;
      assert.equal(error.code, TASKS_CODE[code], `HelixCode code: ${where}`);
      assert.equal(typeof error.message, 'string', where);
      assert.ok((error.message as string).length > 0, where);
      assert.equal(body.request_id, requestId, `HelixCode request_id matches header: ${where}`);
      break;
    }
    case 'monitoring': {
      for (const k of Object.keys(body)) assert.ok(['success', 'error', 'code', 'details', 'timestamp'].includes(k), `Helomatic key ${k}: ${where}`);
      assert.equal(body.success, false, where);
      assert.equal(typeof body.error, 'string', `Helomatic error is a string: ${where}`);
      assert.ok((body.error as string).length > 0, where);
      assert.equal(body.code, code, `Helomatic code: ${where}`);
      assert.ok(isIsoTime(body.timestamp), `Helomatic timestamp: ${where}`);
      break;
    }
    case 'databases': {
      assert.deepEqual(Object.keys(body).sort(), ['error', 'meta', 'success'], `HeliosDB keys: ${where}`);
      assert.equal(body.success, false, where);
      const error = body.error as Record<string, unknown>;
      assert.equal(error.code, DATABASES_CODE[code], `HeliosDB code: ${where}`);
      assert.equal(typeof error.message, 'string', where);
      const meta = body.meta as Record<string, unknown>;
      assert.equal(meta.request_id, requestId, `HeliosDB meta.request_id matches header: ${where}`);
      assert.equal(typeof meta.duration_ms, 'number', where);
      assert.ok((meta.duration_ms as number) >= 0, where);
      assert.ok(isIsoTime(meta.timestamp), `HeliosDB meta.timestamp: ${where}`);
      break;
    }
    case 'automation': {
      assert.deepEqual(Object.keys(body), ['detail'], `Arrotech keys: ${where}`);
      if (code === 'VALIDATION_ERROR' && Array.isArray(body.detail)) {
        for (const d of body.detail as Record<string, unknown>[]) {
          assert.ok(Array.isArray(d.loc) && typeof d.msg === 'string' && typeof d.type === 'string', `Arrotech validation item: ${where}`);
        }
      } else {
        assert.equal(typeof body.detail, 'string', `Arrotech detail is a string: ${where}`);
        assert.ok((body.detail as string).length > 0, where);
      }
      break;
    }
  }

  if (code === 'AUTH_REQUIRED' || code === 'AUTH_EXPIRED') {
    assert.match(header(res, 'www-authenticate') ?? '', /^Bearer/, `WWW-Authenticate: ${where}`);
  }
  if (code === 'RATE_LIMITED') {
    const retry = Number(header(res, 'retry-after'));
    assert.ok(Number.isInteger(retry) && retry >= 1, `Retry-After: ${where}`);
  }
}

/** Calls every face's authenticated probe with `token` and expects `code` in each face's format. */
export async function assertRefusedEverywhere(s: TestServer, token: string, code: 'AUTH_REQUIRED' | 'AUTH_EXPIRED', label: string): Promise<void> {
  for (const face of FACES) {
    const probe = AUTH_PROBES[face];
    const res = await s.request(probe.method, probe.url, { token });
    assertFaceError(res, face, code, `${label} on ${face}`);
  }
}

/** Like `TestServer.request`, but from a chosen client address (rate limits and throttles key on it). */
export async function requestFrom(
  s: TestServer,
  remoteAddress: string,
  method: string,
  url: string,
  opts: { body?: unknown; token?: string; headers?: Record<string, string> } = {},
): Promise<TestResponse> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined) headers['content-type'] ??= 'application/json';
  const res = await s.app.inject({
    method: method as 'GET',
    url,
    headers,
    payload: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    remoteAddress,
  });
  let body: unknown;
  try {
    body = res.body ? JSON.parse(res.body) : undefined;
  } catch {
    body = undefined;
  }
  return { status: res.statusCode, headers: res.headers, body, text: res.body };
}
