import { DEFAULT_STATUS, type FaceWire } from '../shared/wire.ts';

/** Arrotech Hub success envelope `{success:true,data}` (plus `message` where the API gives one). */
export function arrotechOk<T>(data: T, message?: string) {
  return { success: true as const, data, ...(message ? { message } : {}) };
}

/**
 * Arrotech Hub (FastAPI): `{detail:"<message>"}`; request validation is 422 with FastAPI's
 * `{detail:[{loc,msg,type}]}` list.
 */
export const automationWire: FaceWire = {
  name: 'automation',
  resetHeaderUnit: 's',
  status: (code) => (code === 'VALIDATION_ERROR' ? 422 : DEFAULT_STATUS[code]),
  errorBody(err, _req, _reply, issues) {
    if (issues?.length) {
      return { detail: issues.map((i) => ({ loc: [i.location, ...i.path], msg: i.message, type: i.type })) };
    }
    return { detail: err.message };
  },
};
