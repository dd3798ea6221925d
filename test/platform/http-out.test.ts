/** Outbound HTTP: address policy, SSRF refusals, redirects, timeouts and size caps, against real local servers. */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { after, describe, test } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config.ts';
import {
  checkAddress,
  createHttpOut,
  type HttpOutOptions,
  OutboundRequestError,
  type OutboundFailure,
  parseAllowPrivate,
  refusedLiteralTarget,
} from '../../src/platform/http-out/index.ts';

const UA = 'Mainspring/test (+https://mainspring.example)';

// A self-signed certificate for secure.example, used only to show that https goes through the same checks.
const TEST_TLS_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgXmoRMMfi6F47OmQG
rF9SjDVmbM34zsuSxZgBH3zRMsKhRANCAAQpy/zfEljTA/SIID+7wxHmpSxiL0M6
BD7TFuqFLYQzteqmvGZmEpy98lZ6a3kR/KYuilsd27d2d1TS0x0Egi9F
-----END PRIVATE KEY-----`;
const TEST_TLS_CERT = `-----BEGIN CERTIFICATE-----
MIIBpDCCAUqgAwIBAgIURYqd5NGEX7xvZnRUGit58VHAdGUwCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwOc2VjdXJlLmV4YW1wbGUwIBcNMjYxMTIzMTcwNTEzWhgPMjEy
NjEwMzAxNzA1MTNaMBkxFzAVBgNVBAMMDnNlY3VyZS5leGFtcGxlMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEKcv83xJY0wP0iCA/u8MR5qUsYi9DOgQ+0xbqhS2E
M7XqprxmZhKcvfJWemt5EfymLopbHdu3dndU0tMdBIIvRaNuMGwwHQYDVR0OBBYE
FJFpZji1eMzXuEw82gPHqwvFLho/MB8GA1UdIwQYMBaAFJFpZji1eMzXuEw82gPH
qwvFLho/MA8GA1UdEwEB/wQFMAMBAf8wGQYDVR0RBBIwEIIOc2VjdXJlLmV4YW1w
bGUwCgYIKoZIzj0EAwIDSAAwRQIgBhkdLYaLJlcvKYOKTr7EafwQ1GgIyy8sUNv7
StlkeM8CIQCTpmuS3/AMMDR16xuObYUi14rTQMGjAljSesEL+wjH1w==
-----END CERTIFICATE-----`;

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

interface LocalServer {
  port: number;
  host: string;
  /** `http://host:port` + path. */
  url(path?: string): string;
  /** Every request the server received, in order. */
  seen: Seen[];
}

const servers: Server[] = [];
after(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
});

/** Starts a real HTTP server on `host` that records requests and answers through `handler`. */
async function startServer(
  host: string,
  handler: (req: IncomingMessage, res: ServerResponse, server: LocalServer) => void = (_req, res) => res.end('ok'),
): Promise<LocalServer> {
  const seen: Seen[] = [];
  const local: LocalServer = { port: 0, host, seen, url: (path = '/') => `http://${host}:${local.port}${path}` };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString() });
      handler(req, res, local);
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, host, r));
  local.port = (server.address() as { port: number }).port;
  return local;
}

function client(overrides: Partial<HttpOutOptions> & { allow?: string } = {}) {
  const { allow, ...rest } = overrides;
  return createHttpOut({ allowPrivate: parseAllowPrivate(allow), userAgent: UA, ...rest });
}

/** Asserts `promise` rejects with an OutboundRequestError of `reason`; returns the error. */
async function failsWith(promise: Promise<unknown>, reason: OutboundFailure): Promise<OutboundRequestError> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof OutboundRequestError, `expected an OutboundRequestError (${reason}), got ${String(caught)}`);
  assert.equal(caught.reason, reason, caught.message);
  return caught;
}

