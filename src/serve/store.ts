/**
 * Where jobs and their events live: in this process (`sdc serve` without --queue), or in Redis
 * (with --queue: the server, every worker and every other server on the same Redis see the same
 * jobs). A job is its spec and its append-only event log; `foldJob` makes the API's Job of them.
 *
 * Redis keys (prefix `sdc:<queue name>:`):
 *   job:<id>       the JobSpec (JSON)
 *   jobs           sorted set of job ids by creation time
 *   ev:<id>        list of events (JSON); an event's seq is its 1-based position
 *   finished:<id>  who finished the job: set once (SET NX), so exactly one attempt ends a job
 *   cancel:<id>    a cancel was asked for (workers check it when they start a job)
 * Channels: `events` (every event appended: "<seq> <id> <json>"), `cancel` (job ids).
 */
import { EventEmitter } from "node:events";
import { Redis } from "ioredis";
import type { JobEvent } from "./api.js";
import type { JobSpec, StoredEvent } from "./jobs.js";

export interface JobStore {
  /** Record a new job (its log starts with `state: queued`). */
  create(spec: JobSpec): Promise<void>;
  /** Append an event to a job's log; it goes to every subscriber. */
  append(id: string, ev: JobEvent, worker?: string): Promise<StoredEvent>;
  get(id: string): Promise<{ spec: JobSpec; events: StoredEvent[] } | null>;
  /** Job ids, newest first. */
  ids(): Promise<string[]>;
  /** Live events of a job from now on; returns the unsubscribe function. */
  subscribe(id: string, fn: (e: StoredEvent) => void): Promise<() => void>;
  /** Claim the end of a job: true for the first caller only, ever. */
  claimFinish(id: string, worker: string): Promise<boolean>;
  /** Whether a job's end has been claimed (a job handed out again after it ended is not run again). */
  isFinished(id: string): Promise<boolean>;
  /** Ask for a job to be cancelled (the worker running it, or the next one to take it, stops it). */
  requestCancel(id: string): Promise<void>;
  cancelRequested(id: string): Promise<boolean>;
  /** Cancel requests as they come (job ids). */
  onCancel(fn: (id: string) => void): Promise<() => void>;
  close(): Promise<void>;
}

export class MemoryStore implements JobStore {
  private jobs = new Map<string, { spec: JobSpec; events: StoredEvent[] }>();
  private order: string[] = [];
  private finished = new Set<string>();
  private cancels = new Set<string>();
  private bus = new EventEmitter();

  constructor() {
    this.bus.setMaxListeners(0);
  }

  async create(spec: JobSpec): Promise<void> {
    this.jobs.set(spec.id, { spec, events: [] });
    this.order.push(spec.id);
    await this.append(spec.id, { type: "state", state: "queued" });
  }

  async append(id: string, ev: JobEvent, worker?: string): Promise<StoredEvent> {
    const job = this.jobs.get(id);
    if (!job) throw new Error(`no job ${id}`);
    const e: StoredEvent = { seq: job.events.length + 1, at: new Date().toISOString(), ...(worker ? { worker } : {}), ev };
    job.events.push(e);
    this.bus.emit(`ev:${id}`, e);
    return e;
  }

  async get(id: string) {
    const job = this.jobs.get(id);
    return job ? { spec: job.spec, events: [...job.events] } : null;
  }

  async ids(): Promise<string[]> {
    return [...this.order].reverse();
  }

  async subscribe(id: string, fn: (e: StoredEvent) => void): Promise<() => void> {
    this.bus.on(`ev:${id}`, fn);
    return () => this.bus.off(`ev:${id}`, fn);
  }

  async claimFinish(id: string): Promise<boolean> {
    if (this.finished.has(id)) return false;
    this.finished.add(id);
    return true;
  }

  async isFinished(id: string): Promise<boolean> {
    return this.finished.has(id);
  }

  async requestCancel(id: string): Promise<void> {
    this.cancels.add(id);
    this.bus.emit("cancel", id);
  }

  async cancelRequested(id: string): Promise<boolean> {
    return this.cancels.has(id);
  }

  async onCancel(fn: (id: string) => void): Promise<() => void> {
    this.bus.on("cancel", fn);
    return () => this.bus.off("cancel", fn);
  }

