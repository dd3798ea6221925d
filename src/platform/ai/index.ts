/** Model providers behind one interface; see `service.ts`. */
import type { Registry } from 'prom-client';
import type { AiConfig } from '../../config.ts';
import type { Db, InvalidationBus } from '../db/index.ts';
import { counter, histogram } from '../jobs/observe.ts';
import { AiService } from './service.ts';

export { aiMigrations } from './usage.ts';
export { LOCAL_EMBEDDING_DIMENSIONS, LOCAL_EMBEDDING_MODEL, localEmbedding } from './local-embedding.ts';
export { NO_PROVIDER_MESSAGE, PROVIDER_NAMES, PROVIDER_SETTINGS, type Availability } from './providers.ts';
export * from './service.ts';

// The SDK prints its compatibility warnings to stderr on every call; the layer reports what matters
// through errors, usage records and metrics instead.
(globalThis as { AI_SDK_LOG_WARNINGS?: boolean }).AI_SDK_LOG_WARNINGS = false;

/** The service with its Prometheus metrics registered. */
export function createAi(deps: { config: AiConfig; db: Db; bus?: InvalidationBus; registry: Registry; log?: { error(obj: unknown, msg: string): void } }): AiService {
  const attempts = counter(deps.registry, 'ai_provider_requests_total', 'HTTP requests to model providers by outcome', ['provider', 'outcome', 'status']);
  const calls = counter(deps.registry, 'ai_calls_total', 'Model calls by provider, operation and result', ['provider', 'operation', 'result']);
  const tokens = counter(deps.registry, 'ai_tokens_total', 'Tokens used by provider and direction', ['provider', 'direction']);
  const duration = histogram(deps.registry, 'ai_call_duration_seconds', 'Model call duration', ['provider', 'operation'], [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]);
  return new AiService({
    config: deps.config,
    db: deps.db,
    bus: deps.bus,
    log: deps.log,
    onAttempt: (provider, outcome, status) => attempts.inc({ provider, outcome, status: status === null ? 'none' : String(status) }),
    onCall: (r) => {
      calls.inc({ provider: r.provider, operation: r.operation, result: r.ok ? 'ok' : (r.errorCode ?? 'error') });
      tokens.inc({ provider: r.provider, direction: 'input' }, r.inputTokens);
      tokens.inc({ provider: r.provider, direction: 'output' }, r.outputTokens);
      duration.observe({ provider: r.provider, operation: r.operation }, r.durationMs / 1000);
    },
  });
}
