/**
 * Helomatic's AI chat and data enrichment through real HTTP handling: `/api/ai/chat` (whole and
 * streamed) with stored conversations, and `/api/data/enrich` against a local company website, a
 * local OpenAI-protocol server and injected MX answers.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { EnrichmentService } from '../../src/domains/enrichment/service.ts';
import type { MxRecord } from '../../src/domains/enrichment/dns.ts';
import { startOpenAiServer, type FakeLlmServer } from '../helpers/llm-servers.ts';
import { registerUser, startTestServer, type TestServer } from '../helpers/server.ts';

type User = Awaited<ReturnType<typeof registerUser>>;
interface SentChat {
  model: string;
  temperature?: number;
  max_tokens?: number;
  max_completion_tokens?: number;
  messages: { role: string; content: string }[];
}

const PRICES = JSON.stringify({ 'openai/gpt-4': { input: 30, output: 60 }, 'openai/helo-model': { input: 3, output: 6 } });

function lastChat(srv: FakeLlmServer): SentChat {
  return srv.requests.filter((r) => r.path === '/v1/chat/completions').at(-1)!.body as SentChat;
}

/** `data:` payloads of a server-sent event stream, JSON-parsed except `[DONE]`. */
function sseEvents(text: string): unknown[] {
  return text
    .split('\n\n')
    .filter((block) => block.startsWith('data: '))
    .map((block) => block.slice('data: '.length))
    .map((data) => (data === '[DONE]' ? data : (JSON.parse(data) as unknown)));
}

function assertHelomaticError(res: { status: number; body: Record<string, unknown> }, status: number, code: string) {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.equal(res.body.success, false);
  assert.equal(res.body.code, code);
  assert.equal(typeof res.body.error, 'string');
  assert.equal(typeof res.body.timestamp, 'string');
}

