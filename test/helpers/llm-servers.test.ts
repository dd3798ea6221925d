/** Proves the fake LLM servers speak each provider's wire protocol, using plain fetch. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  fakeEmbedding,
  startAnthropicServer,
  startOllamaServer,
  startOpenAiServer,
  type ChatRequestView,
  type FakeLlmServer,
} from './llm-servers.ts';

type Json = Record<string, unknown>;
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- assertions read arbitrary JSON
type Loose = any;

async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
}
async function postJson(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: Loose }> {
  const res = await post(url, body, headers);
  return { status: res.status, body: (await res.json()) as Loose };
}
/** Parses a server-sent event stream into its events. */
function sseEvents(text: string): { event?: string; data: string }[] {
  return text
    .split('\n\n')
    .filter((block) => block.trim() !== '')
    .map((block) => {
      const lines = block.split('\n');
      const event = lines.find((l) => l.startsWith('event: '))?.slice('event: '.length);
      const data = lines.filter((l) => l.startsWith('data: ')).map((l) => l.slice('data: '.length)).join('\n');
      return { event, data };
    });
}
/** Resolves with `close()` or fails if it hangs. */
async function closesPromptly(server: FakeLlmServer): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('close() hung')), 2_000);
  });
  await Promise.race([server.close(), hang]).finally(() => clearTimeout(timer));
}