describe('parseAllowPrivate', () => {
  test('unset or empty allows nothing; "true" allows everything', () => {
    for (const value of [undefined, '', '  ']) {
      const policy = parseAllowPrivate(value);
      assert.equal(policy.all, false);
      assert.equal(policy.ranges.length, 0);
      assert.equal(checkAddress('10.0.0.1', policy).allowed, false);
    }
    const all = parseAllowPrivate('true');
    assert.equal(all.all, true);
    for (const a of ['127.0.0.1', '::1', '169.254.169.254', '0.0.0.0']) assert.equal(checkAddress(a, all).allowed, true, a);
  });

  test('a CIDR list allows exactly those ranges, IPv4 and IPv6', () => {
    const policy = parseAllowPrivate(' 10.0.0.0/8, fd00::/8 ,192.168.1.7');
    assert.equal(policy.all, false);
    assert.deepEqual(
      policy.ranges.map((r) => [r.family, r.prefix]),
      [
        [4, 8],
        [6, 8],
        [4, 32],
      ],
    );
    assert.equal(checkAddress('10.200.3.4', policy).allowed, true);
    assert.equal(checkAddress('fd12:3456::1', policy).allowed, true);
    assert.equal(checkAddress('192.168.1.7', policy).allowed, true);
    assert.equal(checkAddress('192.168.1.8', policy).allowed, false);
    assert.equal(checkAddress('127.0.0.1', policy).allowed, false);
    assert.equal(checkAddress('fe80::1', policy).allowed, false);
  });

  test('an invalid entry throws an error naming it', () => {
    for (const bad of ['10.0.0.0/33', 'nonsense', '300.1.2.3/8', 'fd00::/129', '10.0.0.0/', '/8', '10.0.0.0/8/8', '10.0.0/8', 'yes']) {
      assert.throws(
        () => parseAllowPrivate(`192.168.0.0/16,${bad}`),
        (err: Error) => err.message.includes(`"${bad}"`),
        bad,
      );
    }
  });

  test('loadConfig reads ALLOW_PRIVATE_URLS and names it when invalid', () => {
    const base = { JWT_SECRET: 'x'.repeat(32), SECRETS_KEY: 'y'.repeat(32) };
    assert.equal(loadConfig(base).allowPrivateUrls.all, false);
    assert.equal(loadConfig(base).allowPrivateUrls.ranges.length, 0);
    assert.equal(loadConfig({ ...base, ALLOW_PRIVATE_URLS: 'true' }).allowPrivateUrls.all, true);
    assert.equal(loadConfig({ ...base, ALLOW_PRIVATE_URLS: '10.0.0.0/8' }).allowPrivateUrls.ranges.length, 1);
    assert.throws(
      () => loadConfig({ ...base, ALLOW_PRIVATE_URLS: '10.0.0.0/8,10.0.0.0/99' }),
      (err: Error) => err instanceof ConfigError && err.message.includes('ALLOW_PRIVATE_URLS') && err.message.includes('10.0.0.0/99'),
    );
  });
});

