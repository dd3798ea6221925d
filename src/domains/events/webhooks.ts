/**
 * Webhook subscriptions owned by users, their delivery log, and redelivery. Every query filters by
 * owner: another user's subscription or delivery is NOT_FOUND.
 */
import type { FaceName } from '../../config.ts';
import { newId } from '../../platform/crypto/index.ts';
import type { SecretBox } from '../../platform/crypto/secretbox.ts';
import type { Db, Queryable } from '../../platform/db/index.ts';
import { AppError } from '../../platform/errors.ts';
import { refusedLiteralTarget, type AllowPrivate } from '../../platform/http-out/index.ts';
import { recordAuditEvent, type RequestContext } from '../audit/service.ts';
import { EVENT_TYPES, invalidPatterns } from './catalogue.ts';
import { formatBody } from './payloads.ts';
import { generateWebhookSecret } from './signing.ts';

export interface WebhookSubscription {
  id: string;
  face: FaceName;
  url: string;
  events: string[];
  description: string | null;
  active: boolean;
  disabledReason: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface DeliveryAttempt {
  attempt: number;
  attemptedAt: Date;
  statusCode: number | null;
  durationMs: number;
  error: string | null;
  responseSnippet: string | null;
}

export interface Delivery {
  id: string;
  subscriptionId: string;
  eventId: string;
  eventType: string;
  status: 'pending' | 'succeeded' | 'failed';
  attempts: number;
  nextAttemptAt: Date | null;
  lastStatusCode: number | null;
  lastError: string | null;
  createdAt: Date;
  completedAt: Date | null;
  attemptLog: DeliveryAttempt[];
}

export interface CreateSubscriptionInput {
  url: string;
  events: string[];
  secret?: string;
  description?: string;
  active?: boolean;
}

interface SubscriptionRow {
  id: string;
  face: FaceName;
  url: string;
  events: string[];
  description: string | null;
  active: boolean;
  disabled_reason: string | null;
  created_at: Date;
  updated_at: Date;
}

const SUB_COLUMNS = 'id, face, url, events, description, active, disabled_reason, created_at, updated_at';
const MAX_SUBSCRIPTIONS_PER_USER = 100;

function toSubscription(r: SubscriptionRow): WebhookSubscription {
  return {
    id: r.id,
    face: r.face,
    url: r.url,
    events: r.events,
    description: r.description,
    active: r.active,
    disabledReason: r.disabled_reason,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

export class WebhookService {
  private readonly db: Db;
  private readonly box: SecretBox;
  private readonly allowPrivate: AllowPrivate;

  constructor(deps: { db: Db; secretBox: SecretBox; allowPrivate: AllowPrivate }) {
    this.db = deps.db;
    this.box = deps.secretBox;
    this.allowPrivate = deps.allowPrivate;
  }

  /** Creates a subscription; when no secret is given one is generated and returned (shown once). */
  async create(ownerId: string, face: FaceName, input: CreateSubscriptionInput, ctx: RequestContext): Promise<{ subscription: WebhookSubscription; generatedSecret: string | null }> {
    await this.validateUrl(input.url);
    const events = [...new Set(input.events.map((e) => e.trim()))];
    if (events.length === 0) throw new AppError('VALIDATION_ERROR', 'events must list at least one event type', { details: { field: 'events', allowed_values: EVENT_TYPES } });
    const bad = invalidPatterns(events);
    if (bad.length) {
      throw new AppError('VALIDATION_ERROR', `Unknown event type: ${bad.join(', ')}`, { details: { field: 'events', invalid: bad, allowed_values: EVENT_TYPES } });
    }
    if (input.secret !== undefined && (input.secret.length < 8 || input.secret.length > 256)) {
      throw new AppError('VALIDATION_ERROR', 'secret must be 8-256 characters', { details: { field: 'secret' } });
    }
    const secret = input.secret ?? generateWebhookSecret();
    return this.db.transaction(async (tx) => {
      const count = await tx.query<{ n: number }>(`SELECT count(*)::int AS n FROM webhook_subscriptions WHERE owner_id = $1`, [ownerId]);
      if ((count.rows[0]?.n ?? 0) >= MAX_SUBSCRIPTIONS_PER_USER) {
        throw new AppError('QUOTA_EXCEEDED', `At most ${MAX_SUBSCRIPTIONS_PER_USER} webhooks per account`);
      }
      const { rows } = await tx.query<SubscriptionRow>(
        `INSERT INTO webhook_subscriptions (id, owner_id, face, url, events, secret_sealed, description, active)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ${SUB_COLUMNS}`,
        [newId('wh'), ownerId, face, input.url, events, this.box.seal(secret), input.description?.trim() || null, input.active ?? true],
      );
      const subscription = toSubscription(rows[0]!);
      await recordAuditEvent(tx, {
        eventType: 'config_change',
        action: 'webhook_created',
        result: 'success',
        userId: ownerId,
        context: ctx,
        metadata: { webhook_id: subscription.id, url: subscription.url, events },
      });
      return { subscription, generatedSecret: input.secret === undefined ? secret : null };
    });
  }

  async list(ownerId: string, face: FaceName | undefined, page: { limit: number; offset: number }): Promise<{ items: WebhookSubscription[]; total: number }> {
    const { rows } = await this.db.query<SubscriptionRow & { total: number }>(
      `SELECT ${SUB_COLUMNS}, (count(*) OVER ())::int AS total FROM webhook_subscriptions
       WHERE owner_id = $1 AND ($2::text IS NULL OR face = $2)
       ORDER BY created_at DESC, id LIMIT $3 OFFSET $4`,
      [ownerId, face ?? null, page.limit, page.offset],
    );
    let total = rows[0]?.total ?? 0;
    if (!rows.length && page.offset > 0) {
      const c = await this.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM webhook_subscriptions WHERE owner_id = $1 AND ($2::text IS NULL OR face = $2)`, [ownerId, face ?? null]);
      total = c.rows[0]?.n ?? 0;
    }
    return { items: rows.map(toSubscription), total };
  }

  async getOrThrow(ownerId: string, id: string, q: Queryable = this.db): Promise<WebhookSubscription> {
    const { rows } = await q.query<SubscriptionRow>(`SELECT ${SUB_COLUMNS} FROM webhook_subscriptions WHERE id = $1 AND owner_id = $2`, [id, ownerId]);
    if (!rows[0]) throw new AppError('NOT_FOUND', 'Webhook not found');
    return toSubscription(rows[0]);
  }

  /** Changes url, events, description or the active flag; re-activating clears the disabled reason. */
  async update(ownerId: string, id: string, patch: Partial<Omit<CreateSubscriptionInput, 'secret'>>, ctx: RequestContext): Promise<WebhookSubscription> {
    if (patch.url !== undefined) await this.validateUrl(patch.url);
    if (patch.events !== undefined) {
      const bad = invalidPatterns(patch.events);
      if (!patch.events.length || bad.length) {
        throw new AppError('VALIDATION_ERROR', bad.length ? `Unknown event type: ${bad.join(', ')}` : 'events must list at least one event type', {
          details: { field: 'events', invalid: bad, allowed_values: EVENT_TYPES },
        });
      }
    }
    return this.db.transaction(async (tx) => {
      const { rows } = await tx.query<SubscriptionRow>(
        `UPDATE webhook_subscriptions SET
           url = COALESCE($3, url),
           events = COALESCE($4, events),
           description = CASE WHEN $5::boolean THEN $6 ELSE description END,
           active = COALESCE($7, active),
           disabled_reason = CASE WHEN $7 IS TRUE THEN NULL ELSE disabled_reason END,
           updated_at = now()
         WHERE id = $1 AND owner_id = $2 RETURNING ${SUB_COLUMNS}`,
        [id, ownerId, patch.url ?? null, patch.events ? [...new Set(patch.events)] : null, patch.description !== undefined, patch.description?.trim() || null, patch.active ?? null],
      );
      if (!rows[0]) throw new AppError('NOT_FOUND', 'Webhook not found');
      await recordAuditEvent(tx, { eventType: 'config_change', action: 'webhook_updated', result: 'success', userId: ownerId, context: ctx, metadata: { webhook_id: id } });
      return toSubscription(rows[0]);
    });
  }

  async delete(ownerId: string, id: string, ctx: RequestContext): Promise<void> {
    await this.db.transaction(async (tx) => {
      const res = await tx.query(`DELETE FROM webhook_subscriptions WHERE id = $1 AND owner_id = $2`, [id, ownerId]);
      if (res.rowCount === 0) throw new AppError('NOT_FOUND', 'Webhook not found');
      await recordAuditEvent(tx, { eventType: 'config_change', action: 'webhook_deleted', result: 'success', userId: ownerId, context: ctx, metadata: { webhook_id: id } });
    });
  }

  /** The delivery log of one subscription, newest first, each with its attempts. */
  async deliveries(ownerId: string, subscriptionId: string, page: { limit: number; offset: number; status?: Delivery['status'] }): Promise<{ items: Delivery[]; total: number }> {
    await this.getOrThrow(ownerId, subscriptionId);
    const { rows } = await this.db.query<DeliveryRow & { total: number }>(
      `SELECT ${DELIVERY_COLUMNS}, (count(*) OVER ())::int AS total FROM webhook_deliveries
       WHERE subscription_id = $1 AND ($2::text IS NULL OR status = $2)
       ORDER BY created_at DESC, id LIMIT $3 OFFSET $4`,
      [subscriptionId, page.status ?? null, page.limit, page.offset],
    );
    const attempts = await this.attemptsFor(rows.map((r) => r.id));
    let total = rows[0]?.total ?? 0;
    if (!rows.length && page.offset > 0) {
      const c = await this.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM webhook_deliveries WHERE subscription_id = $1 AND ($2::text IS NULL OR status = $2)`, [subscriptionId, page.status ?? null]);
      total = c.rows[0]?.n ?? 0;
    }
    return { items: rows.map((r) => toDelivery(r, attempts.get(r.id) ?? [])), total };
  }

  /** Queues one delivery again now, with the same webhook-id. */
  async redeliver(ownerId: string, subscriptionId: string, deliveryId: string, ctx: RequestContext): Promise<Delivery> {
    return this.db.transaction(async (tx) => {
      const sub = await this.getOrThrow(ownerId, subscriptionId, tx);
      if (!sub.active) throw new AppError('CONFLICT', `Webhook is disabled${sub.disabledReason ? ` (${sub.disabledReason})` : ''}; re-enable it first`);
      const { rows } = await tx.query<DeliveryRow>(
        `UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = clock_timestamp(), locked_until = NULL, completed_at = NULL
         WHERE id = $1 AND subscription_id = $2 AND (status <> 'pending' OR locked_until IS NULL OR locked_until < clock_timestamp())
         RETURNING ${DELIVERY_COLUMNS}`,
        [deliveryId, subscriptionId],
      );
      if (!rows[0]) {
        const exists = await tx.query(`SELECT 1 FROM webhook_deliveries WHERE id = $1 AND subscription_id = $2`, [deliveryId, subscriptionId]);
        if (!exists.rows.length) throw new AppError('NOT_FOUND', 'Delivery not found');
        throw new AppError('CONFLICT', 'Delivery is being attempted right now');
      }
      await recordAuditEvent(tx, { eventType: 'config_change', action: 'webhook_redelivered', result: 'success', userId: ownerId, context: ctx, metadata: { webhook_id: subscriptionId, delivery_id: deliveryId } });
      return toDelivery(rows[0], []);
    });
  }

  /** Sends a `webhook.ping` event to this one subscription (not to the owner's other webhooks). */
  async ping(ownerId: string, subscriptionId: string): Promise<Delivery> {
    return this.db.transaction(async (tx) => {
      const found = await tx.query<SubscriptionRow & { secret_sealed: string }>(
        `SELECT ${SUB_COLUMNS}, secret_sealed FROM webhook_subscriptions WHERE id = $1 AND owner_id = $2`,
        [subscriptionId, ownerId],
      );
      if (!found.rows[0]) throw new AppError('NOT_FOUND', 'Webhook not found');
      const sub = toSubscription(found.rows[0]);
      const data = { webhook_id: sub.id, message: 'Mainspring webhook ping' };
      const ev = await tx.query<{ id: string; created_at: Date }>(
        `INSERT INTO events (id, owner_id, type, data, dispatched_at) VALUES ($1, $2, 'webhook.ping', $3::jsonb, clock_timestamp()) RETURNING id, created_at`,
        [newId('evt'), ownerId, JSON.stringify(data)],
      );
      const event = ev.rows[0]!;
      const body = formatBody(sub.face, { id: event.id, type: 'webhook.ping', data, createdAt: event.created_at }, this.box.open(found.rows[0].secret_sealed));
      const { rows } = await tx.query<DeliveryRow>(
        `INSERT INTO webhook_deliveries (id, subscription_id, event_id, event_type, body) VALUES ($1, $2, $3, 'webhook.ping', $4) RETURNING ${DELIVERY_COLUMNS}`,
        [newId('msg'), sub.id, event.id, body],
      );
      return toDelivery(rows[0]!, []);
    });
  }

  private async attemptsFor(ids: string[]): Promise<Map<string, DeliveryAttempt[]>> {
    const map = new Map<string, DeliveryAttempt[]>();
    if (!ids.length) return map;
    const { rows } = await this.db.query<{ delivery_id: string; attempt: number; attempted_at: Date; status_code: number | null; duration_ms: number; error: string | null; response_snippet: string | null }>(
      `SELECT * FROM webhook_attempts WHERE delivery_id = ANY($1::text[]) ORDER BY delivery_id, attempt`,
      [ids],
    );
    for (const r of rows) {
      const list = map.get(r.delivery_id) ?? [];
      list.push({ attempt: r.attempt, attemptedAt: r.attempted_at, statusCode: r.status_code, durationMs: r.duration_ms, error: r.error, responseSnippet: r.response_snippet });
      map.set(r.delivery_id, list);
    }
    return map;
  }

  private async validateUrl(url: string): Promise<void> {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new AppError('VALIDATION_ERROR', 'url must be an absolute http(s) URL', { details: { field: 'url' } });
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw new AppError('VALIDATION_ERROR', 'url must use http or https', { details: { field: 'url' } });
    }
    if (url.length > 2048) throw new AppError('VALIDATION_ERROR', 'url must be at most 2048 characters', { details: { field: 'url' } });
    // A literal private address is refused when stored, for a clear error at once; a name that
    // resolves to one is refused at every delivery attempt.
    const category = refusedLiteralTarget(url, this.allowPrivate);
    if (category) {
      throw new AppError('VALIDATION_ERROR', `url points to a ${category} address, which webhooks may not reach`, { details: { field: 'url' } });
    }
  }
}

interface DeliveryRow {
  id: string;
  subscription_id: string;
  event_id: string;
  event_type: string;
  status: Delivery['status'];
  attempts: number;
  next_attempt_at: Date;
  last_status_code: number | null;
  last_error: string | null;
  created_at: Date;
  completed_at: Date | null;
}

const DELIVERY_COLUMNS = 'id, subscription_id, event_id, event_type, status, attempts, next_attempt_at, last_status_code, last_error, created_at, completed_at';

function toDelivery(r: DeliveryRow, attemptLog: DeliveryAttempt[]): Delivery {
  return {
    id: r.id,
    subscriptionId: r.subscription_id,
    eventId: r.event_id,
    eventType: r.event_type,
    status: r.status,
    attempts: r.attempts,
    nextAttemptAt: r.status === 'pending' ? r.next_attempt_at : null,
    lastStatusCode: r.last_status_code,
    lastError: r.last_error,
    createdAt: r.created_at,
    completedAt: r.completed_at,
    attemptLog,
  };
}