describe('OpenAI server', () => {
  let server: FakeLlmServer;
  let chatUrl: string;
  const auth = { authorization: 'Bearer sk-test' };
  before(async () => {
    server = await startOpenAiServer({ apiKey: 'sk-test', embeddingDims: 12 });
    chatUrl = `${server.url}/v1/chat/completions`;
  });
  after(() => server.close());

  test('non-streaming text reply', async () => {
    const before = server.chatCount();
    const { status, body } = await postJson(chatUrl, { model: 'gpt-4o-mini', messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello there' }] }, auth);
    assert.equal(status, 200);
    assert.equal(body.object, 'chat.completion');
    assert.match(body.id, /^chatcmpl-/);
    assert.equal(body.model, 'gpt-4o-mini');
    assert.equal(typeof body.created, 'number');
    assert.deepEqual(body.choices[0].message.role, 'assistant');
    assert.equal(body.choices[0].message.content, 'echo: hello there');
    assert.equal(body.choices[0].finish_reason, 'stop');
    assert.deepEqual(body.usage, { prompt_tokens: 4, completion_tokens: 3, total_tokens: 7 });
    assert.equal(server.chatCount(), before + 1);
    const recorded = server.requests.at(-1);
    assert.equal(recorded?.method, 'POST');
    assert.equal(recorded?.path, '/v1/chat/completions');
    assert.equal(recorded?.headers.authorization, 'Bearer sk-test');
    assert.equal((recorded?.body as Json).model, 'gpt-4o-mini');
  });

  test('queued text with explicit usage', async () => {
    server.queue({ text: 'scripted', usage: { input: 11, output: 22 } });
    const { body } = await postJson(chatUrl, { model: 'm', messages: [{ role: 'user', content: 'x' }] }, auth);
    assert.equal(body.choices[0].message.content, 'scripted');
    assert.deepEqual(body.usage, { prompt_tokens: 11, completion_tokens: 22, total_tokens: 33 });
  });

  test('streaming text arrives in several deltas, then finish, usage and [DONE]', async () => {
    const res = await post(chatUrl, { model: 'gpt-4o-mini', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'stream this reply' }] }, auth);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
    const events = sseEvents(await res.text());
    assert.equal(events.at(-1)?.data, '[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.data) as Loose);
    for (const c of chunks) assert.equal(c.object, 'chat.completion.chunk');
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    const pieces = chunks.flatMap((c) => (c.choices[0]?.delta?.content ? [c.choices[0].delta.content as string] : []));
    assert.ok(pieces.length > 1, 'more than one content delta');
    assert.equal(pieces.join(''), 'echo: stream this reply');
    const finish = chunks.find((c) => c.choices[0]?.finish_reason);
    assert.equal(finish.choices[0].finish_reason, 'stop');
    const usage = chunks.at(-1);
    assert.deepEqual(usage.choices, []);
    assert.deepEqual(usage.usage, { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 });
  });

  test('streaming without include_usage sends no usage chunk', async () => {
    const res = await post(chatUrl, { model: 'm', stream: true, messages: [{ role: 'user', content: 'a b' }] }, auth);
    const chunks = sseEvents(await res.text()).slice(0, -1).map((e) => JSON.parse(e.data) as Loose);
    assert.ok(chunks.every((c) => c.choices.length === 1 && c.usage === undefined));
  });

  test('queued tool call, non-streaming', async () => {
    server.queue({ toolCalls: [{ id: 'call_1', name: 'get_weather', arguments: { city: 'Paris', days: 2 } }] });
    const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather', parameters: { type: 'object' } } }];
    const { body } = await postJson(chatUrl, { model: 'm', messages: [{ role: 'user', content: 'weather?' }], tools }, auth);
    const choice = body.choices[0];
    assert.equal(choice.finish_reason, 'tool_calls');
    assert.equal(choice.message.content, null);
    assert.deepEqual(choice.message.tool_calls, [
      { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris","days":2}' } },
    ]);
  });

  test('queued tool call, streaming: id and name first, arguments in pieces', async () => {
    server.queue({ toolCalls: [{ name: 'get_weather', arguments: { city: 'Paris', unit: 'celsius' } }] });
    const res = await post(chatUrl, { model: 'm', stream: true, messages: [{ role: 'user', content: 'weather?' }] }, auth);
    const chunks = sseEvents(await res.text()).slice(0, -1).map((e) => JSON.parse(e.data) as Loose);
    const deltas = chunks.flatMap((c) => (c.choices[0]?.delta?.tool_calls ?? []) as Loose[]);
    assert.equal(deltas[0].index, 0);
    assert.match(deltas[0].id, /^call_/);
    assert.equal(deltas[0].type, 'function');
    assert.equal(deltas[0].function.name, 'get_weather');
    assert.ok(deltas.length > 2, 'arguments arrive in several pieces');
    const args = deltas.map((d) => (d.function.arguments ?? '') as string).join('');
    assert.deepEqual(JSON.parse(args), { city: 'Paris', unit: 'celsius' });
    assert.equal(chunks.find((c) => c.choices[0]?.finish_reason)?.choices[0].finish_reason, 'tool_calls');
  });

  test('handler sees the tool result of a follow-up request', async () => {
    let seen: ChatRequestView | undefined;
    server.setHandler((view) => {
      seen = view;
      return { text: 'It is 21 degrees' };
    });
    const { body } = await postJson(
      chatUrl,
      {
        model: 'gpt-4o-mini',
        temperature: 0.2,
        max_completion_tokens: 99,
        response_format: { type: 'json_object' },
        messages: [
          { role: 'system', content: 'sys' },
          { role: 'user', content: [{ type: 'text', text: 'weather?' }] },
          { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
          { role: 'tool', tool_call_id: 'call_1', content: '{"temp":21}' },
        ],
        tools: [{ type: 'function', function: { name: 'get_weather', description: 'Weather', parameters: { type: 'object' } } }],
      },
      auth,
    );
    server.setHandler(null);
    assert.equal(body.choices[0].message.content, 'It is 21 degrees');
    assert.ok(seen);
    assert.equal(seen.model, 'gpt-4o-mini');
    assert.equal(seen.stream, false);
    assert.equal(seen.temperature, 0.2);
    assert.equal(seen.maxTokens, 99);
    assert.deepEqual(seen.responseFormat, { type: 'json_object' });
    assert.deepEqual(seen.tools, [{ name: 'get_weather', description: 'Weather', parameters: { type: 'object' } }]);
    assert.deepEqual(seen.messages, [
      { role: 'system', content: 'sys' },
      { role: 'user', content: 'weather?' },
      { role: 'assistant', content: '', toolCalls: [{ id: 'call_1', name: 'get_weather', arguments: { city: 'Paris' } }] },
      { role: 'tool', content: '{"temp":21}', toolCallId: 'call_1' },
    ]);
  });

  test('embeddings: count, dims, determinism and base64', async () => {
    const url = `${server.url}/v1/embeddings`;
    const a = await postJson(url, { model: 'text-embedding-3-small', input: ['alpha', 'beta'], encoding_format: 'float' }, auth);
    assert.equal(a.status, 200);
    assert.equal(a.body.object, 'list');
    assert.equal(a.body.model, 'text-embedding-3-small');
    assert.equal(a.body.data.length, 2);
    assert.deepEqual(a.body.data.map((d: Loose) => [d.object, d.index]), [['embedding', 0], ['embedding', 1]]);
    assert.equal(a.body.data[0].embedding.length, 12);
    assert.notDeepEqual(a.body.data[0].embedding, a.body.data[1].embedding);
    assert.deepEqual(a.body.usage, { prompt_tokens: 2, total_tokens: 2 });
    const b = await postJson(url, { model: 'text-embedding-3-small', input: 'alpha' }, auth);
    assert.deepEqual(b.body.data[0].embedding, a.body.data[0].embedding);
    assert.deepEqual(b.body.data[0].embedding, fakeEmbedding('alpha', 12));
    const dims = await postJson(url, { model: 'm', input: 'alpha', dimensions: 4 }, auth);
    assert.equal(dims.body.data[0].embedding.length, 4);
    const b64 = await postJson(url, { model: 'm', input: 'alpha', encoding_format: 'base64' }, auth);
    const buf = Buffer.from(b64.body.data[0].embedding as string, 'base64');
    assert.deepEqual(Array.from(new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4)), a.body.data[0].embedding);
  });

  test('models list', async () => {
    const res = await fetch(`${server.url}/v1/models`, { headers: auth });
    const body = (await res.json()) as Loose;
    assert.equal(body.object, 'list');
    assert.ok(body.data.length > 0);
    assert.deepEqual(Object.keys(body.data[0]).sort(), ['created', 'id', 'object', 'owned_by']);
  });

  test('failNext(429) answers with Retry-After, then recovers', async () => {
    server.failNext(429, { retryAfter: '1' });
    const msg = { model: 'm', messages: [{ role: 'user', content: 'again' }] };
    const failed = await post(chatUrl, msg, auth);
    assert.equal(failed.status, 429);
    assert.equal(failed.headers.get('retry-after'), '1');
    const err = (await failed.json()) as Loose;
    assert.equal(err.error.code, 'rate_limit_exceeded');
    assert.equal(typeof err.error.message, 'string');
    const ok = await postJson(chatUrl, msg, auth);
    assert.equal(ok.status, 200);
    assert.equal(ok.body.choices[0].message.content, 'echo: again');
  });

  test('failNext applies to any route and counts down', async () => {
    server.failNext(503, { times: 2, body: { error: { message: 'down', type: 'server_error' } } });
    const first = await postJson(`${server.url}/v1/embeddings`, { model: 'm', input: 'x' }, auth);
    assert.deepEqual([first.status, first.body.error.message], [503, 'down']);
    assert.equal((await fetch(`${server.url}/v1/models`, { headers: auth })).status, 503);
    assert.equal((await fetch(`${server.url}/v1/models`, { headers: auth })).status, 200);
  });

  test('scripted HTTP error reply and delayed reply', async () => {
    server.queue({ status: 500, headers: { 'x-request-id': 'req_1' } }, { delayMs: 60, then: { text: 'late' } });
    const failed = await post(chatUrl, { model: 'm', messages: [{ role: 'user', content: 'x' }] }, auth);
    assert.equal(failed.status, 500);
    assert.equal(failed.headers.get('x-request-id'), 'req_1');
    assert.equal(((await failed.json()) as Loose).error.type, 'server_error');
    const started = Date.now();
    const late = await postJson(chatUrl, { model: 'm', messages: [{ role: 'user', content: 'x' }] }, auth);
    assert.ok(Date.now() - started >= 50);
    assert.equal(late.body.choices[0].message.content, 'late');
  });

  test('API key check', async () => {
    const attempts: Record<string, string>[] = [{}, { authorization: 'Bearer wrong' }];
    for (const headers of attempts) {
      const { status, body } = await postJson(chatUrl, { model: 'm', messages: [] }, headers);
      assert.equal(status, 401);
      assert.equal(body.error.type, 'invalid_request_error');
      assert.equal(body.error.code, 'invalid_api_key');
    }
  });
});

describe('Anthropic server', () => {
  let server: FakeLlmServer;
  let url: string;
  const headers = { 'x-api-key': 'sk-ant-test', 'anthropic-version': '2023-06-01' };
  before(async () => {
    server = await startAnthropicServer({ apiKey: 'sk-ant-test' });
    url = `${server.url}/v1/messages`;
  });
  after(() => server.close());

  test('non-streaming text reply', async () => {
    const { status, body } = await postJson(url, { model: 'claude-sonnet-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'hi claude' }] }, headers);
    assert.equal(status, 200);
    assert.match(body.id, /^msg_/);
    assert.equal(body.type, 'message');
    assert.equal(body.role, 'assistant');
    assert.equal(body.model, 'claude-sonnet-4-5');
    assert.deepEqual(body.content, [{ type: 'text', text: 'echo: hi claude' }]);
    assert.equal(body.stop_reason, 'end_turn');
    assert.equal(body.stop_sequence, null);
    assert.deepEqual(body.usage, { input_tokens: 2, output_tokens: 3 });
    assert.equal(server.requests.at(-1)?.headers['anthropic-version'], '2023-06-01');
  });

  test('streaming text: event sequence and several text deltas', async () => {
    const res = await post(url, { model: 'claude-sonnet-4-5', max_tokens: 100, stream: true, messages: [{ role: 'user', content: [{ type: 'text', text: 'tell me more' }] }] }, headers);
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
    const events = sseEvents(await res.text());
    for (const e of events) assert.equal((JSON.parse(e.data) as Loose).type, e.event);
    const names = events.map((e) => e.event).filter((n) => n !== 'content_block_delta' && n !== 'ping');
    assert.deepEqual(names, ['message_start', 'content_block_start', 'content_block_stop', 'message_delta', 'message_stop']);
    const data = events.map((e) => JSON.parse(e.data) as Loose);
    assert.deepEqual(data[0].message.content, []);
    assert.equal(data[0].message.usage.input_tokens, 3);
    const deltas = data.filter((d) => d.type === 'content_block_delta');
    assert.ok(deltas.length > 1);
    assert.ok(deltas.every((d) => d.index === 0 && d.delta.type === 'text_delta'));
    assert.equal(deltas.map((d) => d.delta.text as string).join(''), 'echo: tell me more');
    const messageDelta = data.find((d) => d.type === 'message_delta');
    assert.deepEqual(messageDelta.delta, { stop_reason: 'end_turn', stop_sequence: null });
    assert.equal(messageDelta.usage.output_tokens, 4);
  });

  test('queued tool call, non-streaming', async () => {
    server.queue({ text: 'Let me check.', toolCalls: [{ id: 'toolu_1', name: 'get_weather', arguments: { city: 'Oslo' } }] });
    const { body } = await postJson(url, { model: 'm', max_tokens: 10, messages: [{ role: 'user', content: 'weather?' }] }, headers);
    assert.deepEqual(body.content, [
      { type: 'text', text: 'Let me check.' },
      { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Oslo' } },
    ]);
    assert.equal(body.stop_reason, 'tool_use');
  });

  test('queued tool call, streaming: tool_use block with input_json_delta pieces', async () => {
    server.queue({ toolCalls: [{ name: 'get_weather', arguments: { city: 'Oslo', unit: 'celsius' } }] });
    const res = await post(url, { model: 'm', max_tokens: 10, stream: true, messages: [{ role: 'user', content: 'weather?' }] }, headers);
    const data = sseEvents(await res.text()).map((e) => JSON.parse(e.data) as Loose);
    const start = data.find((d) => d.type === 'content_block_start');
    assert.equal(start.index, 0);
    assert.equal(start.content_block.type, 'tool_use');
    assert.match(start.content_block.id, /^toolu_/);
    assert.equal(start.content_block.name, 'get_weather');
    assert.deepEqual(start.content_block.input, {});
    const pieces = data.filter((d) => d.type === 'content_block_delta').map((d) => d.delta);
    assert.ok(pieces.length > 2);
    assert.ok(pieces.every((p) => p.type === 'input_json_delta'));
    assert.deepEqual(JSON.parse(pieces.map((p) => p.partial_json as string).join('')), { city: 'Oslo', unit: 'celsius' });
    assert.equal(data.find((d) => d.type === 'message_delta').delta.stop_reason, 'tool_use');
  });

  test('handler sees system, tool_use and tool_result mapped into the view', async () => {
    let seen: ChatRequestView | undefined;
    server.setHandler((view) => {
      seen = view;
      return { text: 'Cold.' };
    });
    const { body } = await postJson(
      url,
      {
        model: 'claude-sonnet-4-5',
        max_tokens: 50,
        temperature: 0.5,
        system: [{ type: 'text', text: 'You are terse.' }],
        tools: [{ name: 'get_weather', description: 'Weather', input_schema: { type: 'object' } }],
        messages: [
          { role: 'user', content: 'weather?' },
          { role: 'assistant', content: [{ type: 'text', text: 'Checking.' }, { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Oslo' } }] },
          { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: [{ type: 'text', text: '-3C' }], is_error: false }] },
        ],
      },
      headers,
    );
    server.setHandler(null);
    assert.deepEqual(body.content, [{ type: 'text', text: 'Cold.' }]);
    assert.ok(seen);
    assert.equal(seen.maxTokens, 50);
    assert.equal(seen.temperature, 0.5);
    assert.deepEqual(seen.tools, [{ name: 'get_weather', description: 'Weather', parameters: { type: 'object' } }]);
    assert.deepEqual(seen.messages, [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: 'weather?' },
      { role: 'assistant', content: 'Checking.', toolCalls: [{ id: 'toolu_1', name: 'get_weather', arguments: { city: 'Oslo' } }] },
      { role: 'tool', content: '-3C', toolCallId: 'toolu_1' },
    ]);
  });

  test('failNext(429) answers rate_limit_error with Retry-After, then recovers', async () => {
    server.failNext(429, { retryAfter: '1' });
    const msg = { model: 'm', max_tokens: 10, messages: [{ role: 'user', content: 'again' }] };
    const failed = await post(url, msg, headers);
    assert.equal(failed.status, 429);
    assert.equal(failed.headers.get('retry-after'), '1');
    const err = (await failed.json()) as Loose;
    assert.equal(err.type, 'error');
    assert.equal(err.error.type, 'rate_limit_error');
    const ok = await postJson(url, msg, headers);
    assert.equal(ok.status, 200);
    assert.equal(ok.body.content[0].text, 'echo: again');
    server.failNext(529);
    assert.equal((await postJson(url, msg, headers)).body.error.type, 'overloaded_error');
  });

  test('API key check', async () => {
    const { status, body } = await postJson(url, { model: 'm', max_tokens: 1, messages: [] }, { 'x-api-key': 'nope', 'anthropic-version': '2023-06-01' });
    assert.equal(status, 401);
    assert.deepEqual(body.type, 'error');
    assert.equal(body.error.type, 'authentication_error');
  });
});

describe('Ollama server', () => {
  let server: FakeLlmServer;
  before(async () => {
    server = await startOllamaServer({ version: '0.9.0', embeddingDims: 6 });
  });
  after(() => server.close());

  test('root, version and tags', async () => {
    const root = await fetch(`${server.url}/`);
    assert.match(root.headers.get('content-type') ?? '', /^text\/plain/);
    assert.equal(await root.text(), 'Ollama is running');
    assert.deepEqual(await (await fetch(`${server.url}/api/version`)).json(), { version: '0.9.0' });
    const tags = (await (await fetch(`${server.url}/api/tags`)).json()) as Loose;
    assert.deepEqual(tags.models.map((m: Loose) => m.name), ['llama3.2:latest', 'nomic-embed-text:latest']);
    const m = tags.models[0];
    assert.equal(m.model, 'llama3.2:latest');
    assert.equal(typeof m.modified_at, 'string');
    assert.equal(typeof m.size, 'number');
    assert.match(m.digest, /^[0-9a-f]{64}$/);
    assert.deepEqual(Object.keys(m.details).filter((k) => ['format', 'family', 'parameter_size', 'quantization_level'].includes(k)).length, 4);
  });

  test('non-streaming chat', async () => {
    const { status, body } = await postJson(`${server.url}/api/chat`, { model: 'llama3.2', stream: false, messages: [{ role: 'user', content: 'hi llama' }] });
    assert.equal(status, 200);
    assert.equal(body.model, 'llama3.2');
    assert.ok(!Number.isNaN(Date.parse(body.created_at)));
    assert.deepEqual(body.message, { role: 'assistant', content: 'echo: hi llama' });
    assert.equal(body.done, true);
    assert.equal(body.done_reason, 'stop');
    assert.equal(body.prompt_eval_count, 2);
    assert.equal(body.eval_count, 3);
    for (const k of ['total_duration', 'load_duration', 'prompt_eval_duration', 'eval_duration']) assert.equal(typeof body[k], 'number');
  });

  test('chat streams NDJSON by default', async () => {
    const res = await post(`${server.url}/api/chat`, { model: 'llama3.2:latest', messages: [{ role: 'user', content: 'stream it please' }] });
    assert.match(res.headers.get('content-type') ?? '', /^application\/x-ndjson/);
    const lines = (await res.text()).trim().split('\n').map((l) => JSON.parse(l) as Loose);
    const parts = lines.filter((l) => !l.done);
    assert.ok(parts.length > 1);
    assert.equal(parts.map((l) => l.message.content as string).join(''), 'echo: stream it please');
    const last = lines.at(-1);
    assert.equal(last.done, true);
    assert.equal(last.done_reason, 'stop');
    assert.equal(last.prompt_eval_count, 3);
    assert.equal(last.eval_count, 4);
  });

  test('queued tool call, non-streaming and streaming', async () => {
    server.queue({ toolCalls: [{ name: 'get_weather', arguments: { city: 'Rome' } }] }, { toolCalls: [{ name: 'get_weather', arguments: { city: 'Rome' } }] });
    const plain = await postJson(`${server.url}/api/chat`, { model: 'llama3.2', stream: false, messages: [{ role: 'user', content: 'weather?' }] });
    assert.deepEqual(plain.body.message, { role: 'assistant', content: '', tool_calls: [{ function: { index: 0, name: 'get_weather', arguments: { city: 'Rome' } } }] });
    const res = await post(`${server.url}/api/chat`, { model: 'llama3.2', stream: true, messages: [{ role: 'user', content: 'weather?' }] });
    const lines = (await res.text()).trim().split('\n').map((l) => JSON.parse(l) as Loose);
    const calls = lines.flatMap((l) => (l.message.tool_calls ?? []) as Loose[]);
    assert.deepEqual(calls, [{ function: { index: 0, name: 'get_weather', arguments: { city: 'Rome' } } }]);
    assert.equal(lines.at(-1).done, true);
  });

  test('handler sees tool messages (tool_call_id or tool_name) and options', async () => {
    let seen: ChatRequestView | undefined;
    server.setHandler((view) => {
      seen = view;
      return { text: 'Sunny.' };
    });
    const { body } = await postJson(`${server.url}/api/chat`, {
      model: 'llama3.2',
      stream: false,
      options: { temperature: 0.1, num_predict: 64 },
      format: 'json',
      tools: [{ type: 'function', function: { name: 'get_weather', description: 'Weather', parameters: { type: 'object' } } }],
      messages: [
        { role: 'system', content: 'sys' },
        { role: 'user', content: 'weather?' },
        { role: 'assistant', content: '', tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: { city: 'Rome' } } }] },
        { role: 'tool', tool_call_id: 'c1', content: '{"sky":"clear"}' },
        { role: 'tool', tool_name: 'get_weather', content: 'again' },
      ],
    });
    server.setHandler(null);
    assert.equal(body.message.content, 'Sunny.');
    assert.ok(seen);
    assert.equal(seen.stream, false);
    assert.equal(seen.temperature, 0.1);
    assert.equal(seen.maxTokens, 64);
    assert.equal(seen.responseFormat, 'json');
    assert.deepEqual(seen.tools, [{ name: 'get_weather', description: 'Weather', parameters: { type: 'object' } }]);
    assert.deepEqual(seen.messages, [
      { role: 'system', content: 'sys' },
      { role: 'user', content: 'weather?' },
      { role: 'assistant', content: '', toolCalls: [{ id: 'c1', name: 'get_weather', arguments: { city: 'Rome' } }] },
      { role: 'tool', content: '{"sky":"clear"}', toolCallId: 'c1' },
      { role: 'tool', content: 'again', toolCallId: 'get_weather' },
    ]);
  });

  test('unknown model answers 404 like Ollama', async () => {
    const { status, body } = await postJson(`${server.url}/api/chat`, { model: 'mistral', stream: false, messages: [] });
    assert.equal(status, 404);
    assert.deepEqual(body, { error: "model 'mistral' not found, try pulling it first" });
  });

  test('embeddings: /api/embed and the legacy /api/embeddings', async () => {
    const a = await postJson(`${server.url}/api/embed`, { model: 'nomic-embed-text', input: ['one', 'two', 'three'] });
    assert.equal(a.status, 200);
    assert.equal(a.body.model, 'nomic-embed-text');
    assert.equal(a.body.embeddings.length, 3);
    assert.ok(a.body.embeddings.every((e: number[]) => e.length === 6));
    assert.equal(a.body.prompt_eval_count, 3);
    for (const k of ['total_duration', 'load_duration']) assert.equal(typeof a.body[k], 'number');
    const b = await postJson(`${server.url}/api/embed`, { model: 'nomic-embed-text', input: 'two' });
    assert.deepEqual(b.body.embeddings[0], a.body.embeddings[1]);
    const legacy = await postJson(`${server.url}/api/embeddings`, { model: 'nomic-embed-text', prompt: 'two' });
    assert.deepEqual(legacy.body, { embedding: a.body.embeddings[1] });
  });

  test('failNext(429) answers with Retry-After, then recovers', async () => {
    server.failNext(429, { retryAfter: '1' });
    const msg = { model: 'llama3.2', stream: false, messages: [{ role: 'user', content: 'again' }] };
    const failed = await post(`${server.url}/api/chat`, msg);
    assert.equal(failed.status, 429);
    assert.equal(failed.headers.get('retry-after'), '1');
    assert.equal(typeof ((await failed.json()) as Loose).error, 'string');
    const ok = await postJson(`${server.url}/api/chat`, msg);
    assert.equal(ok.body.message.content, 'echo: again');
  });
});

describe('lifecycle', () => {
  test('close() resolves with an open keep-alive connection and with a reply still delayed', async () => {
    for (const start of [startOpenAiServer, startAnthropicServer, startOllamaServer]) {
      const server = await start();
      const res = await fetch(`${server.url}/v1/models`);
      await res.arrayBuffer(); // the connection now sits idle in the keep-alive pool
      await closesPromptly(server);
    }
    const server = await startOpenAiServer();
    server.queue({ delayMs: 30_000, then: { text: 'never' } });
    const pending = post(`${server.url}/v1/chat/completions`, { model: 'm', messages: [{ role: 'user', content: 'x' }] });
    while (server.chatCount() === 0) await new Promise((r) => setTimeout(r, 5));
    await closesPromptly(server);
    await assert.rejects(pending);
  });

  test('a delayed reply lets a client time out', async () => {
    const server = await startAnthropicServer();
    server.queue({ delayMs: 500, then: { text: 'too late' } });
    await assert.rejects(
      fetch(`${server.url}/v1/messages`, {
        method: 'POST',
        body: JSON.stringify({ model: 'm', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }),
        signal: AbortSignal.timeout(50),
      }),
      { name: 'TimeoutError' },
    );
    await closesPromptly(server);
  });
});
