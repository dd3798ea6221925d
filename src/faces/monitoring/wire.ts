import { DEFAULT_STATUS, issuesToDetails, type FaceWire } from '../shared/wire.ts';

/** Helomatic success envelope `{success:true,data,message,timestamp}`. */
export function helomaticOk<T>(data: T, message?: string) {
  return { success: true as const, data, ...(message ? { message } : {}), timestamp: new Date().toISOString() };
}

/** Helomatic: `{success:false,error:"<message>",code,details,timestamp}`; rate-limit reset in epoch ms. */
export const monitoringWire: FaceWire = {
  name: 'monitoring',
  resetHeaderUnit: 'ms',
  status: (code) => DEFAULT_STATUS[code],
  errorBody(err, _req, _reply, issues) {
    const details = issuesToDetails(issues) ?? err.details;
    return { success: false, error: err.message, code: err.code, ...(details ? { details } : {}), timestamp: new Date().toISOString() };
  },
};
