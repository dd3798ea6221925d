import type { FaceName } from '../../config.ts';
import type { Principal } from '../../domains/identity/service.ts';
import type { AppError } from '../../platform/errors.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated caller, when a valid bearer credential came with the request. */
    principal: Principal | null;
    /** Why a presented credential was refused (reported only if the route requires auth). */
    authError: AppError | null;
    face: FaceName;
  }
  interface FastifyContextConfig {
    face?: FaceName;
    /** `required` (default for resource routes), or `optional`: a credential is read but not demanded. */
    auth?: 'required' | 'optional';
    /** false for liveness, metrics and docs: no counting, no headers. */
    rateLimit?: boolean;
  }
}
