/**
 * The graph builder models are written with. Every op goes through the registry's shape rule as
 * it is created, so a wrong shape fails at the line that built it, naming the scoped node
 * (`down_blocks.1.attentions.0.transformer_blocks.0.attn1/MatMul_3`), the op and the shapes.
 * Scopes follow checkpoint keys, so `param("to_q.weight")` inside scope
 * `down_blocks.1.attentions.0.transformer_blocks.0.attn1` asks the weight provider for exactly
 * the key the checkpoint has.
 */
import { dimStr, shapeStr, type Dim } from "./dims.js";
import { DTYPE_SIZE, Graph, Node, Value, type Attrs, type DType, type TensorData, type TensorType } from "./graph.js";
import { getOp, ShapeError } from "./ops/index.js";
import { ONNX_DTYPE } from "./ops/elementwise.js";
import { f32ToF16 } from "../util/half.js";

/** Supplies a weight's bytes (or a view into a file) for a key and the shape the model expects. */
export type WeightProvider = (key: string, shape: number[], dtype: DType) => TensorData;

export class IRError extends Error {
  constructor(
    message: string,
    readonly node: string,
    readonly op: string,
  ) {
    super(message);
    this.name = "IRError";
  }
}

const INT64_MAX = 2n ** 63n - 1n;

/**
 * A trainable side path added to a Linear or 1×1 Conv module (LoRA): given the module's scoped
 * name and input, the value to add to its output, or null to leave the module as it is.
 */
export type Adapter = (module: string, x: Value, kind: "linear" | "conv", inFeatures: number, outFeatures: number) => Value | null;

export class Builder {
  readonly graph: Graph;
  /** Side paths added to Linear and 1×1 Conv modules while building (LoRA training). */
  adapter: Adapter | null = null;
  private scopes: string[] = [];
  private counters = new Map<string, number>();
  private smallConsts = new Map<string, Value>();

  constructor(
    graph: string | Graph,
    private readonly weights: WeightProvider = noWeights,
    /** dtype of float parameters and activations */
    readonly floatType: DType = "float32",
  ) {
    this.graph = typeof graph === "string" ? new Graph(graph) : graph;
    if (typeof graph !== "string") {
      for (const v of graph.constants.values()) if (v.data?.kind === "bytes" && v.data.bytes.byteLength <= 256) this.smallConsts.set(constKey(v.type, v.data.bytes), v);
      for (const n of graph.nodes) {
        const base = n.name.replace(/_\d+$/, "");
        const k = Number(n.name.slice(base.length + 1));
        this.counters.set(base, Math.max(this.counters.get(base) ?? 0, k + 1));
      }
    }
  }

  /** Continue building inside the scope a node was built in (used by rewrite passes). */
  enterNodeScope(nodeName: string): void {
    const scope = nodeName.slice(0, nodeName.lastIndexOf("/"));
    this.scopes = scope && scope !== this.graph.name ? scope.split(".") : [];
  }

  get scopeName(): string {
    return this.scopes.join(".");
  }

