/**
 * `fetcher: browser`: renders a monitored page in headless Chromium so values that scripts put into
 * the page can be extracted.
 *
 * The browser never reaches the network itself. Every request it makes is intercepted and performed
 * by the SSRF-guarded outbound client (so a page's scripts, sub-resources and redirects meet the
 * same address policy as a plain fetch), then handed back to Chromium as a fulfilled response. As a
 * second wall, Chromium is launched with a proxy that accepts connections and drops them, so any
 * traffic that escapes interception (preconnects, WebRTC over TCP, a future feature) goes nowhere;
 * WebSockets, service workers, downloads and popups are refused outright. Per page the number of
 * requests, their total size and the time spent are capped so a hostile page cannot keep the server
 * fetching.
 *
 * Redirects are never left to Chromium: when a fulfilled response is a redirect, Playwright lets the
 * browser fetch the next hop itself, uninterrupted (it would hit the dead proxy). So the page's own
 * address chain is followed here, one navigation per hop (the document ends up with its real URL),
 * and every other request follows its redirects inside the outbound client.
 */
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib';
import { type Browser, type BrowserContext, chromium, type Page, type Request, type Response, type Route } from 'playwright-core';
import { type HttpOut, isOutboundRequestError, OutboundRequestError, type OutboundResponse } from '../../platform/http-out/index.ts';

export interface FetchedPage {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  contentType: string | undefined;
  finalUrl: string;
  durationMs: number;
}

export interface BrowserFetchOptions {
  /** Time for navigation plus waiting for the page to settle. */
  timeoutMs: number;
  /** Sent with every request to the page's own origin (e.g. a cookie or an authorization header). */
  headers?: Record<string, string>;
  /** Largest rendered page accepted; the page's requests together may fetch four times this. */
  maxBytes: number;
  signal?: AbortSignal;
  /**
   * `load` (default): the load event, then up to 2 s for the network to go quiet (no request in
   * flight for 300 ms); `networkidle`: the load event and quiet, both within the timeout.
   */
  waitFor?: 'load' | 'networkidle';
}

export type BrowserAvailability = { ok: true; executable: string; version: string } | { ok: false; reason: string };

export interface BrowserFetcher {
  /** Whether a browser can be launched here: the executable found (the configured path, else the usual install locations) — cached after the first check. */
  available(): Promise<BrowserAvailability>;
  /** Renders `url` and returns the DOM after scripts ran, with the main response's status and headers. */
  fetch(url: string, opts: BrowserFetchOptions): Promise<FetchedPage>;
  /** Closes the browser (a later fetch launches it again). */
  close(): Promise<void>;
}

export interface BrowserFetcherDeps {
  /** Chromium to use (config `CHROMIUM_PATH`); unset = the first of the usual install locations. */
  executablePath?: string;
  httpOut: HttpOut;
  /** Pages rendered at once; further fetches wait their turn (default 4). */
  maxPages?: number;
  /** Close the browser after this long without a fetch (default 60 s). */
  idleCloseMs?: number;
}

export const NO_CHROMIUM_REASON = "No Chromium found: install Debian's chromium package or set CHROMIUM_PATH";

const EXECUTABLE_CANDIDATES = [
  '/usr/bin/chromium',
  '/usr/bin/chromium-browser',
  '/usr/bin/google-chrome',
  '/usr/bin/google-chrome-stable',
  '/snap/bin/chromium',
  '/Applications/Chromium.app/Contents/MacOS/Chromium',
  '/Applications/Google Chrome.app/Contents/MacOS/Google Chrome',
];

/** Requests one page may make; a page that needs more is not one we can monitor safely. */
const MAX_REQUESTS_PER_PAGE = 200;
/** The page's requests together may fetch this many times `maxBytes`. */
const PAGE_BYTES_FACTOR = 4;
/** Upstream requests in flight per page, like a browser's per-host connection limit. */
const UPSTREAM_CONCURRENCY = 6;
/** After `load`, how long to wait at most for the network to go quiet. */
const SETTLE_MS = 2000;
/**
 * The network is quiet when none of the page's requests has been in flight for this long. Every
 * request passes through the interception, so this is exact; a response's script callbacks run well
 * within it, and a chained request starts within it too.
 */
