import type { ErrorCode } from '../../platform/errors.ts';
import { DEFAULT_STATUS, issuesToDetails, type FaceWire } from '../shared/wire.ts';

// HelixCode's documented code names; catalogue codes it does not list map to the nearest one.
const CODE_NAMES: Partial<Record<ErrorCode, string>> = {
  AUTH_REQUIRED: 'UNAUTHORIZED',
  AUTH_EXPIRED: 'UNAUTHORIZED',
  RATE_LIMITED: 'RATE_LIMIT_EXCEEDED',
  QUERY_ERROR: 'VALIDATION_ERROR',
  PAYLOAD_TOO_LARGE: 'VALIDATION_ERROR',
  UNSUPPORTED_MEDIA_TYPE: 'VALIDATION_ERROR',
};

/** HelixCode: `{error:{code,message,details},request_id}`. */
export const tasksWire: FaceWire = {
  name: 'tasks',
  resetHeaderUnit: 's',
  status: (code) => DEFAULT_STATUS[code],
  errorBody(err, req, _reply, issues) {
    const details = issuesToDetails(issues) ?? err.details;
    return {
      error: { code: CODE_NAMES[err.code] ?? err.code, message: err.message, ...(details ? { details } : {}) },
      request_id: req.id,
    };
  },
};