describe('Helomatic AI chat with an OpenAI-protocol provider', () => {
  let openai: FakeLlmServer;
  let s: TestServer;
  let alice: User;
  let bob: User;
  const docRequest = {
    messages: [
      { role: 'system', content: 'You are a helpful business automation assistant.' },
      { role: 'user', content: 'Help me create a workflow to automate customer onboarding.' },
    ],
    task: 'automation',
    options: { temperature: 0.7, max_tokens: 1000, model: 'gpt-4', stream: false },
  };

  before(async () => {
    openai = await startOpenAiServer({ apiKey: 'sk-helo' });
    s = await startTestServer({ OPENAI_API_KEY: 'sk-helo', OPENAI_BASE_URL: `${openai.url}/v1`, OPENAI_MODEL: 'helo-model', AI_PRICES: PRICES });
    alice = await registerUser(s);
    bob = await registerUser(s);
  });
  after(async () => {
    await s.close();
    await openai.close();
  });

  test('POST /api/ai/chat answers in the document\'s shape, with usage and cost', async () => {
    openai.queue({ text: 'Here is an onboarding workflow: 1. Welcome email.', usage: { input: 120, output: 127 } });
    const res = await s.request('POST', '/api/ai/chat', { token: alice.accessToken, body: docRequest });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(Object.keys(res.body).sort(), ['data', 'success', 'timestamp']);
    assert.equal(res.body.success, true);
    assert.ok(!Number.isNaN(Date.parse(res.body.timestamp)));
    const { data } = res.body;
    assert.deepEqual(Object.keys(data).sort(), ['conversation_id', 'response', 'usage']);
    assert.deepEqual(data.response, { role: 'assistant', content: 'Here is an onboarding workflow: 1. Welcome email.' });
    assert.deepEqual(data.usage, { tokens_used: 247, model: 'gpt-4', cost: (120 * 30 + 127 * 60) / 1e6 });
    assert.match(data.conversation_id, /^conv_[0-9a-z]{16}$/);

    // The provider got the model, the options, the task hint and the messages.
    const sent = lastChat(openai);
    assert.equal(sent.model, 'gpt-4');
    assert.equal(sent.temperature, 0.7);
    assert.equal(sent.max_tokens ?? sent.max_completion_tokens, 1000);
    assert.deepEqual(sent.messages, [
      { role: 'system', content: "The user's task category: automation.\n\nYou are a helpful business automation assistant." },
      { role: 'user', content: 'Help me create a workflow to automate customer onboarding.' },
    ]);
  });

  test('a conversation continues: the stored history goes to the provider before the new message', async () => {
    openai.queue({ text: 'Start with a welcome email.', usage: { input: 20, output: 6 } });
    const first = await s.request('POST', '/api/ai/chat', {
      token: alice.accessToken,
      body: { messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'How do I onboard customers?' }], task: 'onboarding' },
    });
    assert.equal(first.status, 200, first.text);
    const id = first.body.data.conversation_id as string;
    assert.equal(first.body.data.usage.model, 'helo-model');
    assert.equal(first.body.data.usage.cost, (20 * 3 + 6 * 6) / 1e6);

    openai.queue({ text: 'Day 2: a product tour.', usage: { input: 40, output: 7 } });
    const second = await s.request('POST', '/api/ai/chat', {
      token: alice.accessToken,
      // The system prompt is sent again, as clients do; it is not stored twice.
      body: { conversation_id: id, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'And on day two?' }] },
    });
    assert.equal(second.status, 200, second.text);
    assert.equal(second.body.data.conversation_id, id);
    assert.equal(second.body.data.response.content, 'Day 2: a product tour.');
    assert.deepEqual(lastChat(openai).messages, [
      { role: 'system', content: "The user's task category: onboarding.\n\nBe brief." },
      { role: 'user', content: 'How do I onboard customers?' },
      { role: 'assistant', content: 'Start with a welcome email.' },
      { role: 'user', content: 'And on day two?' },
    ]);

    const got = await s.request('GET', `/api/ai/conversations/${id}`, { token: alice.accessToken });
    assert.equal(got.status, 200, got.text);
    assert.equal(got.body.data.id, id);
    assert.equal(got.body.data.title, 'How do I onboard customers?');
    assert.equal(got.body.data.task, 'onboarding');
    assert.equal(got.body.data.message_count, 5);
    assert.deepEqual(
      got.body.data.messages.map((m: { role: string; content: string }) => [m.role, m.content]),
      [
        ['system', 'Be brief.'],
        ['user', 'How do I onboard customers?'],
        ['assistant', 'Start with a welcome email.'],
        ['user', 'And on day two?'],
        ['assistant', 'Day 2: a product tour.'],
      ],
    );
    const answer = got.body.data.messages[4];
    assert.equal(answer.model, 'helo-model');
    assert.equal(answer.tokens_used, 47);
    assert.equal(answer.cost, (40 * 3 + 7 * 6) / 1e6);
    assert.equal(got.body.data.messages[1].model, null);
  });

  test('another user\'s conversation is 404 for reading, continuing and deleting', async () => {
    openai.queue({ text: 'private answer' });
    const mine = await s.request('POST', '/api/ai/chat', { token: alice.accessToken, body: { messages: [{ role: 'user', content: 'secret plan' }] } });
    const id = mine.body.data.conversation_id as string;
    const before = openai.chatCount();

    assertHelomaticError(await s.request('GET', `/api/ai/conversations/${id}`, { token: bob.accessToken }), 404, 'NOT_FOUND');
    const cont = await s.request('POST', '/api/ai/chat', { token: bob.accessToken, body: { conversation_id: id, messages: [{ role: 'user', content: 'what was the plan?' }] } });
    assertHelomaticError(cont, 404, 'NOT_FOUND');
    assert.equal(openai.chatCount(), before, 'the provider was not called');
    assertHelomaticError(await s.request('DELETE', `/api/ai/conversations/${id}`, { token: bob.accessToken }), 404, 'NOT_FOUND');
    assertHelomaticError(await s.request('GET', '/api/ai/conversations/conv_doesnotexist0000', { token: alice.accessToken }), 404, 'NOT_FOUND');

    const list = await s.request('GET', '/api/ai/conversations', { token: bob.accessToken });
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.data.conversations, []);
    assert.equal((await s.request('GET', `/api/ai/conversations/${id}`, { token: alice.accessToken })).status, 200);
  });

  test('GET /api/ai/conversations pages through the caller\'s conversations, newest first; DELETE removes one', async () => {
    const u = await registerUser(s);
    const ids: string[] = [];
    for (const q of ['first question', 'second question', 'third question']) {
      openai.queue({ text: `answer to ${q}` });
      const r = await s.request('POST', '/api/ai/chat', { token: u.accessToken, body: { messages: [{ role: 'user', content: q }] } });
      ids.push(r.body.data.conversation_id as string);
    }
    const page1 = await s.request('GET', '/api/ai/conversations?limit=2', { token: u.accessToken });
    assert.equal(page1.status, 200, page1.text);
    assert.deepEqual(page1.body.data.pagination, { page: 1, limit: 2, total: 3, has_more: true });
    assert.deepEqual(
      page1.body.data.conversations.map((c: { id: string }) => c.id),
      [ids[2], ids[1]],
    );
    const c = page1.body.data.conversations[0];
    assert.deepEqual(Object.keys(c).sort(), ['created_at', 'id', 'message_count', 'task', 'title', 'updated_at']);
    assert.equal(c.title, 'third question');
    assert.equal(c.message_count, 2);
    assert.equal(c.task, null);
    const page2 = await s.request('GET', '/api/ai/conversations?limit=2&page=2', { token: u.accessToken });
    assert.deepEqual(page2.body.data.pagination, { page: 2, limit: 2, total: 3, has_more: false });
    assert.deepEqual(page2.body.data.conversations.map((x: { id: string }) => x.id), [ids[0]]);
    assertHelomaticError(await s.request('GET', '/api/ai/conversations?limit=101', { token: u.accessToken }), 400, 'VALIDATION_ERROR');

    const del = await s.request('DELETE', `/api/ai/conversations/${ids[0]}`, { token: u.accessToken });
    assert.equal(del.status, 200, del.text);
    assert.deepEqual(del.body.data, { id: ids[0], deleted: true });
    assertHelomaticError(await s.request('GET', `/api/ai/conversations/${ids[0]}`, { token: u.accessToken }), 404, 'NOT_FOUND');
    assert.equal((await s.request('GET', '/api/ai/conversations', { token: u.accessToken })).body.data.pagination.total, 2);
  });

  test('stream: true answers with server-sent events: deltas, done with usage, [DONE]; the turn is stored', async () => {
    openai.queue({ text: 'Send a welcome email on day one.', usage: { input: 9, output: 8 } });
    const res = await s.request('POST', '/api/ai/chat', {
      token: alice.accessToken,
      body: { messages: [{ role: 'user', content: 'First onboarding step?' }], options: { stream: true, model: 'gpt-4' } },
    });
    assert.equal(res.status, 200, res.text);
    assert.match(String(res.headers['content-type']), /^text\/event-stream/);
    const events = sseEvents(res.text) as Array<Record<string, unknown> | string>;
    const deltas = events.filter((e) => typeof e === 'object' && e.type === 'delta') as { content: string }[];
    assert.ok(deltas.length > 1, 'the answer came in several pieces');
    assert.equal(deltas.map((d) => d.content).join(''), 'Send a welcome email on day one.');
    const done = events.at(-2) as { type: string; conversation_id: string; usage: unknown };
    assert.equal(done.type, 'done');
    assert.match(done.conversation_id, /^conv_/);
    assert.deepEqual(done.usage, { tokens_used: 17, model: 'gpt-4', cost: (9 * 30 + 8 * 60) / 1e6 });
    assert.equal(events.at(-1), '[DONE]');
    assert.equal((lastChat(openai) as unknown as { stream: boolean }).stream, true);

    const got = await s.request('GET', `/api/ai/conversations/${done.conversation_id}`, { token: alice.accessToken });
    assert.deepEqual(
      got.body.data.messages.map((m: { role: string; content: string }) => [m.role, m.content]),
      [
        ['user', 'First onboarding step?'],
        ['assistant', 'Send a welcome email on day one.'],
      ],
    );
  });

  test('a provider failure is a 503 in the face\'s shape, streamed or not, and nothing is stored', async () => {
    const u = await registerUser(s);
    openai.failNext(500, { times: 3, body: { error: { message: 'upstream exploded' } } });
    const whole = await s.request('POST', '/api/ai/chat', { token: u.accessToken, body: { messages: [{ role: 'user', content: 'hi' }] } });
    assertHelomaticError(whole, 503, 'SERVICE_UNAVAILABLE');
    openai.failNext(500, { times: 3, body: { error: { message: 'upstream exploded' } } });
    const streamed = await s.request('POST', '/api/ai/chat', { token: u.accessToken, body: { messages: [{ role: 'user', content: 'hi' }], options: { stream: true } } });
    assertHelomaticError(streamed, 503, 'SERVICE_UNAVAILABLE');
    assert.match(String(streamed.headers['content-type']), /application\/json/);
    assert.equal((await s.request('GET', '/api/ai/conversations', { token: u.accessToken })).body.data.pagination.total, 0);
  });

  test('validation: 400 VALIDATION_ERROR with details', async () => {
    const bad = async (body: unknown, field: RegExp) => {
      const res = await s.request('POST', '/api/ai/chat', { token: alice.accessToken, body });
      assertHelomaticError(res, 400, 'VALIDATION_ERROR');
      assert.match(String(res.body.details?.field), field, JSON.stringify(res.body));
      return res;
    };
    const user = { role: 'user', content: 'hi' };
    await bad({ messages: [] }, /^messages$/);
    await bad({}, /^messages$/);
    const role = await bad({ messages: [{ role: 'robot', content: 'hi' }] }, /^messages\.0\.role$/);
    assert.deepEqual(role.body.details.allowed_values, ['system', 'user', 'assistant']);
    await bad({ messages: [{ role: 'user', content: '' }] }, /^messages\.0\.content$/);
    await bad({ messages: [user], options: { temperature: 2.5 } }, /^options\.temperature$/);
    await bad({ messages: [user], options: { temperature: -0.1 } }, /^options\.temperature$/);
    await bad({ messages: [user], options: { max_tokens: 0 } }, /^options\.max_tokens$/);
    await bad({ messages: [user], options: { max_tokens: 32_001 } }, /^options\.max_tokens$/);
    await bad({ messages: [user], options: { stream: 'yes' } }, /^options\.stream$/);
    const long = await bad({ messages: [{ role: 'user', content: 'a'.repeat(60_000) }, { role: 'user', content: 'b'.repeat(60_000) }] }, /^messages$/);
    assert.match(long.body.error, /100000 characters/);
    await bad({ messages: [{ role: 'system', content: 'only a system prompt' }] }, /^messages$/);
  });

  test('a token is required', async () => {
    const res = await s.request('POST', '/api/ai/chat', { body: docRequest });
    assertHelomaticError(res, 401, 'AUTH_REQUIRED');
    assertHelomaticError(await s.request('GET', '/api/ai/conversations'), 401, 'AUTH_REQUIRED');
    assertHelomaticError(await s.request('POST', '/api/data/enrich', { body: { domain: 'example.com' } }), 401, 'AUTH_REQUIRED');
  });
});

