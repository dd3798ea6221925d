/** The one error type outbound requests fail with; `reason` is stable and safe to show to users. */

export const OUTBOUND_FAILURES = [
  'invalid_url',
  'scheme_not_allowed',
  'address_not_allowed',
  'dns_failed',
  'connect_timeout',
  'timeout',
  'response_too_large',
  'too_many_redirects',
  'redirect_not_allowed',
  'connection_failed',
] as const;
export type OutboundFailure = (typeof OUTBOUND_FAILURES)[number];

/**
 * Why an outbound request did not produce a response. The message is written for the user who
 * supplied the URL: it names the URL (without credentials) and, when refused, the address; the
 * underlying system error, if any, is kept in `cause` for logs only.
 */
export class OutboundRequestError extends Error {
  readonly reason: OutboundFailure;
  /** The URL (credentials removed) being requested when the failure happened. */
  readonly url: string | undefined;
  /** The IP address that was refused (address_not_allowed only). */
  readonly address: string | undefined;

  constructor(reason: OutboundFailure, message: string, opts: { url?: string; address?: string; cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.name = 'OutboundRequestError';
    this.reason = reason;
    this.url = opts.url;
    this.address = opts.address;
  }
}

/** True when `err` is an OutboundRequestError. */
export function isOutboundRequestError(err: unknown): err is OutboundRequestError {
  return err instanceof OutboundRequestError;
}
