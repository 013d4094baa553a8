/**
 * The weights of one model component as the compiler consumes them: diffusers module keys mapped to
 * byte ranges of safetensors files (`WeightRef`), whatever dialect or file layout they came from.
 *
 * A WeightRef is a view, not data: the ONNX writer can point external data straight at
 * (file, offset, byteLength), and `readWeight*` read one tensor when a weight must be transformed.
 * `get` is the only way the compiler asks for a weight; it checks the shape and dtype and records the
 * request, so `unused()` can list tensors the model never asked for (a sign of a wrong architecture).
 */
import * as fs from "node:fs";
import { fail } from "../../util/errors.js";
import { isFloatDtype, shapeStr, toFloat32, type StDtype } from "./safetensors.js";

export interface WeightRef {
  /** diffusers module key, e.g. "down_blocks.0.resnets.0.conv1.weight". */
  key: string;
  /** The safetensors file holding the bytes. */
  file: string;
  /** The tensor's name in that file (differs from `key` for single-file checkpoints). */
  sourceKey: string;
  dtype: StDtype;
  /** Shape as diffusers has it. */
  shape: number[];
  /** Absolute byte offset of the data in `file`. */
  offset: number;
  byteLength: number;
  /** Shape in the file when it differs: a 1x1 conv for a linear weight, or the fused tensor a slice comes from. */
  sourceShape?: number[];
}

export class WeightSet {
  readonly component: string;
  /** Files the weights were read from (named in errors). */
  readonly files: readonly string[];
  /** Tensors of the source deliberately left out, with the reason (buffers, EMA copies, unused heads). */
  readonly ignored: ReadonlyMap<string, string>;
  private readonly refs: ReadonlyMap<string, WeightRef>;
  private readonly requested = new Set<string>();

  constructor(component: string, refs: Iterable<WeightRef>, files: readonly string[], ignored?: ReadonlyMap<string, string>) {
    this.component = component;
    this.files = files;
    this.ignored = ignored ?? new Map();
    const m = new Map<string, WeightRef>();
    for (const r of refs) m.set(r.key, r);
    this.refs = m;
  }

  /**
   * The weight named `key`. Missing → UserError naming the tensor, the files searched and near
   * matches; shape differing from `expectedShape` → UserError with both shapes; an integer dtype →
   * UserError (a model weight must be floating point).
   */
  get(key: string, expectedShape?: readonly number[]): WeightRef {
    const r = this.refs.get(key);
    if (!r) {
      const near = nearestKeys(key, [...this.refs.keys()], 3);
      return fail(`missing from the ${this.component} weights`, {
        subject: key,
        hint:
          `searched ${this.files.join(", ")}` +
          (near.length ? `; similar names: ${near.join(", ")}` : "") +
          "; the checkpoint may be for another architecture than the config describes",
      });
    }
    if (expectedShape && !sameShape(r.shape, expectedShape)) {
      fail(`has shape ${shapeStr(r.shape)}, but the model expects ${shapeStr(expectedShape)}`, {
        subject: `${this.component}.${key}`,
        hint: `read from ${r.file}${r.sourceKey !== key ? ` (${r.sourceKey})` : ""}; check that the model config matches the checkpoint`,
      });
    }
    if (!isFloatDtype(r.dtype)) {
      fail(`has dtype ${r.dtype}; a model weight must be F32, F16 or BF16`, {
        subject: `${this.component}.${key}`,
        hint: `read from ${r.file}; the checkpoint is corrupt or not a Stable Diffusion checkpoint`,
      });
    }
    this.requested.add(key);
    return r;
  }

  has(key: string): boolean {
    return this.refs.has(key);
  }

  keys(): string[] {
    return [...this.refs.keys()];
  }

  /** All refs without marking them requested (for listings, hashing, tests). */
  entries(): WeightRef[] {
    return [...this.refs.values()];
  }

  /** Keys never requested through `get`, sorted. */
  unused(): string[] {
    return [...this.refs.keys()].filter((k) => !this.requested.has(k)).sort();
  }

  /** Total bytes of all weights. */
  byteLength(): number {
    let n = 0;
    for (const r of this.refs.values()) n += r.byteLength;
    return n;
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** The bytes of a weight (a fresh, aligned copy). */
export function readWeightRaw(ref: WeightRef): Uint8Array {
  const buf = new Uint8Array(new ArrayBuffer(ref.byteLength));
  let fd: number;
  try {
    fd = fs.openSync(ref.file, "r");
  } catch (e) {
    return fail(`cannot open ${ref.file} (${(e as NodeJS.ErrnoException).code ?? String(e)})`, { subject: ref.key });
  }
  try {
    let done = 0;
    while (done < ref.byteLength) {
      const n = fs.readSync(fd, buf, done, ref.byteLength - done, ref.offset + done);
      if (n === 0) {
        fail(`${ref.file} ended at byte ${ref.offset + done}; it changed since it was opened`, {
          subject: ref.key,
          hint: "recompile",
        });
      }
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return buf;
}

/** A weight as float32, converted from F16/BF16/F64. */
export function readWeightFloat32(ref: WeightRef): Float32Array {
  return toFloat32(readWeightRaw(ref), ref.dtype, `${ref.file}: ${ref.sourceKey}`);
}

/** Up to `n` candidates closest to `key` by edit distance (for did-you-mean hints). */
export function nearestKeys(key: string, candidates: readonly string[], n: number): string[] {
  const scored = candidates.map((c) => ({ c, d: editDistance(key, c) }));
  scored.sort((a, b) => a.d - b.d || (a.c < b.c ? -1 : 1));
  const limit = Math.max(3, Math.floor(key.length / 3));
  return scored.filter((s) => s.d <= limit).slice(0, n).map((s) => s.c);
}

function editDistance(a: string, b: string): number {
  if (a === b) return 0;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  let cur = new Array<number>(b.length + 1).fill(0);
  for (let i = 1; i <= a.length; i++) {
    cur[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a.charCodeAt(i - 1) === b.charCodeAt(j - 1) ? 0 : 1;
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + cost);
    }
    [prev, cur] = [cur, prev];
  }
  return prev[b.length]!;
}
