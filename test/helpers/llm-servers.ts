/**
 * Local stand-ins for three LLM providers that speak their real wire protocols, so the AI layer
 * (Vercel AI SDK providers pointed at `url`) can be tested end to end without network access:
 *
 * - OpenAI Chat Completions: POST /v1/chat/completions (JSON or SSE), POST /v1/embeddings, GET /v1/models
 * - Anthropic Messages: POST /v1/messages (JSON or SSE with `event:` lines), GET /v1/models
 * - Ollama native API: POST /api/chat (JSON or NDJSON, streaming by default), POST /api/embed,
 *   POST /api/embeddings (legacy), GET /api/tags, GET /api/version, GET /
 *
 * Tests script chat replies with `queue` (FIFO), `setHandler` (sees a provider-neutral view of the
 * request) or fall back to echoing the last user message; `failNext` makes the next requests of any
 * route answer an HTTP error in the provider's own error shape.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';

export interface RecordedRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}
export interface ToolCallReply {
  id?: string;
  name: string;
  arguments: Record<string, unknown>;
}
export type FakeReply =
  | { text: string; usage?: { input: number; output: number } }
  | { toolCalls: ToolCallReply[]; text?: string; usage?: { input: number; output: number } }
  | { status: number; body?: unknown; headers?: Record<string, string> }
  | { delayMs: number; then: FakeReply };
export interface ChatRequestView {
  model: string;
  stream: boolean;
  messages: Array<{
    role: 'system' | 'user' | 'assistant' | 'tool';
    content: string;
    toolCalls?: { id: string; name: string; arguments: unknown }[];
    toolCallId?: string;
  }>;
  tools: Array<{ name: string; description?: string; parameters: unknown }>;
  temperature?: number;
  maxTokens?: number;
  responseFormat?: unknown;
  raw: unknown;
}
export interface FakeLlmServer {
  /** Base URL, e.g. http://127.0.0.1:PORT (OpenAI and Anthropic routes live under /v1, Ollama under /api). */
  url: string;
  /** Every request received, in order (including failed and unauthorized ones). */
  requests: RecordedRequest[];
  /** Next chat replies, FIFO; when empty the handler answers, else the default echo. */
  queue(...replies: FakeReply[]): void;
  setHandler(fn: ((req: ChatRequestView) => FakeReply | Promise<FakeReply>) | null): void;
  /** The next `times` (default 1) requests of any route answer `status`, with Retry-After when given. */
  failNext(status: number, opts?: { times?: number; retryAfter?: string; body?: unknown }): void;
  /** Requests that reached the chat route (whatever their outcome, so retries count). */
  chatCount(): number;
  close(): Promise<void>;
}

type Json = Record<string, unknown>;
type Message = ChatRequestView['messages'][number];
type Usage = { input: number; output: number };
/** A chat reply with defaults filled in, ready to be written in a provider's format. */
interface Resolved {
  text: string;
  toolCalls: { id: string; name: string; arguments: Record<string, unknown> }[];
  usage: Usage;
}
type Writer = (res: ServerResponse, reply: Resolved, view: ChatRequestView) => Promise<void>;
interface Core {
  /** Resolves the next reply for `view` and writes it; tool calls without an id get `toolIdPrefix` + random ('' = leave empty). */
  chat(res: ServerResponse, view: ChatRequestView, toolIdPrefix: string, write: Writer): Promise<void>;
  error(res: ServerResponse, status: number, message: string): void;
}
type Route = (body: Json, res: ServerResponse) => void | Promise<void>;
interface Protocol {
  errorBody(status: number, message: string): unknown;
  authorized(req: IncomingMessage): boolean;
  chatRoute: string;
  routes(core: Core): Record<string, Route>;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const obj = (v: unknown): Json => (isObj(v) ? v : {});
const list = (v: unknown): unknown[] => (Array.isArray(v) ? (v as unknown[]) : []);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined);
const hex = (bytes: number): string => randomBytes(bytes).toString('hex');
const words = (s: string): number => s.split(/\s+/).filter(Boolean).length;
/** Splits text into per-word pieces (each keeps its trailing whitespace) for streaming. */
const wordPieces = (s: string): string[] => s.match(/\S+\s*|\s+/g) ?? [];
/** Splits a JSON string into fixed-size pieces, the way providers stream tool arguments. */
function slices(s: string, size = 8): string[] {
  const out: string[] = [];
  for (let i = 0; i < s.length; i += size) out.push(s.slice(i, i + size));
  return out;
}
/** Text of a message content: a string, or the text of an array of content parts. */
function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  return list(content)
    .map((p) => str(obj(p).text) ?? str(obj(p).content) ?? '')
    .join('');
}
function parseArgs(v: unknown): unknown {
  if (typeof v !== 'string') return v;
  try {
    return JSON.parse(v) as unknown;
  } catch {
    return v;
  }
}
function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
  res.end(text);
}
/** Writes a streamed response chunk by chunk, yielding between writes so chunks leave separately. */
async function stream(res: ServerResponse, contentType: string, chunks: string[]): Promise<void> {
  res.writeHead(200, { 'content-type': contentType, 'cache-control': 'no-cache' });
  for (const chunk of chunks) {
    if (res.destroyed) return;
    res.write(chunk);
    await new Promise((resolve) => setImmediate(resolve));
  }
  res.end();
}
const sse = (data: unknown, event?: string): string => `${event ? `event: ${event}\n` : ''}data: ${JSON.stringify(data)}\n\n`;

