/**
 * A local server speaking the OpenAI Chat Completions protocol (the test suite's), run as its own
 * process so it does not share the benchmark's event loop. Prints `{"url":...}` once listening.
 */
import { startOpenAiServer } from '../test/helpers/llm-servers.ts';

const server = await startOpenAiServer({ apiKey: 'sk-bench' });
process.stdout.write(JSON.stringify({ url: server.url }) + '\n');
process.on('SIGTERM', () => void server.close().then(() => process.exit(0)));
