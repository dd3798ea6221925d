/**
 * HelixCode Harmony: `GET /api/v1/harmony/cluster/status`, `POST /api/v1/harmony/distribute`,
 * `POST /api/v1/harmony/sync`, `GET /api/v1/harmony/sync/status` and
 * `GET /api/v1/harmony/ai/acceleration`. The cluster is this deployment: the server process holding
 * the leadership lease is the master, the registered workers the caller may see are the worker nodes.
 */
import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import { PRECISIONS, TOGGLES } from '../../config.ts';
import { DISTRIBUTION_STRATEGIES, deviceSyncs, distributeTask, syncDevice, workerNodes } from '../../domains/cluster/harmony.ts';
import { TASK_PRIORITIES, TASK_STATUSES, TASK_TYPES, type Actor } from '../../domains/tasks/service.ts';
import { AcceleratorProbe } from '../../platform/host/accelerators.ts';
import type { AppContext } from '../shared/context.ts';
import { principalOf } from '../shared/conventions.ts';
import type { FaceApp } from '../shared/plugin.ts';

function actorOf(req: FastifyRequest): Actor {
  const p = principalOf(req);
  return { userId: p.user.id, admin: p.user.role === 'admin' };
}

const clusterStatus = z.object({
  master_node: z
    .object({
      id: z.string().describe('Node id of the server process holding the leadership lease'),
      status: z.literal('active'),
      uptime: z.number().int().describe('Seconds since that process started'),
    })
    .nullable()
    .describe('null while no server process holds a live lease (between a crash and the takeover)'),
  worker_nodes: z.array(
    z.object({
      id: z.string(),
      status: z.enum(['active', 'offline']),
      tasks_completed: z.number().int(),
      current_load: z.number().describe('Running tasks / max(1, resources.concurrency declared at registration, else 1)'),
    }),
  ),
  total_nodes: z.number().int().describe('The master (when there is one) plus the worker nodes listed'),
  active_nodes: z.number().int().describe('The master (when there is one) plus the workers that are not offline'),
});

const distributeBody = z.object({
  task_id: z.string().min(1).max(64),
  distribution_strategy: z.enum(DISTRIBUTION_STRATEGIES),
  required_capabilities: z.array(z.string().min(1).max(64)).max(64).default([]),
});

const syncBody = z.object({
  device_id: z.string().trim().min(1).max(128),
  device_type: z.string().trim().min(1).max(64),
  since: z.iso.datetime({ offset: true }).optional().describe('The cursor of the previous sync; absent: every task'),
});

const syncedTask = z.object({
  id: z.string(),
  title: z.string(),
  type: z.enum(TASK_TYPES),
  priority: z.enum(TASK_PRIORITIES),
  status: z.enum(TASK_STATUSES),
  progress: z.number().int(),
  assigned_worker: z.string().nullable(),
  created_at: z.string(),
  updated_at: z.string(),
  completed_at: z.string().nullable(),
});

const accelerator = z.object({ available: z.boolean(), model: z.string().nullable(), utilization: z.number().nullable().describe('Percent busy') });

