/**
 * Outbound HTTP: the only way the server calls a URL a user supplied (webhook deliveries,
 * monitored pages, LLM providers).
 *
 * Guards against server-side request forgery: only http and https; every address a connection
 * may use is checked inside the socket's own `lookup`, so the address that was checked is the one
 * connected to (no resolve-then-connect race, no DNS rebinding window); literal IP hosts are
 * checked before connecting; the peer address is checked again once the TCP handshake completes.
 * Redirects are followed by hand so each hop passes the same checks. Every request has a connect
 * timeout, a total timeout and a response size cap.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import { performance } from 'node:perf_hooks';
import { type AllowPrivate, checkAddress, parseIp } from './address.ts';
import { OutboundRequestError } from './errors.ts';

export {
  ALLOW_NO_PRIVATE,
  type AddressVerdict,
  type AllowPrivate,
  blockedCategory,
  checkAddress,
  type Cidr,
  parseAllowPrivate,
  parseIp,
} from './address.ts';
export { isOutboundRequestError, OUTBOUND_FAILURES, type OutboundFailure, OutboundRequestError } from './errors.ts';

/** Resolves a host name to every address it has (the injectable part of connecting). */
export type Resolver = (hostname: string) => Promise<{ address: string; family: 4 | 6 }[]>;

export interface HttpOutOptions {
  allowPrivate: AllowPrivate;
  /** Sent as `User-Agent` unless the caller sets one, e.g. `Mainspring/0.1 (+https://...)`. */
  userAgent: string;
  /** Time allowed for DNS resolution plus the TCP handshake, per hop (default 5 s). */
  connectTimeoutMs?: number;
  /** Time allowed for the whole exchange, redirects and body included (default 15 s). */
  timeoutMs?: number;
  /** Largest response body accepted (default 5 MiB). */
  maxResponseBytes?: number;
  /** Redirects followed before giving up (default 5). */
  maxRedirects?: number;
  resolve?: Resolver;
}

export interface OutboundRequestInit {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Follow 301/302/303/307/308 (default true); when false a 3xx is returned as is. */
  followRedirects?: boolean;
  timeoutMs?: number;
  maxResponseBytes?: number;
  /** Aborting it rejects with the signal's reason. */
  signal?: AbortSignal;
}

export interface OutboundResponse {
  status: number;
  headers: Record<string, string | string[]>;
  body: Buffer;
  /** The URL that produced this response, after redirects (credentials removed). */
  url: string;
  redirects: number;
  durationMs: number;
}

export interface HttpOut {
  /** Sends one request (following redirects unless told not to) and returns the buffered response. */
  request(url: string, init?: OutboundRequestInit): Promise<OutboundResponse>;
}

const MIB = 1024 * 1024;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
// Headers describing the request body: dropped with the body when a redirect switches to GET.
const BODY_HEADERS = ['content-type', 'content-encoding', 'content-language', 'content-location', 'content-length'];
// Credentials meant for one origin must not follow a redirect to another.
const CREDENTIAL_HEADERS = ['authorization', 'proxy-authorization', 'cookie'];
// Framing is computed here from the body; caller-set values could disagree with it.
const MANAGED_HEADERS = ['host', 'content-length', 'transfer-encoding', 'connection'];

const defaultResolve: Resolver = async (hostname) => {
  const found = await dnsLookup(hostname, { all: true });
  return found.map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));
};

