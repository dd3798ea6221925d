/** Regenerates the committed OpenAPI document (`openapi.json`) from the route schemas. */
import { writeFileSync } from 'node:fs';
import { buildApp, closeContext, createContext } from '../src/app.ts';
import { loadConfig } from '../src/config.ts';
import { PgliteDb } from '../src/platform/db/index.ts';

export const OPENAPI_FILE = new URL('../openapi.json', import.meta.url);

/** The document as the server serves it, in the committed file's formatting. */
export async function renderOpenApi(): Promise<string> {
  const config = loadConfig({ JWT_SECRET: 'x'.repeat(32), SECRETS_KEY: 'y'.repeat(32), LOG_LEVEL: 'silent', DATA_DIR: '.openapi-tmp' });
  const ctx = await createContext(config, { db: await PgliteDb.open({}) });
  try {
    const app = await buildApp(ctx, { logger: false });
    const doc = JSON.stringify(app.swagger(), null, 2) + '\n';
    await app.close();
    return doc;
  } finally {
    await closeContext(ctx);
  }
}

if (import.meta.main) {
  writeFileSync(OPENAPI_FILE, await renderOpenApi());
  console.log(`wrote ${OPENAPI_FILE.pathname.split('/').pop()}`);
}