describe('checkAddress', () => {
  test('refuses every non-public range by default, with its category', () => {
    const refused: [string, RegExp][] = [
      ['127.0.0.1', /loopback/],
      ['127.255.0.9', /loopback/],
      ['::1', /loopback/],
      ['0.0.0.0', /unspecified/],
      ['0.1.2.3', /unspecified/],
      ['::', /unspecified/],
      ['10.1.2.3', /private/],
      ['172.16.0.1', /private/],
      ['172.31.255.255', /private/],
      ['192.168.0.1', /private/],
      ['169.254.1.1', /link-local/],
      ['fe80::1', /link-local/],
      ['fe80::1%eth0', /link-local/],
      ['100.64.0.1', /carrier-grade NAT/],
      ['224.0.0.1', /multicast/],
      ['239.255.255.250', /multicast/],
      ['ff02::1', /multicast/],
      ['240.0.0.1', /reserved/],
      ['255.255.255.255', /broadcast/],
      ['192.0.0.8', /IETF/],
      ['192.0.2.1', /documentation/],
      ['198.18.0.1', /benchmarking/],
      ['198.19.255.1', /benchmarking/],
      ['198.51.100.1', /documentation/],
      ['203.0.113.1', /documentation/],
      ['fc00::1', /unique-local/],
      ['fdff::1', /unique-local/],
      ['2001::1', /Teredo/],
      ['2001:0:4136:e378:8000:63bf:3fff:fdd2', /Teredo/],
      ['2001:db8::1', /documentation/],
      ['169.254.169.254', /metadata/],
      ['fd00:ec2::254', /metadata/],
      ['100.100.100.200', /metadata/],
      ['::ffff:169.254.169.254', /metadata/],
      ['ff00::', /multicast/],
      ['4000::1', /reserved/],
    ];
    for (const [address, category] of refused) {
      const verdict = checkAddress(address);
      assert.equal(verdict.allowed, false, `${address} must be refused`);
      if (!verdict.allowed) assert.match(verdict.category, category, address);
    }
  });

  test('IPv4-mapped, -compatible, -translated, 6to4 and NAT64 forms of 127.0.0.1 are refused', () => {
    const forms = [
      '::ffff:127.0.0.1',
      '::ffff:7f00:1',
      '[::ffff:7f00:1]',
      '0:0:0:0:0:ffff:7f00:0001',
      '::127.0.0.1',
      '::7f00:1',
      '::ffff:0:7f00:1',
      '2002:7f00:1::',
      '2002:7f00:0001:abcd::1',
      '64:ff9b::7f00:1',
      '64:ff9b::127.0.0.1',
    ];
    for (const address of forms) {
      const verdict = checkAddress(address);
      assert.equal(verdict.allowed, false, `${address} must be refused`);
      if (!verdict.allowed) assert.match(verdict.category, /loopback/, address);
    }
    // The same forms around other private addresses.
    for (const address of ['::ffff:10.0.0.1', '2002:c0a8:101::', '64:ff9b::a9fe:a9fe', '::ffff:0.0.0.0']) {
      assert.equal(checkAddress(address).allowed, false, address);
    }
  });

  test('public addresses pass, including embedded forms that carry a public IPv4', () => {
    for (const address of [
      '8.8.8.8',
      '1.1.1.1',
      '93.184.216.34',
      '172.32.0.1',
      '100.128.0.1',
      '2606:4700:4700::1111',
      '2a00:1450:4001:80b::200e',
      '::ffff:8.8.8.8',
      '2002:808:808::1',
      '64:ff9b::808:808',
    ]) {
      assert.deepEqual(checkAddress(address), { allowed: true }, address);
    }
    assert.equal(checkAddress('not-an-ip').allowed, false);
  });

  test('an allowed range opens its addresses (and their IPv4-mapped forms) but a metadata endpoint only when named exactly', () => {
    const loopback = parseAllowPrivate('127.0.0.0/8');
    assert.equal(checkAddress('127.0.0.5', loopback).allowed, true);
    assert.equal(checkAddress('::ffff:127.0.0.5', loopback).allowed, true);
    assert.equal(checkAddress('::1', loopback).allowed, false);
    const linkLocal = parseAllowPrivate('169.254.0.0/16');
    assert.equal(checkAddress('169.254.1.1', linkLocal).allowed, true);
    assert.equal(checkAddress('169.254.169.254', linkLocal).allowed, false);
    assert.equal(checkAddress('169.254.169.254', parseAllowPrivate('169.254.169.254/32')).allowed, true);
  });
});

