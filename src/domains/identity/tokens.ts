import { createSecretKey } from 'node:crypto';
import { SignJWT, errors as joseErrors, jwtVerify } from 'jose';
import { AppError } from '../../platform/errors.ts';

export interface AccessTokenClaims {
  userId: string;
  sessionId: string;
}

export interface AccessTokenSigner {
  sign(claims: AccessTokenClaims): Promise<{ token: string; expiresAt: Date; ttlSeconds: number }>;
  /** Verifies signature, algorithm, issuer, audience and expiry; throws AUTH_EXPIRED or AUTH_REQUIRED. */
  verify(token: string): Promise<AccessTokenClaims>;
}

/** Verified tokens remembered at most (a client sends the same token with every request). */
const VERIFIED_CACHE_SIZE = 10_000;

/** HS256 JWTs with an explicit algorithm allow-list: `alg: none` and every other algorithm are refused. */
export function createAccessTokenSigner(opts: { secret: string; issuer: string; audience: string; ttlSeconds: number }): AccessTokenSigner {
  // A KeyObject made once: handing jose raw bytes makes it import the key again on every verify.
  const key = createSecretKey(Buffer.from(opts.secret, 'utf8'));
  // A token that verified once verifies again until it expires (the signature, issuer and audience
  // of the same string cannot change): skip the HMAC, a tenth of a request's CPU. Only successes are
  // kept, each with its expiry; whether the session still stands is checked by the caller every time.
  const verified = new Map<string, { claims: AccessTokenClaims; expMs: number }>();
  return {
    async sign(claims) {
      const nowSec = Math.floor(Date.now() / 1000);
      const exp = nowSec + opts.ttlSeconds;
      const token = await new SignJWT({ sid: claims.sessionId, typ: 'access' })
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
        .setSubject(claims.userId)
        .setIssuer(opts.issuer)
        .setAudience(opts.audience)
        .setIssuedAt(nowSec)
        .setExpirationTime(exp)
        .sign(key);
      return { token, expiresAt: new Date(exp * 1000), ttlSeconds: opts.ttlSeconds };
    },
    async verify(token) {
      const hit = verified.get(token);
      if (hit) {
        if (Date.now() < hit.expMs) return hit.claims;
        verified.delete(token);
      }
      try {
        const { payload } = await jwtVerify(token, key, {
          algorithms: ['HS256'],
          issuer: opts.issuer,
          audience: opts.audience,
          requiredClaims: ['sub', 'exp', 'iat'],
        });
        if (payload.typ !== 'access' || typeof payload.sid !== 'string' || typeof payload.sub !== 'string') {
          throw new AppError('AUTH_REQUIRED', 'Invalid access token');
        }
        const claims = { userId: payload.sub, sessionId: payload.sid };
        // Oldest first out (a Map iterates in insertion order).
        if (verified.size >= VERIFIED_CACHE_SIZE) verified.delete(verified.keys().next().value!);
        verified.set(token, { claims, expMs: payload.exp! * 1000 });
        return claims;
      } catch (err) {
        if (err instanceof AppError) throw err;
        if (err instanceof joseErrors.JWTExpired) throw new AppError('AUTH_EXPIRED', 'Access token has expired');
        throw new AppError('AUTH_REQUIRED', 'Invalid access token');
      }
    },
  };
}
