/** Emitting an event: one INSERT in the caller's transaction, so the change and its event commit together. */
import { newId } from '../../platform/crypto/index.ts';
import type { Queryable } from '../../platform/db/index.ts';
import type { EventPayloads, EventType } from './catalogue.ts';

type Listener = () => void;
const listeners = new Set<Listener>();

/** Lets this process's dispatcher wake at once instead of waiting for its next poll. */
export function onEventEmitted(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** An id for an event a caller inserts itself, inside a larger statement (same format as `emitEvent`'s). */
export function newEventId(): string {
  return newId('evt');
}

/**
 * For callers that insert their event rows within their own statement (one round trip for the
 * change and its event): wakes this process's dispatcher, as `emitEvent` does.
 */
export function eventsEmitted(): void {
  listeners.forEach((l) => l());
}

/**
 * Writes an event in the caller's transaction, if its owner has an active webhook subscription
 * (nobody else can receive it, so no row is written otherwise). Returns its id, or null when skipped.
 */
export async function emitEvent<T extends EventType>(tx: Queryable, ownerId: string, type: T, data: EventPayloads[T]): Promise<string | null> {
  const id = newId('evt');
  const { rows } = await tx.query(`INSERT INTO events (id, owner_id, type, data) SELECT $1, $2, $3, $4::jsonb WHERE events_wanted($2) RETURNING id`, [
    id,
    ownerId,
    type,
    JSON.stringify(data),
  ]);
  if (!rows.length) return null;
  // The transaction may not have committed yet; a wake-up that finds nothing costs one query.
  queueMicrotask(() => listeners.forEach((l) => l()));
  return id;
}