describe('refusals by default', { timeout: 15_000 }, () => {
  test('loopback, unspecified, metadata and disguised IPv4 literals never reach the server', async () => {
    const target = await startServer('127.0.0.1');
    const http = client();
    const urls = [
      target.url(),
      `http://[::1]:${target.port}/`,
      `http://0.0.0.0:${target.port}/`,
      'http://169.254.169.254/latest/meta-data/',
      `http://[::ffff:127.0.0.1]:${target.port}/`,
      `http://2130706433:${target.port}/`,
      `http://0x7f.0.0.1:${target.port}/`,
      `http://0177.0.0.1:${target.port}/`,
      `http://127.1:${target.port}/`,
    ];
    for (const url of urls) {
      const err = await failsWith(http.request(url), 'address_not_allowed');
      assert.ok(err.address, `${url}: the refused address is reported`);
      assert.match(err.message, /Refused to connect/);
    }
    assert.equal(target.seen.length, 0, 'no request reached the server');
  });

  test('localhost is refused by the address it resolves to', async () => {
    const target = await startServer('127.0.0.1');
    const err = await failsWith(client().request(`http://localhost:${target.port}/`), 'address_not_allowed');
    assert.match(err.address ?? '', /^(127\.|::1$|::ffff:127\.)/);
    assert.equal(target.seen.length, 0);
  });

  test('a name resolving to a private address is refused, as is one with any private address among public ones', async () => {
    const target = await startServer('127.0.0.1');
    const asked: string[] = [];
    const onlyPrivate = client({
      resolve: async (hostname) => {
        asked.push(hostname);
        return [{ address: '127.0.0.1', family: 4 }];
      },
    });
    const err = await failsWith(onlyPrivate.request(`http://intranet.example:${target.port}/`), 'address_not_allowed');
    assert.equal(err.address, '127.0.0.1');
    assert.match(err.message, /intranet\.example/);
    assert.deepEqual(asked, ['intranet.example']);

    const mixed = client({
      resolve: async () => [
        { address: '93.184.216.34', family: 4 },
        { address: '10.0.0.8', family: 4 },
      ],
    });
    const mixedErr = await failsWith(mixed.request('http://mixed.example/'), 'address_not_allowed');
    assert.equal(mixedErr.address, '10.0.0.8');
    assert.equal(target.seen.length, 0);
  });

  test('a redirect from an allowed host to a private one is refused', async () => {
    const target = await startServer('127.0.0.1');
    const allowed = await startServer('127.0.0.2', (_req, res) => {
      res.writeHead(302, { location: target.url('/secret') }).end();
    });
    const err = await failsWith(client({ allow: '127.0.0.2/32' }).request(allowed.url('/start')), 'address_not_allowed');
    assert.equal(err.address, '127.0.0.1');
    assert.equal(allowed.seen.length, 1, 'the allowed host was called');
    assert.equal(target.seen.length, 0, 'the private host was not');
  });

  test('a redirect that changes protocol is refused', async () => {
    const origin = await startServer('127.0.0.2', (_req, res) => {
      res.writeHead(301, { location: `https://127.0.0.2:${origin.port}/secure` }).end();
    });
    const err = await failsWith(client({ allow: 'true' }).request(origin.url()), 'redirect_not_allowed');
    assert.match(err.message, /http to https/);
    assert.equal(origin.seen.length, 1);
  });

  test('schemes other than http and https are refused, directly or by redirect', async () => {
    const http = client({ allow: 'true' });
    for (const url of ['file:///etc/passwd', 'gopher://127.0.0.1:70/_stats', 'ftp://example.com/x', 'data:text/plain,hi', 'javascript:alert(1)', 'ws://example.com/']) {
      await failsWith(http.request(url), 'scheme_not_allowed');
    }
    await failsWith(http.request('not a url'), 'invalid_url');
    await failsWith(http.request('http://'), 'invalid_url');
    const redirector = await startServer('127.0.0.2', (_req, res) => {
      res.writeHead(302, { location: 'file:///etc/passwd' }).end();
    });
    await failsWith(http.request(redirector.url()), 'scheme_not_allowed');
  });

  test('DNS failure reports dns_failed', async () => {
    const http = client({
      resolve: async () => {
        throw Object.assign(new Error('getaddrinfo ENOTFOUND nowhere.example'), { code: 'ENOTFOUND' });
      },
    });
    const err = await failsWith(http.request('http://nowhere.example/'), 'dns_failed');
    assert.match(err.message, /nowhere\.example/);
    await failsWith(client({ resolve: async () => [] }).request('http://empty.example/'), 'dns_failed');
  });
});

