/**
 * A project folder for the serve tests: pipelines over the tiny fixture model (a few milliseconds
 * per step), and small clients for the API and its server-sent events.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Job, JobEvent } from "../../src/serve/api.js";
import { FIXTURES, tempDir } from "../helpers/repo.js";

export const TINY = path.join(FIXTURES, "models", "tiny-sd1");

/** txt2img (DDIM, `steps` steps, 16×16), img2img extending it, and a deliberately broken-on-override one. */
export function project(steps = 4): string {
  const dir = tempDir("sdc-serve-");
  const pipes = path.join(dir, "pipelines");
  fs.mkdirSync(pipes);
  fs.writeFileSync(
    path.join(pipes, "t2i.yaml"),
    `version: 1\nname: t2i\nmodel:\n  from: ${JSON.stringify(TINY)}\nscheduler:\n  type: ddim\n  steps: ${steps}\nguidance:\n  scale: 3\nsample:\n  prompt: a cat\n  seed: 1\n  width: 16\n  height: 16\nruntime:\n  device: cpu\n  threads: 1\n`,
  );
  fs.copyFileSync(path.join(FIXTURES, "pipelines", "init-16x16.png"), path.join(pipes, "init.png"));
  fs.writeFileSync(path.join(pipes, "i2i.yaml"), `version: 1\nname: i2i\nextends: t2i.yaml\nsample:\n  prompt: a dog\n  init_image: init.png\n  strength: 0.5\n`);
  return dir;
}

export interface Client {
  base: string;
  get<T = unknown>(p: string): Promise<{ status: number; body: T }>;
  post<T = unknown>(p: string, body: unknown): Promise<{ status: number; body: T }>;
  /** Every event of a job's stream until `done` (replayed and live), with their ids. */
  events(id: string, timeoutMs?: number): Promise<{ seq: number; ev: JobEvent }[]>;
  waitDone(id: string, timeoutMs?: number): Promise<Job>;
}

export function client(url: string, token?: string): Client {
  const base = url.replace(/\/$/, "");
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const call = async <T>(method: string, p: string, body?: unknown) => {
    const r = await fetch(base + p, { method, headers: { ...headers, ...(body !== undefined ? { "content-type": "application/json" } : {}) }, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    return { status: r.status, body: (text ? JSON.parse(text) : null) as T };
  };
  const c: Client = {
    base,
    get: (p) => call("GET", p),
    post: (p, b) => call("POST", p, b),
    async events(id, timeoutMs = 60_000) {
      const ac = new AbortController();
      const timer = setTimeout(() => ac.abort(), timeoutMs);
      const r = await fetch(`${base}/api/jobs/${id}/events`, { headers, signal: ac.signal });
      if (r.status !== 200) throw new Error(`events: HTTP ${r.status}`);
      const out: { seq: number; ev: JobEvent }[] = [];
      let buf = "";
      const dec = new TextDecoder();
      try {
        for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) {
          buf += dec.decode(chunk, { stream: true });
          let i: number;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const fields = Object.fromEntries(block.split("\n").filter((l) => !l.startsWith(":")).map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 2)]));
            if (fields.data === undefined) continue;
            const ev = JSON.parse(fields.data) as JobEvent;
            if (fields.event !== ev.type) throw new Error(`event name ${fields.event} for a ${ev.type} event`);
            out.push({ seq: Number(fields.id), ev });
          }
        }
      } finally {
        clearTimeout(timer);
      }
      return out;
    },
    async waitDone(id, timeoutMs = 60_000) {
      const t0 = Date.now();
      for (;;) {
        const { body } = await c.get<Job>(`/api/jobs/${id}`);
        if (["done", "failed", "cancelled"].includes(body.state)) return body;
        if (Date.now() - t0 > timeoutMs) throw new Error(`job ${id} still ${body.state} after ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
  return c;
}
