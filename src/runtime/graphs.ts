/**
 * What the sampling stages run: a graph as an async function of named tensors (GraphRunner). The
 * stages never open anything themselves; they are handed runners. `openPlanGraphs` makes them from a
 * compiled folder's ONNX files, one onnxruntime session per graph, opened on first use; the trainer
 * will hand the same stages runners over the weights it holds in memory.
 *
 * Tensors cross this interface as float32 (and int32 token ids); a runner converts to and from the
 * graph's own dtypes (fp16 graphs on CUDA, int64 ids for graphs that want them).
 */
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import type { GraphName, GraphSpecT, Plan } from "../plan/schema.js";
import { f16ToF32, f32ToF16 } from "../util/half.js";
import type { CacheUse } from "./ort-cache.js";
import { knownProvider, openSessionWith, type Device, type OpenedSession } from "./session.js";
import { createHere, workerSessions, type SessionLike } from "./session-worker.js";
import { checkGraphFiles } from "./verify.js";

/** A float tensor, row-major. */
export interface FloatTensor {
  data: Float32Array;
  dims: readonly number[];
}

/** An input: floats, or integer ids (token ids). */
export type Feed = FloatTensor | { data: Int32Array; dims: readonly number[] };

/** One graph the stages can run: ONNX sessions of a compiled folder, or weights held in memory. */
export interface GraphRunner {
  /** `fetch`: the outputs wanted (default: all of them). */
  run(feeds: Record<string, Feed>, fetch?: readonly string[]): Promise<Record<string, FloatTensor>>;
}

/** The four graphs of a Stable Diffusion pipeline, by their plan names. */
export type PipelineGraphs = Record<GraphName, GraphRunner>;

export interface OpenedGraphs {
  graphs: PipelineGraphs;
  /** DeepCache's shallow U-Net, when the plan has one (plan.deepcache). */
  unetShallow?: GraphRunner;
  /** Execution provider that runs the graphs. */
  ep: "cuda" | "cpu";
  /** Why CUDA was not used, when the device was auto and the CPU runs. */
  fallback?: string;
  /** Start opening a graph's session in the background, if it is not open or opening already. */
  prepare(name: GraphName): void;
  /** How each session opened so far used the optimised-graph cache. */
  cacheUse(): Partial<Record<GraphName, CacheUse>>;
  /** Release every session opened. */
  release(): Promise<void>;
}

/** One phase of opening or running, with its start and end (performance.now(), ms). */
export interface Phase {
  phase: string;
  start: number;
  end: number;
  detail?: string;
}

export interface OpenGraphsOptions {
  /** Default: the device the plan was compiled for. */
  device?: Device;
  /** intra-op CPU threads (0: one per core). */
  threads?: number;
  /** Graphs whose sessions start opening now, in the background (the text encoder always does). */
  open?: GraphName[];
  /**
   * Open one session at a time, each after the one before it finished (as sdc did before sessions
   * were opened concurrently; the start benchmark's baseline).
   */
  sequential?: boolean;
  /** The optimised-graph cache for CPU sessions (./ort-cache.ts); default on (SDC_ORT_CACHE=off turns it off). */
  cache?: boolean;
  /** onnxruntime's weight prepacking (default on). */
  prepacking?: boolean;
  /**
   * Graphs whose sessions are created and run in a worker thread of their own (./session-worker.ts),
   * so that creating them overlaps the main thread's work; used when the provider is the CPU.
   */
  worker?: GraphName[];
  /** Sees each graph's check and session creation, timed. */
  onPhase?: (p: Phase) => void;
  /** Lines for a person: a session that builds the optimised-graph cache, which takes a while. */
  log?: (line: string) => void;
}

/**
 * The plan's graphs as runners over onnxruntime sessions. Sessions open in the background
 * (onnxruntime-node creates them off the main thread) from the moment they are asked for: the
 * text encoder's and those in `opts.open` now, the others on `prepare` or their first run, so a
 * txt2img run never loads the VAE encoder. When the execution provider is known up front (the CPU,
 * or auto without a usable CUDA provider) they open concurrently; when CUDA must be tried, the text
 * encoder's session decides first and the others follow on its provider (no second CUDA attempt
 * after a fallback).
 */
