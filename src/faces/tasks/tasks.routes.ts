/** HelixCode tasks and workers: `/api/v1/tasks`, `/api/v1/workers/register|heartbeat`, `GET /api/v1/workers`. */
import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import { TASK_PRIORITIES, TASK_STATUSES, TASK_TYPES, type Actor, type Task, type Worker } from '../../domains/tasks/service.ts';
import type { AppContext } from '../shared/context.ts';
import { principalOf } from '../shared/conventions.ts';
import type { FaceApp } from '../shared/plugin.ts';

const taskSchema = z.object({
  id: z.string(),
  title: z.string(),
  description: z.string().nullable(),
  type: z.enum(TASK_TYPES),
  priority: z.enum(TASK_PRIORITIES),
  status: z.enum(TASK_STATUSES),
  project_id: z.string().nullable(),
  assigned_worker: z.string().nullable(),
  progress: z.number().int(),
  payload: z.unknown().nullable(),
  result: z.unknown().nullable(),
  error: z.string().nullable(),
  required_capabilities: z.array(z.string()),
  depends_on: z.array(z.string()),
  max_retries: z.number().int(),
  retry_count: z.number().int(),
  timeout_seconds: z.number().int().nullable(),
  created_at: z.string(),
  updated_at: z.string(),
  started_at: z.string().nullable(),
  completed_at: z.string().nullable(),
});

function taskJson(t: Task) {
  return {
    id: t.id,
    title: t.title,
    description: t.description,
    type: t.type,
    priority: t.priority,
    status: t.status,
    project_id: t.projectId,
    assigned_worker: t.assignedWorker,
    progress: t.progress,
    payload: t.payload ?? null,
    result: t.result ?? null,
    error: t.error,
    required_capabilities: t.requiredCapabilities,
    depends_on: t.dependsOn,
    max_retries: t.maxRetries,
    retry_count: t.retryCount,
    timeout_seconds: t.timeoutSeconds,
    created_at: t.createdAt.toISOString(),
    updated_at: t.updatedAt.toISOString(),
    started_at: t.startedAt?.toISOString() ?? null,
    completed_at: t.completedAt?.toISOString() ?? null,
  };
}

const workerSchema = z.object({
  id: z.string(),
  hostname: z.string(),
  status: z.enum(['idle', 'busy', 'offline']),
  last_heartbeat: z.string(),
  capabilities: z.array(z.string()),
  current_task: z.string().nullable(),
  tasks_completed: z.number().int(),
  shared: z.boolean(),
  registered_at: z.string(),
});

function workerJson(w: Worker) {
  return {
    id: w.id,
    hostname: w.hostname,
    status: w.status,
    last_heartbeat: w.lastHeartbeat.toISOString(),
    capabilities: w.capabilities,
    current_task: w.currentTask,
    tasks_completed: w.tasksCompleted,
    shared: w.shared,
    registered_at: w.registeredAt.toISOString(),
  };
}

function actorOf(req: FastifyRequest): Actor {
  const p = principalOf(req);
  return { userId: p.user.id, admin: p.user.role === 'admin' };
}

const idParams = z.object({ id: z.string().min(1).max(64) });
const capability = z.string().min(1).max(64);