/** A deterministic unit vector for `text` (float32-exact, so the float and base64 forms agree). */
export function fakeEmbedding(text: string, dims: number): number[] {
  let seed = createHash('sha256').update(text).digest().readUInt32LE(0);
  const next = (): number => {
    // mulberry32
    seed = (seed + 0x6d2b79f5) >>> 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const v = Array.from({ length: dims }, () => next() * 2 - 1);
  const norm = Math.hypot(...v) || 1;
  return v.map((x) => Math.fround(x / norm));
}
const base64Floats = (v: number[]): string => Buffer.from(new Float32Array(v).buffer).toString('base64');
const embedInputs = (input: unknown): string[] => (Array.isArray(input) ? input.map((x) => String(x)) : [String(input ?? '')]);

// ---------------------------------------------------------------------------------------------
// The shared server: recording, failure injection, auth, routing and reply resolution

async function startFake(protocol: Protocol): Promise<FakeLlmServer> {
  const requests: RecordedRequest[] = [];
  const replies: FakeReply[] = [];
  const failures: { status: number; retryAfter?: string; body?: unknown }[] = [];
  let handler: ((req: ChatRequestView) => FakeReply | Promise<FakeReply>) | null = null;
  let chats = 0;
  const closing = new AbortController();

  const core: Core = {
    error: (res, status, message) => json(res, status, protocol.errorBody(status, message)),
    async chat(res, view, toolIdPrefix, write) {
      let reply: FakeReply = replies.shift() ?? (handler ? await handler(view) : { text: `echo: ${lastUser(view)}` });
      while ('delayMs' in reply) {
        const delayMs = reply.delayMs;
        const ok = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(true), delayMs);
          closing.signal.addEventListener('abort', () => (clearTimeout(timer), resolve(false)), { once: true });
        });
        if (!ok || res.destroyed) return;
        reply = reply.then;
      }
      if ('status' in reply) {
        json(res, reply.status, reply.body ?? protocol.errorBody(reply.status, `scripted error ${reply.status}`), reply.headers);
        return;
      }
      const text = reply.text ?? '';
      const toolCalls = ('toolCalls' in reply ? reply.toolCalls : []).map((c) => ({
        id: c.id ?? (toolIdPrefix === '' ? '' : `${toolIdPrefix}${hex(12)}`),
        name: c.name,
        arguments: c.arguments,
      }));
      const usage = reply.usage ?? {
        input: view.messages.reduce((n, m) => n + words(m.content), 0),
        output: words(text) + toolCalls.reduce((n, c) => n + words(JSON.stringify(c.arguments)), 0),
      };
      await write(res, { text, toolCalls, usage }, view);
    },
  };
  const routes = protocol.routes(core);

  const server = createServer((req, res) => {
    res.on('error', () => {}); // the client may go away mid-stream (timeouts, aborts)
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks).toString('utf8');
      let body: unknown = rawBody === '' ? undefined : rawBody;
      try {
        if (rawBody !== '') body = JSON.parse(rawBody) as unknown;
      } catch {
        // keep the raw text; routes below answer 400
      }
      const method = req.method ?? 'GET';
      const path = req.url ?? '/';
      requests.push({ method, path, headers: { ...req.headers }, body });
      const key = `${method} ${new URL(path, 'http://x').pathname}`;
      if (key === protocol.chatRoute) chats++;

      const failure = failures.shift();
      if (failure) {
        const headers: Record<string, string> = failure.retryAfter !== undefined ? { 'retry-after': failure.retryAfter } : {};
        json(res, failure.status, failure.body ?? protocol.errorBody(failure.status, `injected error ${failure.status}`), headers);
        return;
      }
      if (!protocol.authorized(req)) return core.error(res, 401, 'Invalid API key provided.');
      const route = routes[key];
      if (!route) return core.error(res, 404, `no route for ${key}`);
      if (method === 'POST' && !isObj(body)) return core.error(res, 400, 'request body must be a JSON object');
      Promise.resolve(route(obj(body), res)).catch((err: unknown) => {
        if (!res.headersSent) core.error(res, 500, `fake server failure: ${err instanceof Error ? err.message : String(err)}`);
        else res.destroy();
      });
    });
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));

  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    queue: (...more) => void replies.push(...more),
    setHandler: (fn) => void (handler = fn),
    failNext(status, opts = {}) {
      for (let i = 0; i < (opts.times ?? 1); i++) failures.push({ status, retryAfter: opts.retryAfter, body: opts.body });
    },
    chatCount: () => chats,
    close: () =>
      new Promise<void>((resolve) => {
        closing.abort();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function lastUser(view: ChatRequestView): string {
  for (let i = view.messages.length - 1; i >= 0; i--) {
    const m = view.messages[i];
    if (m?.role === 'user') return m.content;
  }
  return '';
}

// ---------------------------------------------------------------------------------------------
// OpenAI Chat Completions

function openAiErrorBody(status: number, message: string): unknown {
  const [type, code] =
    status === 401 ? ['invalid_request_error', 'invalid_api_key']
    : status === 404 ? ['invalid_request_error', 'not_found']
    : status === 429 ? ['requests', 'rate_limit_exceeded']
    : status >= 500 ? ['server_error', null]
    : ['invalid_request_error', null];
  return { error: { message, type, param: null, code } };
}

function openAiView(body: Json): ChatRequestView {
  const messages = list(body.messages).map((raw): Message => {
    const m = obj(raw);
    const role = str(m.role);
    const message: Message = {
      role: role === 'developer' ? 'system' : role === 'system' || role === 'assistant' || role === 'tool' ? role : 'user',
      content: textOf(m.content),
    };
    if (Array.isArray(m.tool_calls)) {
      message.toolCalls = list(m.tool_calls).map((c) => ({
        id: str(obj(c).id) ?? '',
        name: str(obj(obj(c).function).name) ?? '',
        arguments: parseArgs(obj(obj(c).function).arguments),
      }));
    }
    if (typeof m.tool_call_id === 'string') message.toolCallId = m.tool_call_id;
    return message;
  });
  return {
    model: str(body.model) ?? '',
    stream: body.stream === true,
    messages,
    tools: list(body.tools).map((t) => {
      const f = obj(obj(t).function);
      return { name: str(f.name) ?? '', description: str(f.description), parameters: f.parameters };
    }),
    temperature: num(body.temperature),
    maxTokens: num(body.max_completion_tokens) ?? num(body.max_tokens),
    responseFormat: body.response_format,
    raw: body,
  };
}

const writeOpenAi: Writer = async (res, reply, view) => {
  const base = { id: `chatcmpl-${hex(12)}`, created: Math.floor(Date.now() / 1000), model: view.model, system_fingerprint: 'fp_fake' };
  const finish = reply.toolCalls.length > 0 ? 'tool_calls' : 'stop';
  const usage = { prompt_tokens: reply.usage.input, completion_tokens: reply.usage.output, total_tokens: reply.usage.input + reply.usage.output };
  const toolCalls = reply.toolCalls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: JSON.stringify(c.arguments) } }));
  if (!view.stream) {
    const content = reply.text === '' && toolCalls.length > 0 ? null : reply.text;
    const message = { role: 'assistant', content, refusal: null, ...(toolCalls.length > 0 && { tool_calls: toolCalls }) };
    json(res, 200, { ...base, object: 'chat.completion', choices: [{ index: 0, message, logprobs: null, finish_reason: finish }], usage });
    return;
  }
  const chunk = (delta: Json, finishReason: string | null = null) =>
    sse({ ...base, object: 'chat.completion.chunk', choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }] });
  const chunks = [chunk({ role: 'assistant', content: reply.text === '' && toolCalls.length > 0 ? null : '' })];
  for (const piece of wordPieces(reply.text)) chunks.push(chunk({ content: piece }));
  toolCalls.forEach((c, index) => {
    chunks.push(chunk({ tool_calls: [{ index, id: c.id, type: 'function', function: { name: c.function.name, arguments: '' } }] }));
    for (const piece of slices(c.function.arguments)) chunks.push(chunk({ tool_calls: [{ index, function: { arguments: piece } }] }));
  });
  chunks.push(chunk({}, finish));
  if (obj(obj(view.raw).stream_options).include_usage === true) {
    chunks.push(sse({ ...base, object: 'chat.completion.chunk', choices: [], usage }));
  }
  chunks.push('data: [DONE]\n\n');
  await stream(res, 'text/event-stream; charset=utf-8', chunks);
};

