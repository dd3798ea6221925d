import { createHash, randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import { type Algorithm, hash, verify } from '@node-rs/argon2';

// `Algorithm` is an ambient const enum, which isolated modules cannot read; 2 is Argon2id.
const ARGON2ID = 2 as Algorithm;

const ID_ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz';

/** A prefixed, random, URL-safe identifier such as `usr_k3j9x0q2m8a1b7cd`. */
export function newId(prefix: string, length = 16): string {
  let out = '';
  for (let i = 0; i < length; i++) out += ID_ALPHABET[randomInt(ID_ALPHABET.length)];
  return `${prefix}_${out}`;
}

/** A high-entropy opaque secret (256 bits) with a readable prefix, e.g. `msk_...`. */
export function newSecretToken(prefix: string): string {
  return `${prefix}_${randomBytes(32).toString('base64url')}`;
}

/** SHA-256 hex. Used for high-entropy secrets only (tokens, keys); passwords go through argon2id. */
export function sha256Hex(value: string): string {
  return createHash('sha256').update(value).digest('hex');
}

export function safeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}

export interface PasswordHasher {
  hash(password: string): Promise<string>;
  verify(hashed: string, password: string): Promise<boolean>;
}

/** argon2id with OWASP's first recommended parameters (19 MiB, 2 passes, 1 lane) unless told otherwise. */
export function createPasswordHasher(memoryCostKib = 19456): PasswordHasher {
  const opts = { algorithm: ARGON2ID, memoryCost: memoryCostKib, timeCost: 2, parallelism: 1 };
  return {
    hash: (password) => hash(password, opts),
    async verify(hashed, password) {
      try {
        return await verify(hashed, password);
      } catch {
        return false;
      }
    },
  };
}

/** A readable random password for generated accounts. */
export function generatePassword(): string {
  return randomBytes(18).toString('base64url');
}
