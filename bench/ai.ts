/**
 * Added latency of the AI layer over a direct HTTP call to the same model server.
 *
 *   node bench/ai.ts                (BENCH_CALLS=2000, BENCH_WARMUP=200)
 *
 * A local server speaking the OpenAI Chat Completions protocol runs as a child process and answers
 * at once (a 5-word reply, streamed as 5 deltas). For each call shape, a direct call — `fetch`, then
 * JSON parse (plain) or reading the SSE stream to `[DONE]` (streamed) — and the same call through
 * `AiService.chat` / `AiService.stream` alternate, one after the other, so both see the same machine
 * state. The layer's path includes provider resolution, the resilient fetch with its breaker, the
 * SDK's request building and parsing, cost calculation and queuing the usage row (written in batches
 * to a real database off the call's path). Goal: < 1 ms added at p50.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { loadConfig } from '../src/config.ts';
import { MIGRATIONS } from '../src/migrations.ts';
import { createAi } from '../src/platform/ai/index.ts';
import { migrate, PgliteDb } from '../src/platform/db/index.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CALLS = Number(process.env.BENCH_CALLS ?? 2000);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 200);

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}
const f2 = (n: number) => n.toFixed(3);

const child = spawn(process.execPath, [join(ROOT, 'bench/llm-server-child.ts')], { stdio: ['ignore', 'pipe', 'inherit'] });
const url = await new Promise<string>((resolve, reject) => {
  createInterface({ input: child.stdout! }).once('line', (line) => resolve((JSON.parse(line) as { url: string }).url));
  child.once('exit', (code) => reject(new Error(`model server exited with ${code}`)));
});

const dataDir = mkdtempSync(join(tmpdir(), 'ms-bench-ai-'));
const db = await PgliteDb.open({});
await migrate(db, MIGRATIONS);
const config = loadConfig({ DATA_DIR: dataDir, OPENAI_API_KEY: 'sk-bench', OPENAI_BASE_URL: `${url}/v1`, OPENAI_MODEL: 'bench-model', LOG_LEVEL: 'silent' });
const ai = createAi({ config: config.ai, db, registry: new Registry() });

const messages = [{ role: 'user' as const, content: 'Say five words please' }];
const endpoint = `${url}/v1/chat/completions`;
const headers = { 'content-type': 'application/json', authorization: 'Bearer sk-bench' };

async function directPlain(): Promise<string> {
  const res = await fetch(endpoint, { method: 'POST', headers, body: JSON.stringify({ model: 'bench-model', messages }) });
  const body = (await res.json()) as { choices: { message: { content: string } }[] };
  return body.choices[0]!.message.content;
}

async function directStream(): Promise<string> {
  const res = await fetch(endpoint, {
    method: 'POST',
    headers,
    body: JSON.stringify({ model: 'bench-model', messages, stream: true, stream_options: { include_usage: true } }),
  });
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let i: number;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const event = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = event.startsWith('data: ') ? event.slice(6) : '';
      if (!data || data === '[DONE]') continue;
      const chunk = JSON.parse(data) as { choices: { delta?: { content?: string } }[] };
      text += chunk.choices[0]?.delta?.content ?? '';
    }
  }
  return text;
}

async function layerPlain(): Promise<string> {
  return (await ai.chat(messages)).text;
}

async function layerStream(): Promise<string> {
  const s = await ai.stream(messages);
  let text = '';
  for await (const d of s.deltas) text += d;
  return text;
}

async function time(fn: () => Promise<string>, expect: string): Promise<number> {
  const t0 = performance.now();
  const text = await fn();
  const ms = performance.now() - t0;
  if (text !== expect) throw new Error(`unexpected answer ${JSON.stringify(text)}`);
  return ms;
}

const expected = 'echo: Say five words please';
const rows: string[] = [];
for (const [shape, direct, layer] of [
  ['plain chat', directPlain, layerPlain],
  ['streamed chat', directStream, layerStream],
] as const) {
  const d: number[] = [];
  const l: number[] = [];
  for (let i = 0; i < WARMUP + CALLS; i++) {
    const a = await time(direct, expected);
    const b = await time(layer, expected);
    if (i >= WARMUP) {
      d.push(a);
      l.push(b);
    }
  }
  d.sort((x, y) => x - y);
  l.sort((x, y) => x - y);
  const added50 = pct(l, 50) - pct(d, 50);
  const added99 = pct(l, 99) - pct(d, 99);
  rows.push(
    `| ${shape} | ${CALLS} | ${f2(pct(d, 50))} | ${f2(pct(d, 99))} | ${f2(pct(l, 50))} | ${f2(pct(l, 99))} | ${f2(added50)} | ${f2(added99)} | ${added50 < 1 ? 'PASS' : 'FAIL'} (< 1 ms p50) |`,
  );
}
await ai.flush();
const { rows: stored } = await db.query<{ n: string }>('SELECT count(*) AS n FROM ai_usage');

console.log(`\nAI layer added latency (${new Date().toISOString()}, Node ${process.version}, calls per shape ${CALLS} after ${WARMUP} warm-up)\n`);
console.log('| call | calls | direct p50 ms | direct p99 ms | layer p50 ms | layer p99 ms | added p50 ms | added p99 ms | goal |');
console.log('|---|---|---|---|---|---|---|---|---|');
for (const r of rows) console.log(r);
console.log(`\nusage rows stored: ${stored[0]!.n} (expected ${2 * (WARMUP + CALLS)})`);

child.kill('SIGTERM');
await db.close();
rmSync(dataDir, { recursive: true, force: true });
