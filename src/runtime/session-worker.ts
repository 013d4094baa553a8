/**
 * An onnxruntime session in a worker thread. onnxruntime-node 1.29 creates a session and runs it
 * synchronously on the calling thread (`InferenceSession.create` and `run` only defer to
 * `setImmediate`), so two sessions "created concurrently" on the main thread are created one after
 * the other, and nothing else happens meanwhile. A session created in a worker is created while the
 * main thread tokenizes, opens the text encoder and encodes the prompts; its runs leave the main
 * thread free (progress, cancellation, the VAE's session opening during the denoising loop).
 *
 * The worker only creates and runs: options and paths come from the main thread, so the cache
 * logic (./ort-cache.ts) stays in one place. Tensors are copied across (a U-Net step moves well
 * under a megabyte each way).
 */
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import * as ort from "onnxruntime-node";

/** What the runtime needs of a session: run on named tensors, release. */
export interface SessionLike {
  /** `fetch`: the outputs wanted (default: all of them). */
  run(feeds: Record<string, ort.Tensor>, fetch?: readonly string[]): Promise<Record<string, ort.Tensor>>;
  release(): Promise<void>;
}

export type CreateSession = (modelPath: string, options: ort.InferenceSession.SessionOptions) => Promise<SessionLike>;

/** Creating in this thread. */
export const createHere: CreateSession = async (modelPath, options) => {
  const s = await ort.InferenceSession.create(modelPath, options);
  return { run: (feeds, fetch) => (fetch ? s.run(feeds, [...fetch]) : s.run(feeds)) as Promise<Record<string, ort.Tensor>>, release: () => s.release() };
};

// CommonJS, evaluated in the worker; onnxruntime-node is required by the path this module resolves.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const ort = require(workerData.ort);
let session = null;
parentPort.on("message", async (m) => {
  try {
    if (m.op === "create") {
      if (session) await session.release();
      session = await ort.InferenceSession.create(m.path, m.options);
      parentPort.postMessage({ id: m.id, ok: true });
    } else if (m.op === "run") {
      const feeds = {};
      for (const [k, t] of Object.entries(m.feeds)) feeds[k] = new ort.Tensor(t.type, t.data, t.dims);
      const out = m.fetch ? await session.run(feeds, m.fetch) : await session.run(feeds);
      const res = {};
      for (const [k, t] of Object.entries(out)) res[k] = { type: t.type, data: t.data, dims: t.dims };
      parentPort.postMessage({ id: m.id, ok: true, out: res });
    } else if (m.op === "release") {
      if (session) await session.release();
      session = null;
      parentPort.postMessage({ id: m.id, ok: true });
    }
  } catch (e) {
    parentPort.postMessage({ id: m.id, ok: false, message: String((e && e.message) || e) });
  }
});
`;

interface Reply {
  id: number;
  ok: boolean;
  message?: string;
  out?: Record<string, { type: ort.Tensor.Type; data: ort.Tensor.DataType; dims: readonly number[] }>;
}

/**
 * A worker thread that holds at most one session. `create` may be called again after a failure
 * (the CPU after a failed CUDA attempt); `release` of the session ends the worker.
 */
export function workerSessions(): { create: CreateSession; end(): Promise<void> } {
  const require = createRequire(import.meta.url);
  const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { ort: require.resolve("onnxruntime-node") } });
  const waiting = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  let next = 0;
  let dead: Error | null = null;
  const fail = (e: Error) => {
    dead = e;
    for (const w of waiting.values()) w.reject(e);
    waiting.clear();
  };
  worker.on("message", (r: Reply) => {
    const w = waiting.get(r.id);
    waiting.delete(r.id);
    if (!w) return;
    if (r.ok) w.resolve(r);
    else w.reject(new Error(r.message ?? "onnxruntime failed in the session's worker thread"));
  });
  worker.on("error", (e) => fail(e));
  worker.on("exit", (code) => fail(new Error(`the session's worker thread exited (code ${code})`)));
  const call = (msg: Record<string, unknown>): Promise<Reply> => {
    if (dead) return Promise.reject(dead);
    const id = next++;
    return new Promise<Reply>((resolve, reject) => {
      waiting.set(id, { resolve, reject });
      worker.postMessage({ ...msg, id });
    });
  };
  let ended = false;
  const end = async () => {
    if (ended) return;
    ended = true;
    await worker.terminate();
  };
  const create: CreateSession = async (modelPath, options) => {
    await call({ op: "create", path: modelPath, options });
    return {
      run: async (feeds, fetch) => {
        const plain: Record<string, { type: string; data: unknown; dims: readonly number[] }> = {};
        for (const [k, t] of Object.entries(feeds)) plain[k] = { type: t.type, data: t.data, dims: t.dims };
        const r = await call({ op: "run", feeds: plain, ...(fetch ? { fetch: [...fetch] } : {}) });
        const out: Record<string, ort.Tensor> = {};
        for (const [k, t] of Object.entries(r.out ?? {})) out[k] = new ort.Tensor(t.type, t.data as Float32Array, t.dims);
        return out;
      },
      release: async () => {
        try {
          if (!dead) await call({ op: "release" });
        } finally {
          await end();
        }
      },
    };
  };
  return { create, end };
}
