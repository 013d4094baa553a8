/** Test helpers: write an IR graph to a temp folder and run it with onnxruntime (CPU); error metrics. */
import * as fs from "node:fs";
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import type { Graph } from "../../src/ir/graph.js";
import { verify } from "../../src/ir/verify.js";
import { writeOnnx } from "../../src/ir/onnx/writer.js";
import { tempDir } from "./repo.js";

export async function runGraph(
  g: Graph,
  feeds: Record<string, ort.Tensor>,
  opts: { optimization?: "disabled" | "all" } = {},
): Promise<Record<string, ort.Tensor>> {
  verify(g, { final: true });
  const dir = tempDir("sdc-graph-");
  try {
    writeOnnx(g, { dir });
    const session = await ort.InferenceSession.create(path.join(dir, "model.onnx"), {
      graphOptimizationLevel: opts.optimization ?? "all",
      logSeverityLevel: 3,
      intraOpNumThreads: 2,
    });
    const out = await session.run(feeds);
    await session.release();
    return out;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/**
 * max |got − ref| / max |ref|, both maxima over every element: the largest error, relative to the
 * reference's largest magnitude (not an element-wise relative error, which small elements would
 * blow up). NaN anywhere in `got` gives NaN, which fails any `toBeLessThan`.
 */
export function maxErrOverMaxRef(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  let scale = 0;
  for (let i = 0; i < ref.length; i++) scale = Math.max(scale, Math.abs(ref[i]!));
  return maxAbsDiff(got, ref) / Math.max(scale, 1e-12);
}

/** Deterministic pseudo-random floats in [-1, 1) (xorshift), for test inputs. */
export function randomFloats(n: number, seed = 1): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = (s / 2 ** 32) * 2 - 1;
  }
  return out;
}