export function tasksHarmonyRoutes(app: FaceApp, ctx: AppContext): void {
  const probe = new AcceleratorProbe();

  app.get('/api/v1/harmony/cluster/status', {
    schema: { summary: 'The master server node (leader) and the worker nodes the caller may see (admins: all)', response: { 200: clusterStatus } },
    handler: async (req) => {
      const [master, workers] = await Promise.all([ctx.cluster.master(), workerNodes(ctx.db, actorOf(req))]);
      const masters = master ? 1 : 0;
      return {
        master_node: master ? { id: master.id, status: 'active' as const, uptime: master.uptime } : null,
        worker_nodes: workers.map((w) => ({ id: w.id, status: w.status, tasks_completed: w.tasksCompleted, current_load: w.currentLoad })),
        total_nodes: masters + workers.length,
        active_nodes: masters + workers.filter((w) => w.status === 'active').length,
      };
    },
  });

  app.post('/api/v1/harmony/distribute', {
    schema: {
      summary: 'Reserve a pending task for one worker chosen by the strategy; only that worker will receive it',
      body: distributeBody,
      response: {
        200: z.object({
          distributed: z.boolean(),
          assigned_nodes: z.array(z.string()),
          estimated_completion: z.string().nullable().describe('Now plus the mean run time of your completed tasks of this type; null without any'),
        }),
      },
    },
    handler: async (req) => {
      const b = req.body;
      const r = await distributeTask(ctx.db, actorOf(req), { taskId: b.task_id, strategy: b.distribution_strategy, requiredCapabilities: b.required_capabilities });
      return { distributed: r.distributed, assigned_nodes: r.assignedNodes, estimated_completion: r.estimatedCompletion?.toISOString() ?? null };
    },
  });

  app.post('/api/v1/harmony/sync', {
    schema: {
      summary: "Sync a device: the caller's tasks changed since the cursor, and the next cursor",
      body: syncBody,
      response: {
        200: z.object({
          device_id: z.string(),
          device_type: z.string(),
          synced_at: z.string(),
          tasks: z.array(syncedTask),
          cursor: z.string().nullable().describe('Pass as `since` next time; null when you have no tasks yet'),
          has_more: z.boolean().describe('More changes wait: sync again with the new cursor'),
        }),
      },
    },
    handler: async (req) => {
      const b = req.body;
      const r = await syncDevice(ctx.db, actorOf(req), { deviceId: b.device_id, deviceType: b.device_type, since: b.since });
      return {
        device_id: b.device_id,
        device_type: b.device_type,
        synced_at: r.syncedAt.toISOString(),
        tasks: r.tasks.map((t) => ({
          id: t.id,
          title: t.title,
          type: t.type,
          priority: t.priority,
          status: t.status,
          progress: t.progress,
          assigned_worker: t.assignedWorker,
          created_at: t.createdAt.toISOString(),
          updated_at: t.updatedAt.toISOString(),
          completed_at: t.completedAt?.toISOString() ?? null,
        })),
        cursor: r.cursor,
        has_more: r.hasMore,
      };
    },
  });

  app.get('/api/v1/harmony/sync/status', {
    schema: {
      summary: "The caller's synced devices; a device is stale when its last sync is older than twice the interval",
      response: {
        200: z.object({
          sync_enabled: z.literal(true),
          last_sync: z.string().nullable().describe("The caller's most recent sync from any device"),
          sync_interval: z.number().int().describe('Seconds (HARMONY_SYNC_INTERVAL)'),
          synced_devices: z.array(z.object({ device_id: z.string(), device_type: z.string(), last_sync: z.string(), status: z.enum(['synced', 'stale']) })),
        }),
      },
    },
    handler: async (req) => {
      const interval = ctx.config.harmonySyncInterval;
      const devices = await deviceSyncs(ctx.db, actorOf(req), interval);
      return {
        sync_enabled: true as const,
        last_sync: devices[0]?.lastSync.toISOString() ?? null,
        sync_interval: interval,
        synced_devices: devices.map((d) => ({ device_id: d.deviceId, device_type: d.deviceType, last_sync: d.lastSync.toISOString(), status: d.status })),
      };
    },
  });

  app.get('/api/v1/harmony/ai/acceleration', {
    schema: {
      summary: "The host's NPU and NVIDIA GPU, and the model optimisations this deployment declares",
      response: {
        200: z.object({
          npu: accelerator,
          gpu: accelerator,
          optimizations: z.object({ quantization: z.enum(TOGGLES), pruning: z.enum(TOGGLES), precision: z.enum(PRECISIONS) }),
        }),
      },
    },
    handler: async () => {
      const { gpu, npu } = await probe.detect();
      return { npu, gpu, optimizations: ctx.config.harmonyOptimizations };
    },
  });
}
