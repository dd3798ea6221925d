/**
 * `fetcher: browser` against real local servers: rendering, redirects, and that every request the
 * page makes goes through the guarded outbound client (refused addresses are never reached).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type BrowserFetcher, createBrowserFetcher, NO_CHROMIUM_REASON } from '../../src/domains/monitoring/browser.ts';
import { ALLOW_NO_PRIVATE, createHttpOut, type HttpOut, OutboundRequestError, parseAllowPrivate } from '../../src/platform/http-out/index.ts';

interface LocalServer {
  url(path?: string): string;
  /** TCP connections accepted (a preconnect or WebSocket counts even without an HTTP request). */
  connections(): number;
  headersOf(path: string): IncomingMessage['headers'] | undefined;
  /** Most requests to `/slow` in flight at once. */
  maxSlowInFlight(): number;
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

const servers: Server[] = [];
const fetchers: BrowserFetcher[] = [];

async function startServer(host: string, routes: Record<string, Handler>): Promise<LocalServer> {
  const headers = new Map<string, IncomingMessage['headers']>();
  let connections = 0;
  let slowInFlight = 0;
  let maxSlow = 0;
  let base = '';
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    headers.set(path, req.headers);
    if (path === '/slow') {
      slowInFlight++;
      maxSlow = Math.max(maxSlow, slowInFlight);
      setTimeout(() => {
        slowInFlight--;
        html(res, '<p id=slow>done</p>');
      }, 800);
      return;
    }
    const route = routes[path];
    if (route) route(req, res);
    else {
      res.statusCode = 404;
      res.end('not here');
    }
  });
  server.on('connection', () => connections++);
  server.on('upgrade', (_req, socket) => socket.destroy());
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, host, r));
  base = `http://${host}:${(server.address() as AddressInfo).port}`;
  return {
    url: (path = '/') => `${base}${path}`,
    connections: () => connections,
    headersOf: (path) => headers.get(path),
    maxSlowInFlight: () => maxSlow,
  };
}

function html(res: ServerResponse, body: string, extra: Record<string, string | string[]> = {}): void {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', ...extra });
  res.end(`<!doctype html><html><head><title>t</title></head><body>${body}</body></html>`);
}

function redirect(res: ServerResponse, location: string, extra: Record<string, string | string[]> = {}): void {
  res.writeHead(302, { location, ...extra });
  res.end();
}

/** Whether `pid` is a live (not zombie) Chromium process. */
function isChromium(pid: number): boolean {
  try {
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0];
    return state !== 'Z' && /chrom/i.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
  } catch {
    return false;
  }
}

/**
 * Chromium processes started by this test process (its descendants, so browsers other test files
 * run at the same time do not count); null where there is no /proc.
 */
function ownChromiumPids(): Set<number> | null {
  let entries: string[];
  try {
    entries = readdirSync('/proc').filter((e) => /^\d+$/.test(e));
  } catch {
    return null;
  }
  const parent = new Map<number, number>();
  for (const entry of entries) {
    try {
      const afterName = readFileSync(`/proc/${entry}/stat`, 'utf8').split(') ')[1] ?? '';
      parent.set(Number(entry), Number(afterName.split(' ')[1]));
    } catch {
      // Gone between listing and reading.
    }
  }
  const descends = (pid: number): boolean => {
    for (let p = parent.get(pid), hops = 0; p !== undefined && p > 1 && hops < 50; p = parent.get(p), hops++) {
      if (p === process.pid) return true;
    }
    return false;
  };
  return new Set([...parent.keys()].filter((pid) => descends(pid) && isChromium(pid)));
}

/** The pids still alive after `withinMs` (a leaked child of a closed browser is reparented, so liveness alone counts). */
async function waitUntilGone(pids: number[], withinMs: number): Promise<number[]> {
  const until = Date.now() + withinMs;
  for (;;) {
    const left = pids.filter(isChromium);
    if (left.length === 0 || Date.now() > until) return left;
    await sleep(100);
  }
}

// The same setting the server reads (config `CHROMIUM_PATH`); unset = the usual install locations.
const executablePath = process.env.CHROMIUM_PATH || undefined;
const permissive = createHttpOut({ allowPrivate: parseAllowPrivate('true'), userAgent: 'test' });
const PAGE = { timeoutMs: 10_000, maxBytes: 1024 * 1024 };

function fetcherWith(httpOut: HttpOut, opts: { maxPages?: number; idleCloseMs?: number } = {}): BrowserFetcher {
  const f = createBrowserFetcher({ executablePath, httpOut, ...opts });
  fetchers.push(f);
  return f;
}

// Decided before any test is registered, so the suite is skipped (with the reason) or run as a whole.
const probe = createBrowserFetcher({ executablePath, httpOut: permissive });
const availability = await probe.available();
await probe.close();

