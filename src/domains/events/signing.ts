/**
 * Webhook signatures. Every delivery carries Standard Webhooks headers (`webhook-id`,
 * `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`) and
 * `X-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
 */
import { createHmac, randomBytes } from 'node:crypto';

/** Secrets of the form `whsec_<base64>` are base64 keys (Standard Webhooks); any other string is used as UTF-8 bytes. */
export function signingKey(secret: string): Buffer {
  return secret.startsWith('whsec_') ? Buffer.from(secret.slice(6), 'base64') : Buffer.from(secret, 'utf8');
}

export function generateWebhookSecret(): string {
  return `whsec_${randomBytes(32).toString('base64')}`;
}

export function hmacHex(secret: string, payload: string): string {
  return createHmac('sha256', signingKey(secret)).update(payload).digest('hex');
}

/** The signing headers of one attempt. */
export function signDelivery(secret: string, webhookId: string, body: string, timestampSec: number): Record<string, string> {
  const key = signingKey(secret);
  const v1 = createHmac('sha256', key).update(`${webhookId}.${timestampSec}.${body}`).digest('base64');
  return {
    'webhook-id': webhookId,
    'webhook-timestamp': String(timestampSec),
    'webhook-signature': `v1,${v1}`,
    'x-signature-256': `sha256=${createHmac('sha256', key).update(body).digest('hex')}`,
  };
}
