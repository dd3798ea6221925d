import type {
  FastifyBaseLogger,
  FastifyInstance,
  RawReplyDefaultExpression,
  RawRequestDefaultExpression,
  RawServerDefault,
} from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import type { FaceName } from '../../config.ts';
import type { AppContext } from './context.ts';
import './types.ts';

export type FaceApp = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  FastifyBaseLogger,
  ZodTypeProvider
>;

const TAGS: Record<FaceName, string> = {
  tasks: 'Tasks (HelixCode API)',
  monitoring: 'Monitoring (Helomatic API)',
  databases: 'Databases (HeliosDB API)',
  automation: 'Automation (Arrotech Hub API)',
};

/**
 * Registers one face's routes in their own encapsulated context: every route is stamped with the
 * face (for errors, limits, metrics), requires auth unless it says otherwise, and is tagged in OpenAPI.
 */
export function registerFace(
  app: FastifyInstance,
  ctx: AppContext,
  face: FaceName,
  routes: (app: FaceApp, ctx: AppContext) => void,
): void {
  app.register(async (scope) => {
    scope.addHook('onRoute', (opts) => {
      opts.config = { auth: 'required', ...opts.config, face };
      const schema = (opts.schema ??= {}) as Record<string, unknown>;
      schema.tags ??= [TAGS[face]];
      if (opts.config.auth === 'required') schema.security ??= [{ bearerAuth: [] }];
    });
    routes(scope.withTypeProvider<ZodTypeProvider>(), ctx);
  });
}