export function tasksRoutes(app: FaceApp, ctx: AppContext): void {
  app.post('/api/v1/tasks', {
    schema: {
      summary: 'Create a task',
      body: z.object({
        title: z.string().trim().min(1).max(500),
        description: z.string().max(10_000).optional(),
        type: z.enum(TASK_TYPES).optional(),
        priority: z.enum(TASK_PRIORITIES).optional(),
        project_id: z.string().max(200).optional(),
        payload: z.unknown().optional(),
        required_capabilities: z.array(capability).max(50).optional(),
        max_retries: z.number().int().min(0).max(100).optional(),
        timeout_seconds: z.number().int().min(1).max(86_400).optional(),
        depends_on: z.array(z.string().min(1).max(64)).max(100).optional(),
      }),
      response: { 201: taskSchema },
    },
    handler: async (req, reply) => {
      const b = req.body;
      const task = await ctx.tasks.create(actorOf(req), {
        title: b.title,
        description: b.description,
        type: b.type,
        priority: b.priority,
        projectId: b.project_id,
        payload: b.payload,
        requiredCapabilities: b.required_capabilities,
        maxRetries: b.max_retries,
        timeoutSeconds: b.timeout_seconds,
        dependsOn: b.depends_on,
      });
      return reply.status(201).send(taskJson(task));
    },
  });

  app.get('/api/v1/tasks', {
    schema: {
      summary: 'List your tasks (admins: all)',
      querystring: z.object({
        status: z.enum(TASK_STATUSES).optional(),
        priority: z.enum(TASK_PRIORITIES).optional(),
        type: z.enum(TASK_TYPES).optional(),
        project_id: z.string().max(200).optional(),
        limit: z.coerce.number().int().min(1).max(500).default(50),
        offset: z.coerce.number().int().min(0).default(0),
      }),
      response: { 200: z.object({ tasks: z.array(taskSchema), total: z.number().int(), limit: z.number().int(), offset: z.number().int() }) },
    },
    handler: async (req) => {
      const q = req.query;
      const { tasks, total } = await ctx.tasks.list(actorOf(req), { status: q.status, priority: q.priority, type: q.type, projectId: q.project_id, limit: q.limit, offset: q.offset });
      return { tasks: tasks.map(taskJson), total, limit: q.limit, offset: q.offset };
    },
  });

  app.get('/api/v1/tasks/:id', {
    schema: { summary: 'One task', params: idParams, response: { 200: taskSchema } },
    handler: async (req) => taskJson(await ctx.tasks.get(actorOf(req), req.params.id)),
  });

  app.put('/api/v1/tasks/:id', {
    schema: {
      summary: 'Report status, progress, result or error (valid transitions only; a worker must hold the task)',
      description:
        'With `claim_next: true` (and `worker_id`), a worker finishing its task also asks for its next one: once the task is completed, failed or cancelled, ' +
        'the response carries `next_task`, claimed exactly as by an idle heartbeat without `wait` (null when there is nothing to take). One request instead of a report and a heartbeat.',
      params: idParams,
      body: z
        .object({
          status: z.enum(TASK_STATUSES).optional(),
          progress: z.number().int().min(0).max(100).optional(),
          result: z.unknown().optional(),
          error: z.string().max(10_000).optional(),
          worker_id: z.string().min(1).max(64).optional(),
          claim_next: z.boolean().optional(),
        })
        .refine((b) => b.status !== undefined || b.progress !== undefined || b.result !== undefined || b.error !== undefined, 'give status, progress, result or error')
        .refine((b) => !b.claim_next || b.worker_id !== undefined, 'claim_next needs worker_id'),
      response: { 200: taskSchema.extend({ next_task: taskSchema.nullable().optional() }) },
    },
    handler: async (req) => {
      const b = req.body;
      const update = { status: b.status, progress: b.progress, result: b.result, error: b.error, workerId: b.worker_id };
      if (!b.claim_next) return taskJson(await ctx.tasks.update(actorOf(req), req.params.id, update));
      const { task, next } = await ctx.tasks.report(actorOf(req), req.params.id, update, { claimNext: true });
      return { ...taskJson(task), next_task: next ? taskJson(next) : null };
    },
  });

  app.delete('/api/v1/tasks/:id', {
    schema: { summary: 'Delete a task (a pending or running one is cancelled)', params: idParams, response: { 204: z.null() } },
    handler: async (req, reply) => {
      await ctx.tasks.delete(actorOf(req), req.params.id);
      return reply.status(204).send(null);
    },
  });

  app.post('/api/v1/workers/register', {
    schema: {
      summary: 'Register a worker (by an admin: serves every user; otherwise only you)',
      body: z.object({
        hostname: z.string().trim().min(1).max(255),
        capabilities: z.array(capability).min(1).max(50),
        resources: z.record(z.string(), z.unknown()).optional(),
      }),
      response: { 200: z.object({ worker_id: z.string(), registered_at: z.string() }) },
    },
    handler: async (req) => {
      const w = await ctx.tasks.registerWorker(actorOf(req), { hostname: req.body.hostname, capabilities: req.body.capabilities, resources: req.body.resources ?? {} });
      return { worker_id: w.id, registered_at: w.registeredAt.toISOString() };
    },
  });

  app.post('/api/v1/workers/heartbeat', {
    schema: {
      summary: 'Heartbeat; an idle worker is handed its next task (`wait` long-polls up to 25 s)',
      body: z.object({
        worker_id: z.string().min(1).max(64),
        status: z.enum(['idle', 'busy']).default('idle'),
        current_task: z.string().max(64).nullable().optional(),
        resources: z.object({ cpu_usage: z.number().min(0).max(100).optional(), memory_usage: z.number().min(0).optional() }).optional(),
        wait: z.number().min(0).max(25).optional(),
      }),
      response: { 200: z.object({ acknowledged: z.literal(true), assigned_task: taskSchema.nullable() }) },
    },
    handler: async (req, reply) => {
      const b = req.body;
      const hangup = new AbortController();
      reply.raw.once('close', () => {
        if (!reply.raw.writableFinished) hangup.abort();
      });
      const { assigned } = await ctx.tasks.heartbeat(actorOf(req), {
        workerId: b.worker_id,
        status: b.status,
        currentTask: b.current_task ?? null,
        cpuUsage: b.resources?.cpu_usage,
        memoryUsage: b.resources?.memory_usage,
        waitSeconds: b.wait,
      }, hangup.signal);
      return { acknowledged: true as const, assigned_task: assigned ? taskJson(assigned) : null };
    },
  });

  app.get('/api/v1/workers', {
    schema: { summary: 'Workers you can use', response: { 200: z.object({ workers: z.array(workerSchema) }) } },
    handler: async (req) => ({ workers: (await ctx.tasks.listWorkers(actorOf(req))).map(workerJson) }),
  });
}