const QUIET_MS = 300;
/** Redirects followed for the page itself (the outbound client's default). */
const MAX_PAGE_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** Time kept back from the deadline to read the DOM. */
const READ_MARGIN_MS = 250;
const LAUNCH_TIMEOUT_MS = 30_000;
/**
 * Sub-resources the rendered HTML does not need: skipping them saves most of a page's bytes, and
 * pings/beacons only exist to cause effects elsewhere.
 */
const SKIPPED_RESOURCE_TYPES = new Set(['image', 'media', 'font', 'ping']);
// Hop-by-hop or framing headers: Chromium gets the decoded body and computes its own framing.
const UNFORWARDED_RESPONSE_HEADERS = new Set(['content-length', 'content-encoding', 'transfer-encoding', 'connection', 'keep-alive']);

/** Creates the Chromium-backed fetcher; the browser itself starts on the first fetch. */
export function createBrowserFetcher(deps: BrowserFetcherDeps): BrowserFetcher {
  const maxPages = Math.max(1, deps.maxPages ?? 4);
  const idleCloseMs = deps.idleCloseMs ?? 60_000;
  const pageSlots = new Slots(maxPages);
  let availability: Promise<BrowserAvailability> | undefined;
  let running: Promise<RunningBrowser> | undefined;
  let busy = 0;
  let idleTimer: NodeJS.Timeout | undefined;

  const launch = (executable: string): Promise<RunningBrowser> => {
    if (!running) {
      const starting = launchBrowser(executable);
      running = starting;
      starting.then(
        (r) =>
          r.browser.on('disconnected', () => {
            // A crashed or closed browser is replaced on the next fetch.
            if (running === starting) running = undefined;
            r.sink.close();
          }),
        () => {
          if (running === starting) running = undefined;
        },
      );
    }
    return running;
  };

  const shutDown = async (): Promise<void> => {
    clearTimeout(idleTimer);
    idleTimer = undefined;
    const current = running;
    running = undefined;
    const r = await current?.catch(() => undefined);
    if (!r) return;
    await r.browser.close().catch(() => undefined);
    r.sink.close();
  };

  return {
    available() {
      availability ??= findChromium(deps.executablePath);
      return availability;
    },

    async fetch(url, opts) {
      const started = performance.now();
      const target = parsePageUrl(url);
      const found = await this.available();
      if (!found.ok) throw new Error(found.reason);
      opts.signal?.throwIfAborted();

      busy++;
      clearTimeout(idleTimer);
      try {
        await pageSlots.acquire(opts.signal);
        try {
          const { browser } = await launch(found.executable);
          return await renderPage(browser, target, opts, deps.httpOut, started);
        } finally {
          pageSlots.release();
        }
      } finally {
        busy--;
        if (busy === 0) {
          idleTimer = setTimeout(() => void shutDown(), idleCloseMs);
          idleTimer.unref();
        }
      }
    },

    close: shutDown,
  };
}

interface RunningBrowser {
  browser: Browser;
  sink: Server;
}

async function launchBrowser(executablePath: string): Promise<RunningBrowser> {
  const sink = await startSinkProxy();
  const { port } = sink.address() as AddressInfo;
  const args = [
    '--disable-dev-shm-usage',
    '--disable-gpu',
    '--no-pings',
    '--dns-prefetch-disable',
    // WebRTC may only use the (dead) proxy, never raw UDP to an address a page names.
    '--force-webrtc-ip-handling-policy=disable_non_proxied_udp',
    '--webrtc-ip-handling-policy=disable_non_proxied_udp',
    // A renderer's heap is bounded, and with it how large a DOM a page can build.
    '--js-flags=--max-old-space-size=512',
  ];
  // Chromium's sandbox cannot start as root; everywhere else it stays on.
  if (process.getuid?.() === 0) args.unshift('--no-sandbox');
  try {
    const browser = await chromium.launch({
      executablePath,
      headless: true,
      args,
      timeout: LAUNCH_TIMEOUT_MS,
      // Loopback included (Playwright adds `<-loopback>` to the bypass list when none is given).
      proxy: { server: `http://127.0.0.1:${port}` },
      // The server's own shutdown closes the browser; Playwright must not exit the process.
      handleSIGINT: false,
      handleSIGTERM: false,
      handleSIGHUP: false,
    });
    return { browser, sink };
  } catch (err) {
    sink.close();
    throw new Error(`Could not start Chromium (${executablePath}): ${firstLine(err)}`, { cause: err });
  }
}