describe('allowed requests', { timeout: 15_000 }, () => {
  test('an allowed CIDR works and returns status, body, headers, final URL and timing', async () => {
    const server = await startServer('127.0.0.2', (req, res) => {
      res.setHeader('set-cookie', ['a=1', 'b=2']);
      res.writeHead(201, { 'content-type': 'application/json', 'x-echo': req.headers['x-test'] ?? '' });
      res.end(JSON.stringify({ method: req.method }));
    });
    const res = await client({ allow: '127.0.0.2/32' }).request(server.url('/things?q=1'), {
      method: 'post',
      headers: { 'X-Test': 'yes', 'Content-Type': 'application/json' },
      body: '{"a":1}',
    });
    assert.equal(res.status, 201);
    assert.deepEqual(JSON.parse(res.body.toString()), { method: 'POST' });
    assert.equal(res.headers['content-type'], 'application/json');
    assert.equal(res.headers['x-echo'], 'yes');
    assert.deepEqual(res.headers['set-cookie'], ['a=1', 'b=2']);
    assert.equal(res.url, server.url('/things?q=1'));
    assert.equal(res.redirects, 0);
    assert.ok(res.durationMs >= 0 && res.durationMs < 5000);
    assert.equal(server.seen[0]?.body, '{"a":1}');
    assert.equal(server.seen[0]?.headers['content-length'], '7');
  });

  test('ALLOW_PRIVATE_URLS=true reaches loopback, by literal and by localhost', async () => {
    const server = await startServer('127.0.0.1', (_req, res) => res.end('hello'));
    const http = client({ allow: 'true' });
    assert.equal((await http.request(server.url())).body.toString(), 'hello');
    assert.equal((await http.request(`http://localhost:${server.port}/`)).status, 200);
  });

  test('a resolved name is checked at connect time, on every connection', async () => {
    const server = await startServer('127.0.0.2');
    // Rebinding: the name first resolves to the allowed address, then to a refused one.
    const answers = ['127.0.0.2', '127.0.0.1'];
    const http = client({ allow: '127.0.0.2/32', resolve: async () => [{ address: answers.shift() ?? '127.0.0.1', family: 4 }] });
    const url = `http://rebind.example:${server.port}/`;
    assert.equal((await http.request(url)).status, 200);
    await failsWith(http.request(url), 'address_not_allowed');
    assert.equal(server.seen.length, 1);
    assert.equal(server.seen[0]?.headers.host, `rebind.example:${server.port}`);
  });

  test('User-Agent names Mainspring unless the caller sets one', async () => {
    const server = await startServer('127.0.0.2');
    const http = client({ allow: '127.0.0.2' });
    await http.request(server.url());
    await http.request(server.url(), { headers: { 'user-agent': 'custom/1' } });
    assert.equal(server.seen[0]?.headers['user-agent'], UA);
    assert.equal(server.seen[1]?.headers['user-agent'], 'custom/1');
  });
});

describe('https', { timeout: 15_000 }, () => {
  test('https connections resolve through the same check and verify certificates', async () => {
    const server = createHttpsServer({ key: TEST_TLS_KEY, cert: TEST_TLS_CERT }, (_req, res) => res.end('secret'));
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.2', r));
    const port = (server.address() as { port: number }).port;
    let hits = 0;
    server.on('secureConnection', () => hits++);
    const asked: string[] = [];
    const to = (address: string) =>
      client({
        allow: '127.0.0.2/32',
        resolve: async (hostname) => {
          asked.push(hostname);
          return [{ address, family: 4 }];
        },
      });
    await failsWith(to('127.0.0.1').request(`https://secure.example:${port}/`), 'address_not_allowed');
    await failsWith(client().request(`https://127.0.0.2:${port}/`), 'address_not_allowed');
    // Allowed address, but the certificate is self-signed: the handshake is refused, not ignored.
    const err = await failsWith(to('127.0.0.2').request(`https://secure.example:${port}/`), 'connection_failed');
    assert.match(err.message, /TLS certificate not accepted/);
    assert.deepEqual(asked, ['secure.example', 'secure.example']);
    assert.equal(hits, 0);
  });
});