export async function openPlanGraphs(dir: string, plan: Plan, opts: OpenGraphsOptions = {}): Promise<OpenedGraphs> {
  type Name = GraphName | "unet_shallow";
  const specOf = (name: Name): GraphSpecT => (name === "unet_shallow" ? plan.deepcache!.shallow : plan.graphs[name]);
  const inWorkerList = (name: Name) => (opts.worker as readonly string[] | undefined)?.includes(name) === true;
  const opened = new Map<Name, OpenedSession<SessionLike>>();
  const threads = opts.threads ?? 0;
  const device = opts.device ?? plan.runtime.device;
  const known = knownProvider(device);
  const phase = opts.onPhase ?? (() => {});
  let chain: Promise<unknown> = Promise.resolve();
  const open = (name: Name, device: Device): Promise<OpenedSession<SessionLike>> => {
    const go = async () => {
      let t = performance.now();
      const file = checkGraphFiles(dir, specOf(name));
      phase({ phase: `verify ${name}`, start: t, end: performance.now() });
      t = performance.now();
      const o = {
        device,
        threads,
        ...(opts.cache !== false ? { cache: specOf(name) } : {}),
        ...(opts.prepacking === false ? { prepacking: false } : {}),
        // the VAE's large activations of many sizes make onnxruntime's CPU arena grow to ~1.7× what
        // they need at once (measured: 512² decode peak 2,204 MiB with the arena, 1,267 without, no slower)
        ...(name === "vae_decoder" || name === "vae_encoder" ? { memArena: false } : {}),
        // while a worker opens a session, the main thread's sessions leave it the cores between their parallel sections
        ...(known?.ep === "cpu" && opts.worker?.length && !inWorkerList(name) ? { spinning: false } : {}),
        onCacheBuild: (why: string) => opts.log?.(`optimising ${name} for this CPU and caching the result beside it (${why}); later runs load it in seconds`),
      };
      let s: OpenedSession<SessionLike>;
      let inWorker = known?.ep === "cpu" && inWorkerList(name);
      if (inWorker) {
        const w = workerSessions();
        try {
          s = await openSessionWith(w.create, file, o);
        } catch {
          // a worker that cannot load onnxruntime must not stop the run: this thread tries again,
          // and a graph onnxruntime refuses fails here with its own error
          await w.end();
          inWorker = false;
          s = await openSessionWith(createHere, file, o);
        }
      } else s = await openSessionWith(createHere, file, o);
      const detail = [inWorker ? "in a worker thread" : "", s.cache ? `cache ${s.cache.status}${s.cache.reason ? `: ${s.cache.reason}` : ""}` : ""].filter(Boolean).join("; ");
      phase({ phase: `create ${name} session`, start: t, end: performance.now(), ...(detail ? { detail } : {}) });
      opened.set(name, s);
      return s;
    };
    if (!opts.sequential) return go();
    const p = chain.then(go);
    chain = p.catch(() => {});
    return p;
  };
  const pending = new Map<Name, Promise<OpenedSession<SessionLike>>>();
  const first = open("text_encoder", device);
  pending.set("text_encoder", first);
  // CUDA to try: the text encoder's session decides the provider before the others open
  const decided = known ?? (await first);
  const session = (name: Name): Promise<OpenedSession<SessionLike>> => {
    let p = pending.get(name);
    if (!p) {
      p = open(name, decided.ep);
      // a failure surfaces where the session is used; an unused background open must not crash the process
      p.catch(() => {});
      pending.set(name, p);
    }
    return p;
  };
  first.catch(() => {});
  for (const name of opts.open ?? []) session(name);
  const ran = new Set<Name>();
  const runner = (name: Name): GraphRunner => ({
    run: async (feeds, fetch) => {
      const s = await session(name);
      if (ran.has(name)) return runSession(s.session, specOf(name).inputs, feeds, fetch);
      ran.add(name);
      const start = performance.now();
      const out = await runSession(s.session, specOf(name).inputs, feeds, fetch);
      phase({ phase: `first ${name} run`, start, end: performance.now() });
      return out;
    },
  });
  return {
    graphs: { text_encoder: runner("text_encoder"), unet: runner("unet"), vae_decoder: runner("vae_decoder"), vae_encoder: runner("vae_encoder") },
    ...(plan.deepcache ? { unetShallow: runner("unet_shallow") } : {}),
    ep: decided.ep,
    ...(decided.fallback ? { fallback: decided.fallback } : {}),
    prepare: (name) => void session(name),
    cacheUse: () => Object.fromEntries([...opened].filter(([n]) => n !== "unet_shallow").filter(([, s]) => s.cache).map(([n, s]) => [n, s.cache!])),
    release: async () => {
      await Promise.allSettled(pending.values());
      for (const s of opened.values()) await s.session.release();
      opened.clear();
    },
  };
}

/** Run a session; inputs converted to the dtypes the graph declares, float outputs returned as float32. */
async function runSession(session: SessionLike, inputs: GraphSpecT["inputs"], feeds: Record<string, Feed>, fetch?: readonly string[]): Promise<Record<string, FloatTensor>> {
  const tensors: Record<string, ort.Tensor> = {};
  for (const [name, v] of Object.entries(feeds)) {
    const dtype = inputs.find((i) => i.name === name)?.dtype ?? (v.data instanceof Int32Array ? "int32" : "float32");
    tensors[name] =
      dtype === "float16"
        ? new ort.Tensor("float16", f32ToF16(v.data instanceof Float32Array ? v.data : Float32Array.from(v.data)), v.dims)
        : dtype === "int64"
          ? new ort.Tensor("int64", BigInt64Array.from(v.data, (x) => BigInt(x)), v.dims)
          : dtype === "int32"
            ? new ort.Tensor("int32", v.data instanceof Int32Array ? v.data : Int32Array.from(v.data), v.dims)
            : new ort.Tensor("float32", v.data instanceof Float32Array ? v.data : Float32Array.from(v.data), v.dims);
  }
  const out = fetch ? await session.run(tensors, [...fetch]) : await session.run(tensors);
  const res: Record<string, FloatTensor> = {};
  for (const [k, t] of Object.entries(out)) {
    const data =
      t.type === "float16"
        ? f16ToF32(new Uint8Array((t.data as Uint16Array).buffer, (t.data as Uint16Array).byteOffset, (t.data as Uint16Array).byteLength))
        : t.type === "float32"
          ? (t.data as Float32Array)
          : Float32Array.from(t.data as ArrayLike<number>);
    res[k] = { data, dims: t.dims };
  }
  return res;
}