/** A local proxy that drops every connection: where Chromium's own network traffic ends up. */
async function startSinkProxy(): Promise<Server> {
  const sink = createServer((socket) => socket.destroy());
  sink.unref();
  await new Promise<void>((resolve, reject) => {
    sink.once('error', reject);
    sink.listen(0, '127.0.0.1', () => resolve());
  });
  return sink;
}

async function findChromium(configured: string | undefined): Promise<BrowserAvailability> {
  for (const candidate of configured ? [configured] : EXECUTABLE_CANDIDATES) {
    try {
      await access(candidate, constants.X_OK);
    } catch {
      continue;
    }
    try {
      const version = await new Promise<string>((resolve, reject) => {
        execFile(candidate, ['--version'], { timeout: 10_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout.trim())));
      });
      return { ok: true, executable: candidate, version };
    } catch (err) {
      return { ok: false, reason: `Chromium at ${candidate} does not start: ${firstLine(err)}` };
    }
  }
  return { ok: false, reason: NO_CHROMIUM_REASON };
}

/** Only http and https pages are rendered (the same rule the outbound client applies). */
function parsePageUrl(raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch (cause) {
    throw new OutboundRequestError('invalid_url', 'The URL is not valid', { cause });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new OutboundRequestError('scheme_not_allowed', `Only http and https URLs are allowed, not ${url.protocol}`, { url: url.href });
  }
  return url;
}

async function renderPage(browser: Browser, target: URL, opts: BrowserFetchOptions, httpOut: HttpOut, started: number): Promise<FetchedPage> {
  const deadline = performance.now() + opts.timeoutMs;
  const lifetime = new AbortController();
  const timer = setTimeout(() => {
    lifetime.abort(
      new OutboundRequestError('timeout', `The page at ${target.host} did not finish loading within ${opts.timeoutMs} ms`, { url: target.href }),
    );
  }, opts.timeoutMs);
  const onAbort = () => lifetime.abort(opts.signal?.reason);
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  let context: BrowserContext | undefined;
  let session: PageSession | undefined;
  try {
    context = await browser.newContext({ serviceWorkers: 'block', acceptDownloads: false });
    session = new PageSession(context, target, opts, httpOut, deadline, lifetime.signal);
    await session.start();
    const work = session.render();
    // The page is closed below when the deadline passes; its pending promise must not go unhandled.
    work.catch(() => undefined);
    const rendered = await Promise.race([work, rejectOnAbort(lifetime.signal)]);
    return { ...rendered, durationMs: Math.round(performance.now() - started) };
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
    if (!lifetime.signal.aborted) lifetime.abort(new Error('The page was closed'));
    session?.stop();
    await context?.close().catch(() => undefined);
  }
}

/** One page being rendered in its own incognito context: the interception and its limits. */
class PageSession {
  private page: Page | undefined;
  private navigated = false;
  private requests = 0;
  /** Intercepted requests not yet answered, and when the last one was: what "the network is quiet" means. */
  private inFlight = 0;
  private lastActivity = performance.now();
  /** Why the main document could not be fetched: rethrown instead of Chromium's generic net error. */
  private mainDocumentError: OutboundRequestError | undefined;
  /** Status and headers as the server sent them, per intercepted request. */
  private readonly upstream: Map<Request, Pick<OutboundResponse, 'status' | 'headers'>> = new Map();
  /** Where a redirect of the page itself points (followed by `render`, not by Chromium). */
  private readonly redirects: Map<Request, URL> = new Map();
  private readonly budget: ByteBudget;
  private readonly upstreamSlots = new Slots(UPSTREAM_CONCURRENCY);
  private readonly context: BrowserContext;
  private readonly target: URL;
  private readonly opts: BrowserFetchOptions;
  private readonly httpOut: HttpOut;
  private readonly deadline: number;
  private readonly signal: AbortSignal;

  constructor(context: BrowserContext, target: URL, opts: BrowserFetchOptions, httpOut: HttpOut, deadline: number, signal: AbortSignal) {
    this.context = context;
    this.target = target;
    this.opts = opts;
    this.httpOut = httpOut;
    this.deadline = deadline;
    this.signal = signal;
    this.budget = new ByteBudget(opts.maxBytes * PAGE_BYTES_FACTOR, opts.maxBytes);
  }

