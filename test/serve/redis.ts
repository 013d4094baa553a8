/**
 * A real Redis for the tests: Debian's `redis-server`, started on a free loopback port in a temp
 * folder with persistence off, and stopped when the test file is done. No mock: BullMQ's Lua
 * scripts, blocking pops and pub/sub run against the real thing.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import * as net from "node:net";
import { Redis } from "ioredis";
import { tempDir } from "../helpers/repo.js";

export interface RedisServer {
  url: string;
  port: number;
  stop(): Promise<void>;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export async function startRedis(): Promise<RedisServer> {
  if (spawnSync("redis-server", ["--version"]).error)
    throw new Error("redis-server is not installed: the queue tests run against a real Redis (Debian: apt-get install redis-server; .ci/run installs it)");
  const dir = tempDir("sdc-redis-");
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const proc: ChildProcess = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let log = "";
    proc.stdout!.on("data", (d) => (log += d));
    proc.stderr!.on("data", (d) => (log += d));
    const url = `redis://127.0.0.1:${port}`;
    const ready = await waitReady(url, proc);
    if (!ready) {
      proc.kill("SIGKILL");
      if (attempt < 3) continue; // the port was taken in between
      throw new Error(`redis-server did not start: ${log}`);
    }
    return {
      url,
      port,
      stop: () =>
        new Promise<void>((resolve) => {
          if (proc.exitCode !== null) return resolve();
          proc.once("exit", () => resolve());
          proc.kill("SIGTERM");
        }),
    };
  }
}

async function waitReady(url: string, proc: ChildProcess): Promise<boolean> {
  const t0 = Date.now();
  while (Date.now() - t0 < 10_000) {
    if (proc.exitCode !== null) return false;
    const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    r.on("error", () => {});
    try {
      await r.connect();
      if ((await r.ping()) === "PONG") return true;
    } catch {
      // not yet
    } finally {
      r.disconnect();
    }
    await new Promise((res) => setTimeout(res, 50));
  }
  return false;
}
