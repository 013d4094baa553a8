/**
 * Where jobs wait and who runs them.
 *
 * - `InProcessQueue` (sdc serve without --queue): the server runs its jobs itself, one at a time,
 *   in submission order. Nothing to install.
 * - `RedisQueue` + `startWorker` (--queue redis://…): jobs go through BullMQ; any number of
 *   `sdc worker` processes on any number of machines take them. BullMQ holds a lock per running
 *   job that its worker renews; a worker that dies stops renewing, and after `lockDuration` the job
 *   is stalled and goes back to the queue for another worker. That a job ends exactly once is the
 *   store's claim (see execute.ts), not BullMQ's: an attempt that lost its lock but still finishes
 *   finds the job already claimed and reports nothing.
 *
 * Cancelling sets the job's cancel flag and publishes it: a waiting job is taken out of the queue
 * and ended by the server; a running one is stopped by its worker (the flag becomes the run's
 * AbortSignal, checked between denoising or training steps).
 */
import * as os from "node:os";
import { Queue, QueueEvents, Worker, type Job as BullJob } from "bullmq";
import { Redis } from "ioredis";
import { UserError } from "../util/errors.js";
import { executeJob, type ExecuteOptions, type Outcome } from "./execute.js";
import type { JobSpec } from "./jobs.js";
import { type JobStore, RedisStore } from "./store.js";

export const QUEUE_NAME = "sdc-jobs";

export interface JobQueue {
  submit(spec: JobSpec): Promise<void>;
  cancel(id: string): Promise<void>;
  close(): Promise<void>;
}

export type RunnerOptions = Omit<ExecuteOptions, "store" | "worker" | "signal">;

/** End a job that never started (cancelled while waiting). */
async function endUnstarted(store: JobStore, id: string, who: string): Promise<void> {
  if (!(await store.claimFinish(id, who))) return;
  await store.append(id, { type: "state", state: "cancelled" });
  await store.append(id, { type: "done", state: "cancelled" });
}

export class InProcessQueue implements JobQueue {
  private waiting: JobSpec[] = [];
  private running: { id: string; ac: AbortController } | null = null;
  private idle: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly store: JobStore,
    private readonly o: RunnerOptions,
  ) {}

  private pumping = false;

  async submit(spec: JobSpec): Promise<void> {
    this.waiting.push(spec);
    if (this.pumping) return;
    this.pumping = true;
    // after the request that submitted it has been answered: a run holds this event loop for as
    // long as each onnxruntime call takes
    setImmediate(() => (this.idle = this.pump()));
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    while (!this.closed && this.waiting.length) {
      const spec = this.waiting.shift()!;
      const ac = new AbortController();
      this.running = { id: spec.id, ac };
      try {
        await executeJob(spec, { ...this.o, store: this.store, worker: "in-process", signal: ac.signal });
      } catch (e) {
        this.o.log?.(`job ${spec.id}: ${(e as Error).message}`);
      } finally {
        this.running = null;
      }
    }
    this.pumping = false; // in the same tick as the loop's last check: a submit now starts a new pump
  }

  async cancel(id: string): Promise<void> {
    await this.store.requestCancel(id);
    const i = this.waiting.findIndex((s) => s.id === id);
    if (i >= 0) {
      this.waiting.splice(i, 1);
      await endUnstarted(this.store, id, "server");
    } else if (this.running?.id === id) this.running.ac.abort();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.running?.ac.abort();
    await this.idle;
  }
}

/** Refuse a queue that cannot be reached now, instead of waiting for it forever. */
export async function checkRedis(url: string, timeoutMs = 5000): Promise<void> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: timeoutMs, enableOfflineQueue: false });
  r.on("error", () => {});
  try {
    await r.connect();
    await r.ping();
  } catch (e) {
    throw new UserError({
      message: `cannot reach Redis at ${url}: ${(e as Error).message}`,
      subject: "--queue",
      hint: "start redis-server there (Debian: apt-get install redis-server), or check the host, port and password in the URL",
    });
  } finally {
    r.disconnect();
  }
}

/** An ioredis connection as BullMQ wants it (blocking commands wait forever). */
export function redisConnection(url: string): Redis {
  const r = new Redis(url, { maxRetriesPerRequest: null });
  r.on("error", () => {});
  return r;
}

export class RedisQueue implements JobQueue {
  private readonly queue: Queue;
  private readonly events: QueueEvents;
  private readonly conn: Redis;
  private readonly eventsConn: Redis;