describe('Helomatic AI chat when the provider fails mid-stream', () => {
  let provider: Server;
  let s: TestServer;
  let u: User;
  before(async () => {
    // Speaks OpenAI's streaming protocol for one piece, then drops the connection.
    provider = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        if (req.url !== '/v1/chat/completions') {
          res.writeHead(404).end();
          return;
        }
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const chunk = { id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { role: 'assistant', content: 'Partial ' }, finish_reason: null }] };
        res.write(`data: ${JSON.stringify(chunk)}\n\n`);
        setTimeout(() => res.destroy(), 20);
      });
    });
    await new Promise<void>((r) => provider.listen(0, '127.0.0.1', r));
    s = await startTestServer({ OPENAI_API_KEY: 'sk-x', OPENAI_BASE_URL: `http://127.0.0.1:${(provider.address() as AddressInfo).port}/v1` });
    u = await registerUser(s);
  });
  after(async () => {
    await s.close();
    await new Promise((r) => provider.close(r));
  });

  test('the stream ends with an error event and the turn is not stored', async () => {
    const res = await s.request('POST', '/api/ai/chat', { token: u.accessToken, body: { messages: [{ role: 'user', content: 'hi' }], options: { stream: true } } });
    assert.equal(res.status, 200, res.text);
    const events = sseEvents(res.text) as Array<Record<string, unknown> | string>;
    assert.deepEqual(events[0], { type: 'delta', content: 'Partial ' });
    const last = events.at(-1) as { type: string; error: string; code: string };
    assert.equal(last.type, 'error');
    assert.equal(last.code, 'SERVICE_UNAVAILABLE');
    assert.equal(typeof last.error, 'string');
    assert.ok(!events.includes('[DONE]'));
    assert.equal((await s.request('GET', '/api/ai/conversations', { token: u.accessToken })).body.data.pagination.total, 0);
  });
});

