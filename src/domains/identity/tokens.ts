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

/** HS256 JWTs with an explicit algorithm allow-list: `alg: none` and every other algorithm are refused. */
export function createAccessTokenSigner(opts: { secret: string; issuer: string; audience: string; ttlSeconds: number }): AccessTokenSigner {
  // A KeyObject made once: handing jose raw bytes makes it import the key again on every verify.
  const key = createSecretKey(Buffer.from(opts.secret, 'utf8'));
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
        return { userId: payload.sub, sessionId: payload.sid };
      } catch (err) {
        if (err instanceof AppError) throw err;
        if (err instanceof joseErrors.JWTExpired) throw new AppError('AUTH_EXPIRED', 'Access token has expired');
        throw new AppError('AUTH_REQUIRED', 'Invalid access token');
      }
    },
  };
}