export function startOpenAiServer(opts: { apiKey?: string; embeddingDims?: number } = {}): Promise<FakeLlmServer> {
  const defaultDims = opts.embeddingDims ?? 8;
  return startFake({
    errorBody: openAiErrorBody,
    authorized: (req) => opts.apiKey === undefined || req.headers.authorization === `Bearer ${opts.apiKey}`,
    chatRoute: 'POST /v1/chat/completions',
    routes: (core) => ({
      'POST /v1/chat/completions': (body, res) => core.chat(res, openAiView(body), 'call_', writeOpenAi),
      'POST /v1/embeddings': (body, res) => {
        const inputs = embedInputs(body.input);
        const dims = num(body.dimensions) ?? defaultDims;
        const asBase64 = body.encoding_format === 'base64';
        const data = inputs.map((text, index) => {
          const v = fakeEmbedding(text, dims);
          return { object: 'embedding', index, embedding: asBase64 ? base64Floats(v) : v };
        });
        const tokens = inputs.reduce((n, t) => n + words(t), 0);
        json(res, 200, { object: 'list', data, model: str(body.model) ?? '', usage: { prompt_tokens: tokens, total_tokens: tokens } });
      },
      'GET /v1/models': (_body, res) => {
        const created = Math.floor(Date.now() / 1000);
        const ids = ['gpt-4o-mini', 'gpt-4o', 'text-embedding-3-small'];
        json(res, 200, { object: 'list', data: ids.map((id) => ({ id, object: 'model', created, owned_by: 'system' })) });
      },
    }),
  });
}

