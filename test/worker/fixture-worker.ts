/** A worker process for tests: the `mainspring worker` command line plus a `sleep` handler. */
import { runWorkerCli } from '../../src/worker/cli.ts';

await runWorkerCli(process.argv.slice(2), {
  sleep: (payload, ctx) =>
    new Promise((resolve, reject) => {
      const ms = Number(payload.ms ?? 1000);
      const timer = setTimeout(() => resolve({ slept: ms, pid: process.pid }), ms);
      ctx.signal.addEventListener('abort', () => {
        clearTimeout(timer);
        reject(new Error('aborted'));
      });
    }),
});
