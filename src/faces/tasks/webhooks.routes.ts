/** HelixCode webhooks: `POST/GET /api/v1/webhooks`, `GET/PUT/DELETE /api/v1/webhooks/{id}`, deliveries, redeliver, ping. */
import type { AppContext } from '../shared/context.ts';
import type { FaceApp } from '../shared/plugin.ts';
import { webhookRoutes } from '../shared/webhooks.routes.ts';

export function tasksWebhookRoutes(app: FaceApp, ctx: AppContext): void {
  webhookRoutes(app, ctx, {
    face: 'tasks',
    prefix: '/api/v1',
    wrap: (_req, _reply, data) => data,
    envelope: (data) => data,
    listKey: { webhooks: 'webhooks', deliveries: 'deliveries' },
    deleteWithBody: false,
  });
}