/** Creates the outbound HTTP client with the operator's address policy and limits. */
export function createHttpOut(opts: HttpOutOptions): HttpOut {
  const settings: Settings = {
    allowPrivate: opts.allowPrivate,
    connectTimeoutMs: opts.connectTimeoutMs ?? 5000,
    resolve: opts.resolve ?? defaultResolve,
  };
  const defaultTimeoutMs = opts.timeoutMs ?? 15_000;
  const defaultMaxBytes = opts.maxResponseBytes ?? 5 * MIB;
  const maxRedirects = opts.maxRedirects ?? 5;

  return {
    async request(rawUrl, init = {}) {
      const started = performance.now();
      let url = parseTarget(rawUrl);
      const maxBytes = init.maxResponseBytes ?? defaultMaxBytes;
      const followRedirects = init.followRedirects ?? true;
      let method = (init.method ?? 'GET').toUpperCase();
      const headers = prepareHeaders(init.headers, opts.userAgent);
      let body = init.body === undefined ? undefined : Buffer.isBuffer(init.body) ? init.body : Buffer.from(init.body);
      if (body) headers['content-length'] = String(body.length);

      // One deadline for the whole exchange, redirects and body included.
      const timeoutMs = init.timeoutMs ?? defaultTimeoutMs;
      const deadline = new AbortController();
      const timer = setTimeout(() => {
        deadline.abort(
          new OutboundRequestError('timeout', `The request to ${url.host} did not complete within ${timeoutMs} ms`, { url: displayUrl(url) }),
        );
      }, timeoutMs);
      const signal = init.signal ? AbortSignal.any([deadline.signal, init.signal]) : deadline.signal;

      try {
        for (let redirects = 0; ; redirects++) {
          const res = await exchange({ url, method, headers, body }, signal, settings);
          const status = res.statusCode ?? 0;
          const location = res.headers.location;
          if (followRedirects && REDIRECT_STATUSES.has(status) && location) {
            res.destroy();
            if (redirects >= maxRedirects) {
              throw new OutboundRequestError('too_many_redirects', `Gave up after ${maxRedirects} redirects`, { url: displayUrl(url) });
            }
            const next = parseTarget(location, url);
            if (next.protocol !== url.protocol) {
              throw new OutboundRequestError(
                'redirect_not_allowed',
                `Refused a redirect from ${url.protocol.slice(0, -1)} to ${next.protocol.slice(0, -1)}`,
                { url: displayUrl(next) },
              );
            }
            if (next.origin !== url.origin) for (const h of CREDENTIAL_HEADERS) delete headers[h];
            // Fetch semantics: 303 always becomes GET (HEAD stays HEAD); 301/302 turn POST into GET.
            if ((status === 303 && method !== 'HEAD') || ((status === 301 || status === 302) && method === 'POST')) {
              method = 'GET';
              body = undefined;
              for (const h of BODY_HEADERS) delete headers[h];
            }
            url = next;
            continue;
          }
          const declared = Number(res.headers['content-length']);
          if (method !== 'HEAD' && Number.isFinite(declared) && declared > maxBytes) {
            res.destroy();
            throw tooLarge(url, maxBytes);
          }
          const data = await readBody(res, maxBytes, signal, url);
          return {
            status,
            headers: toHeaderRecord(res.headers),
            body: data,
            url: displayUrl(url),
            redirects,
            durationMs: Math.round(performance.now() - started),
          };
        }
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

interface Settings {
  allowPrivate: AllowPrivate;
  connectTimeoutMs: number;
  resolve: Resolver;
}

interface Hop {
  url: URL;
  method: string;
  headers: Record<string, string>;
  body: Buffer | undefined;
}

/** Parses a URL (relative to `base` for redirects) and refuses anything but http and https. */
function parseTarget(raw: string, base?: URL): URL {
  let url: URL;
  try {
    url = new URL(raw, base);
  } catch (cause) {
    throw new OutboundRequestError('invalid_url', base ? 'The redirect location is not a valid URL' : 'The URL is not valid', { cause });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new OutboundRequestError('scheme_not_allowed', `Only http and https URLs are allowed, not ${url.protocol}`, {
      url: displayUrl(url),
    });
  }
  if (!url.hostname) throw new OutboundRequestError('invalid_url', 'The URL has no host');
  return url;
}

/** The URL as safe to show and log: credentials removed. */
function displayUrl(url: URL): string {
  if (!url.username && !url.password) return url.href;
  const copy = new URL(url.href);
  copy.username = '';
  copy.password = '';
  return copy.href;
}

/** The host to connect to: WHATWG URL keeps brackets around IPv6 literals. */
function connectHost(url: URL): string {
  return url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
}

function prepareHeaders(given: Record<string, string> | undefined, userAgent: string): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(given ?? {})) {
    const key = name.toLowerCase();
    if (!MANAGED_HEADERS.includes(key)) headers[key] = value;
  }
  headers['user-agent'] ??= userAgent;
  return headers;
}

function toHeaderRecord(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) if (value !== undefined) out[name] = value;
  return out;
}

function refused(address: string, category: string, url: URL, hostname?: string): OutboundRequestError {
  const where = hostname ? `${hostname}: it resolves to ${address}` : address;
  return new OutboundRequestError(
    'address_not_allowed',
    `Refused to connect to ${where} (${category} address); this server does not call private or reserved addresses`,
    { url: displayUrl(url), address },
  );
}

function tooLarge(url: URL, maxBytes: number): OutboundRequestError {
  return new OutboundRequestError('response_too_large', `The response from ${url.host} is larger than ${maxBytes} bytes`, {
    url: displayUrl(url),
  });
}

/** Turns a socket or parser error into a short, user-safe description; the original stays in `cause`. */
function connectionFailed(err: unknown, url: URL): OutboundRequestError {
  const first = err instanceof AggregateError ? (err.errors[0] as unknown) : err;
  const code = String((first as NodeJS.ErrnoException | undefined)?.code ?? '');
  let what = 'connection failed';
  if (code === 'ECONNREFUSED') what = 'connection refused';
  else if (code === 'ECONNRESET' || code === 'EPIPE') what = 'connection reset';
  else if (code === 'ETIMEDOUT') what = 'connection timed out';
  else if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') what = 'host unreachable';
  else if (/CERT|ERR_TLS|ERR_SSL/.test(code)) what = 'TLS certificate not accepted';
  else if (code.startsWith('HPE_')) what = 'invalid HTTP response';
  return new OutboundRequestError('connection_failed', `The request to ${url.host} failed: ${what}`, { url: displayUrl(url), cause: err });
}

/** Resolves `hostname` and refuses the whole name if any of its addresses is not allowed. */
async function resolveChecked(hostname: string, url: URL, settings: Settings): Promise<{ address: string; family: 4 | 6 }[]> {
  let found: { address: string; family: 4 | 6 }[];
  try {
    found = await settings.resolve(hostname);
  } catch (cause) {
    throw new OutboundRequestError('dns_failed', `Could not resolve host ${hostname}`, { url: displayUrl(url), cause });
  }
  if (found.length === 0) throw new OutboundRequestError('dns_failed', `Could not resolve host ${hostname}`, { url: displayUrl(url) });
  // Every address is checked, not just the first: the socket may fall back to any of them.
  for (const { address } of found) {
    const verdict = checkAddress(address, settings.allowPrivate);
    if (!verdict.allowed) throw refused(address, verdict.category, url, hostname);
  }
  return found;
}

/** One HTTP exchange up to the response headers; the caller reads or discards the body. */
function exchange(hop: Hop, signal: AbortSignal, settings: Settings): Promise<IncomingMessage> {
  const { url } = hop;
  const host = connectHost(url);
  // Node skips `lookup` for literal IPs, so they are checked here; no DNS means no race.
  if (isIP(host)) {
    const verdict = checkAddress(host, settings.allowPrivate);
    if (!verdict.allowed) return Promise.reject(refused(host, verdict.category, url));
  }
  if (signal.aborted) return Promise.reject(signal.reason);

  return new Promise((resolve, reject) => {
    let settled = false;
    let failure: unknown;

    const lookup: LookupFunction = (hostname, options, callback) => {
      resolveChecked(hostname, url, settings).then(
        (found) => {
          const family = options.family === 4 || options.family === 'IPv4' ? 4 : options.family === 6 || options.family === 'IPv6' ? 6 : 0;
          const usable = family ? found.filter((a) => a.family === family) : found;
          const first = usable[0];
          if (!first) {
            const err = new OutboundRequestError('dns_failed', `Could not resolve host ${hostname}`, { url: displayUrl(url) });
            failure ??= err;
            callback(err, '');
          } else if (options.all) callback(null, usable);
          else callback(null, first.address, first.family);
        },
        (err: OutboundRequestError) => {
          // Remembered so the request fails with this error whatever the socket wraps it in.
          failure ??= err;
          callback(err, '');
        },
      );
    };

    const credentials = url.username || url.password ? `${decode(url.username)}:${decode(url.password)}` : undefined;
    const options: RequestOptions = {
      protocol: url.protocol,
      hostname: host,
      port: url.port || undefined,
      path: `${url.pathname}${url.search}`,
      method: hop.method,
      headers: hop.headers,
      auth: credentials,
      // A fresh connection per request: a pooled socket would skip the address check.
      agent: false,
      lookup,
    };
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(options);

    const fail = (err: unknown) => {
      failure ??= err;
      if (!settled) {
        settled = true;
        cleanup();
        reject(failure);
      }
      if (!req.destroyed) req.destroy();
    };
    const onAbort = () => fail(signal.reason);
    const connectTimer = setTimeout(() => {
      fail(new OutboundRequestError('connect_timeout', `Could not connect to ${url.host} within ${settings.connectTimeoutMs} ms`, { url: displayUrl(url) }));
    }, settings.connectTimeoutMs);
    const cleanup = () => {
      clearTimeout(connectTimer);
      signal.removeEventListener('abort', onAbort);
    };
    signal.addEventListener('abort', onAbort, { once: true });

    req.on('socket', (socket) => {
      // Prepended so it runs before the socket flushes the queued request.
      socket.prependOnceListener('connect', () => {
        clearTimeout(connectTimer);
        const remote = socket.remoteAddress;
        const verdict = remote ? checkAddress(remote, settings.allowPrivate) : ({ allowed: false, category: 'unknown' } as const);
        if (!verdict.allowed) fail(refused(remote ?? 'unknown', verdict.category, url));
      });
    });
    req.on('response', (res) => {
      if (settled) {
        res.destroy();
        return;
      }
      settled = true;
      cleanup();
      resolve(res);
    });
    // Kept for the request's whole life: a socket error after the response must not go unhandled.
    req.on('error', (err) => fail(failure ?? (err instanceof OutboundRequestError ? err : connectionFailed(err, url))));
    req.end(hop.body);
  });
}

function decode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

/** Buffers the body, aborting as soon as it passes `maxBytes`. */
function readBody(res: IncomingMessage, maxBytes: number, signal: AbortSignal, url: URL): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (err?: unknown) => {
      if (done) return;
      done = true;
      signal.removeEventListener('abort', onAbort);
      if (err === undefined) resolve(Buffer.concat(chunks, size));
      else {
        res.destroy();
        reject(err);
      }
    };
    const onAbort = () => finish(signal.reason);
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    res.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) finish(tooLarge(url, maxBytes));
      else chunks.push(chunk);
    });
    res.on('end', () => finish());
    res.on('error', (err) => finish(connectionFailed(err, url)));
    res.on('close', () => {
      if (!res.complete) finish(new OutboundRequestError('connection_failed', `The connection to ${url.host} closed before the response was complete`, { url: displayUrl(url) }));
    });
  });
}

/**
 * For a URL being stored: the blocked category of its host when the host is a literal address (or
 * `localhost`) the policy refuses, else null. Names are not resolved here; every connection checks
 * the address it really uses.
 */
export function refusedLiteralTarget(url: string, allow: AllowPrivate): string | null {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  const literal = host === 'localhost' || host.endsWith('.localhost') ? '127.0.0.1' : parseIp(host) ? host : null;
  if (literal === null) return null;
  const verdict = checkAddress(literal, allow);
  return verdict.allowed ? null : verdict.category;
}