test('no Chromium at the configured path: available() says why and fetch() throws the same reason', async () => {
  const missing = createBrowserFetcher({ executablePath: '/nonexistent/chromium', httpOut: permissive });
  assert.deepEqual(await missing.available(), { ok: false, reason: NO_CHROMIUM_REASON });
  await assert.rejects(missing.fetch('http://127.0.0.1:1/', PAGE), (err: Error) => err.message === NO_CHROMIUM_REASON);
  await missing.close();
});

describe('browser fetcher', { skip: availability.ok ? false : `Chromium is not available here: ${availability.reason}` }, () => {
  const PRICE_PAGE =
    '<div id=price></div><script>fetch("/api/price").then(r => r.json()).then(j => { document.getElementById("price").textContent = j.price; })</script>';
  let a: LocalServer;
  let b: LocalServer;
  const shared = fetcherWith(permissive);

  after(async () => {
    for (const f of fetchers) await f.close();
    for (const s of servers) {
      s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
  });

  before(async () => {
    b = await startServer('127.0.0.2', {
      '/': (_req, res) => html(res, 'secret'),
      '/x.js': (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/javascript' });
        res.end('document.title = "pwned"');
      },
    });
    a = await startServer('127.0.0.1', {
      '/app': (_req, res) => html(res, PRICE_PAGE, { 'x-served-by': 'a' }),
      '/api/price': (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ price: '42.50' }));
      },
      '/old': (_req, res) => redirect(res, '/app'),
      '/login': (_req, res) => redirect(res, '/whoami', { 'set-cookie': 'session=s3cret; Path=/' }),
      '/whoami': (req, res) => html(res, `<p id=cookie>${req.headers.cookie ?? 'none'}</p><p id=extra>${req.headers['x-monitor'] ?? 'none'}</p>`),
      '/to-b': (_req, res) => redirect(res, b.url('/')),
      '/hostile': (_req, res) =>
        html(
          res,
          `<link rel=preconnect href="${b.url('/')}"><link rel=dns-prefetch href="${b.url('/')}">
          <img src="${b.url('/img.png')}"><iframe src="${b.url('/')}"></iframe>
          <script src="${b.url('/x.js')}"></script>
          <p id=status>pending</p>
          <script>
            const tries = [
              fetch(${JSON.stringify(b.url('/'))}).then(() => 'reached', () => 'blocked'),
              fetch('http://169.254.169.254/latest/meta-data/').then(() => 'reached', () => 'blocked'),
              new Promise((resolve) => {
                const ws = new WebSocket(${JSON.stringify(b.url('/').replace('http', 'ws'))});
                ws.onopen = () => resolve('reached');
                ws.onerror = ws.onclose = () => resolve('blocked');
              }),
              fetch('/api/price').then(() => 'reached', () => 'blocked'),
            ];
            Promise.all(tries).then((r) => { document.getElementById('status').textContent = r.join(','); });
          </script>`,
        ),
      '/hang': (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/html' });
        res.write('<html><body><p>still loading');
      },
      '/busy': (_req, res) => html(res, '<p>spinning</p><script>for (;;) {}</script>'),
      '/big': (_req, res) => html(res, '<div id=big></div><script>document.getElementById("big").textContent = "x".repeat(50000)</script>'),
    });
  });

  test('renders the page after its scripts ran, through the interception', async () => {
    const page = await shared.fetch(a.url('/app'), PAGE);
    const text = page.body.toString('utf8');
    assert.match(text, /<div id="price">42\.50<\/div>/);
    assert.equal(page.status, 200);
    assert.equal(page.headers['x-served-by'], 'a');
    assert.equal(page.contentType, 'text/html; charset=utf-8');
    assert.equal(page.finalUrl, a.url('/app'));
    assert.ok(page.durationMs > 0);
    // Chromium asks for compressed bodies; the outbound client asks for identity: the script's
    // request was performed by the server, not by the browser.
    assert.equal(a.headersOf('/api/price')?.['accept-encoding'], 'identity');
  });

  test('follows redirects; finalUrl is where the page ended up', async () => {
    const page = await shared.fetch(a.url('/old'), PAGE);
    assert.equal(page.finalUrl, a.url('/app'));
    assert.equal(page.status, 200);
    assert.match(page.body.toString('utf8'), /42\.50/);
  });

  test('cookies set on a redirect and the caller\'s headers reach the page\'s origin', async () => {
    const page = await shared.fetch(a.url('/login'), { ...PAGE, headers: { 'X-Monitor': 'yes' } });
    const text = page.body.toString('utf8');
    assert.match(text, /<p id="cookie">session=s3cret<\/p>/);
    assert.match(text, /<p id="extra">yes<\/p>/);
  });

  test('a private address is refused with the outbound client\'s reason, and the server sees nothing', async () => {
    const strict = fetcherWith(createHttpOut({ allowPrivate: ALLOW_NO_PRIVATE, userAgent: 'test' }));
    const before = a.connections();
    await assert.rejects(strict.fetch(a.url('/app'), PAGE), (err: unknown) => {
      assert.ok(err instanceof OutboundRequestError);
      assert.equal(err.reason, 'address_not_allowed');
      return true;
    });
    assert.equal(a.connections(), before);
    await strict.close();
  });

  test('a redirect to a refused address is refused; that server is never contacted', async () => {
    const onlyA = fetcherWith(createHttpOut({ allowPrivate: parseAllowPrivate('127.0.0.1/32'), userAgent: 'test' }));
    await assert.rejects(onlyA.fetch(a.url('/to-b'), PAGE), (err: unknown) => err instanceof OutboundRequestError && err.reason === 'address_not_allowed');
    assert.equal(b.connections(), 0);
    await onlyA.close();
  });

  test('a page reaching for refused addresses still renders, and none of its attempts arrive', async () => {
    const onlyA = fetcherWith(createHttpOut({ allowPrivate: parseAllowPrivate('127.0.0.1/32'), userAgent: 'test' }));
    const page = await onlyA.fetch(a.url('/hostile'), PAGE);
    const text = page.body.toString('utf8');
    assert.match(text, /<p id="status">blocked,blocked,blocked,reached<\/p>/);
    assert.doesNotMatch(text, /pwned/);
    // Scripts, fetches, frames, preconnects and WebSockets: not one TCP connection reached B.
    assert.equal(b.connections(), 0);
    await onlyA.close();
  });

  test('a page that never finishes loading times out', async () => {
    const started = Date.now();
    await assert.rejects(shared.fetch(a.url('/hang'), { ...PAGE, timeoutMs: 1500 }), (err: unknown) => {
      assert.ok(err instanceof OutboundRequestError);
      assert.equal(err.reason, 'timeout');
      assert.match(err.message, /within 1500 ms/);
      return true;
    });
    const took = Date.now() - started;
    assert.ok(took < 1500 + 1000, `took ${took} ms`);
  });

  test('a page whose script never yields times out, and the browser goes on serving', async () => {
    const started = Date.now();
    await assert.rejects(
      shared.fetch(a.url('/busy'), { ...PAGE, timeoutMs: 1500 }),
      (err: unknown) => err instanceof OutboundRequestError && err.reason === 'timeout',
    );
    assert.ok(Date.now() - started < 1500 + 1000, `took ${Date.now() - started} ms`);
    const page = await shared.fetch(a.url('/app'), PAGE);
    assert.match(page.body.toString('utf8'), /42\.50/);
  });

  test('an aborted signal stops the fetch', async () => {
    const controller = new AbortController();
    const pending = shared.fetch(a.url('/hang'), { ...PAGE, signal: controller.signal });
    setTimeout(() => controller.abort(new Error('stopped by caller')), 300);
    await assert.rejects(pending, /stopped by caller/);
  });

  test('a rendered page larger than maxBytes is refused', async () => {
    await assert.rejects(
      shared.fetch(a.url('/big'), { ...PAGE, maxBytes: 10_000 }),
      (err: unknown) => err instanceof OutboundRequestError && err.reason === 'response_too_large',
    );
  });

  test('at most maxPages pages render at once; the rest wait their turn', async () => {
    const two = fetcherWith(permissive, { maxPages: 2 });
    const pages = await Promise.all(Array.from({ length: 6 }, (_, i) => two.fetch(a.url(`/slow?i=${i}`), PAGE)));
    for (const page of pages) assert.match(page.body.toString('utf8'), /<p id="slow">done<\/p>/);
    assert.ok(a.maxSlowInFlight() <= 2, `${a.maxSlowInFlight()} pages were requested at once`);
    await two.close();
  });

  test('close() leaves no Chromium process behind', { skip: ownChromiumPids() === null ? 'needs /proc' : false }, async () => {
    const before = ownChromiumPids() ?? new Set<number>();
    const own = fetcherWith(permissive);
    await own.fetch(a.url('/app'), PAGE);
    const started = [...(ownChromiumPids() ?? [])].filter((p) => !before.has(p));
    assert.ok(started.length > 0, 'the fetch started Chromium');
    await own.close();
    assert.deepEqual(await waitUntilGone(started, 5000), []);
  });

  test('an idle browser closes by itself', { skip: ownChromiumPids() === null ? 'needs /proc' : false }, async () => {
    const before = ownChromiumPids() ?? new Set<number>();
    const idle = fetcherWith(permissive, { idleCloseMs: 200 });
    await idle.fetch(a.url('/app'), PAGE);
    const started = [...(ownChromiumPids() ?? [])].filter((p) => !before.has(p));
    assert.ok(started.length > 0, 'the fetch started Chromium');
    assert.deepEqual(await waitUntilGone(started, 5000), []);
    // And it comes back on the next fetch.
    const page = await idle.fetch(a.url('/app'), PAGE);
    assert.match(page.body.toString('utf8'), /42\.50/);
  });
});
