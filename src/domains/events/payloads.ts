/** Each face's documented webhook body. The body is fixed when the delivery is created, so retries send identical bytes. */
import type { FaceName } from '../../config.ts';
import { hmacHex } from './signing.ts';

export interface EventForDelivery {
  id: string;
  type: string;
  data: unknown;
  createdAt: Date;
}

/**
 * HelixCode documents `{event,timestamp,data,signature:"sha256=<hex>"}`: its `signature` is the HMAC of
 * the JSON text of `{event,timestamp,data}` (the body without the signature). Other faces send
 * `{id,event,timestamp,data}` and rely on the signature headers.
 */
export function formatBody(face: FaceName, event: EventForDelivery, secret: string): string {
  const timestamp = event.createdAt.toISOString();
  if (face === 'tasks') {
    const unsigned = JSON.stringify({ event: event.type, timestamp, data: event.data });
    return JSON.stringify({ event: event.type, timestamp, data: event.data, signature: `sha256=${hmacHex(secret, unsigned)}` });
  }
  // Helomatic names its webhook events without the prefix (`data_changed`, `error`, `check_completed`).
  const name = face === 'monitoring' && event.type.startsWith('monitor.') ? event.type.slice('monitor.'.length) : event.type;
  return JSON.stringify({ id: event.id, event: name, timestamp, data: event.data });
}
