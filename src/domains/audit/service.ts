/** The audit trail: who did what, from where, with what result. Written in the caller's transaction. */
import { newId } from '../../platform/crypto/index.ts';
import type { Queryable } from '../../platform/db/index.ts';

export const AUDIT_EVENT_TYPES = ['authentication', 'authorization', 'data_access', 'config_change'] as const;
export type AuditEventType = (typeof AUDIT_EVENT_TYPES)[number];

/** Where a request came from; faces fill it from the HTTP request. */
export interface RequestContext {
  ip: string | undefined;
  userAgent: string | undefined;
}

export interface AuditEventInput {
  eventType: AuditEventType;
  action: string;
  result: 'success' | 'failure';
  userId?: string | null;
  context?: RequestContext;
  metadata?: Record<string, unknown>;
}

export interface AuditEvent {
  id: string;
  eventType: AuditEventType;
  action: string;
  result: 'success' | 'failure';
  userId: string | null;
  ipAddress: string | null;
  userAgent: string | null;
  metadata: Record<string, unknown>;
  occurredAt: Date;
}

export async function recordAuditEvent(q: Queryable, e: AuditEventInput): Promise<string> {
  const id = newId('aud');
  await q.query(
    `INSERT INTO audit_events (id, event_type, action, result, user_id, ip_address, user_agent, metadata)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)`,
    [
      id,
      e.eventType,
      e.action,
      e.result,
      e.userId ?? null,
      e.context?.ip ?? null,
      e.context?.userAgent?.slice(0, 512) ?? null,
      JSON.stringify(e.metadata ?? {}),
    ],
  );
  return id;
}

export interface AuditQuery {
  /** Only this user's events; undefined = everyone's (admins). */
  userId?: string;
  eventType?: AuditEventType;
  action?: string;
  start?: Date;
  end?: Date;
  limit: number;
  offset: number;
}

interface AuditRow {
  id: string;
  event_type: AuditEventType;
  action: string;
  result: 'success' | 'failure';
  user_id: string | null;
  ip_address: string | null;
  user_agent: string | null;
  metadata: Record<string, unknown>;
  occurred_at: Date;
  total: number;
}

/** Lists events newest first with the total count of the filter. */
export async function listAuditEvents(q: Queryable, f: AuditQuery): Promise<{ events: AuditEvent[]; total: number }> {
  const where: string[] = [];
  const params: unknown[] = [];
  const add = (sql: string, value: unknown) => {
    params.push(value);
    where.push(sql.replace('?', `$${params.length}`));
  };
  if (f.userId !== undefined) add('user_id = ?', f.userId);
  if (f.eventType) add('event_type = ?', f.eventType);
  if (f.action) add('action = ?', f.action);
  if (f.start) add('occurred_at >= ?', f.start);
  if (f.end) add('occurred_at <= ?', f.end);
  params.push(f.limit, f.offset);
  const { rows } = await q.query<AuditRow>(
    `SELECT *, (count(*) OVER ())::int AS total FROM audit_events
     ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
     ORDER BY occurred_at DESC, id DESC
     LIMIT $${params.length - 1} OFFSET $${params.length}`,
    params,
  );
  let total = rows[0]?.total ?? 0;
  if (rows.length === 0 && f.offset > 0) {
    const count = await q.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM audit_events ${where.length ? `WHERE ${where.join(' AND ')}` : ''}`,
      params.slice(0, -2),
    );
    total = count.rows[0]?.n ?? 0;
  }
  return {
    total,
    events: rows.map((r) => ({
      id: r.id,
      eventType: r.event_type,
      action: r.action,
      result: r.result,
      userId: r.user_id,
      ipAddress: r.ip_address,
      userAgent: r.user_agent,
      metadata: r.metadata,
      occurredAt: r.occurred_at,
    })),
  };
}

/** Successful and failed logins since `since`, for one user or (undefined) everyone. */
export async function loginOutcomesSince(q: Queryable, since: Date, userId: string | undefined): Promise<{ successful: number; failed: number }> {
  const { rows } = await q.query<{ successful: number; failed: number }>(
    `SELECT count(*) FILTER (WHERE result = 'success')::int AS successful,
            count(*) FILTER (WHERE result = 'failure')::int AS failed
     FROM audit_events
     WHERE event_type = 'authentication' AND action = 'login' AND occurred_at >= $1 AND ($2::text IS NULL OR user_id = $2)`,
    [since, userId ?? null],
  );
  return { successful: rows[0]?.successful ?? 0, failed: rows[0]?.failed ?? 0 };
}

/** Time of the newest audit event visible to one user or (undefined) everyone; null when none. */
export async function lastAuditEventAt(q: Queryable, userId: string | undefined): Promise<Date | null> {
  const { rows } = await q.query<{ at: Date | null }>(`SELECT max(occurred_at) AS at FROM audit_events WHERE $1::text IS NULL OR user_id = $1`, [userId ?? null]);
  return rows[0]?.at ?? null;
}