  scope<T>(name: string | number, fn: () => T): T {
    this.scopes.push(String(name));
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  input(name: string, dtype: DType, shape: Dim[]): Value {
    const v = new Value(name, { dtype, shape }, "input");
    this.graph.inputs.push({ name, value: v });
    return v;
  }

  output(name: string, v: Value): void {
    this.graph.outputs.push({ name, value: v });
  }

  /** A trainable/loaded parameter named after the current scope: `<scope>.<local>`. */
  param(local: string, shape: number[], dtype: DType = this.floatType): Value {
    const key = this.scopeName ? `${this.scopeName}.${local}` : local;
    const existing = this.graph.constants.get(key);
    if (existing) return existing;
    const v = new Value(key, { dtype, shape }, "const");
    v.param = true;
    v.data = this.weights(key, shape, dtype);
    this.graph.constants.set(key, v);
    return v;
  }

  /** A constant with given bytes; small ones are shared by content. */
  constant(type: TensorType, bytes: Uint8Array, name?: string, known?: Dim[]): Value {
    const small = bytes.byteLength <= 256 && !name;
    const ckey = small ? constKey(type, bytes) : "";
    if (small) {
      const hit = this.smallConsts.get(ckey);
      if (hit) return hit;
    }
    let cname = name ?? `const_${this.graph.constants.size}`;
    while (!name && this.graph.constants.has(cname)) cname = `${cname}_`;
    const v = new Value(cname, type, "const");
    v.data = { kind: "bytes", bytes };
    v.known = known ?? null;
    this.graph.constants.set(cname, v);
    if (small) this.smallConsts.set(ckey, v);
    return v;
  }

  int64(values: number[] | number, name?: string): Value {
    const arr = Array.isArray(values) ? values : [values];
    const buf = new BigInt64Array(arr.map((x) => (x >= 2 ** 62 ? INT64_MAX : BigInt(x))));
    return this.constant({ dtype: "int64", shape: Array.isArray(values) ? [arr.length] : [] }, new Uint8Array(buf.buffer), name, arr);
  }

  /** A constant in the graph's float type (float16 graphs store it as float16). */
  float(values: number[] | Float32Array | number, shape?: number[], name?: string): Value {
    const arr = typeof values === "number" ? [values] : values;
    const f = arr instanceof Float32Array ? arr : new Float32Array(arr);
    const s = shape ?? (typeof values === "number" ? [] : [f.length]);
    if (this.floatType === "float16") {
      const h = f32ToF16(f);
      return this.constant({ dtype: "float16", shape: s }, new Uint8Array(h.buffer), name);
    }
    if (this.floatType === "float64") {
      const d = typeof values === "number" ? [values] : Array.from(values);
      return this.constant({ dtype: "float64", shape: s }, new Uint8Array(new Float64Array(d).buffer), name);
    }
    return this.float32(f, s, name);
  }

  /** A float32 constant whatever the graph's float type (for computations kept in float32). */
  float32(values: number[] | Float32Array | number, shape?: number[], name?: string): Value {
    const arr = typeof values === "number" ? [values] : values;
    const f = arr instanceof Float32Array ? arr : new Float32Array(arr);
    const s = shape ?? (typeof values === "number" ? [] : [f.length]);
    return this.constant({ dtype: "float32", shape: s }, new Uint8Array(f.buffer.slice(f.byteOffset, f.byteOffset + f.byteLength)), name);
  }

  /** A scalar constant of any float dtype (gradient rules make constants of their value's dtype). */
  scalar(value: number, dtype: DType): Value {
    if (dtype === "float64") return this.constant({ dtype, shape: [] }, new Uint8Array(new Float64Array([value]).buffer));
    if (dtype === "float16") return this.constant({ dtype, shape: [] }, new Uint8Array(f32ToF16(new Float32Array([value])).buffer));
    if (dtype === "float32") return this.float32(value, []);
    throw new Error(`no ${dtype} scalar constants`);
  }

  /** Create a node; returns its outputs. */
  op(op: string, inputs: (Value | null)[], attrs: Attrs = {}, domain = ""): Value[] {
    const def = getOp(domain, op);
    const base = `${this.scopeName || this.graph.name}/${op}`;
    const n = this.counters.get(base) ?? 0;
    this.counters.set(base, n + 1);
    const nodeName = `${base}_${n}`;
    let types;
    try {
      types = def.infer(inputs, attrs);
    } catch (e) {
      if (e instanceof ShapeError) {
        const ins = inputs.map((v) => (v ? `${v.name}: ${v.dtype}${shapeStr(v.shape)}` : "(none)")).join(", ");
        throw new IRError(`${nodeName} (${domain ? domain + "::" : ""}${op}): ${e.message}\n  inputs: ${ins}`, nodeName, op);
      }
      throw e;
    }
    const outs = types.map((t, i) => {
      const v = new Value(`${nodeName}:${i}`, { dtype: t.dtype, shape: t.shape }, "node");
      v.known = t.known ?? null;
      return v;
    });
    const node = new Node(op, domain, inputs, outs, attrs, nodeName);
    outs.forEach((v) => (v.producer = node));
    this.graph.nodes.push(node);
    return outs;
  }

  op1(op: string, inputs: (Value | null)[], attrs: Attrs = {}, domain = ""): Value {
    return this.op(op, inputs, attrs, domain)[0]!;
  }

  // ---- sugar: thin wrappers named after the ONNX ops ----
  add(a: Value, b: Value): Value {
    return this.op1("Add", [a, b]);
  }
  sub(a: Value, b: Value): Value {
    return this.op1("Sub", [a, b]);
  }
  mul(a: Value, b: Value): Value {
    return this.op1("Mul", [a, b]);
  }
  div(a: Value, b: Value): Value {
    return this.op1("Div", [a, b]);
  }
  matmul(a: Value, b: Value): Value {
    return this.op1("MatMul", [a, b]);
  }
  sigmoid(x: Value): Value {
    return this.op1("Sigmoid", [x]);
  }
  /** x · sigmoid(x) */
  silu(x: Value): Value {
    return this.mul(x, this.sigmoid(x));
  }
  /** GELU (erf form), a composite: Gelu-20 or x·½·(1 + erf(x/√2)) depending on the target. */
  gelu(x: Value): Value {
    return this.op1("Gelu", [x], {}, "sdc");
  }
  softmax(x: Value, axis = -1): Value {
    return this.op1("Softmax", [x], { axis });
  }
  cast(x: Value, to: DType): Value {
    if (x.dtype === to) return x;
    return this.op1("Cast", [x], { to: ONNX_DTYPE[to] });
  }
  /** ONNX Reshape: 0 copies the input dimension, -1 is inferred. */
  reshape(x: Value, dims: number[]): Value {
    return this.op1("Reshape", [x, this.int64(dims)]);
  }
  /** Reshape to the (runtime) shape of `like`. */
  reshapeLike(x: Value, like: Value): Value {
    return this.op1("Reshape", [x, this.op1("Shape", [like])]);
  }
  /**
   * Reshape where some target dimensions come from another value's runtime shape: each entry is
   * a number (ONNX's 0 and -1 allowed) or `[value, axis]`.
   */
  reshapeFrom(x: Value, spec: (number | [Value, number])[]): Value {
    if (spec.every((d) => typeof d === "number")) return this.reshape(x, spec as number[]);
    const parts = spec.map((d) => {
      if (typeof d === "number") return this.int64([d]);
      const [v, axis] = d;
      return this.slice(this.op1("Shape", [v]), [0], [axis], [axis + 1]);
    });
    return this.op1("Reshape", [x, this.concat(parts, 0)]);
  }
  transpose(x: Value, perm: number[]): Value {
    return this.op1("Transpose", [x], { perm });
  }
  concat(xs: Value[], axis: number): Value {
    return this.op1("Concat", xs, { axis });
  }
  split(x: Value, parts: number, axis: number): Value[] {
    return this.op("Split", [x], { axis, num_outputs: parts });
  }
  unsqueeze(x: Value, axes: number[]): Value {
    return this.op1("Unsqueeze", [x, this.int64(axes)]);
  }
  slice(x: Value, axes: number[], starts: number[], ends: number[]): Value {
    return this.op1("Slice", [x, this.int64(starts), this.int64(ends), this.int64(axes)]);
  }
  gather(x: Value, indices: Value, axis = 0): Value {
    return this.op1("Gather", [x, indices], { axis });
  }

  /** y = x Wᵀ + b with a checkpoint-style Linear (`<name>.weight` [out, in], `<name>.bias` [out]). */
  linear(x: Value, name: string, inFeatures: number, outFeatures: number, bias = true): Value {
    return this.scope(name, () => {
      const w = this.param("weight", [outFeatures, inFeatures]);
      // MatMul wants [in, out]: a Transpose of a constant, folded when written.
      const wt = this.transpose(w, [1, 0]);
      let y = this.matmul(x, wt);
      if (bias) y = this.add(y, this.param("bias", [outFeatures]));
      const side = this.adapter?.(this.scopeName, x, "linear", inFeatures, outFeatures);
      return side ? this.add(y, side) : y;
    });
  }

  conv2d(
    x: Value,
    name: string,
    cin: number,
    cout: number,
    k: number,
    opts: { stride?: number; pads?: [number, number, number, number]; bias?: boolean } = {},
  ): Value {
    return this.scope(name, () => {
      const w = this.param("weight", [cout, cin, k, k]);
      const b = opts.bias === false ? null : this.param("bias", [cout]);
      const p = Math.floor(k / 2);
      const pads = opts.pads ?? [p, p, p, p];
      const s = opts.stride ?? 1;
      const y = this.op1("Conv", b ? [x, w, b] : [x, w], { kernel_shape: [k, k], strides: [s, s], pads });
      const side = k === 1 && s === 1 ? this.adapter?.(this.scopeName, x, "conv", cin, cout) : null;
      return side ? this.add(y, side) : y;
    });
  }

  /** Nearest 2× upsampling then a 3×3 convolution (pad 1) named `name` (diffusers' Upsample2D with its conv). */
  upsample2xConv(x: Value, name: string, cin: number, cout: number): Value {
    return this.scope(name, () => this.op1("Upsample2xConv", [x, this.param("weight", [cout, cin, 3, 3]), this.param("bias", [cout])], {}, "sdc"));
  }

  groupNorm(x: Value, name: string, channels: number, groups: number, eps: number): Value {
    return this.scope(name, () => {
      const s = this.param("weight", [channels]);
      const b = this.param("bias", [channels]);
      return this.op1("GroupNorm", [x, s, b], { num_groups: groups, epsilon: eps }, "sdc");
    });
  }

  layerNorm(x: Value, name: string, dim: number, eps: number): Value {
    return this.scope(name, () => {
      const s = this.param("weight", [dim]);
      const b = this.param("bias", [dim]);
      return this.op1("LayerNorm", [x, s, b], { epsilon: eps }, "sdc");
    });
  }

  /** softmax(q kᵀ · scale + mask) v over `heads` heads; q [B,S,H·d], k [B,L,H·d], v [B,L,H·dv]. */
  attention(q: Value, k: Value, v: Value, heads: number, scale: number, mask: Value | null = null): Value {
    return this.op1("Attention", [q, k, v, mask], { num_heads: heads, scale }, "sdc");
  }

  /** Nearest-neighbour resize of x [N, C, h, w] to the spatial size of `like` (PyTorch's F.interpolate(size=…)). */
  upsampleNearestTo(x: Value, like: Value): Value {
    const sizes = this.concat([this.slice(this.op1("Shape", [x]), [0], [0], [2]), this.slice(this.op1("Shape", [like]), [0], [2], [4])], 0);
    return this.op1("Resize", [x, null, null, sizes], { mode: "nearest", coordinate_transformation_mode: "asymmetric", nearest_mode: "floor" });
  }

  upsampleNearest2x(x: Value): Value {
    const scales = this.float32([1, 1, 2, 2]);
    return this.op1("Resize", [x, null, scales], { mode: "nearest", coordinate_transformation_mode: "asymmetric", nearest_mode: "floor" });
  }

  describe(v: Value): string {
    return `${v.name}: ${v.dtype}[${v.shape.map(dimStr).join(", ")}]`;
  }
}

function constKey(type: TensorType, bytes: Uint8Array): string {
  return `${type.dtype}${shapeStr(type.shape)}:${Buffer.from(bytes).toString("base64")}`;
}

/** For graphs built for their shapes only (parameter counts, tests): weights are never read. */
export const noWeights: WeightProvider = (key, shape, dtype) => ({
  kind: "lazy",
  identity: `zeros:${key}`,
  produce: () => new Uint8Array(shape.reduce((a, b) => a * b, DTYPE_SIZE[dtype])),
});

export function bytesOfType(t: TensorType): number {
  let n = DTYPE_SIZE[t.dtype];
  for (const d of t.shape) {
    if (typeof d !== "number") throw new Error("symbolic constant size");
    n *= d;
  }
  return n;
}
