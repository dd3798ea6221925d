/**
 * The benchmark's "internet": one process answering every monitored URL with a ~6 KB product page,
 * listening on all loopback addresses so sources can use 127.0.1.1-127.0.1.50 as distinct hosts.
 * Prints `{"port":N}` once listening.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const filler = Array.from({ length: 40 }, (_, i) => `<li class="rel"><a href="/p/${i}">Related product ${i}</a> <span class="p">$${(i * 1.37).toFixed(2)}</span></li>`).join('\n');

const server = createServer((req, res) => {
  const id = Number((req.url ?? '').split('/').pop()) || 0;
  // Prices move now and then, so some checks see changes.
  const price = (19.99 + ((id + Math.floor(Date.now() / 180_000)) % 7)).toFixed(2);
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  res.end(`<!DOCTYPE html><html><head><title>Product ${id}</title></head><body>
<header><nav><a href="/">Home</a> <a href="/shop">Shop</a></nav></header>
<main><h1 class="title"> Product ${id} </h1>
<div class="price-box"><span class="price-current" data-price="${price}">$${price}</span></div>
<span class="stock-status">${id % 5 === 0 ? 'Out of stock' : 'In stock'}</span>
<ul>${filler}</ul></main></body></html>`);
});
server.keepAliveTimeout = 10_000;
server.listen(0, '0.0.0.0', () => process.stdout.write(JSON.stringify({ port: (server.address() as AddressInfo).port }) + '\n'));
process.on('SIGTERM', () => process.exit(0));
