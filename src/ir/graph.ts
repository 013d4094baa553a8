/**
 * The graph IR: values with a static dtype and shape (dimensions may be symbolic, see dims.ts),
 * nodes that name an op, and constants whose bytes live in memory or in an external file.
 *
 * Op names are ONNX's own (`MatMul`, `Conv`, `GroupNormalization`), with their domain; the few
 * composite ops sdc adds (`sdc.Attention`, ...) are rewritten into ONNX ops by passes before
 * writing. Every node is built through the op registry, which checks shapes at build time;
 * `verify()` re-checks a whole graph after each pass.
 */
import type { Dim } from "./dims.js";

export type DType = "float32" | "float16" | "bfloat16" | "float64" | "int64" | "int32" | "int8" | "uint8" | "bool";

export const DTYPE_SIZE: Record<DType, number> = {
  float32: 4,
  float16: 2,
  bfloat16: 2,
  float64: 8,
  int64: 8,
  int32: 4,
  int8: 1,
  uint8: 1,
  bool: 1,
};

export function isFloat(d: DType): boolean {
  return d === "float32" || d === "float16" || d === "bfloat16" || d === "float64";
}

export interface TensorType {
  dtype: DType;
  shape: Dim[];
}

/** Bytes of a constant: in memory, a view into a file, or produced on demand when written. */
export type TensorData =
  | { kind: "bytes"; bytes: Uint8Array }
  /** A byte range of a file (e.g. a tensor inside a .safetensors), stored with `storageDtype`. */
  | { kind: "file"; file: string; offset: number; byteLength: number; storageDtype: DType; source?: string }
  /** Computed when written (transposed or fused weights): never held longer than needed. */
  | { kind: "lazy"; produce: () => Uint8Array; identity: string };

export type AttrValue = number | string | number[] | string[] | boolean | { tensor: TensorType; bytes: Uint8Array };
export type Attrs = Record<string, AttrValue>;

let nextId = 0;

export class Value {
  readonly id = nextId++;
  producer: Node | null = null;
  /** For constants: where the bytes are. */
  data: TensorData | null = null;
  /** Contents known at build time of a small 0-D/1-D integer tensor (constants, Shape outputs):
   * lets Reshape/Slice/Expand infer static (or symbolic) output shapes. */
  known: Dim[] | null = null;
  /** A model parameter (a checkpoint weight), as opposed to a constant the builder made. */
  param = false;
  constructor(
    public name: string,
    public type: TensorType,
    public kind: "input" | "const" | "node",
  ) {}
  get dtype(): DType {
    return this.type.dtype;
  }
  get shape(): Dim[] {
    return this.type.shape;
  }
  get rank(): number {
    return this.type.shape.length;
  }
}

export class Node {
  readonly id = nextId++;
  constructor(
    public op: string,
    public domain: string,
    public inputs: (Value | null)[],
    public outputs: Value[],
    public attrs: Attrs,
    /** Scoped name after the checkpoint keys, e.g. `down_blocks.1.attentions.0.transformer_blocks.0.attn1`. */
    public name: string,
  ) {}
}

/** A named graph input or output, as written into ONNX. */
export interface GraphIO {
  name: string;
  value: Value;
}

export class Graph {
  readonly inputs: GraphIO[] = [];
  readonly outputs: GraphIO[] = [];
  nodes: Node[] = [];
  /** Constants by name (weights and small tensors). */
  readonly constants = new Map<string, Value>();
  /** Free-form notes from passes (fusion decisions and why), shown by `sdc inspect`. */
  readonly notes: string[] = [];

  constructor(public name: string) {}

  /** Number of parameter elements (what PyTorch's `sum(p.numel())` counts). */
  paramCount(): number {
    let n = 0;
    for (const v of this.constants.values()) if (v.param) n += v.shape.reduce<number>((a, d) => a * (d as number), 1);
    return n;
  }

  /** Values consumed by each value's users (recomputed on demand; passes mutate node lists). */
  users(): Map<Value, Node[]> {
    const m = new Map<Value, Node[]>();
    for (const n of this.nodes)
      for (const v of n.inputs) {
        if (!v) continue;
        const l = m.get(v);
        if (l) l.push(n);
        else m.set(v, [n]);
      }
    return m;
  }
}
