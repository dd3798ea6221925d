/**
 * Arrotech Hub's model endpoints through real HTTP handling: `/chat/providers`, the Ollama status and
 * diagnostic, `/chat/test/direct-response`, `/settings/ai` and `/chat/usage`, against local servers
 * speaking the OpenAI and Ollama protocols. Errors are FastAPI's `{detail}`; validation is 422.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { closedPort } from '../helpers/ports.ts';
import { startOllamaServer, startOpenAiServer, type FakeLlmServer } from '../helpers/llm-servers.ts';
import { registerUser, startTestServer, type TestServer } from '../helpers/server.ts';

describe('Arrotech model endpoints with OpenAI and Ollama configured', () => {
  let openai: FakeLlmServer;
  let ollama: FakeLlmServer;
  let s: TestServer;
  let alice: Awaited<ReturnType<typeof registerUser>>;
  let bob: Awaited<ReturnType<typeof registerUser>>;

  before(async () => {
    openai = await startOpenAiServer({ apiKey: 'sk-face' });
    ollama = await startOllamaServer({ models: ['llama3.2:latest'], version: '0.12.0' });
    s = await startTestServer({
      OPENAI_API_KEY: 'sk-face',
      OPENAI_BASE_URL: `${openai.url}/v1`,
      OPENAI_MODEL: 'face-model',
      OLLAMA_HOST: ollama.url,
      AI_PRICES: JSON.stringify({ 'openai/face-model': { input: 3, output: 6 } }),
    });
    alice = await registerUser(s);
    bob = await registerUser(s);
  });
  after(async () => {
    await s.close();
    await openai.close();
    await ollama.close();
  });

  test('GET /chat/providers lists live availability and the default', async () => {
    const res = await s.request('GET', '/chat/providers', { token: alice.accessToken });
    assert.equal(res.status, 200);
    assert.equal(res.body.success, true);
    assert.deepEqual(res.body.data.providers, ['openai', 'ollama']);
    assert.equal(res.body.data.default, 'openai');
    assert.equal(res.body.data.default_model, 'face-model');
    const byId = Object.fromEntries(res.body.data.all_providers.map((p: { id: string }) => [p.id, p]));
    assert.equal(byId.openai.available, true);
    assert.equal(typeof byId.openai.latency_ms, 'number');
    assert.equal(byId.anthropic.configured, false);
    assert.equal(byId.anthropic.available, false);
    assert.match(byId.anthropic.error, /ANTHROPIC_API_KEY/);
    // The live check really asked the providers.
    assert.ok(openai.requests.some((r) => r.path === '/v1/models' && r.headers.authorization === 'Bearer sk-face'));
    assert.ok(ollama.requests.some((r) => r.path === '/api/tags'));
  });

  test('GET /chat/providers needs a token', async () => {
    const res = await s.request('GET', '/chat/providers');
    assert.equal(res.status, 401);
    assert.equal(typeof res.body.detail, 'string');
  });

  test('POST /chat/test/direct-response answers through the default provider and records usage', async () => {
    openai.queue({ text: 'Arrotech MCP connects tools to models.', usage: { input: 10, output: 7 } });
    const res = await s.request('POST', '/chat/test/direct-response', { token: alice.accessToken, body: { content: 'Explain how Arrotech MCP works.' } });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.data.content, 'Arrotech MCP connects tools to models.');
    assert.equal(res.body.data.provider, 'openai');
    assert.equal(res.body.data.model, 'face-model');
    assert.equal(res.body.data.tokens_used, 17);
    assert.equal(res.body.data.cost, (10 * 3 + 7 * 6) / 1e6);
    const sent = openai.requests.filter((r) => r.path === '/v1/chat/completions').at(-1)!.body as { messages: { role: string; content: string }[] };
    assert.deepEqual(sent.messages, [{ role: 'user', content: 'Explain how Arrotech MCP works.' }]);
  });

  test('the document\'s provider field: a provider id, or a model name', async () => {
    ollama.queue({ text: 'from ollama' });
    const viaId = await s.request('POST', '/chat/test/direct-response', { token: alice.accessToken, body: { content: 'hi', provider: 'ollama' } });
    assert.equal(viaId.status, 200, viaId.text);
    assert.equal(viaId.body.data.provider, 'ollama');
    assert.equal(viaId.body.data.content, 'from ollama');
    assert.equal(viaId.body.data.cost, null);

    openai.queue({ text: 'from gpt-4o' });
    const viaModel = await s.request('POST', '/chat/test/direct-response', { token: alice.accessToken, body: { content: 'hi', provider: 'gpt-4o' } });
    assert.equal(viaModel.status, 200, viaModel.text);
    assert.equal(viaModel.body.data.provider, 'openai');
    assert.equal(viaModel.body.data.model, 'gpt-4o');
  });

  test('bad input: missing content is 422, an unsupported or unconfigured provider is explained', async () => {
    const missing = await s.request('POST', '/chat/test/direct-response', { token: alice.accessToken, body: { provider: 'openai' } });
    assert.equal(missing.status, 422);
    assert.deepEqual(missing.body.detail[0].loc, ['body', 'content']);

    const wrongType = await s.request('POST', '/chat/test/direct-response', { token: alice.accessToken, body: { content: 42 } });
    assert.equal(wrongType.status, 422);

    const gemini = await s.request('POST', '/chat/test/direct-response', { token: alice.accessToken, body: { content: 'hi', provider: 'gemini' } });
    assert.equal(gemini.status, 422);
    assert.match(gemini.body.detail, /gemini.*not supported/);

    const claude = await s.request('POST', '/chat/test/direct-response', { token: alice.accessToken, body: { content: 'hi', provider: 'anthropic' } });
    assert.equal(claude.status, 503);
    assert.match(claude.body.detail, /ANTHROPIC_API_KEY/);
  });

  test('a provider failure is a 503 in the face\'s shape, never a 500', async () => {
    openai.failNext(500, { times: 3, body: { error: { message: 'upstream exploded' } } });
    const res = await s.request('POST', '/chat/test/direct-response', { token: alice.accessToken, body: { content: 'hi' } });
    assert.equal(res.status, 503);
    assert.match(res.body.detail, /openai provider failed \(HTTP 500\)/);
  });

  test('PUT /settings/ai sets the user\'s default; it applies to that user only', async () => {
    const put = await s.request('PUT', '/settings/ai', { token: alice.accessToken, body: { provider: 'ollama', model: 'llama3.2' } });
    assert.equal(put.status, 200, put.text);
    assert.deepEqual(put.body.data, { provider: 'ollama', model: 'llama3.2' });
    assert.deepEqual((await s.request('GET', '/settings/ai', { token: alice.accessToken })).body.data, { provider: 'ollama', model: 'llama3.2' });
    assert.deepEqual((await s.request('GET', '/settings/ai', { token: bob.accessToken })).body.data, { provider: null, model: null });

    ollama.queue({ text: 'alice uses ollama' });
    const a = await s.request('POST', '/chat/test/direct-response', { token: alice.accessToken, body: { content: 'hi' } });
    assert.equal(a.body.data.provider, 'ollama');
    openai.queue({ text: 'bob uses the server default' });
    const b = await s.request('POST', '/chat/test/direct-response', { token: bob.accessToken, body: { content: 'hi' } });
    assert.equal(b.body.data.provider, 'openai');

    const providers = await s.request('GET', '/chat/providers', { token: alice.accessToken });
    assert.equal(providers.body.data.default, 'ollama');

    const bad = await s.request('PUT', '/settings/ai', { token: alice.accessToken, body: { provider: 'gemini' } });
    assert.equal(bad.status, 422);
    const unconfigured = await s.request('PUT', '/settings/ai', { token: alice.accessToken, body: { provider: 'anthropic' } });
    assert.equal(unconfigured.status, 503);
    assert.deepEqual((await s.request('GET', '/settings/ai', { token: alice.accessToken })).body.data, { provider: 'ollama', model: 'llama3.2' }, 'a refused change keeps the stored setting');

    const cleared = await s.request('PUT', '/settings/ai', { token: alice.accessToken, body: { provider: null } });
    assert.deepEqual(cleared.body.data, { provider: null, model: null });
    assert.equal((await s.request('GET', '/settings/ai')).status, 401);
  });

  test('GET /chat/usage sums the caller\'s own calls only', async () => {
    const mine = await s.request('GET', '/chat/usage?days=1', { token: alice.accessToken });
    assert.equal(mine.status, 200);
    assert.ok(mine.body.data.calls >= 4);
    const row = mine.body.data.by_model.find((m: { model: string }) => m.model === 'face-model');
    assert.ok(row.input_tokens >= 10);
    assert.ok(row.failed >= 1, 'the failed call is counted as failed');
    assert.ok(mine.body.data.cost > 0);
    const theirs = await s.request('GET', '/chat/usage', { token: bob.accessToken });
    assert.equal(theirs.body.data.calls, 1);
    assert.equal((await s.request('GET', '/chat/usage?days=0', { token: alice.accessToken })).status, 422);
  });

  test('GET /chat/ollama/status and /diagnostic report what the Ollama server says', async () => {
    const status = await s.request('GET', '/chat/ollama/status');
    assert.equal(status.status, 200);
    assert.equal(status.body.status, 'running');
    assert.equal(status.body.version, '0.12.0');
    assert.equal(status.body.model_count, 1);
    const diag = await s.request('GET', '/chat/ollama/diagnostic');
    assert.equal(diag.status, 200);
    assert.deepEqual(diag.body.models, ['llama3.2:latest']);
    const checks = Object.fromEntries(diag.body.checks.map((c: { name: string; ok: boolean }) => [c.name, c.ok]));
    assert.deepEqual(checks, { configured: true, reachable: true, chat_model_pulled: true, embedding_model_pulled: false });
    assert.ok(diag.body.recommendations.some((r: string) => r.includes('ollama pull nomic-embed-text')));
  });
});

describe('Arrotech model endpoints with no provider configured', () => {
  let s: TestServer;
  let user: Awaited<ReturnType<typeof registerUser>>;
  before(async () => {
    s = await startTestServer();
    user = await registerUser(s);
  });
  after(async () => {
    await s.close();
  });

  test('direct-response is 503 naming the settings to set', async () => {
    const res = await s.request('POST', '/chat/test/direct-response', { token: user.accessToken, body: { content: 'hi' } });
    assert.equal(res.status, 503);
    assert.match(res.body.detail, /OPENAI_API_KEY/);
    assert.match(res.body.detail, /OLLAMA_HOST/);
  });

  test('providers lists none available and no default', async () => {
    const res = await s.request('GET', '/chat/providers', { token: user.accessToken });
    assert.deepEqual(res.body.data.providers, []);
    assert.equal(res.body.data.default, null);
    assert.equal(res.body.data.all_providers.length, 3);
  });

  test('Ollama status says it is not configured, and the diagnostic says what to do', async () => {
    assert.equal((await s.request('GET', '/chat/ollama/status')).body.status, 'not_configured');
    const diag = await s.request('GET', '/chat/ollama/diagnostic');
    assert.equal(diag.body.status, 'not_configured');
    assert.match(diag.body.recommendations[0], /OLLAMA_HOST/);
  });

  test('an Ollama host that does not answer is reported as unreachable', async () => {
    const dead = await startTestServer({ OLLAMA_HOST: `http://127.0.0.1:${await closedPort()}` });
    try {
      const status = await dead.request('GET', '/chat/ollama/status');
      assert.equal(status.body.status, 'unreachable');
      assert.match(status.body.error, /ECONNREFUSED/);
    } finally {
      await dead.close();
    }
  });
});