describe('redirects', { timeout: 15_000 }, () => {
  /** `/hop/N` redirects to `/hop/N-1`; `/hop/0` answers 200. */
  async function chainServer() {
    return startServer('127.0.0.2', (req, res) => {
      const n = Number(/^\/hop\/(\d+)$/.exec(req.url ?? '')?.[1] ?? 0);
      if (n > 0) res.writeHead(302, { location: `/hop/${n - 1}` }).end();
      else res.end('arrived');
    });
  }

  test('a chain of 5 redirects is followed; a chain of 6 fails with too_many_redirects', async () => {
    const server = await chainServer();
    const http = client({ allow: '127.0.0.2/32' });
    const ok = await http.request(server.url('/hop/5'));
    assert.equal(ok.status, 200);
    assert.equal(ok.body.toString(), 'arrived');
    assert.equal(ok.redirects, 5);
    assert.equal(ok.url, server.url('/hop/0'));
    const before = server.seen.length;
    await failsWith(http.request(server.url('/hop/6')), 'too_many_redirects');
    assert.equal(server.seen.length - before, 6, 'stopped after the sixth redirect response');
    await failsWith(client({ allow: '127.0.0.2/32', maxRedirects: 1 }).request(server.url('/hop/2')), 'too_many_redirects');
  });

  test('followRedirects: false returns the 3xx as is', async () => {
    const server = await startServer('127.0.0.2', (_req, res) => {
      res.writeHead(302, { location: 'http://127.0.0.1/elsewhere' }).end('moved');
    });
    const res = await client({ allow: '127.0.0.2/32' }).request(server.url(), { followRedirects: false });
    assert.equal(res.status, 302);
    assert.equal(res.headers.location, 'http://127.0.0.1/elsewhere');
    assert.equal(res.body.toString(), 'moved');
    assert.equal(res.redirects, 0);
  });

  test('303, and 301/302 after POST, switch to GET without a body; 307 keeps method and body', async () => {
    const server = await startServer('127.0.0.2', (req, res) => {
      const m = /^\/(\d{3})$/.exec(req.url ?? '');
      if (m) res.writeHead(Number(m[1]), { location: '/done' }).end();
      else res.end(`${req.method}`);
    });
    const http = client({ allow: '127.0.0.2/32' });
    const cases: [number, string, string][] = [
      [303, 'POST', 'GET'],
      [303, 'PUT', 'GET'],
      [302, 'POST', 'GET'],
      [301, 'POST', 'GET'],
      [302, 'PUT', 'PUT'],
      [307, 'POST', 'POST'],
      [308, 'POST', 'POST'],
    ];
    for (const [status, method, expected] of cases) {
      const start = server.seen.length;
      const res = await http.request(server.url(`/${status}`), { method, body: 'payload', headers: { 'content-type': 'text/plain' } });
      assert.equal(res.body.toString(), expected, `${status} after ${method}`);
      const hop = server.seen[start + 1];
      assert.equal(hop?.method, expected);
      if (expected === 'GET') {
        assert.equal(hop?.body, '', `${status}: body dropped`);
        assert.equal(hop?.headers['content-type'], undefined, `${status}: body headers dropped`);
      } else {
        assert.equal(hop?.body, 'payload', `${status}: body kept`);
      }
    }
  });

  test('Authorization is kept on same-origin hops and dropped on cross-origin hops', async () => {
    const other = await startServer('127.0.0.3');
    const server = await startServer('127.0.0.2', (req, res) => {
      if (req.url === '/same') res.writeHead(302, { location: '/landing' }).end();
      else if (req.url === '/cross') res.writeHead(302, { location: other.url('/landing') }).end();
      else res.end('ok');
    });
    const http = client({ allow: '127.0.0.2/32,127.0.0.3/32' });
    const headers = { authorization: 'Bearer secret', 'x-keep': 'kept' };
    await http.request(server.url('/same'), { headers });
    assert.equal(server.seen[1]?.headers.authorization, 'Bearer secret');
    const res = await http.request(server.url('/cross'), { headers });
    assert.equal(res.url, other.url('/landing'));
    assert.equal(other.seen[0]?.headers.authorization, undefined);
    assert.equal(other.seen[0]?.headers['x-keep'], 'kept');
  });
});

