/** HeliosDB webhooks: `/v1/webhooks` and its deliveries, in the `{success,data,meta}` envelope. */
import type { AppContext } from '../shared/context.ts';
import type { FaceApp } from '../shared/plugin.ts';
import { webhookRoutes } from '../shared/webhooks.routes.ts';
import { heliosEnvelope, heliosOk } from './wire.ts';

export function databasesWebhookRoutes(app: FaceApp, ctx: AppContext): void {
  webhookRoutes(app, ctx, {
    face: 'databases',
    prefix: '/v1',
    wrap: (req, reply, data) => heliosOk(req, reply, data),
    envelope: heliosEnvelope,
    listKey: { webhooks: 'webhooks', deliveries: 'deliveries' },
    deleteWithBody: true,
  });
}
