/**
 * The server cluster: every server process is a node with a row in `cluster_nodes`, refreshed by a
 * heartbeat; one of them holds the leadership lease (`cluster_leader`), taken with a single UPDATE
 * that succeeds only while the lease is free, expired or already ours. It works the same on PGlite
 * and PostgreSQL and needs no dedicated connection. Times are the database's clock, so processes
 * on different hosts compare leases without trusting each other's clocks.
 */
import { hostname } from 'node:os';
import { newId } from '../../platform/crypto/index.ts';
import type { Db } from '../../platform/db/index.ts';

export interface ClusterOptions {
  /** How often a node renews its heartbeat and tries to take or keep the lease (ms). */
  heartbeatMs: number;
  /** How long a lease lasts without renewal (s); another node takes over after it. */
  leaseSeconds: number;
}

export const DEFAULT_CLUSTER_OPTIONS: ClusterOptions = { heartbeatMs: 3000, leaseSeconds: 10 };

export interface MasterNode {
  id: string;
  hostname: string;
  /** Seconds since the leader's process started serving. */
  uptime: number;
  acquiredAt: Date;
}

export class ClusterService {
  readonly nodeId: string;
  private readonly db: Db;
  private readonly opts: ClusterOptions;
  private readonly version: string;
  private readonly log: { error(obj: unknown, msg: string): void };
  private readonly startedMs = Date.now();
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;
  private started = false;
  private leader = false;
  /** Unknown until the first heartbeat: assume others until then. */
  private peers = true;

  constructor(deps: { db: Db; version: string; log: { error(obj: unknown, msg: string): void }; options?: Partial<ClusterOptions>; nodeId?: string }) {
    this.db = deps.db;
    this.version = deps.version;
    this.log = deps.log;
    this.opts = { ...DEFAULT_CLUSTER_OPTIONS, ...deps.options };
    this.nodeId = deps.nodeId ?? newId('node');
  }

  /**
   * Whether other live server processes shared the database at the last heartbeat (true before the
   * first one, and whenever this node does not run heartbeats). A process that just started is seen
   * by the others within one heartbeat.
   */
  peersAlive(): boolean {
    return !this.started || this.peers;
  }

  /** Whether this process held the lease at its last heartbeat. */
  isLeader(): boolean {
    return this.leader;
  }

  /** Starts the heartbeat loop: the first beat runs at once. */
  start(): void {
    if (this.started) return;
    this.started = true;
    const beat = () => {
      this.running = this.tick()
        .catch((err: unknown) => {
          this.leader = false;
          this.log.error({ err }, 'cluster heartbeat failed');
        })
        .finally(() => {
          this.running = null;
          if (this.started) this.timer = setTimeout(beat, this.opts.heartbeatMs);
        });
    };
    beat();
  }

  /** One heartbeat: refreshes this node's row, then takes or renews the lease; returns leadership. */
  async tick(): Promise<boolean> {
    const elapsed = (Date.now() - this.startedMs) / 1000;
    await this.db.query(
      `INSERT INTO cluster_nodes (id, hostname, pid, version, started_at)
       VALUES ($1, $2, $3, $4, clock_timestamp() - make_interval(secs => $5))
       ON CONFLICT (id) DO UPDATE SET last_heartbeat = clock_timestamp(), stopped_at = NULL`,
      [this.nodeId, hostname(), process.pid, this.version, elapsed],
    );
    const { rows } = await this.db.query<{ node_id: string }>(
      `UPDATE cluster_leader SET
         acquired_at = CASE WHEN node_id = $1 THEN acquired_at ELSE clock_timestamp() END,
         node_id = $1,
         lease_expires_at = clock_timestamp() + make_interval(secs => $2)
       WHERE id = 1 AND (node_id IS NULL OR node_id = $1 OR lease_expires_at < clock_timestamp())
       RETURNING node_id`,
      [this.nodeId, this.opts.leaseSeconds],
    );
    this.leader = rows.length === 1;
    const others = await this.db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM cluster_nodes
       WHERE id <> $1 AND stopped_at IS NULL AND last_heartbeat > clock_timestamp() - make_interval(secs => $2)`,
      [this.nodeId, this.opts.leaseSeconds],
    );
    this.peers = others.rows[0]!.n > 0;
    if (this.leader) await this.leaderDuties();
    return this.leader;
  }

  /**
   * Work only the leader does: a task reserved for a worker that went offline goes back to every
   * worker, and nodes silent for a day are forgotten.
   */
  private async leaderDuties(): Promise<void> {
    await this.db.query(
      `UPDATE tasks SET reserved_for = NULL, updated_at = clock_timestamp()
       WHERE status = 'pending' AND reserved_for IN (SELECT id FROM workers WHERE status = 'offline')`,
    );
    await this.db.query(`DELETE FROM cluster_nodes WHERE last_heartbeat < clock_timestamp() - interval '1 day'`);
  }

  /** Stops the loop; a leader gives up its lease so another node takes over at its next heartbeat. */
  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running;
    try {
      await this.db.query(`UPDATE cluster_leader SET node_id = NULL, lease_expires_at = '-infinity' WHERE id = 1 AND node_id = $1`, [this.nodeId]);
      await this.db.query(`UPDATE cluster_nodes SET stopped_at = clock_timestamp() WHERE id = $1`, [this.nodeId]);
    } catch (err) {
      this.log.error({ err }, 'could not release the cluster lease');
    }
    this.leader = false;
  }

  /** The node holding a live lease, or null while none does (between a crash and the takeover). */
  async master(): Promise<MasterNode | null> {
    const { rows } = await this.db.query<{ id: string; hostname: string; uptime: number; acquired_at: Date }>(
      `SELECT n.id, n.hostname, floor(extract(epoch FROM clock_timestamp() - n.started_at))::int AS uptime, l.acquired_at
       FROM cluster_leader l JOIN cluster_nodes n ON n.id = l.node_id
       WHERE l.id = 1 AND l.lease_expires_at >= clock_timestamp()`,
    );
    const r = rows[0];
    return r ? { id: r.id, hostname: r.hostname, uptime: Math.max(0, r.uptime), acquiredAt: r.acquired_at } : null;
  }
}