// ---------------------------------------------------------------------------------------------
// Anthropic Messages

function anthropicErrorBody(status: number, message: string): unknown {
  const types: Record<number, string> = {
    400: 'invalid_request_error',
    401: 'authentication_error',
    403: 'permission_error',
    404: 'not_found_error',
    413: 'request_too_large',
    429: 'rate_limit_error',
    500: 'api_error',
    529: 'overloaded_error',
  };
  return { type: 'error', error: { type: types[status] ?? (status >= 500 ? 'api_error' : 'invalid_request_error'), message } };
}

function anthropicView(body: Json): ChatRequestView {
  const messages: Message[] = [];
  const system = textOf(body.system);
  if (body.system !== undefined) messages.push({ role: 'system', content: system });
  for (const raw of list(body.messages)) {
    const m = obj(raw);
    const role = m.role === 'assistant' ? 'assistant' : 'user';
    if (!Array.isArray(m.content)) {
      messages.push({ role, content: textOf(m.content) });
      continue;
    }
    let text = '';
    const toolCalls: NonNullable<Message['toolCalls']> = [];
    for (const blockRaw of list(m.content)) {
      const block = obj(blockRaw);
      if (block.type === 'text') text += str(block.text) ?? '';
      else if (block.type === 'tool_use') toolCalls.push({ id: str(block.id) ?? '', name: str(block.name) ?? '', arguments: block.input });
      else if (block.type === 'tool_result') {
        messages.push({ role: 'tool', content: textOf(block.content), toolCallId: str(block.tool_use_id) ?? '' });
      }
    }
    if (role === 'assistant') messages.push({ role, content: text, ...(toolCalls.length > 0 && { toolCalls }) });
    else if (text !== '') messages.push({ role, content: text });
  }
  return {
    model: str(body.model) ?? '',
    stream: body.stream === true,
    messages,
    tools: list(body.tools).map((t) => ({
      name: str(obj(t).name) ?? '',
      description: str(obj(t).description),
      parameters: obj(t).input_schema,
    })),
    temperature: num(body.temperature),
    maxTokens: num(body.max_tokens),
    responseFormat: obj(body.output_config).format,
    raw: body,
  };
}