  async start(): Promise<void> {
    await this.context.route('**/*', (route) => this.intercept(route));
    // Closed before any byte leaves: a page cannot open a socket to anywhere.
    await this.context.routeWebSocket(
      () => true,
      (ws) => ws.close({ code: 1008, reason: 'WebSockets are not allowed here' }),
    );
    this.context.on('page', (p) => {
      // Popups would render (and fetch) alongside the page being monitored.
      if (this.page && p !== this.page) void p.close().catch(() => undefined);
    });
    this.page = await this.context.newPage();
  }

  stop(): void {
    this.budget.close();
    this.upstreamSlots.close();
  }

  async render(): Promise<Omit<FetchedPage, 'durationMs'>> {
    const page = this.page;
    if (!page) throw new Error('The page was not opened');
    const waitFor = this.opts.waitFor ?? 'load';
    let url = this.target;
    let response: Response;
    for (let hops = 0; ; hops++) {
      response = await this.navigate(page, url);
      const next = this.redirects.get(response.request());
      if (!next) break;
      if (hops >= MAX_PAGE_REDIRECTS) {
        throw new OutboundRequestError('too_many_redirects', `Gave up after ${MAX_PAGE_REDIRECTS} redirects`, { url: response.url() });
      }
      // The same rule as the outbound client's: a redirect may not switch between http and https.
      if (next.protocol !== url.protocol) {
        throw new OutboundRequestError(
          'redirect_not_allowed',
          `Refused a redirect from ${url.protocol.slice(0, -1)} to ${next.protocol.slice(0, -1)}`,
          { url: next.href },
        );
      }
      url = next;
    }
    this.navigated = true;

    if (waitFor === 'load') {
      // Scripts often fetch their data right after load; give them a moment, not an error.
      await this.quiet(Math.min(SETTLE_MS, this.deadline - performance.now() - READ_MARGIN_MS));
    } else if (!(await this.quiet(this.deadline - performance.now() - READ_MARGIN_MS))) {
      throw new OutboundRequestError('timeout', `The page at ${this.target.host} did not go quiet within ${this.opts.timeoutMs} ms`, {
        url: this.target.href,
      });
    }

    // A cheap size check first so an oversized DOM is not copied out of the browser. (A page could
    // lie here; the renderer's heap cap still bounds what it can build.)
    const length = Number(await page.evaluate('document.documentElement ? document.documentElement.outerHTML.length : 0'));
    if (length > this.opts.maxBytes) throw this.tooLarge();
    // `content()` serializes in Playwright's isolated world, out of the page's reach.
    const body = Buffer.from(await page.content(), 'utf8');
    if (body.length > this.opts.maxBytes) throw this.tooLarge();

    const upstream = this.upstream.get(response.request());
    const headers = upstream ? flattenHeaders(upstream.headers) : await response.allHeaders();
    return {
      status: upstream?.status ?? response.status(),
      headers,
      body,
      contentType: headers['content-type'],
      finalUrl: response.url(),
    };
  }

  /** One top-level navigation; a refusal of the document itself surfaces as the outbound client's error. */
  private async navigate(page: Page, url: URL): Promise<Response> {
    let response: Response | null;
    try {
      // No Playwright timeout: the caller's deadline closes the page.
      response = await page.goto(url.href, { waitUntil: 'load', timeout: 0 });
    } catch (err) {
      if (this.mainDocumentError) throw this.mainDocumentError;
      if (this.signal.aborted) throw this.signal.reason;
      throw new Error(`The browser could not load ${url.href}: ${firstLine(err)}`, { cause: err });
    }
    if (!response) throw new Error(`The browser loaded no document for ${url.href}`);
    return response;
  }

  /** Waits until no request has been in flight for QUIET_MS; false when that did not happen within `withinMs`. */
  private async quiet(withinMs: number): Promise<boolean> {
    const until = performance.now() + withinMs;
    for (;;) {
      const now = performance.now();
      const quietFor = now - this.lastActivity;
      if (this.inFlight === 0 && quietFor >= QUIET_MS) return true;
      if (now >= until) return false;
      const wait = this.inFlight === 0 ? QUIET_MS - quietFor : 50;
      await sleep(Math.max(10, Math.min(wait, until - now)));
    }
  }

  private tooLarge(): OutboundRequestError {
    return new OutboundRequestError('response_too_large', `The rendered page from ${this.target.host} is larger than ${this.opts.maxBytes} bytes`, {
      url: this.target.href,
    });
  }

