/**
 * The built-in embedding used when no embedding provider is configured: feature hashing of word
 * unigrams and bigrams into 384 signed buckets, log-scaled term counts, L2-normalised. It is
 * lexical, not semantic — texts that share words score high, synonyms do not — and every response
 * names it (`local/hash-384`) so nobody mistakes it for a model. Deterministic and offline.
 */
export const LOCAL_EMBEDDING_MODEL = 'local/hash-384';
export const LOCAL_EMBEDDING_DIMENSIONS = 384;

const WORD = /[\p{L}\p{N}]+/gu;

/** 32-bit FNV-1a over UTF-16 code units. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export function tokenize(text: string): string[] {
  return text.normalize('NFKC').toLowerCase().match(WORD) ?? [];
}

export function localEmbedding(text: string, dimensions = LOCAL_EMBEDDING_DIMENSIONS): number[] {
  // Bigrams (keyed with a space, which no word contains) weigh half a word.
  const counts = new Map<string, number>();
  const words = tokenize(text);
  for (let i = 0; i < words.length; i++) {
    counts.set(words[i]!, (counts.get(words[i]!) ?? 0) + 1);
    if (i + 1 < words.length) {
      const bigram = `${words[i]} ${words[i + 1]}`;
      counts.set(bigram, (counts.get(bigram) ?? 0) + 1);
    }
  }
  const v = new Float64Array(dimensions);
  for (const [feature, tf] of counts) {
    const h = fnv1a(feature);
    const sign = h & 0x80000000 ? -1 : 1;
    const weight = feature.includes(' ') ? 0.5 : 1;
    v[h % dimensions]! += sign * weight * (1 + Math.log(tf));
  }
  let norm = 0;
  for (const x of v) norm += x * x;
  norm = Math.sqrt(norm);
  const out = new Array<number>(dimensions);
  for (let i = 0; i < dimensions; i++) out[i] = norm === 0 ? 0 : Math.round((v[i]! / norm) * 1e7) / 1e7;
  return out;
}

/** Token estimate for usage records of the local model: one per word. */
export function localTokenCount(texts: string[]): number {
  let n = 0;
  for (const t of texts) n += tokenize(t).length;
  return n;
}
