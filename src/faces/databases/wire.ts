import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
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

const metaSchema = z.object({ request_id: z.string(), duration_ms: z.number(), timestamp: z.string() });

/** Response schema of the HeliosDB success envelope around `data`. */
export function heliosEnvelope<T extends z.ZodType>(data: T) {
  return z.object({ success: z.literal(true), data, meta: metaSchema });
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
