/** Every domain's migrations, in one list; versions are global (platform 1-99, identity 100s, audit 200s, jobs 300s, events 400s, tasks 500s, cluster 600s, ai 700s, conversations 800s, monitoring 900s). */
import { clusterMigrations } from './domains/cluster/migrations.ts';
import { conversationsMigrations } from './domains/conversations/migrations.ts';
import { auditMigrations } from './domains/audit/migrations.ts';
import { eventsMigrations } from './domains/events/migrations.ts';
import { monitoringMigrations } from './domains/monitoring/migrations.ts';
import { identityMigrations } from './domains/identity/migrations.ts';
import { tasksMigrations } from './domains/tasks/migrations.ts';
import type { Migration } from './platform/db/index.ts';
import { aiMigrations } from './platform/ai/usage.ts';
import { jobsMigrations } from './platform/jobs/migrations.ts';
import { rateLimitMigrations } from './platform/ratelimit/migrations.ts';

export const MIGRATIONS: readonly Migration[] = [...rateLimitMigrations, ...identityMigrations, ...auditMigrations, ...jobsMigrations, ...eventsMigrations, ...tasksMigrations, ...clusterMigrations, ...aiMigrations, ...conversationsMigrations, ...monitoringMigrations];
