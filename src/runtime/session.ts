/**
 * onnxruntime sessions and the choice of execution provider.
 *
 * `device: auto` tries CUDA and falls back to the CPU with a one-line notice saying which
 * provider ran and why; `device: cuda` without the CUDA provider library is a user error naming
 * the missing file. onnxruntime-node treats `['cuda', 'cpu']` without the library as a hard
 * failure rather than a fallback, so the library is looked for first, and a failed CUDA session
 * is caught and reported.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createRequire } from "node:module";
import * as ort from "onnxruntime-node";
import { UserError } from "../util/errors.js";
import { createCachedSession, type CachedGraphSpec, type CacheUse } from "./ort-cache.js";

export type Device = "auto" | "cuda" | "cpu";

export interface SessionOptions {
  device: Device;
  /** intra-op threads; 0 = one per core */
  threads?: number;
  optimization?: "disabled" | "basic" | "extended" | "all";
  /**
   * The compiled graph's spec (sha256, weights files): a CPU session then goes through the
   * optimised-graph cache (./ort-cache.ts). CUDA sessions never use it.
   */
  cache?: CachedGraphSpec;
  /** Told before the optimised-graph cache is (re)built, with why: that session takes longer. */
  onCacheBuild?: (reason: string) => void;
  /** onnxruntime's prepacking of constant MatMul weights at load (default on; off: less CPU at load, more memory when running). */
  prepacking?: boolean;
  /**
   * Whether the intra-op threads spin between parallel sections (onnxruntime's default, on). Off for
   * a session that runs while another thread opens a session, so that its idle threads leave the
   * cores to that thread.
   */
  spinning?: boolean;
  /** onnxruntime's CPU memory arena (default on; off: tensors are allocated and freed as they are needed). */
  memArena?: boolean;
}

export interface OpenedSession<S = ort.InferenceSession> {
  session: S;
  ep: "cuda" | "cpu";
  /** Why CUDA was not used, when device was auto and the CPU ran. */
  fallback?: string;
  /** How the optimised-graph cache was used (CPU sessions given a cache spec). */
  cache?: CacheUse;
}

/** Where onnxruntime-node keeps its native libraries (the CUDA provider must be copied there). */
export function ortBinDir(): string {
  const require = createRequire(import.meta.url);
  const main = require.resolve("onnxruntime-node");
  return path.join(path.dirname(main), "..", "bin", "napi-v6", process.platform, process.arch);
}

const CUDA_LIB = process.platform === "win32" ? "onnxruntime_providers_cuda.dll" : "libonnxruntime_providers_cuda.so";

/** null when the CUDA provider library is present, else why CUDA cannot run. */
export function cudaUnavailableReason(): string | null {
  const lib = path.join(ortBinDir(), CUDA_LIB);
  if (!fs.existsSync(lib)) return `the CUDA provider library ${CUDA_LIB} is not installed next to onnxruntime-node's binding`;
  return null;
}

export const CUDA_HINT =
  "install onnxruntime-node's CUDA provider with `npx sdc setup cuda`; `npx sdc doctor` lists what else CUDA needs here (see the README's GPU section); " +
  "or set runtime.device: cpu";

// The first CUDA failure in a process decides for the rest of it.
let cudaFailure: string | null = null;

function baseOptions(o: SessionOptions): ort.InferenceSession.SessionOptions {
  return {
    graphOptimizationLevel: o.optimization ?? "all",
    intraOpNumThreads: o.threads && o.threads > 0 ? o.threads : os.availableParallelism(),
    interOpNumThreads: 1,
    logSeverityLevel: 3,
    ...(o.memArena === false ? { enableCpuMemArena: false } : {}),
    ...(o.prepacking === false || o.spinning === false
      ? { extra: { session: { ...(o.prepacking === false ? { disable_prepacking: "1" } : {}), ...(o.spinning === false ? { "intra_op.allow_spinning": "0" } : {}) } } }
      : {}),
  };
}

/**
 * The provider a device will run on when that is known without creating a session: the CPU for
 * `device: cpu`, and for `auto` when the CUDA provider is missing or has failed in this process
 * (with the reason). null when CUDA must be tried.
 */
export function knownProvider(device: Device): { ep: "cpu"; fallback?: string } | null {
  if (device === "cpu") return { ep: "cpu" };
  const missing = cudaFailure ?? cudaUnavailableReason();
  if (device === "auto" && missing) return { ep: "cpu", fallback: missing };
  return null;
}

export function openSession(modelPath: string, o: SessionOptions): Promise<OpenedSession> {
  return openSessionWith((file, options) => ort.InferenceSession.create(file, options), modelPath, o);
}

/** openSession, with sessions made by `create` (in this thread, or in a worker: ./session-worker.ts). */
export async function openSessionWith<S>(create: (modelPath: string, options: ort.InferenceSession.SessionOptions) => Promise<S>, modelPath: string, o: SessionOptions): Promise<OpenedSession<S>> {
  if (!fs.existsSync(modelPath)) throw new UserError({ message: `compiled graph ${modelPath} is missing`, subject: modelPath, hint: "run `sdc compile` again" });
  const wantCuda = o.device !== "cpu";
  let fallback: string | undefined;
  if (wantCuda) {
    const missing = cudaFailure ?? cudaUnavailableReason();
    if (missing && o.device === "cuda") throw new UserError({ message: `the CUDA device was asked for, but ${missing}`, subject: modelPath, hint: CUDA_HINT });
    if (!missing) {
      try {
        const session = await create(modelPath, { ...baseOptions(o), executionProviders: ["cuda", "cpu"] });
        return { session, ep: "cuda" };
      } catch (e) {
        cudaFailure = `creating a CUDA session failed: ${firstLine((e as Error).message)}`;
        if (o.device === "cuda") throw new UserError({ message: `the CUDA device was asked for, but ${cudaFailure}`, subject: modelPath, hint: CUDA_HINT });
      }
    }
    fallback = cudaFailure ?? missing ?? undefined;
  }
  const options: ort.InferenceSession.SessionOptions = { ...baseOptions(o), executionProviders: ["cpu"] };
  if (o.cache) {
    const { session, cache } = await createCachedSession(modelPath, o.cache, options, create, o.onCacheBuild);
    return { session, ep: "cpu", ...(fallback ? { fallback } : {}), cache };
  }
  const session = await create(modelPath, options);
  return { session, ep: "cpu", fallback };
}

function firstLine(s: string): string {
  return s.split("\n")[0]!.slice(0, 300);
}
