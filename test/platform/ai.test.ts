/**
 * The AI layer driven against local servers that speak the real provider protocols (OpenAI Chat
 * Completions + Embeddings with SSE, Anthropic Messages with SSE, Ollama with NDJSON): requests are
 * formed as each API expects, answers and streams are parsed, the tool loop runs, failures map to
 * the catalogue, retries honour Retry-After, the breaker opens, and usage lands in the database.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { z } from 'zod';
import { isAppError, type AppError } from '../../src/platform/errors.ts';
import type { AiService, ToolStep } from '../../src/platform/ai/index.ts';
import { startAnthropicServer, startOllamaServer, startOpenAiServer, type FakeLlmServer } from '../helpers/llm-servers.ts';
import { closedPort } from '../helpers/ports.ts';
import { registerUser, startTestServer, type TestServer } from '../helpers/server.ts';

type Body = Record<string, unknown> & { messages?: Record<string, unknown>[] };

async function rejects(p: Promise<unknown>): Promise<AppError> {
  try {
    await p;
  } catch (err) {
    assert.ok(isAppError(err), `expected a catalogue error, got ${String(err)}`);
    return err;
  }
  assert.fail('expected the call to fail');
}

function lastChatBody(srv: FakeLlmServer, path: string): Body {
  const r = srv.requests.filter((q) => q.path === path).at(-1);
  assert.ok(r, `no request to ${path}`);
  return r.body as Body;
}

const weatherTool = {
  name: 'get_weather',
  description: 'Current weather for a city',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false },
};

describe('AI layer over the OpenAI Chat Completions protocol', () => {
  let openai: FakeLlmServer;
  let s: TestServer;
  let ai: AiService;
  let userId: string;

  before(async () => {
    openai = await startOpenAiServer({ apiKey: 'sk-test-key', embeddingDims: 12 });
    s = await startTestServer({
      OPENAI_API_KEY: 'sk-test-key',
      OPENAI_BASE_URL: `${openai.url}/v1`,
      OPENAI_MODEL: 'test-model',
      AI_PRICES: JSON.stringify({ 'openai/test-model': { input: 1, output: 2 } }),
      AI_BREAKER_THRESHOLD: '50',
    });
    ai = s.ctx.ai;
    userId = (await registerUser(s)).id;
  });
  after(async () => {
    await s.close();
    await openai.close();
  });

  test('a chat is sent as the API expects and its answer, usage and cost are read', async () => {
    openai.queue({ text: 'Paris is the capital.', usage: { input: 21, output: 5 } });
    const r = await ai.chat(
      [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Capital of France?' },
      ],
      { userId, temperature: 0.2, maxTokens: 64 },
    );
    assert.equal(r.text, 'Paris is the capital.');
    assert.equal(r.provider, 'openai');
    assert.equal(r.model, 'test-model');
    assert.deepEqual(r.usage, { inputTokens: 21, outputTokens: 5, totalTokens: 26 });
    assert.equal(r.cost, (21 * 1 + 5 * 2) / 1e6);
    const req = openai.requests.filter((q) => q.path === '/v1/chat/completions').at(-1)!;
    assert.equal(req.headers.authorization, 'Bearer sk-test-key');
    const body = req.body as Body;
    assert.equal(body.model, 'test-model');
    assert.equal(body.temperature, 0.2);
    assert.equal(body.max_tokens ?? body.max_completion_tokens, 64);
    assert.ok(!body.stream);
    assert.deepEqual(body.messages, [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Capital of France?' },
    ]);
    await ai.flush();
    const { rows } = await s.ctx.db.query<{ input_tokens: number; output_tokens: number; cost_usd: string; ok: boolean; operation: string }>(
      'SELECT input_tokens, output_tokens, cost_usd, ok, operation FROM ai_usage WHERE user_id = $1 ORDER BY id DESC LIMIT 1',
      [userId],
    );
    assert.equal(rows[0]!.operation, 'chat');
    assert.equal(rows[0]!.input_tokens, 21);
    assert.equal(rows[0]!.output_tokens, 5);
    assert.equal(Number(rows[0]!.cost_usd), 0.000031);
    assert.equal(rows[0]!.ok, true);
  });

  test('a streamed chat arrives as several deltas that make up the answer', async () => {
    openai.queue({ text: 'one two three four five', usage: { input: 4, output: 5 } });
    const stream = await ai.stream([{ role: 'user', content: 'count' }], { userId });
    const deltas: string[] = [];
    for await (const d of stream.deltas) deltas.push(d);
    const result = await stream.result;
    assert.ok(deltas.length > 1, `only ${deltas.length} delta(s)`);
    assert.equal(deltas.join(''), 'one two three four five');
    assert.equal(result.text, 'one two three four five');
    assert.equal(result.usage.outputTokens, 5);
    const body = lastChatBody(openai, '/v1/chat/completions');
    assert.equal(body.stream, true);
  });

  test('the tool loop runs several tools to a final answer, recording every step', async () => {
    openai.setHandler((req) => {
      const toolMsgs = req.messages.filter((m) => m.role === 'tool');
      if (toolMsgs.length === 0) return { toolCalls: [{ id: 'call_1', name: 'get_weather', arguments: { city: 'Paris' } }] };
      if (toolMsgs.length === 1) return { toolCalls: [{ id: 'call_2', name: 'get_weather', arguments: { city: 'Oslo' } }] };
      return { text: `Paris: ${toolMsgs[0]!.content}; Oslo: ${toolMsgs[1]!.content}` };
    });
    try {
      const seen: string[] = [];
      const r = await ai.runTools([{ role: 'user', content: 'Weather in Paris and Oslo?' }], {
        userId,
        tools: [weatherTool],
        execute: async (call) => {
          const city = (call.arguments as { city: string }).city;
          return { city, celsius: city === 'Paris' ? 18 : 4 };
        },
        onEvent: (e) => seen.push(e.type),
      });
      assert.equal(r.stoppedBy, 'answer');
      assert.equal(r.modelCalls, 3);
      assert.equal(r.steps.length, 2);
      assert.deepEqual(
        r.steps.map((st: ToolStep) => [st.step, st.tool, st.arguments, st.ok, st.result]),
        [
          [1, 'get_weather', { city: 'Paris' }, true, { city: 'Paris', celsius: 18 }],
          [2, 'get_weather', { city: 'Oslo' }, true, { city: 'Oslo', celsius: 4 }],
        ],
      );
      for (const st of r.steps) assert.ok(st.durationMs >= 0 && st.startedAt instanceof Date);
      assert.equal(r.text, 'Paris: {"city":"Paris","celsius":18}; Oslo: {"city":"Oslo","celsius":4}');
      assert.ok(seen.includes('tool-start') && seen.includes('tool-result'));
      // The second request carried the model's first call and our result under the same id.
      const second = openai.requests.filter((q) => q.path === '/v1/chat/completions').at(-2)!.body as Body;
      const toolMsgs = second.messages!.filter((m) => m.role === 'tool');
      assert.equal(toolMsgs.length, 1);
      assert.equal(toolMsgs[0]!.tool_call_id, 'call_1');
      assert.deepEqual(JSON.parse(String(toolMsgs[0]!.content)), { city: 'Paris', celsius: 18 });
      const assistant = second.messages!.find((m) => m.role === 'assistant') as { tool_calls: { id: string; function: { name: string; arguments: string } }[] };
      assert.equal(assistant.tool_calls[0]!.function.name, 'get_weather');
      assert.deepEqual(JSON.parse(assistant.tool_calls[0]!.function.arguments), { city: 'Paris' });
      const sent = second.tools as { type: string; function: { name: string; parameters: unknown } }[];
      assert.equal(sent[0]!.function.name, 'get_weather');
      assert.deepEqual((sent[0]!.function.parameters as { required: string[] }).required, ['city']);
    } finally {
      openai.setHandler(null);
    }
  });

  test('a tool error goes back to the model, which can react to it', async () => {
    openai.setHandler((req) => {
      const tool = req.messages.find((m) => m.role === 'tool');
      if (!tool) return { toolCalls: [{ id: 'call_err', name: 'get_weather', arguments: { city: 'Atlantis' } }] };
      return { text: `Sorry: ${tool.content}` };
    });
    try {
      const r = await ai.runTools([{ role: 'user', content: 'Weather in Atlantis?' }], {
        tools: [weatherTool],
        execute: async () => {
          throw new Error('city not found: Atlantis');
        },
      });
      assert.equal(r.steps.length, 1);
      assert.equal(r.steps[0]!.ok, false);
      assert.equal(r.steps[0]!.error, 'city not found: Atlantis');
      assert.match(r.text, /^Sorry: .*city not found: Atlantis/);
      assert.equal(r.stoppedBy, 'answer');
    } finally {
      openai.setHandler(null);
    }
  });

  test('the loop stops at the step limit when the model keeps calling tools', async () => {
    let n = 0;
    openai.setHandler(() => ({ toolCalls: [{ id: `call_${++n}`, name: 'get_weather', arguments: { city: 'Rome' } }] }));
    try {
      let executed = 0;
      const r = await ai.runTools([{ role: 'user', content: 'loop' }], {
        tools: [weatherTool],
        maxSteps: 3,
        execute: async () => ++executed,
      });
      assert.equal(r.modelCalls, 3);
      assert.equal(r.stoppedBy, 'step_limit');
      assert.equal(executed, 3);
      assert.equal(n, 3);
    } finally {
      openai.setHandler(null);
    }
  });

  test('429 is retried after the Retry-After the provider asked for', async () => {
    openai.failNext(429, { retryAfter: '1', body: { error: { message: 'Rate limit reached', type: 'requests' } } });
    openai.queue({ text: 'after the wait' });
    const before = openai.chatCount();
    const t0 = performance.now();
    const r = await ai.chat([{ role: 'user', content: 'hi' }]);
    const waited = performance.now() - t0;
    assert.equal(r.text, 'after the wait');
    assert.equal(openai.chatCount() - before, 2);
    assert.ok(waited >= 950, `retried after ${waited} ms, before the 1 s Retry-After`);
  });

  test('5xx answers are retried; a provider 400 is not, and becomes a validation error', async () => {
    openai.failNext(503, { times: 2 });
    openai.queue({ text: 'third time lucky' });
    const before = openai.chatCount();
    assert.equal((await ai.chat([{ role: 'user', content: 'x' }])).text, 'third time lucky');
    assert.equal(openai.chatCount() - before, 3);

    openai.queue({ status: 400, body: { error: { message: "This model's maximum context length is 8192 tokens", type: 'invalid_request_error' } } });
    const before2 = openai.chatCount();
    const err = await rejects(ai.chat([{ role: 'user', content: 'x' }]));
    assert.equal(err.code, 'VALIDATION_ERROR');
    assert.match(err.message, /maximum context length/);
    assert.equal(openai.chatCount() - before2, 1);
  });

  test('structured output: a valid object, a repaired one, and a clear error after the repair fails', async () => {
    const schema = z.object({ name: z.string(), employees: z.number().int() });
    openai.queue({ text: '{"name":"Acme","employees":12}' });
    const ok = await ai.object([{ role: 'user', content: 'Describe Acme' }], schema, { userId });
    assert.deepEqual(ok.object, { name: 'Acme', employees: 12 });
    assert.equal(ok.repaired, false);
    const fmt = lastChatBody(openai, '/v1/chat/completions').response_format as { type: string; json_schema?: { schema: { properties: object } } };
    assert.equal(fmt.type, 'json_schema');
    assert.deepEqual(Object.keys(fmt.json_schema!.schema.properties), ['name', 'employees']);

    openai.queue({ text: '{"name":"Acme","employees":"twelve"}' }, { text: '{"name":"Acme","employees":12}' });
    const fixed = await ai.object([{ role: 'user', content: 'Describe Acme' }], schema);
    assert.deepEqual(fixed.object, { name: 'Acme', employees: 12 });
    assert.equal(fixed.repaired, true);
    const repairReq = lastChatBody(openai, '/v1/chat/completions');
    const lastUser = repairReq.messages!.filter((m) => m.role === 'user').at(-1)!;
    assert.match(String(lastUser.content), /employees/);

    openai.queue({ text: 'Sure! Acme is a company.' }, { text: '{"name": 5}' });
    const err = await rejects(ai.object([{ role: 'user', content: 'Describe Acme' }], schema));
    assert.equal(err.code, 'SERVICE_UNAVAILABLE');
    assert.match(err.message, /after one repair attempt/);
    assert.ok(Array.isArray(err.details!.issues));
  });

  test('embeddings come from the provider in batches, in order, named by model', async () => {
    const texts = Array.from({ length: 300 }, (_, i) => `document number ${i}`);
    const before = openai.requests.filter((q) => q.path === '/v1/embeddings').length;
    const r = await ai.embed(texts, { userId });
    assert.equal(r.model, 'openai/text-embedding-3-small');
    assert.equal(r.embeddings.length, 300);
    assert.equal(r.dimensions, 12);
    assert.equal(openai.requests.filter((q) => q.path === '/v1/embeddings').length - before, 2);
    const again = await ai.embed(['document number 7']);
    assert.deepEqual(again.embeddings[0], r.embeddings[7]);
  });

  test('a provider named by model, provider/model, or an unsupported provider', async () => {
    assert.deepEqual(await ai.resolve({ provider: 'gpt-4o' }), { provider: 'openai', model: 'gpt-4o' });
    assert.deepEqual(await ai.resolve({ provider: 'openai/gpt-4.1-mini' }), { provider: 'openai', model: 'gpt-4.1-mini' });
    assert.deepEqual(await ai.resolve({}), { provider: 'openai', model: 'test-model' });
    const unsupported = await rejects(ai.resolve({ provider: 'gemini' }));
    assert.equal(unsupported.code, 'VALIDATION_ERROR');
    assert.deepEqual(unsupported.details!.allowed_values, ['openai', 'anthropic', 'ollama']);
    const notConfigured = await rejects(ai.resolve({ provider: 'claude-3-5-sonnet' }));
    assert.equal(notConfigured.code, 'SERVICE_UNAVAILABLE');
    assert.match(notConfigured.message, /ANTHROPIC_API_KEY/);
  });

  test('usage is summed per user and model', async () => {
    const summary = await ai.usageSummary(userId, new Date(Date.now() - 3600_000));
    const row = summary.byModel.find((m) => m.model === 'test-model')!;
    assert.ok(row.calls >= 3);
    assert.ok(row.inputTokens >= 25);
    assert.ok(summary.cost !== null && summary.cost > 0);
    const other = await registerUser(s);
    assert.equal((await ai.usageSummary(other.id, new Date(0))).calls, 0);
  });
});

describe('AI layer resilience', () => {
  let openai: FakeLlmServer;
  let s: TestServer;

  before(async () => {
    openai = await startOpenAiServer();
    s = await startTestServer({
      OPENAI_BASE_URL: `${openai.url}/v1`,
      AI_MAX_RETRIES: '0',
      AI_TIMEOUT_MS: '300',
      AI_BREAKER_THRESHOLD: '3',
      AI_BREAKER_COOLDOWN_MS: '60000',
      AI_RETRY_MAX_WAIT_MS: '2000',
    });
  });
  after(async () => {
    await s.close();
    await openai.close();
  });

  test('a provider that does not answer in time gives a timeout, not a hang', async () => {
    openai.queue({ delayMs: 3000, then: { text: 'too late' } });
    const t0 = performance.now();
    const err = await rejects(s.ctx.ai.chat([{ role: 'user', content: 'slow' }]));
    assert.equal(err.code, 'SERVICE_UNAVAILABLE');
    assert.equal(err.details!.reason, 'timeout');
    assert.ok(performance.now() - t0 < 2000);
  });

  test('a Retry-After longer than the layer waits is handed back as RATE_LIMITED', async () => {
    openai.failNext(429, { retryAfter: '120' });
    const err = await rejects(s.ctx.ai.chat([{ role: 'user', content: 'x' }]));
    assert.equal(err.code, 'RATE_LIMITED');
    assert.equal(err.retryAfterSeconds, 120);
  });

  test('the breaker opens after repeated failures and then fails fast without calling the provider', async () => {
    openai.failNext(500, { times: 3, body: { error: { message: 'boom' } } });
    for (let i = 0; i < 3; i++) {
      const err = await rejects(s.ctx.ai.chat([{ role: 'user', content: 'x' }]));
      assert.equal(err.code, 'SERVICE_UNAVAILABLE');
    }
    const before = openai.chatCount();
    const err = await rejects(s.ctx.ai.chat([{ role: 'user', content: 'x' }]));
    assert.equal(err.details!.reason, 'circuit_open');
    assert.ok(err.retryAfterSeconds! > 0);
    assert.equal(openai.chatCount(), before);
    const [status] = (await s.ctx.ai.availability(true)).filter((p) => p.id === 'openai');
    assert.equal(status!.breaker, 'open');
  });
});

describe('AI layer over the Anthropic Messages protocol', () => {
  let anthropic: FakeLlmServer;
  let s: TestServer;

  before(async () => {
    anthropic = await startAnthropicServer({ apiKey: 'sk-ant-test' });
    s = await startTestServer({ ANTHROPIC_API_KEY: 'sk-ant-test', ANTHROPIC_BASE_URL: anthropic.url, ANTHROPIC_MODEL: 'claude-test' });
  });
  after(async () => {
    await s.close();
    await anthropic.close();
  });

  test('a chat carries the key, version, system prompt and max_tokens; the answer is read', async () => {
    anthropic.queue({ text: 'Bonjour.', usage: { input: 9, output: 2 } });
    const r = await s.ctx.ai.chat(
      [
        { role: 'system', content: 'Answer in French.' },
        { role: 'user', content: 'Hello' },
      ],
      { maxTokens: 100 },
    );
    assert.equal(r.text, 'Bonjour.');
    assert.equal(r.provider, 'anthropic');
    assert.deepEqual(r.usage, { inputTokens: 9, outputTokens: 2, totalTokens: 11 });
    assert.equal(r.cost, null, 'an unknown model has no price');
    const req = anthropic.requests.filter((q) => q.path === '/v1/messages').at(-1)!;
    assert.equal(req.headers['x-api-key'], 'sk-ant-test');
    assert.ok(req.headers['anthropic-version']);
    const body = req.body as Body;
    assert.equal(body.model, 'claude-test');
    assert.equal(body.max_tokens, 100);
    const system = body.system as string | { text: string }[];
    assert.equal(typeof system === 'string' ? system : system[0]!.text, 'Answer in French.');
    assert.equal(body.messages![0]!.role, 'user');
  });

  test('streaming text deltas', async () => {
    anthropic.queue({ text: 'alpha beta gamma delta' });
    const stream = await s.ctx.ai.stream([{ role: 'user', content: 'go' }]);
    const deltas: string[] = [];
    for await (const d of stream.deltas) deltas.push(d);
    assert.ok(deltas.length > 1);
    assert.equal(deltas.join(''), 'alpha beta gamma delta');
    assert.equal((await stream.result).text, 'alpha beta gamma delta');
    assert.equal(lastChatBody(anthropic, '/v1/messages').stream, true);
  });

  test('tool use and tool results, including an error result, round-trip', async () => {
    anthropic.setHandler((req) => {
      const results = req.messages.filter((m) => m.role === 'tool');
      if (results.length === 0) return { toolCalls: [{ id: 'toolu_1', name: 'get_weather', arguments: { city: 'Lima' } }] };
      if (results.length === 1) return { toolCalls: [{ id: 'toolu_2', name: 'get_weather', arguments: { city: 'Nowhere' } }] };
      return { text: `done: ${results.map((m) => m.content).join(' | ')}` };
    });
    try {
      const r = await s.ctx.ai.runTools([{ role: 'user', content: 'weather' }], {
        tools: [weatherTool],
        execute: async (call) => {
          const city = (call.arguments as { city: string }).city;
          if (city === 'Nowhere') throw new Error('no such city');
          return `${city}: 21 C`;
        },
      });
      assert.equal(r.modelCalls, 3);
      assert.deepEqual(
        r.steps.map((st) => [st.tool, st.ok]),
        [
          ['get_weather', true],
          ['get_weather', false],
        ],
      );
      assert.match(r.text, /Lima: 21 C/);
      assert.match(r.text, /no such city/);
      const last = lastChatBody(anthropic, '/v1/messages');
      const blocks = last.messages!.flatMap((m) => (Array.isArray(m.content) ? (m.content as Record<string, unknown>[]) : []));
      const errResult = blocks.find((b) => b.type === 'tool_result' && b.tool_use_id === 'toolu_2')!;
      assert.equal(errResult.is_error, true);
      const tools = last.tools as { name: string; input_schema: unknown }[];
      assert.equal(tools[0]!.name, 'get_weather');
    } finally {
      anthropic.setHandler(null);
    }
  });

  test('a rejected key becomes SERVICE_UNAVAILABLE naming the credentials', async () => {
    anthropic.queue({ status: 401, body: { type: 'error', error: { type: 'authentication_error', message: 'invalid x-api-key' } } });
    const err = await rejects(s.ctx.ai.chat([{ role: 'user', content: 'x' }]));
    assert.equal(err.code, 'SERVICE_UNAVAILABLE');
    assert.match(err.message, /credentials/);
  });

  test('embeddings without OpenAI or Ollama fall back to the local model, named as such', async () => {
    const r = await s.ctx.ai.embed(['the quick brown fox']);
    assert.equal(r.model, 'local/hash-384');
    assert.equal(r.dimensions, 384);
  });
});

describe('AI layer over the Ollama protocol', () => {
  let ollama: FakeLlmServer;
  let s: TestServer;
  let userId: string;

  before(async () => {
    ollama = await startOllamaServer({ models: ['llama3.2:latest', 'nomic-embed-text:latest'], embeddingDims: 6, version: '0.12.3' });
    s = await startTestServer({ OLLAMA_HOST: ollama.url.replace(/^http:\/\//, '') });
    userId = (await registerUser(s)).id;
  });
  after(async () => {
    await s.close();
    await ollama.close();
  });

  test('a chat goes to /api/chat with options; the answer and counts are read; local models cost nothing known', async () => {
    ollama.queue({ text: 'Hi there', usage: { input: 7, output: 2 } });
    const r = await s.ctx.ai.chat([{ role: 'user', content: 'hello' }], { temperature: 0.5, maxTokens: 50, userId });
    assert.equal(r.text, 'Hi there');
    assert.equal(r.provider, 'ollama');
    assert.equal(r.model, 'llama3.2');
    assert.deepEqual(r.usage, { inputTokens: 7, outputTokens: 2, totalTokens: 9 });
    assert.equal(r.cost, null);
    const body = lastChatBody(ollama, '/api/chat');
    assert.equal(body.model, 'llama3.2');
    assert.equal(body.stream, false);
    // Ollama reads sampling settings only inside `options`.
    assert.deepEqual(body.options, { temperature: 0.5, num_predict: 50 });
  });

  test('streaming NDJSON deltas', async () => {
    ollama.queue({ text: 'red green blue' });
    const stream = await s.ctx.ai.stream([{ role: 'user', content: 'colours' }]);
    const deltas: string[] = [];
    for await (const d of stream.deltas) deltas.push(d);
    assert.ok(deltas.length > 1);
    assert.equal(deltas.join(''), 'red green blue');
  });

  test('tool calls and results', async () => {
    ollama.setHandler((req) => {
      const tool = req.messages.find((m) => m.role === 'tool');
      if (!tool) return { toolCalls: [{ name: 'get_weather', arguments: { city: 'Kyiv' } }] };
      return { text: `It is ${tool.content}` };
    });
    try {
      const r = await s.ctx.ai.runTools([{ role: 'user', content: 'weather in Kyiv' }], { tools: [weatherTool], execute: async () => 'sunny' });
      assert.equal(r.text, 'It is sunny');
      assert.equal(r.steps[0]!.tool, 'get_weather');
      assert.deepEqual(r.steps[0]!.arguments, { city: 'Kyiv' });
    } finally {
      ollama.setHandler(null);
    }
  });

  test('an unknown model is a validation error naming the model', async () => {
    const err = await rejects(s.ctx.ai.chat([{ role: 'user', content: 'x' }], { provider: 'ollama/mystery:7b' }));
    assert.equal(err.code, 'VALIDATION_ERROR');
    assert.equal(err.details!.field, 'model');
  });

  test('embeddings through /api/embed', async () => {
    const r = await s.ctx.ai.embed(['alpha', 'beta']);
    assert.equal(r.model, 'ollama/nomic-embed-text');
    assert.equal(r.embeddings.length, 2);
    assert.equal(r.dimensions, 6);
    assert.ok(ollama.requests.some((q) => q.path === '/api/embed'));
  });

  test('availability lists the pulled models and the version', async () => {
    const [status] = (await s.ctx.ai.availability(true)).filter((p) => p.id === 'ollama');
    assert.equal(status!.available, true);
    assert.equal(status!.version, '0.12.3');
    assert.deepEqual(status!.models, ['llama3.2:latest', 'nomic-embed-text:latest']);
  });

  test("a user's setting picks the model", async () => {
    await s.ctx.ai.setUserSetting(userId, { provider: 'ollama', model: 'qwen3:4b' });
    assert.deepEqual(await s.ctx.ai.resolve({ userId }), { provider: 'ollama', model: 'qwen3:4b' });
    assert.deepEqual(await s.ctx.ai.resolve({ userId, model: 'llama3.2' }), { provider: 'ollama', model: 'llama3.2' });
  });
});

describe('AI layer with no provider configured', () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer();
  });
  after(async () => {
    await s.close();
  });

  test('chat, stream and tools fail with SERVICE_UNAVAILABLE naming the settings', async () => {
    for (const call of [
      () => s.ctx.ai.chat([{ role: 'user', content: 'x' }]),
      () => s.ctx.ai.stream([{ role: 'user', content: 'x' }]),
      () => s.ctx.ai.runTools([{ role: 'user', content: 'x' }], { tools: [], execute: async () => null }),
      () => s.ctx.ai.object([{ role: 'user', content: 'x' }], z.object({})),
    ]) {
      const err = await rejects(call());
      assert.equal(err.code, 'SERVICE_UNAVAILABLE');
      assert.match(err.message, /OPENAI_API_KEY/);
      assert.match(err.message, /ANTHROPIC_API_KEY/);
      assert.match(err.message, /OLLAMA_HOST/);
    }
  });

  test('embeddings still work offline with the local lexical model', async () => {
    const r = await s.ctx.ai.embed(['Postgres branches for every pull request', 'Every pull request gets a Postgres branch', 'A recipe for banana bread']);
    assert.equal(r.model, 'local/hash-384');
    assert.equal(r.provider, 'local');
    assert.equal(r.cost, null);
    for (const v of r.embeddings) {
      assert.equal(v.length, 384);
      const norm = Math.sqrt(v.reduce((n, x) => n + x * x, 0));
      assert.ok(Math.abs(norm - 1) < 1e-5, `norm ${norm}`);
    }
    const cos = (a: number[], b: number[]) => a.reduce((n, x, i) => n + x * b[i]!, 0);
    const [a, b, c] = r.embeddings as [number[], number[], number[]];
    assert.ok(cos(a, b) > cos(a, c) + 0.2, `related ${cos(a, b)} vs unrelated ${cos(a, c)}`);
    assert.deepEqual((await s.ctx.ai.embed(['Postgres branches for every pull request'])).embeddings[0], a);
    assert.deepEqual((await s.ctx.ai.embed([''])).embeddings[0]!.every((x) => x === 0), true);
  });
});

describe('AI layer: structured output on every provider, unreachable servers, breaker recovery', () => {
  let anthropic: FakeLlmServer;
  let ollama: FakeLlmServer;
  let s: TestServer;
  const schema = z.object({ city: z.string(), population: z.number().int().positive() });

  before(async () => {
    anthropic = await startAnthropicServer();
    ollama = await startOllamaServer();
    s = await startTestServer({ ANTHROPIC_API_KEY: 'k', ANTHROPIC_BASE_URL: anthropic.url, ANTHROPIC_MODEL: 'claude-sonnet-4-5', OLLAMA_HOST: ollama.url });
  });
  after(async () => {
    await s.close();
    await anthropic.close();
    await ollama.close();
  });

  test('Anthropic: the schema is sent and the answer validated', async () => {
    anthropic.setHandler((req) => {
      // Depending on the model the SDK asks for native structured output or forces a `json` tool.
      const forced = req.tools.find((t) => t.name === 'json');
      return forced ? { toolCalls: [{ name: 'json', arguments: { city: 'Lyon', population: 522000 } }] } : { text: '{"city":"Lyon","population":522000}' };
    });
    try {
      const r = await s.ctx.ai.object([{ role: 'user', content: 'Biggest city near the Alps?' }], schema, { provider: 'anthropic' });
      assert.deepEqual(r.object, { city: 'Lyon', population: 522000 });
      const body = lastChatBody(anthropic, '/v1/messages');
      assert.ok(body.output_config || (body.tools as { name: string }[] | undefined)?.some((t) => t.name === 'json'), 'the schema reached the provider');
    } finally {
      anthropic.setHandler(null);
    }
  });

  test('Ollama: the schema goes in `format`; an invalid answer is repaired once', async () => {
    ollama.queue({ text: '{"city":"Bern"}' }, { text: '{"city":"Bern","population":134000}' });
    const r = await s.ctx.ai.object([{ role: 'user', content: 'Capital of Switzerland?' }], schema, { provider: 'ollama' });
    assert.deepEqual(r.object, { city: 'Bern', population: 134000 });
    assert.equal(r.repaired, true);
    const format = lastChatBody(ollama, '/api/chat').format as { properties: Record<string, unknown> };
    assert.deepEqual(Object.keys(format.properties).sort(), ['city', 'population']);
  });

  test('a provider that cannot be reached is SERVICE_UNAVAILABLE after the retries', async () => {
    const dead = await startTestServer({ OPENAI_BASE_URL: `http://127.0.0.1:${await closedPort()}/v1`, AI_MAX_RETRIES: '1' });
    try {
      const err = await rejects(dead.ctx.ai.chat([{ role: 'user', content: 'x' }]));
      assert.equal(err.code, 'SERVICE_UNAVAILABLE');
      assert.equal(err.details!.reason, 'unreachable');
      assert.match(err.message, /ECONNREFUSED/);
    } finally {
      await dead.close();
    }
  });

  test('an open breaker lets one trial through after the cool-down and closes when it succeeds', async () => {
    const srv = await startOpenAiServer();
    const t = await startTestServer({ OPENAI_BASE_URL: `${srv.url}/v1`, AI_MAX_RETRIES: '0', AI_BREAKER_THRESHOLD: '2', AI_BREAKER_COOLDOWN_MS: '300' });
    try {
      srv.failNext(502, { times: 2 });
      for (let i = 0; i < 2; i++) await rejects(t.ctx.ai.chat([{ role: 'user', content: 'x' }]));
      assert.equal((await rejects(t.ctx.ai.chat([{ role: 'user', content: 'x' }]))).details!.reason, 'circuit_open');
      await new Promise((r) => setTimeout(r, 350));
      srv.queue({ text: 'back' });
      assert.equal((await t.ctx.ai.chat([{ role: 'user', content: 'x' }])).text, 'back');
      assert.equal(t.ctx.ai.providers.breakers.openai.state, 'closed');
    } finally {
      await t.close();
      await srv.close();
    }
  });
});
