import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ErrorCode } from '../../platform/errors.ts';
import { DEFAULT_STATUS, issuesToDetails, type FaceWire } from '../shared/wire.ts';

const CODE_NAMES: Partial<Record<ErrorCode, string>> = {
  INTERNAL_ERROR: 'SERVER_ERROR',
  PAYLOAD_TOO_LARGE: 'VALIDATION_ERROR',
  UNSUPPORTED_MEDIA_TYPE: 'VALIDATION_ERROR',
};

/** HeliosDB's `meta` block: request id, time spent, and when. */
export function heliosMeta(req: FastifyRequest, reply: FastifyReply) {
  return { request_id: req.id, duration_ms: Math.round(reply.elapsedTime), timestamp: new Date().toISOString() };
}

/** HeliosDB success envelope `{success:true,data,meta}`. */
export function heliosOk<T>(req: FastifyRequest, reply: FastifyReply, data: T) {
  return { success: true as const, data, meta: heliosMeta(req, reply) };
}

/** HeliosDB: `{success:false,error:{code,message,details},meta}`. */
export const databasesWire: FaceWire = {
  name: 'databases',
  resetHeaderUnit: 's',
  status: (code) => DEFAULT_STATUS[code],
  errorBody(err, req, reply, issues) {
    const details = issuesToDetails(issues) ?? err.details;
    return {
      success: false,
      error: { code: CODE_NAMES[err.code] ?? err.code, message: err.message, ...(details ? { details } : {}) },
      meta: heliosMeta(req, reply),
    };
  },
};
