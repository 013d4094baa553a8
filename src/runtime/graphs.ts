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
import { openSession, type Device, type OpenedSession } from "./session.js";
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
  /** Release every session opened. */
  release(): Promise<void>;
}

export interface OpenGraphsOptions {
  /** Default: the device the plan was compiled for. */
  device?: Device;
  /** intra-op CPU threads (0: one per core). */
  threads?: number;
}

/**
 * The plan's graphs as runners over onnxruntime sessions. The text encoder's session is opened now
 * and decides the execution provider; the others open on their first run, on the same provider
 * (no second CUDA attempt after a fallback), so a txt2img run never loads the VAE encoder.
 */
export async function openPlanGraphs(dir: string, plan: Plan, opts: OpenGraphsOptions = {}): Promise<OpenedGraphs> {
  type Name = GraphName | "unet_shallow";
  const specOf = (name: Name): GraphSpecT => (name === "unet_shallow" ? plan.deepcache!.shallow : plan.graphs[name]);
  const opened = new Map<Name, OpenedSession>();
  const threads = opts.threads ?? 0;
  const first = await openSession(checkGraphFiles(dir, plan.graphs.text_encoder), { device: opts.device ?? plan.runtime.device, threads });
  opened.set("text_encoder", first);
  const pending = new Map<Name, Promise<OpenedSession>>();
  const session = (name: Name): Promise<OpenedSession> => {
    const s = opened.get(name);
    if (s) return Promise.resolve(s);
    let p = pending.get(name);
    if (!p) {
      p = Promise.resolve()
        .then(() => openSession(checkGraphFiles(dir, specOf(name)), { device: first.ep, threads })).then((s) => (opened.set(name, s), s));
      pending.set(name, p);
    }
    return p;
  };
  const runner = (name: Name): GraphRunner => ({
    run: async (feeds, fetch) => {
      const s = await session(name);
      return runSession(s.session, specOf(name).inputs, feeds, fetch);
    },
  });
  return {
    graphs: { text_encoder: runner("text_encoder"), unet: runner("unet"), vae_decoder: runner("vae_decoder"), vae_encoder: runner("vae_encoder") },
    ...(plan.deepcache ? { unetShallow: runner("unet_shallow") } : {}),
    ep: first.ep,
    ...(first.fallback ? { fallback: first.fallback } : {}),
    release: async () => {
      await Promise.allSettled(pending.values());
      for (const s of opened.values()) await s.session.release();
      opened.clear();
    },
  };
}

/** Run a session; inputs converted to the dtypes the graph declares, float outputs returned as float32. */
async function runSession(session: ort.InferenceSession, inputs: GraphSpecT["inputs"], feeds: Record<string, Feed>, fetch?: readonly string[]): Promise<Record<string, FloatTensor>> {
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