describe('Helomatic AI chat with no provider configured', () => {
  let s: TestServer;
  let u: User;
  before(async () => {
    s = await startTestServer();
    u = await registerUser(s);
  });
  after(async () => {
    await s.close();
  });

  test('chat is 503 naming the settings, streamed or not', async () => {
    const body = { messages: [{ role: 'user', content: 'hi' }] };
    const res = await s.request('POST', '/api/ai/chat', { token: u.accessToken, body });
    assertHelomaticError(res, 503, 'SERVICE_UNAVAILABLE');
    assert.match(res.body.error, /OPENAI_API_KEY/);
    const streamed = await s.request('POST', '/api/ai/chat', { token: u.accessToken, body: { ...body, options: { stream: true } } });
    assertHelomaticError(streamed, 503, 'SERVICE_UNAVAILABLE');
    assert.match(streamed.body.error, /OPENAI_API_KEY/);
  });
});

// ---------------------------------------------------------------------------------------------
// Enrichment

const COMPANY_PAGE = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Acme Robotics — Warehouse automation that pays for itself</title>
  <meta name="description" content="Acme Robotics builds autonomous picking robots and fleet software for mid-size warehouses.">
  <meta property="og:site_name" content="Acme Robotics">
  <meta property="og:title" content="Acme Robotics | Autonomous picking robots">
  <meta property="og:description" content="Robots that pick, pack and sort around the clock.">
  <meta property="og:image" content="/static/og-card.png">
  <script type="application/ld+json">
  {
    "@context": "https://schema.org",
    "@graph": [
      { "@type": "WebSite", "@id": "https://acme-robotics.test/#website", "url": "https://acme-robotics.test/", "publisher": { "@id": "https://acme-robotics.test/#org" } },
      {
        "@type": "Corporation",
        "@id": "https://acme-robotics.test/#org",
        "name": "Acme Robotics Inc.",
        "url": "https://acme-robotics.test/",
        "foundingDate": "2015",
        "description": "Autonomous mobile robots for warehouses.",
        "numberOfEmployees": { "@type": "QuantitativeValue", "minValue": 50, "maxValue": 200 },
        "address": {
          "@type": "PostalAddress",
          "streetAddress": "500 Market Street",
          "addressLocality": "San Francisco",
          "addressRegion": "CA",
          "postalCode": "94105",
          "addressCountry": { "@type": "Country", "name": "US" }
        },
        "founder": [{ "@id": "https://acme-robotics.test/#john" }, { "@type": "Person", "name": "Maria Lopez" }],
        "employee": [{ "@type": "Person", "name": "Sarah Johnson", "jobTitle": "CTO" }, { "@type": "Person", "name": "Intern Without Title" }],
        "sameAs": ["https://www.linkedin.com/company/acme-robotics", "https://twitter.com/acmerobotics", "https://www.crunchbase.com/organization/acme-robotics"],
        "contactPoint": { "@type": "ContactPoint", "contactType": "sales", "email": "sales@acme-robotics.test", "telephone": "+1-415-555-0100" }
      },
      { "@type": "Person", "@id": "https://acme-robotics.test/#john", "name": "John Smith", "jobTitle": "CEO", "email": "mailto:john@acme-robotics.test" }
    ]
  }
  </script>
  <script type="application/ld+json">{ not json </script>
</head>
<body>
  <header><a href="/">Acme Robotics</a> <a href="/pricing">Pricing</a></header>
  <main><h1>Warehouse automation that pays for itself</h1></main>
  <footer>
    <a href="mailto:hello@acme-robotics.test?subject=Hi">hello@acme-robotics.test</a>
    <a href="tel:+14155550199">+1 415 555 0199</a>
    <a href="https://github.com/acme-robotics">GitHub</a>
    <a href="https://www.youtube.com/@acmerobotics">YouTube</a>
    <a href="https://twitter.com/intent/tweet?url=https://acme-robotics.test">Share on X</a>
    <a href="https://www.facebook.com/sharer/sharer.php?u=https://acme-robotics.test">Share</a>
  </footer>
</body>
</html>`;

function startSite(): Promise<{ url: string; hits: () => number; server: Server }> {
  let hits = 0;
  const server = createServer((req, res) => {
    hits++;
    if (req.url === '/' || req.url?.startsWith('/?')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(COMPANY_PAGE);
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
    }
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits: () => hits, server })),
  );
}

const MX: Record<string, MxRecord[]> = {
  'acme-robotics.test': [
    { exchange: 'alt1.aspmx.l.google.com', priority: 5 },
    { exchange: 'aspmx.l.google.com', priority: 1 },
  ],
  'fastmail-user.test': [{ exchange: 'in1-smtp.messagingengine.com', priority: 10 }],
  'selfhosted.test': [{ exchange: 'mail.selfhosted.test', priority: 10 }],
};

function injectMx(s: TestServer, asked: string[] = []): void {
  // The routes read the service from the context on every request.
  (s.ctx as { enrichment: EnrichmentService }).enrichment = new EnrichmentService({
    outbound: s.ctx.outbound,
    ai: s.ctx.ai,
    resolveMx: async (domain) => {
      asked.push(domain);
      const records = MX[domain];
      if (!records) throw Object.assign(new Error(`queryMx ENOTFOUND ${domain}`), { code: 'ENOTFOUND' });
      return records;
    },
  });
}

const INFERENCE = {
  industry: 'Industrial Automation',
  industry_confidence: 0.91,
  employee_range: '51-200',
  employee_confidence: 0.7,
  revenue_range: '$10M-$50M',
  revenue_confidence: 0.456,
};

describe('Helomatic data enrichment with a model provider', () => {
  let openai: FakeLlmServer;
  let site: Awaited<ReturnType<typeof startSite>>;
  let s: TestServer;
  let u: User;
  const asked: string[] = [];

  before(async () => {
    openai = await startOpenAiServer({ apiKey: 'sk-enrich' });
    site = await startSite();
    s = await startTestServer({
      OPENAI_API_KEY: 'sk-enrich',
      OPENAI_BASE_URL: `${openai.url}/v1`,
      OPENAI_MODEL: 'helo-model',
      AI_PRICES: PRICES,
      ALLOW_PRIVATE_URLS: 'true',
    });
    injectMx(s, asked);
    u = await registerUser(s);
  });
  after(async () => {
    await s.close();
    await openai.close();
    await new Promise((r) => site.server.close(r));
  });

  test('reads the website, JSON-LD, OpenGraph and MX; the model estimates only what the site does not state', async () => {
    openai.queue({ text: JSON.stringify(INFERENCE), usage: { input: 400, output: 60 } });
    const res = await s.request('POST', '/api/data/enrich', { token: u.accessToken, body: { email: 'Jane@Acme-Robotics.test', website: `${site.url}/` } });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.success, true);
    const d = res.body.data;
    assert.deepEqual(Object.keys(d).sort(), ['confidence_scores', 'enriched_data', 'processing_time', 'sources_used', 'warnings']);
    assert.deepEqual(d.enriched_data, {
      company: 'Acme Robotics Inc.',
      email: 'jane@acme-robotics.test',
      website: `${site.url}/`,
      website_url: `${site.url}/`,
      industry: 'Industrial Automation',
      employee_count: '50-200',
      founded: '2015',
      headquarters: 'San Francisco, CA, US',
      revenue_range: '$10M-$50M',
      key_contacts: [
        { name: 'John Smith', role: 'CEO', email: 'john@acme-robotics.test' },
        { name: 'Maria Lopez', role: 'Founder' },
        { name: 'Sarah Johnson', role: 'CTO' },
      ],
      description: 'Acme Robotics builds autonomous picking robots and fleet software for mid-size warehouses.',
      address: { street: '500 Market Street', locality: 'San Francisco', region: 'CA', postal_code: '94105', country: 'US' },
      logo: `${site.url}/static/og-card.png`,
      social_links: {
        linkedin: 'https://www.linkedin.com/company/acme-robotics',
        twitter: 'https://twitter.com/acmerobotics',
        'crunchbase.com': 'https://www.crunchbase.com/organization/acme-robotics',
        github: 'https://github.com/acme-robotics',
        youtube: 'https://www.youtube.com/@acmerobotics',
      },
      contacts: { emails: ['sales@acme-robotics.test', 'hello@acme-robotics.test'], phones: ['+1-415-555-0100', '+14155550199'] },
      email_provider: 'Google Workspace',
      mx_records: [
        { exchange: 'aspmx.l.google.com', priority: 1 },
        { exchange: 'alt1.aspmx.l.google.com', priority: 5 },
      ],
    });
    // Only model estimates are scored; the site stated its size, so the model's range is not used.
    assert.deepEqual(d.confidence_scores, { industry: 0.91, revenue_range: 0.46 });
    assert.deepEqual(d.sources_used, ['company_website', 'json_ld', 'opengraph', 'dns_mx', 'ai_inference:openai/helo-model']);
    assert.deepEqual(d.warnings, [{ source: 'json_ld', reason: 'invalid_json', message: `1 JSON-LD block(s) on ${site.url}/ are not valid JSON and were skipped` }]);
    assert.equal(typeof d.processing_time, 'number');
    assert.ok(d.processing_time > 0);
    assert.equal(Math.round(d.processing_time * 100) / 100, d.processing_time);
    assert.deepEqual(asked, ['acme-robotics.test']);

    // The model saw the page's facts only, within the 4k budget.
    const sent = lastChat(openai);
    const facts = sent.messages.at(-1)!.content;
    assert.match(facts, /Acme Robotics Inc\./);
    assert.match(facts, /autonomous picking robots/);
    assert.ok(facts.length <= 4100, `facts are ${facts.length} characters`);
    assert.equal(sent.temperature, 0);
  });

  test('a bare domain is tried over https, then http; MX failures are warnings', async () => {
    openai.queue({ text: JSON.stringify({ ...INFERENCE, revenue_range: null, revenue_confidence: 0 }) });
    const host = new URL(site.url).host;
    const res = await s.request('POST', '/api/data/enrich', { token: u.accessToken, body: { domain: host, email: 'ops@unknown-mx.test' } });
    assert.equal(res.status, 200, res.text);
    const d = res.body.data;
    assert.equal(d.enriched_data.website, host);
    assert.equal(d.enriched_data.website_url, `${site.url}/`);
    assert.equal(d.enriched_data.company, 'Acme Robotics Inc.');
    assert.equal(d.enriched_data.revenue_range, undefined);
    assert.equal(d.enriched_data.mx_records, undefined);
    assert.deepEqual(d.confidence_scores, { industry: 0.91 });
    assert.ok(!d.sources_used.includes('dns_mx'));
    assert.ok(d.warnings.some((w: { source: string; reason: string }) => w.source === 'dns_mx' && w.reason === 'no_mx_records'));
  });

  test('a failing provider is a warning, not an error: the site\'s facts are still returned', async () => {
    openai.failNext(500, { times: 3, body: { error: { message: 'model exploded' } } });
    const res = await s.request('POST', '/api/data/enrich', { token: u.accessToken, body: { website: site.url } });
    assert.equal(res.status, 200, res.text);
    const d = res.body.data;
    assert.equal(d.enriched_data.founded, '2015');
    assert.equal(d.enriched_data.industry, undefined);
    assert.deepEqual(d.confidence_scores, {});
    assert.deepEqual(d.sources_used, ['company_website', 'json_ld', 'opengraph']);
    const w = d.warnings.find((x: { source: string }) => x.source === 'ai_inference');
    assert.ok(w, JSON.stringify(d.warnings));
    assert.match(w.message, /openai/);
  });

  test('a free-mail address alone gives nothing to read: 200 with the input, no sources and a warning', async () => {
    const before = openai.chatCount();
    const hits = site.hits();
    const res = await s.request('POST', '/api/data/enrich', { token: u.accessToken, body: { email: 'someone@gmail.com', company: 'Someone LLC' } });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.body.data.enriched_data, { company: 'Someone LLC', email: 'someone@gmail.com', website: null });
    assert.deepEqual(res.body.data.sources_used, []);
    assert.deepEqual(res.body.data.confidence_scores, {});
    assert.equal(res.body.data.warnings[0].reason, 'nothing_to_read');
    assert.match(res.body.data.warnings[0].message, /gmail\.com is a free-mail provider/);
    assert.equal(openai.chatCount(), before, 'no model call without facts');
    assert.equal(site.hits(), hits);
    assert.ok(!asked.includes('gmail.com'));
  });

  test('bad input is 400 VALIDATION_ERROR', async () => {
    const bad = async (body: unknown) => {
      const res = await s.request('POST', '/api/data/enrich', { token: u.accessToken, body });
      assertHelomaticError(res, 400, 'VALIDATION_ERROR');
      assert.ok(res.body.details, JSON.stringify(res.body));
      return res;
    };
    const none = await bad({});
    assert.match(none.body.error, /at least one of email, domain, company or website/);
    await bad({ email: 'not-an-email' });
    await bad({ website: 'ftp://acme-robotics.test/' });
    await bad({ domain: 'not a domain' });
    await bad({ website: 'https://user:pw@acme-robotics.test/' });
    await bad({ company: '' });
  });
});

describe('Helomatic data enrichment without a model provider', () => {
  let site: Awaited<ReturnType<typeof startSite>>;
  let open: TestServer;
  let guarded: TestServer;
  let u: User;
  let g: User;

  before(async () => {
    site = await startSite();
    open = await startTestServer({ ALLOW_PRIVATE_URLS: 'true' });
    guarded = await startTestServer();
    injectMx(open);
    injectMx(guarded);
    u = await registerUser(open);
    g = await registerUser(guarded);
  });
  after(async () => {
    await open.close();
    await guarded.close();
    await new Promise((r) => site.server.close(r));
  });

  test('facts from the site and DNS only: no estimates, no confidence scores, no ai source', async () => {
    const res = await open.request('POST', '/api/data/enrich', { token: u.accessToken, body: { email: 'me@fastmail-user.test', website: site.url } });
    assert.equal(res.status, 200, res.text);
    const d = res.body.data;
    assert.equal(d.enriched_data.company, 'Acme Robotics Inc.');
    assert.equal(d.enriched_data.employee_count, '50-200');
    assert.equal(d.enriched_data.headquarters, 'San Francisco, CA, US');
    assert.equal(d.enriched_data.email_provider, 'Fastmail');
    assert.equal(d.enriched_data.industry, undefined);
    assert.equal(d.enriched_data.revenue_range, undefined);
    assert.deepEqual(d.confidence_scores, {});
    assert.deepEqual(d.sources_used, ['company_website', 'json_ld', 'opengraph', 'dns_mx']);
    assert.ok(!d.warnings.some((w: { source: string }) => w.source === 'ai_inference'), 'a missing provider is not a failure');
    assert.ok(d.processing_time > 0);
  });

  test('an unknown mail host is reported by name', async () => {
    const res = await open.request('POST', '/api/data/enrich', { token: u.accessToken, body: { email: 'it@selfhosted.test', website: site.url } });
    assert.equal(res.body.data.enriched_data.email_provider, 'mail.selfhosted.test');
  });

  test('a private address is refused when not allowed: a warning, not a 500', async () => {
    const hits = site.hits();
    const res = await guarded.request('POST', '/api/data/enrich', { token: g.accessToken, body: { company: 'Acme Robotics', website: site.url } });
    assert.equal(res.status, 200, res.text);
    const d = res.body.data;
    assert.deepEqual(d.enriched_data, { company: 'Acme Robotics', email: null, website: site.url });
    assert.deepEqual(d.sources_used, []);
    assert.deepEqual(d.confidence_scores, {});
    assert.equal(d.warnings.length, 1);
    assert.equal(d.warnings[0].source, 'company_website');
    assert.equal(d.warnings[0].reason, 'address_not_allowed');
    assert.equal(site.hits(), hits, 'the site was never contacted');
    assert.ok(d.processing_time > 0);
  });

  test('a site that does not answer is a warning', async () => {
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as AddressInfo).port;
    await new Promise((r) => srv.close(r));
    const res = await open.request('POST', '/api/data/enrich', { token: u.accessToken, body: { website: `http://127.0.0.1:${port}/` } });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.body.data.sources_used, []);
    assert.equal(res.body.data.warnings[0].source, 'company_website');
    assert.equal(res.body.data.warnings[0].reason, 'connection_failed');
  });
});
