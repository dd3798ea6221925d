/**
 * Benchmark webhook receiver, run as its own process so it does not share a core's event loop with
 * the server under test. Answers 200 at once and records, per delivery, the receive time minus the
 * event's `timestamp`. Prints one JSON line `{"ready":port}` when listening, and on SIGTERM/"report"
 * (stdin) one JSON line with the count and every latency.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const latencies: number[] = [];
let first = 0;
let last = 0;
const seen = new Set<string>();

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const now = Date.now();
    res.writeHead(200).end();
    const id = String(req.headers['webhook-id']);
    if (seen.has(id)) return;
    seen.add(id);
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { timestamp: string };
    latencies.push(now - Date.parse(body.timestamp));
    if (!first) first = now;
    last = now;
  });
});
server.keepAliveTimeout = 5000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ ready: (server.address() as AddressInfo).port }) + '\n');
});

process.stdin.setEncoding('utf8').on('data', (s: string) => {
  if (s.includes('report')) process.stdout.write(JSON.stringify({ count: latencies.length, first, last, latencies }) + '\n');
  if (s.includes('exit')) server.close(() => process.exit(0));
});