describe('limits', { timeout: 15_000 }, () => {
  test('a body larger than the cap fails with response_too_large, with or without Content-Length', async () => {
    let streamedBytes = 0;
    const server = await startServer('127.0.0.2', (req, res) => {
      if (req.url === '/declared') {
        res.writeHead(200, { 'content-length': String(64 * 1024) }).end(Buffer.alloc(64 * 1024));
        return;
      }
      if (req.url === '/announced') {
        // Announces a gigabyte, sends a few bytes and waits: only the early check can end this quickly.
        res.writeHead(200, { 'content-length': String(1024 ** 3) }).write('tiny');
        return;
      }
      // No Content-Length: a chunked stream that would go on for a long time.
      const chunk = Buffer.alloc(4096, 97);
      const timer = setInterval(() => {
        if (res.destroyed) return clearInterval(timer);
        streamedBytes += chunk.length;
        res.write(chunk);
        if (streamedBytes > 50 * 1024 * 1024) {
          clearInterval(timer);
          res.end();
        }
      }, 1);
      res.on('close', () => clearInterval(timer));
    });
    const http = client({ allow: '127.0.0.2/32', maxResponseBytes: 16 * 1024 });
    const declared = await failsWith(http.request(server.url('/declared')), 'response_too_large');
    assert.match(declared.message, /16384 bytes/);
    await failsWith(http.request(server.url('/announced'), { timeoutMs: 3000 }), 'response_too_large');
    await failsWith(http.request(server.url('/stream')), 'response_too_large');
    assert.ok(streamedBytes < 5 * 1024 * 1024, `stopped reading early (${streamedBytes} bytes sent)`);
    // The per-request cap overrides the client's.
    const fits = await http.request(server.url('/declared'), { maxResponseBytes: 64 * 1024 });
    assert.equal(fits.body.length, 64 * 1024);
  });

  test('a server that never answers fails with timeout within the budget', async () => {
    const server = await startServer('127.0.0.2', () => {
      // Never respond.
    });
    const http = client({ allow: '127.0.0.2/32' });
    const started = Date.now();
    const err = await failsWith(http.request(server.url(), { timeoutMs: 300 }), 'timeout');
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 250 && elapsed < 2000, `took ${elapsed} ms`);
    assert.match(err.message, /300 ms/);
    assert.equal(server.seen.length, 1);
  });

  test('a connection that cannot be set up in time fails with connect_timeout', async () => {
    const http = client({ connectTimeoutMs: 200, resolve: () => new Promise(() => {}) });
    const started = Date.now();
    await failsWith(http.request('http://stuck.example/'), 'connect_timeout');
    assert.ok(Date.now() - started < 2000);
  });

  test("aborting the caller's signal rejects with its reason", async () => {
    const server = await startServer('127.0.0.2', () => {});
    const controller = new AbortController();
    const pending = client({ allow: '127.0.0.2/32' }).request(server.url(), { signal: controller.signal });
    setTimeout(() => controller.abort(new Error('stopped by caller')), 50);
    await assert.rejects(pending, /stopped by caller/);
  });

  test('a refused connection reports connection_failed without internal details', async () => {
    const server = await startServer('127.0.0.2');
    const port = server.port;
    const last = servers.at(-1)!;
    last.closeAllConnections();
    await new Promise<void>((r) => last.close(() => r()));
    servers.pop();
    const err = await failsWith(client({ allow: '127.0.0.2/32' }).request(`http://127.0.0.2:${port}/`), 'connection_failed');
    assert.match(err.message, /connection refused/);
    assert.doesNotMatch(err.message, /ECONNREFUSED|at |\//);
  });
});

test('refusedLiteralTarget: stored URLs with a literal private host or localhost are refused, names are left to connect time', () => {
  const none = parseAllowPrivate(undefined);
  assert.equal(refusedLiteralTarget('http://169.254.169.254/latest', none), 'cloud metadata');
  assert.ok(refusedLiteralTarget('http://[::1]:8080/hook', none));
  assert.ok(refusedLiteralTarget('http://localhost/hook', none));
  assert.ok(refusedLiteralTarget('http://10.1.2.3/hook', none));
  assert.equal(refusedLiteralTarget('https://example.com/hook', none), null);
  assert.equal(refusedLiteralTarget('http://93.184.216.34/hook', none), null);
  assert.equal(refusedLiteralTarget('http://127.0.0.1:9000/hook', parseAllowPrivate('127.0.0.1/32')), null);
});
