/**
 * HelixCode Aurora: `GET /api/v1/aurora/audit`, `GET /api/v1/aurora/metrics/security` and
 * `GET /api/v1/aurora/monitoring/system`. Every figure is read from the audit trail, the session
 * table or the host; admins see every user's events and sessions, other users only their own.
 */
import { z } from 'zod';
import { SECURITY_LEVELS } from '../../config.ts';
import { AUDIT_EVENT_TYPES, lastAuditEventAt, listAuditEvents, loginOutcomesSince, type AuditEvent } from '../../domains/audit/service.ts';
import type { Principal } from '../../domains/identity/service.ts';
import { AppError } from '../../platform/errors.ts';
import { HostMonitor } from '../../platform/host/index.ts';
import type { AppContext } from '../shared/context.ts';
import { principalOf } from '../shared/conventions.ts';
import type { FaceApp } from '../shared/plugin.ts';

const auditQuery = z.object({
  event_type: z.enum(AUDIT_EVENT_TYPES).optional(),
  start_time: z.iso.datetime({ offset: true }).optional().describe('ISO 8601 timestamp; events at or after it'),
  end_time: z.iso.datetime({ offset: true }).optional().describe('ISO 8601 timestamp; events at or before it'),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  offset: z.coerce.number().int().min(0).default(0),
});

const auditLog = z.object({
  id: z.string(),
  event_type: z.enum(AUDIT_EVENT_TYPES),
  user_id: z.string().nullable(),
  action: z.string(),
  result: z.enum(['success', 'failure']),
  ip_address: z.string().nullable(),
  timestamp: z.string(),
  metadata: z.looseObject({ user_agent: z.string().nullable() }),
});

const securityMetrics = z.object({
  auth_attempts: z.object({
    successful: z.number().int().describe('Successful logins in the last 24 hours'),
    failed: z.number().int().describe('Failed logins in the last 24 hours'),
    rate: z.number().describe('failed / (successful + failed); 0 when there were none'),
  }),
  active_sessions: z.number().int().describe('Sessions neither revoked nor expired'),
  encryption_status: z.literal('active').describe('Stored secrets are sealed with AES-256-GCM'),
  security_level: z.enum(SECURITY_LEVELS),
  last_audit: z.string().nullable().describe('Time of the newest audit event visible to the caller'),
});

const capacity = z.object({
  total: z.number().int().describe('MB'),
  used: z.number().int().describe('MB'),
  available: z.number().int().describe('MB'),
  percentage: z.number().describe('used / total, in percent'),
});
const systemMetrics = z.object({
  cpu: z.object({
    usage: z.number().describe('Busy share of all cores over the last fraction of a second to few seconds, in percent'),
    cores: z.number().int(),
    temperature: z.number().nullable().describe('°C; null when the host exposes no CPU sensor'),
  }),
  memory: capacity,
  disk: capacity.describe('The filesystem holding the data directory'),
  network: z.object({
    rx_bytes: z.number().int().nullable().describe('Received since boot, all interfaces but loopback'),
    tx_bytes: z.number().int().nullable().describe('Sent since boot, all interfaces but loopback'),
  }),
});

/** The user whose records the caller may see; undefined for an admin, who sees everyone's. */
function visibleUserId(p: Principal): string | undefined {
  return p.user.role === 'admin' ? undefined : p.user.id;
}

function auditLogOf(e: AuditEvent) {
  const metadata: Record<string, unknown> = { user_agent: e.userAgent };
  for (const [k, v] of Object.entries(e.metadata)) if (k !== 'user_agent') metadata[k] = v;
  return {
    id: e.id,
    event_type: e.eventType,
    user_id: e.userId,
    action: e.action,
    result: e.result,
    ip_address: e.ipAddress,
    timestamp: e.occurredAt.toISOString(),
    metadata: metadata as { user_agent: string | null },
  };
}

export function tasksAuroraRoutes(app: FaceApp, ctx: AppContext): void {
  const host = new HostMonitor({ dataDir: ctx.config.dataDir });

  app.get('/api/v1/aurora/audit', {
    schema: {
      summary: 'Audit log: authentication, authorization, data access and configuration events (admins see every user)',
      querystring: auditQuery,
      response: { 200: z.object({ logs: z.array(auditLog), total: z.number().int() }) },
    },
    handler: async (req) => {
      const q = req.query;
      const start = q.start_time === undefined ? undefined : new Date(q.start_time);
      const end = q.end_time === undefined ? undefined : new Date(q.end_time);
      if (start && end && start > end) {
        throw new AppError('VALIDATION_ERROR', 'start_time must not be later than end_time', { details: { field: 'start_time' } });
      }
      const { events, total } = await listAuditEvents(ctx.db, {
        userId: visibleUserId(principalOf(req)),
        eventType: q.event_type,
        start,
        end,
        limit: q.limit,
        offset: q.offset,
      });
      return { logs: events.map(auditLogOf), total };
    },
  });

  app.get('/api/v1/aurora/metrics/security', {
    schema: { summary: 'Login attempts (24 h), active sessions and security settings (admins: all users)', response: { 200: securityMetrics } },
    handler: async (req) => {
      const userId = visibleUserId(principalOf(req));
      const [logins, activeSessions, lastAudit] = await Promise.all([
        loginOutcomesSince(ctx.db, new Date(Date.now() - 86_400_000), userId),
        ctx.identity.countActiveSessions(userId),
        lastAuditEventAt(ctx.db, userId),
      ]);
      const f = { ...logins, activeSessions, lastAudit };
      const attempts = f.successful + f.failed;
      return {
        auth_attempts: {
          successful: f.successful,
          failed: f.failed,
          rate: attempts === 0 ? 0 : Math.round((f.failed / attempts) * 10_000) / 10_000,
        },
        active_sessions: f.activeSessions,
        // Secrets at rest are always sealed: the server cannot start without SECRETS_KEY (see secretbox.ts).
        encryption_status: 'active' as const,
        security_level: ctx.config.securityLevel,
        last_audit: f.lastAudit?.toISOString() ?? null,
      };
    },
  });

  app.get('/api/v1/aurora/monitoring/system', {
    schema: { summary: 'CPU, memory, disk and network of the host running the server', response: { 200: systemMetrics } },
    handler: async () => {
      const s = await host.snapshot();
      return {
        cpu: s.cpu,
        memory: s.memory,
        disk: s.disk,
        network: { rx_bytes: s.network.rxBytes, tx_bytes: s.network.txBytes },
      };
    },
  });
}
