/**
 * Reads the committed scheduler parity fixtures (test/fixtures/schedulers, written by
 * test/fixtures/gen/schedulers.py from diffusers 0.24): the JSON index of cases and the safetensors
 * files holding their tensors.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

export const FIXTURE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/schedulers");

export interface FixtureCase {
  name: string;
  className: string;
  file: string;
  /** The constructor arguments given to diffusers. */
  config: Record<string, unknown>;
  /** diffusers' scheduler.config after construction (private keys dropped; ±inf as "inf"/"-inf"). */
  fullConfig: Record<string, unknown>;
  eta: number | null;
  strength: number | null;
  steps: number;
  initNoiseSigma: number;
  order: number;
  timestepsDtype: "int64" | "float32" | "float64";
  draws: number;
  tStart?: number;
  numInferenceSteps?: number;
  startTimestep?: number;
  /** LCM's own img2img schedule: set_timesteps(steps, strength=lcmStrength). */
  lcmStrength?: number;
}

export interface FixtureIndex {
  shape: number[];
  trainedBetas: number[];
  cases: FixtureCase[];
  schedules: { name: string; className: string; config: Record<string, unknown> }[];
}

export interface Tensor {
  dtype: string;
  shape: number[];
  data: Float32Array | Float64Array;
}

/** The trained_betas list is stored once in the index and referenced as "$trainedBetas". */
function resolveRefs(v: unknown, trained: number[]): unknown {
  if (v === "$trainedBetas") return trained;
  if (v === "-inf") return -Infinity;
  if (v === "inf") return Infinity;
  if (Array.isArray(v)) return v.map((x) => resolveRefs(x, trained));
  if (v && typeof v === "object")
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, resolveRefs(x, trained)]));
  return v;
}

let index: FixtureIndex | undefined;
export function loadIndex(): FixtureIndex {
  if (!index) {
    const raw = JSON.parse(fs.readFileSync(path.join(FIXTURE_DIR, "index.json"), "utf8")) as FixtureIndex;
    index = resolveRefs(raw, raw.trainedBetas) as FixtureIndex;
  }
  return index;
}

const files = new Map<string, Map<string, Tensor>>();
/** All tensors of one safetensors file (F32 and F64 only: that is all these fixtures hold). */
export function loadTensors(file: string): Map<string, Tensor> {
  let m = files.get(file);
  if (m) return m;
  const buf = fs.readFileSync(path.join(FIXTURE_DIR, file));
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8")) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  m = new Map();
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const [b, e] = info.data_offsets;
    const bytes = buf.subarray(8 + n + b, 8 + n + e);
    const copy = new Uint8Array(bytes).buffer; // aligned copy
    const data = info.dtype === "F32" ? new Float32Array(copy) : info.dtype === "F64" ? new Float64Array(copy) : null;
    if (!data) throw new Error(`${file}: ${name} has dtype ${info.dtype}, expected F32 or F64`);
    m.set(name, { dtype: info.dtype, shape: info.shape, data });
  }
  files.set(file, m);
  return m;
}

export function tensor(file: string, name: string): Tensor {
  const t = loadTensors(file).get(name);
  if (!t) throw new Error(`${file}: no tensor ${name}`);
  return t;
}

/** Row `i` of a stacked tensor (first axis), as float32. */
export function row(t: Tensor, i: number): Float32Array {
  const size = t.shape.slice(1).reduce((a, b) => a * b, 1);
  return Float32Array.from(t.data.subarray(i * size, (i + 1) * size));
}
