import { randomBytes } from 'node:crypto';
import { dropRunDatabases, prepareTemplate } from './helpers/engine.ts';

// Test files run in child processes that inherit this environment.
process.env.MAINSPRING_TEST_RUN ??= randomBytes(4).toString('hex');

export async function globalSetup(): Promise<void> {
  await prepareTemplate();
}

export async function globalTeardown(): Promise<void> {
  await dropRunDatabases();
}