  constructor(
    url: string,
    private readonly store: JobStore,
  ) {
    this.conn = redisConnection(url);
    this.queue = new Queue(QUEUE_NAME, { connection: this.conn });
    this.queue.on("error", () => {});
    // BullMQ gives up on a job whose workers kept dying (stalled more than maxStalledCount times):
    // the job's log says so, instead of staying "running" forever
    this.eventsConn = redisConnection(url);
    this.events = new QueueEvents(QUEUE_NAME, { connection: this.eventsConn });
    this.events.on("error", () => {});
    this.events.on("failed", ({ jobId, failedReason }) => void this.gaveUp(jobId, failedReason).catch(() => {}));
  }

  private async gaveUp(id: string, reason: string): Promise<void> {
    if (!(await this.store.claimFinish(id, "server"))) return; // ended by a worker: its own ending stands
    await this.store.append(id, { type: "error", message: `the queue gave up on this job: ${reason}`, hint: "its workers stopped (killed, out of memory, or hung) each time they ran it; look at the workers' logs" });
    await this.store.append(id, { type: "state", state: "failed" });
    await this.store.append(id, { type: "done", state: "failed" });
  }

  async submit(spec: JobSpec): Promise<void> {
    await this.queue.add("job", { id: spec.id }, { jobId: spec.id, removeOnComplete: true, removeOnFail: true, attempts: 1 });
  }

  async cancel(id: string): Promise<void> {
    await this.store.requestCancel(id);
    const job = await this.queue.getJob(id);
    if (job && ((await job.isWaiting()) || (await job.isDelayed()))) {
      try {
        await job.remove(); // fails when a worker took it in between: that worker sees the flag
        await endUnstarted(this.store, id, "server");
      } catch {
        // running now: its worker stops it
      }
    }
  }

  async close(): Promise<void> {
    await this.events.close();
    await this.queue.close();
    await Promise.all([this.conn.quit().catch(() => {}), this.eventsConn.quit().catch(() => {})]);
  }
}

export interface WorkerOptions extends RunnerOptions {
  url: string;
  /** Jobs this process runs at once (default 1: one sampling or training run uses every core). */
  concurrency?: number;
  /**
   * BullMQ's lock on a running job, ms (default 120 s): how long a dead worker holds its job. The
   * worker renews it from its event loop, which a compile holds for as long as it builds a graph;
   * a lock that lapses anyway costs a second attempt, never a second result (see execute.ts).
   */
  lockDuration?: number;
  /** How often stalled jobs are looked for, ms (default 30 s). */
  stalledInterval?: number;
  /** After each job this worker took: how it ended ("lost": another worker finished it first). */
  onOutcome?: (id: string, outcome: Outcome) => void;
}

export interface RunningWorker {
  id: string;
  close(): Promise<void>;
  /** Outcomes of the jobs this worker ran (for tests and the benchmark). */
  outcomes: Map<string, Outcome>;
}

export async function startWorker(o: WorkerOptions): Promise<RunningWorker> {
  await checkRedis(o.url);
  const id = `${os.hostname()}:${process.pid}`;
  const store = new RedisStore(o.url);
  const running = new Map<string, AbortController>();
  const outcomes = new Map<string, Outcome>();
  const stopCancel = await store.onCancel((jobId) => running.get(jobId)?.abort());
  const conn = redisConnection(o.url);
  const worker = new Worker(
    QUEUE_NAME,
    async (job: BullJob<{ id: string }>) => {
      const rec = await store.get(job.data.id);
      if (!rec) return "missing";
      const ac = new AbortController();
      running.set(rec.spec.id, ac);
      try {
        const { url: _u, concurrency: _c, lockDuration: _l, stalledInterval: _s, onOutcome: _o, ...run } = o;
        const outcome = await executeJob(rec.spec, { ...run, store, worker: id, signal: ac.signal });
        outcomes.set(rec.spec.id, outcome);
        o.onOutcome?.(rec.spec.id, outcome);
        return outcome;
      } finally {
        running.delete(rec.spec.id);
      }
    },
    {
      connection: conn,
      concurrency: o.concurrency ?? 1,
      lockDuration: o.lockDuration ?? 120_000,
      stalledInterval: o.stalledInterval ?? 30_000,
      maxStalledCount: 10,
      autorun: true,
    },
  );
  worker.on("error", (e) => o.log?.(`queue: ${e.message}`));
  await worker.waitUntilReady();
  return {
    id,
    outcomes,
    close: async () => {
      for (const ac of running.values()) ac.abort();
      await worker.close();
      stopCancel();
      await store.close();
      await conn.quit().catch(() => {});
    },
  };
}