  /** A hop of the page's own address chain (later navigations by its scripts are ordinary requests). */
  private isMainDocument(request: Request): boolean {
    if (this.navigated) return false;
    try {
      const frame = request.frame();
      return request.isNavigationRequest() && frame.parentFrame() === null && frame.page() === this.page;
    } catch {
      // Service-worker requests have no frame (and service workers are blocked anyway).
      return false;
    }
  }

  private async intercept(route: Route): Promise<void> {
    this.inFlight++;
    try {
      await this.interceptTracked(route);
    } finally {
      this.inFlight--;
      this.lastActivity = performance.now();
    }
  }

  private async interceptTracked(route: Route): Promise<void> {
    const request = route.request();
    const main = this.isMainDocument(request);
    try {
      const response = await this.forward(request, main);
      this.upstream.set(request, { status: response.status, headers: response.headers });
      const location = main ? redirectLocation(response) : undefined;
      if (location !== undefined) {
        // Fulfilled without its Location (and body) the redirect is an empty document Chromium does
        // not follow; its cookies still apply. The next hop is navigated to by `render`.
        this.redirects.set(request, location);
        const headers = fulfilHeaders(response.headers);
        delete headers.location;
        await route.fulfill({ status: response.status, headers: { ...headers, 'content-type': 'text/html' }, body: '' });
        return;
      }
      await route.fulfill({ status: response.status, headers: fulfilHeaders(response.headers), body: decodeBody(response) });
    } catch (err) {
      if (main && isOutboundRequestError(err)) this.mainDocumentError ??= err;
      // Fails only when the page is already gone.
      await route.abort(abortCode(err)).catch(() => undefined);
    }
  }

  /** Performs one of the page's requests through the guarded client, within the page's limits. */
  private async forward(request: Request, main: boolean): Promise<OutboundResponse> {
    const url = new URL(request.url());
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new PolicyRefusal(`scheme ${url.protocol}`);
    if (!main && SKIPPED_RESOURCE_TYPES.has(request.resourceType())) throw new PolicyRefusal(`${request.resourceType()} not needed`);
    if (++this.requests > MAX_REQUESTS_PER_PAGE) throw new PolicyRefusal('too many requests');

    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(await request.allHeaders())) {
      if (!name.startsWith(':')) headers[name] = value;
    }
    if (headers.cookie === undefined) {
      // Interception sees the request before Chromium attaches the context's cookies.
      const cookies = await this.context.cookies(url.href);
      if (cookies.length > 0) headers.cookie = cookies.map((c) => `${c.name}=${c.value}`).join('; ');
    }
    // Bodies come back as sent; decoding is done here, bounded, only if a server ignores this.
    headers['accept-encoding'] = 'identity';
    if (url.origin === this.target.origin) for (const [name, value] of Object.entries(this.opts.headers ?? {})) headers[name.toLowerCase()] = value;

    await this.upstreamSlots.acquire(this.signal);
    try {
      const cap = await this.budget.reserve();
      if (cap <= 0) throw new PolicyRefusal('byte budget spent');
      let received = cap;
      try {
        const timeoutMs = Math.floor(this.deadline - performance.now());
        if (timeoutMs <= 0) {
          throw new OutboundRequestError('timeout', `The page at ${this.target.host} did not finish loading within ${this.opts.timeoutMs} ms`, {
            url: this.target.href,
          });
        }
        const response = await this.httpOut.request(url.href, {
          method: request.method(),
          headers,
          body: request.postDataBuffer() ?? undefined,
          // The page's own address chain is followed by `render`; anything else here, hop by hop.
          followRedirects: !main,
          timeoutMs,
          maxResponseBytes: cap,
          signal: this.signal,
        });
        received = response.body.length;
        return response;
      } catch (err) {
        // A refused or failed request fetched nothing; an oversized one used its whole share.
        if (!(isOutboundRequestError(err) && err.reason === 'response_too_large')) received = 0;
        throw err;
      } finally {
        this.budget.settle(cap, received);
      }
    } finally {
      this.upstreamSlots.release();
    }
  }
}

/** A request the page may not make (scheme, resource type, request count, byte budget). */
class PolicyRefusal extends Error {
  constructor(why: string) {
    super(`Blocked by the browser fetcher: ${why}`);
    this.name = 'PolicyRefusal';
  }
}