const writeAnthropic: Writer = async (res, reply, view) => {
  const id = `msg_01${hex(12)}`;
  const stopReason = reply.toolCalls.length > 0 ? 'tool_use' : 'end_turn';
  const blocks: Json[] = [
    ...(reply.text !== '' ? [{ type: 'text', text: reply.text }] : []),
    ...reply.toolCalls.map((c) => ({ type: 'tool_use', id: c.id, name: c.name, input: c.arguments })),
  ];
  const message = { id, type: 'message', role: 'assistant', model: view.model };
  if (!view.stream) {
    const usage = { input_tokens: reply.usage.input, output_tokens: reply.usage.output };
    json(res, 200, { ...message, content: blocks, stop_reason: stopReason, stop_sequence: null, usage });
    return;
  }
  const ev = (type: string, data: Json) => sse({ type, ...data }, type);
  const chunks = [
    ev('message_start', {
      message: { ...message, content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: reply.usage.input, output_tokens: 1 } },
    }),
    ev('ping', {}),
  ];
  blocks.forEach((block, index) => {
    if (block.type === 'text') {
      chunks.push(ev('content_block_start', { index, content_block: { type: 'text', text: '' } }));
      for (const text of wordPieces(reply.text)) chunks.push(ev('content_block_delta', { index, delta: { type: 'text_delta', text } }));
    } else {
      chunks.push(ev('content_block_start', { index, content_block: { ...block, input: {} } }));
      for (const partial_json of ['', ...slices(JSON.stringify(block.input))]) {
        chunks.push(ev('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json } }));
      }
    }
    chunks.push(ev('content_block_stop', { index }));
  });
  chunks.push(ev('message_delta', { delta: { stop_reason: stopReason, stop_sequence: null }, usage: { output_tokens: reply.usage.output } }));
  chunks.push(ev('message_stop', {}));
  await stream(res, 'text/event-stream; charset=utf-8', chunks);
};

export function startAnthropicServer(opts: { apiKey?: string } = {}): Promise<FakeLlmServer> {
  return startFake({
    errorBody: anthropicErrorBody,
    authorized: (req) => opts.apiKey === undefined || req.headers['x-api-key'] === opts.apiKey,
    chatRoute: 'POST /v1/messages',
    routes: (core) => ({
      'POST /v1/messages': (body, res) => core.chat(res, anthropicView(body), 'toolu_01', writeAnthropic),
      'GET /v1/models': (_body, res) => {
        const ids = ['claude-sonnet-4-5', 'claude-haiku-4-5'];
        const data = ids.map((id) => ({ type: 'model', id, display_name: id, created_at: '2025-01-01T00:00:00Z' }));
        json(res, 200, { data, has_more: false, first_id: ids[0], last_id: ids.at(-1) });
      },
    }),
  });
}

// ---------------------------------------------------------------------------------------------
// Ollama native API

const withTag = (model: string): string => (model.includes(':') ? model : `${model}:latest`);

function ollamaView(body: Json): ChatRequestView {
  const options = obj(body.options);
  const messages = list(body.messages).map((raw): Message => {
    const m = obj(raw);
    const role = str(m.role);
    const message: Message = {
      role: role === 'developer' ? 'system' : role === 'system' || role === 'assistant' || role === 'tool' ? role : 'user',
      content: textOf(m.content),
    };
    if (Array.isArray(m.tool_calls)) {
      message.toolCalls = list(m.tool_calls).map((c, i) => ({
        id: str(obj(c).id) ?? `call_${i}`,
        name: str(obj(obj(c).function).name) ?? '',
        arguments: parseArgs(obj(obj(c).function).arguments),
      }));
    }
    // The AI SDK provider sends tool_call_id; Ollama's own clients send tool_name.
    const toolCallId = str(m.tool_call_id) ?? str(m.tool_name);
    if (message.role === 'tool' && toolCallId !== undefined) message.toolCallId = toolCallId;
    return message;
  });
  return {
    model: str(body.model) ?? '',
    stream: body.stream !== false, // Ollama streams unless told otherwise
    messages,
    tools: list(body.tools).map((t) => {
      const f = obj(obj(t).function);
      return { name: str(f.name) ?? '', description: str(f.description), parameters: f.parameters };
    }),
    // The AI SDK provider sends temperature / max_output_tokens at the top level; Ollama reads `options`.
    temperature: num(options.temperature) ?? num(body.temperature),
    maxTokens: num(options.num_predict) ?? num(body.max_output_tokens),
    responseFormat: body.format,
    raw: body,
  };
}

const writeOllama: Writer = async (res, reply, view) => {
  const head = () => ({ model: view.model, created_at: new Date().toISOString() });
  // Ollama's tool calls carry no id unless the scripted reply gave one (the AI SDK then generates its own).
  const toolCalls = reply.toolCalls.map((c, index) => ({ ...(c.id !== '' && { id: c.id }), function: { index, name: c.name, arguments: c.arguments } }));
  const done = {
    done: true,
    done_reason: 'stop',
    total_duration: 123_456_789,
    load_duration: 1_234_567,
    prompt_eval_count: reply.usage.input,
    prompt_eval_duration: 12_345_678,
    eval_count: reply.usage.output,
    eval_duration: 98_765_432,
  };
  if (!view.stream) {
    const message = { role: 'assistant', content: reply.text, ...(toolCalls.length > 0 && { tool_calls: toolCalls }) };
    json(res, 200, { ...head(), message, ...done });
    return;
  }
  const line = (data: Json) => `${JSON.stringify(data)}\n`;
  const lines = wordPieces(reply.text).map((content) => line({ ...head(), message: { role: 'assistant', content }, done: false }));
  if (toolCalls.length > 0) lines.push(line({ ...head(), message: { role: 'assistant', content: '', tool_calls: toolCalls }, done: false }));
  lines.push(line({ ...head(), message: { role: 'assistant', content: '' }, ...done }));
  await stream(res, 'application/x-ndjson', lines);
};

export function startOllamaServer(opts: { models?: string[]; embeddingDims?: number; version?: string } = {}): Promise<FakeLlmServer> {
  const models = (opts.models ?? ['llama3.2:latest', 'nomic-embed-text:latest']).map(withTag);
  const defaultDims = opts.embeddingDims ?? 8;
  const notFound = (model: string) => ({ error: `model '${model}' not found, try pulling it first` });
  const known = (body: Json, res: ServerResponse): boolean => {
    const model = str(body.model) ?? '';
    if (models.includes(withTag(model))) return true;
    json(res, 404, notFound(model));
    return false;
  };
  return startFake({
    errorBody: (_status, message) => ({ error: message }),
    authorized: () => true,
    chatRoute: 'POST /api/chat',
    routes: (core) => ({
      'GET /': (_body, res) => {
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
        res.end('Ollama is running');
      },
      'GET /api/version': (_body, res) => json(res, 200, { version: opts.version ?? '0.12.6' }),
      'GET /api/tags': (_body, res) =>
        json(res, 200, {
          models: models.map((name) => ({
            name,
            model: name,
            modified_at: '2025-01-01T00:00:00.000000000Z',
            size: 2_019_393_189,
            digest: createHash('sha256').update(name).digest('hex'),
            details: {
              parent_model: '',
              format: 'gguf',
              family: /^[a-z]+/.exec(name)?.[0] ?? 'llama',
              families: [/^[a-z]+/.exec(name)?.[0] ?? 'llama'],
              parameter_size: '3.2B',
              quantization_level: 'Q4_K_M',
            },
          })),
        }),
      'POST /api/chat': async (body, res) => {
        // Ollama answers 404 for an unknown model before anything else, but the request still counts as a chat.
        if (!known(body, res)) return;
        await core.chat(res, ollamaView(body), '', writeOllama);
      },
      'POST /api/embed': (body, res) => {
        if (!known(body, res)) return;
        const inputs = embedInputs(body.input);
        const dims = num(body.dimensions) ?? defaultDims;
        json(res, 200, {
          model: str(body.model),
          embeddings: inputs.map((t) => fakeEmbedding(t, dims)),
          total_duration: 14_143_917,
          load_duration: 1_019_500,
          prompt_eval_count: inputs.reduce((n, t) => n + words(t), 0),
        });
      },
      'POST /api/embeddings': (body, res) => {
        if (!known(body, res)) return;
        json(res, 200, { embedding: fakeEmbedding(str(body.prompt) ?? '', defaultDims) });
      },
    }),
  });
}