  async close(): Promise<void> {
    this.bus.removeAllListeners();
  }
}

// RPUSH the event and PUBLISH it with its seq in one step, so subscribers see events in log order
const APPEND = `local n = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[2], n .. ' ' .. ARGV[2] .. ' ' .. ARGV[1])
return n`;

export class RedisStore implements JobStore {
  private readonly redis: Redis;
  private sub: Redis | null = null;
  private readonly bus = new EventEmitter();
  private readonly k: (s: string) => string;

  constructor(
    url: string,
    readonly prefix = "sdc:jobs:",
  ) {
    this.redis = new Redis(url, { maxRetriesPerRequest: null, lazyConnect: false });
    this.redis.on("error", () => {}); // reconnects by itself; commands report failures to their callers
    this.k = (s) => `${prefix}${s}`;
    this.bus.setMaxListeners(0);
  }

  private async subscriber(): Promise<void> {
    if (this.sub) return;
    const sub = this.redis.duplicate();
    sub.on("error", () => {});
    this.sub = sub;
    await sub.subscribe(this.k("events"), this.k("cancel"));
    sub.on("message", (channel: string, msg: string) => {
      if (channel === this.k("cancel")) {
        this.bus.emit("cancel", msg);
        return;
      }
      const a = msg.indexOf(" ");
      const b = msg.indexOf(" ", a + 1);
      const seq = Number(msg.slice(0, a));
      const id = msg.slice(a + 1, b);
      const stored = JSON.parse(msg.slice(b + 1)) as Omit<StoredEvent, "seq">;
      this.bus.emit(`ev:${id}`, { ...stored, seq });
    });
  }

  async create(spec: JobSpec): Promise<void> {
    await this.redis.multi().set(this.k(`job:${spec.id}`), JSON.stringify(spec)).zadd(this.k("jobs"), Date.parse(spec.createdAt), spec.id).exec();
    await this.append(spec.id, { type: "state", state: "queued" });
  }

  async append(id: string, ev: JobEvent, worker?: string): Promise<StoredEvent> {
    const body = { at: new Date().toISOString(), ...(worker ? { worker } : {}), ev };
    const seq = (await this.redis.eval(APPEND, 2, this.k(`ev:${id}`), this.k("events"), JSON.stringify(body), id)) as number;
    return { seq, ...body };
  }

  async get(id: string) {
    const [spec, list] = await Promise.all([this.redis.get(this.k(`job:${id}`)), this.redis.lrange(this.k(`ev:${id}`), 0, -1)]);
    if (spec === null) return null;
    return { spec: JSON.parse(spec) as JobSpec, events: list.map((s, i) => ({ ...(JSON.parse(s) as Omit<StoredEvent, "seq">), seq: i + 1 })) };
  }

  async ids(): Promise<string[]> {
    return this.redis.zrevrange(this.k("jobs"), 0, -1);
  }

  async subscribe(id: string, fn: (e: StoredEvent) => void): Promise<() => void> {
    await this.subscriber();
    this.bus.on(`ev:${id}`, fn);
    return () => this.bus.off(`ev:${id}`, fn);
  }

  async claimFinish(id: string, worker: string): Promise<boolean> {
    return (await this.redis.set(this.k(`finished:${id}`), worker, "NX")) === "OK";
  }

  async isFinished(id: string): Promise<boolean> {
    return (await this.redis.exists(this.k(`finished:${id}`))) === 1;
  }

  async requestCancel(id: string): Promise<void> {
    await this.redis.set(this.k(`cancel:${id}`), "1");
    await this.redis.publish(this.k("cancel"), id);
  }

  async cancelRequested(id: string): Promise<boolean> {
    return (await this.redis.exists(this.k(`cancel:${id}`))) === 1;
  }

  async onCancel(fn: (id: string) => void): Promise<() => void> {
    await this.subscriber();
    this.bus.on("cancel", fn);
    return () => this.bus.off("cancel", fn);
  }

  async close(): Promise<void> {
    this.bus.removeAllListeners();
    await Promise.allSettled([this.sub?.quit(), this.redis.quit()]);
  }
}