/** The next hop of a redirect response, or undefined when `response` is not one. */
function redirectLocation(response: OutboundResponse): URL | undefined {
  const location = response.headers.location;
  if (!REDIRECT_STATUSES.has(response.status) || typeof location !== 'string' || location === '') return undefined;
  try {
    return new URL(location, response.url);
  } catch (cause) {
    throw new OutboundRequestError('invalid_url', 'The redirect location is not a valid URL', { url: response.url, cause });
  }
}

/** The network error Chromium reports to the page for a request that was not fulfilled. */
function abortCode(err: unknown): string {
  if (!isOutboundRequestError(err)) return 'blockedbyclient';
  switch (err.reason) {
    case 'address_not_allowed':
      return 'addressunreachable';
    case 'dns_failed':
      return 'namenotresolved';
    case 'timeout':
    case 'connect_timeout':
      return 'timedout';
    case 'connection_failed':
      return 'connectionfailed';
    case 'scheme_not_allowed':
    case 'redirect_not_allowed':
    case 'response_too_large':
      return 'blockedbyclient';
    default:
      return 'failed';
  }
}

/** Headers for `route.fulfill`: one string per name; several `set-cookie` values are newline-separated. */
function fulfilHeaders(headers: OutboundResponse['headers']): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (UNFORWARDED_RESPONSE_HEADERS.has(name)) continue;
    out[name] = Array.isArray(value) ? value.join(name === 'set-cookie' ? '\n' : ', ') : value;
  }
  return out;
}

function flattenHeaders(headers: OutboundResponse['headers']): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) out[name] = Array.isArray(value) ? value.join(', ') : value;
  return out;
}

/** The body as Chromium expects it after `content-encoding` is dropped; decoded output is capped like the body. */
function decodeBody(response: OutboundResponse): Buffer {
  const raw = response.headers['content-encoding'];
  const encoding = (Array.isArray(raw) ? raw.join(',') : (raw ?? '')).trim().toLowerCase();
  if (encoding === '' || encoding === 'identity' || response.body.length === 0) return response.body;
  const limit = { maxOutputLength: Math.max(response.body.length * 20, 1024 * 1024) };
  try {
    if (encoding === 'gzip' || encoding === 'x-gzip') return gunzipSync(response.body, limit);
    if (encoding === 'deflate') return inflateSync(response.body, limit);
    if (encoding === 'br') return brotliDecompressSync(response.body, limit);
  } catch (cause) {
    throw new PolicyRefusal(`could not decode a ${encoding} body (${firstLine(cause)})`);
  }
  throw new PolicyRefusal(`unsupported content-encoding ${encoding}`);
}

function rejectOnAbort(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    else signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}

function firstLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.split('\n')[0] ?? text;
}

/** A counting semaphore whose waiters give up when their signal aborts. */
class Slots {
  private free: number;
  private readonly waiting: { grant: () => void; refuse: (err: unknown) => void }[] = [];

  constructor(size: number) {
    this.free = size;
  }

  acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.free > 0) {
      this.free--;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        refuse: (err: unknown) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      const onAbort = () => {
        const i = this.waiting.indexOf(waiter);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(waiter);
    });
  }

  release(): void {
    const next = this.waiting.shift();
    if (next) next.grant();
    else this.free++;
  }

  /** Refuses everyone still waiting. */
  close(): void {
    for (const w of this.waiting.splice(0)) w.refuse(new PolicyRefusal('the page was closed'));
  }
}

/**
 * The bytes one page may fetch in total. Each request reserves its cap before it starts (so
 * concurrent requests cannot overshoot the total) and returns what it did not use when it ends;
 * a request that cannot get a full share waits for others to settle.
 */
class ByteBudget {
  private used = 0;
  private reserved = 0;
  private closed = false;
  private waiting: (() => void)[] = [];
  private readonly total: number;
  private readonly perRequest: number;

  constructor(total: number, perRequest: number) {
    this.total = total;
    this.perRequest = perRequest;
  }

  /** The most this request may receive; 0 when the budget is spent. */
  async reserve(): Promise<number> {
    for (;;) {
      const left = this.total - this.used;
      if (this.closed || left <= 0) return 0;
      const want = Math.min(this.perRequest, left);
      if (left - this.reserved >= want) {
        this.reserved += want;
        return want;
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
  }

  settle(reservedBytes: number, usedBytes: number): void {
    this.reserved -= reservedBytes;
    this.used += usedBytes;
    for (const wake of this.waiting.splice(0)) wake();
  }

  close(): void {
    this.closed = true;
    for (const wake of this.waiting.splice(0)) wake();
  }
}
