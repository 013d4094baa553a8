/**
 * Every op the IR emits, run through onnxruntime and compared with an independent float64
 * JavaScript reference (test/helpers/ref.ts). Composites are checked in both lowerings (fused
 * onnxruntime op and primitives). Tolerance: max |ort − ref| ≤ tol · max(1, max |ref|).
 */
import { describe, expect, it } from "vitest";
import * as ort from "onnxruntime-node";
import { Builder } from "../../src/ir/builder.js";
import { sym, type Dim } from "../../src/ir/dims.js";
import type { Value } from "../../src/ir/graph.js";
import { lowerComposites } from "../../src/ir/passes/lower.js";
import { randomFloats, runGraph } from "../helpers/ort.js";
import * as R from "../helpers/ref.js";

interface Row {
  name: string;
  inputs: Record<string, number[]>; // shape of each random input
  /** symbolic dims for graph input declarations (same keys), default: the static shape */
  symbolic?: Record<string, Dim[]>;
  /** inputs that become constants (weights) rather than graph inputs */
  consts?: string[];
  build(b: Builder, v: Record<string, Value>): Value;
  ref(a: Record<string, R.Arr>): R.Arr;
  tol?: number;
}

const B = sym("batch");
const H = sym("h");
const W = sym("w");

const rows: Row[] = [
  { name: "Add broadcast", inputs: { a: [2, 3, 4], b: [3, 1] }, build: (b, v) => b.add(v.a!, v.b!), ref: (a) => R.binary(a.a!, a.b!, (x, y) => x + y) },
  { name: "Sub", inputs: { a: [2, 3], b: [2, 3] }, build: (b, v) => b.sub(v.a!, v.b!), ref: (a) => R.binary(a.a!, a.b!, (x, y) => x - y) },
  { name: "Mul broadcast both", inputs: { a: [2, 1, 4], b: [3, 1] }, build: (b, v) => b.mul(v.a!, v.b!), ref: (a) => R.binary(a.a!, a.b!, (x, y) => x * y) },
  { name: "Div", inputs: { a: [5], b: [5] }, build: (b, v) => b.div(v.a!, b.add(b.op1("Abs", [v.b!]), b.float(0.5))), ref: (a) => R.binary(a.a!, a.b!, (x, y) => x / (Math.abs(y) + 0.5)) },
  { name: "Exp/Sin/Cos", inputs: { a: [7] }, build: (b, v) => b.add(b.op1("Exp", [v.a!]), b.mul(b.op1("Sin", [v.a!]), b.op1("Cos", [v.a!]))), ref: (a) => R.map(a.a!, (x) => Math.exp(x) + Math.sin(x) * Math.cos(x)) },
  { name: "Sqrt", inputs: { a: [6] }, build: (b, v) => b.op1("Sqrt", [b.op1("Abs", [v.a!])]), ref: (a) => R.map(a.a!, (x) => Math.sqrt(Math.abs(x))) },
  { name: "SiLU", inputs: { a: [2, 8] }, build: (b, v) => b.silu(v.a!), ref: (a) => R.map(a.a!, (x) => x / (1 + Math.exp(-x))) },
  { name: "Gelu (erf)", inputs: { a: [3, 8] }, build: (b, v) => b.gelu(b.mul(v.a!, b.float(3))), ref: (a) => R.map(a.a!, (x) => 1.5 * x * (1 + R.erf((3 * x) / Math.SQRT2))) },
  { name: "Softmax last axis", inputs: { a: [2, 3, 5] }, build: (b, v) => b.softmax(b.mul(v.a!, b.float(4))), ref: (a) => R.softmax(R.map(a.a!, (x) => 4 * x)) },
  { name: "MatMul batched broadcast", inputs: { a: [2, 3, 4, 5], b: [5, 6] }, build: (b, v) => b.matmul(v.a!, v.b!), ref: (a) => R.matmul(a.a!, a.b!) },
  { name: "MatMul symbolic batch", inputs: { a: [3, 4, 5], b: [3, 5, 2] }, symbolic: { a: [B, 4, 5], b: [B, 5, 2] }, build: (b, v) => b.matmul(v.a!, v.b!), ref: (a) => R.matmul(a.a!, a.b!) },
  {
    name: "Linear (weight [out,in], transposed)",
    inputs: { x: [2, 3, 4], "l.weight": [5, 4], "l.bias": [5] },
    consts: ["l.weight", "l.bias"],
    build: (b, v) => b.linear(v.x!, "l", 4, 5),
    ref: (a) => R.binary(R.matmul(a.x!, R.transpose(a["l.weight"]!, [1, 0])), a["l.bias"]!, (x, y) => x + y),
  },
  {
    name: "Conv 3×3 pad 1 symbolic spatial",
    inputs: { x: [2, 3, 6, 4], "c.weight": [5, 3, 3, 3], "c.bias": [5] },
    symbolic: { x: [B, 3, H, W] },
    consts: ["c.weight", "c.bias"],
    build: (b, v) => b.conv2d(v.x!, "c", 3, 5, 3),
    ref: (a) => R.conv2d(a.x!, a["c.weight"]!, a["c.bias"]!, 1, [1, 1, 1, 1]),
  },
  {
    name: "Conv 3×3 stride 2 pad 1",
    inputs: { x: [1, 2, 8, 6], "c.weight": [3, 2, 3, 3], "c.bias": [3] },
    symbolic: { x: [B, 2, H, W] },
    consts: ["c.weight", "c.bias"],
    build: (b, v) => b.conv2d(v.x!, "c", 2, 3, 3, { stride: 2 }),
    ref: (a) => R.conv2d(a.x!, a["c.weight"]!, a["c.bias"]!, 2, [1, 1, 1, 1]),
  },
  {
    name: "Conv stride 2 asymmetric pad (VAE downsample)",
    inputs: { x: [1, 2, 8, 6], "c.weight": [2, 2, 3, 3], "c.bias": [2] },
    symbolic: { x: [B, 2, H, W] },
    consts: ["c.weight", "c.bias"],
    build: (b, v) => b.conv2d(v.x!, "c", 2, 2, 3, { stride: 2, pads: [0, 0, 1, 1] }),
    ref: (a) => R.conv2d(a.x!, a["c.weight"]!, a["c.bias"]!, 2, [0, 0, 1, 1]),
  },
  { name: "Transpose", inputs: { a: [2, 3, 4] }, build: (b, v) => b.transpose(v.a!, [2, 0, 1]), ref: (a) => R.transpose(a.a!, [2, 0, 1]) },
  {
    name: "Reshape 0/-1 + reshapeFrom symbolic",
    inputs: { a: [2, 3, 4, 2] },
    symbolic: { a: [B, 3, H, W] },
    build: (b, v) => b.reshapeFrom(b.mul(b.reshape(v.a!, [0, 0, -1]), b.float(2)), [0, 3, [v.a!, 2], [v.a!, 3]]),
    ref: (a) => R.map(a.a!, (x) => 2 * x),
  },
  { name: "Concat axis 1", inputs: { a: [2, 3, 2], b: [2, 1, 2] }, build: (b, v) => b.concat([v.a!, v.b!], 1), ref: (a) => concat1(a.a!, a.b!) },
  { name: "Slice", inputs: { a: [4, 6] }, build: (b, v) => b.slice(v.a!, [1], [1], [4]), ref: (a) => sliceCols(a.a!, 1, 4) },
  { name: "Split", inputs: { a: [2, 6] }, build: (b, v) => b.split(v.a!, 2, -1)[1]!, ref: (a) => sliceCols(a.a!, 3, 6) },
  {
    name: "Gather (embedding) + GatherND pooled row",
    inputs: { e: [5, 3] },
    consts: ["e"],
    build: (b, v) => {
      const ids = b.constant({ dtype: "int64", shape: [2, 2] }, new Uint8Array(new BigInt64Array([4n, 0n, 2n, 2n]).buffer));
      const rows = b.gather(b.param("e", [5, 3]), ids); // [2, 2, 3]
      return b.op1("GatherND", [rows, b.constant({ dtype: "int64", shape: [2, 1] }, new Uint8Array(new BigInt64Array([1n, 0n]).buffer))], { batch_dims: 1 });
    },
    ref: (a) => R.arr([...a.e!.data.slice(0, 3), ...a.e!.data.slice(6, 9)], [2, 3]),
  },
  {
    name: "Upsample2xConv (nearest 2×, 3×3 conv) symbolic spatial",
    inputs: { x: [2, 3, 4, 5], "u.weight": [2, 3, 3, 3], "u.bias": [2] },
    symbolic: { x: [B, 3, H, W] },
    consts: ["u.weight", "u.bias"],
    build: (b, v) => b.upsample2xConv(v.x!, "u", 3, 2),
    ref: (a) => R.conv2d(R.upsampleNearest2x(a.x!), a["u.weight"]!, a["u.bias"]!, 1, [1, 1, 1, 1]),
  },
  {
    name: "TopK largest 3 along the last axis: values + indices",
    inputs: { a: [2, 5] },
    build: (b, v) => {
      const [vals, idx] = b.op("TopK", [v.a!, b.int64([3])], { axis: -1, largest: 1, sorted: 1 });
      return b.add(vals!, b.mul(b.cast(idx!, "float32"), b.float(10)));
    },
    ref: (a) =>
      R.arr(
        [0, 1].flatMap((r) => {
          const row = Array.from(a.a!.data.slice(r * 5, r * 5 + 5), (x, i) => [x, i] as const);
          return row.sort((p, q) => q[0] - p[0] || p[1] - q[1]).slice(0, 3).map(([x, i]) => x + 10 * i);
        }),
        [2, 3],
      ),
  },
  {
    name: "ScatterElements add along axis 1, repeated indices",
    inputs: { d: [2, 4, 3], u: [2, 3, 3] },
    build: (b, v) => {
      // rows 0→2, 1→2, 2→0 in batch 0; 3, 3, 1 in batch 1; the same for every column
      const idx = [2, 2, 0, 3, 3, 1].flatMap((i) => [i, i, i]).map(BigInt);
      const at = b.constant({ dtype: "int64", shape: [2, 3, 3] }, new Uint8Array(new BigInt64Array(idx).buffer));
      return b.op1("ScatterElements", [v.d!, at, v.u!], { axis: 1, reduction: "add" });
    },
    ref: (a) => {
      const out = Float64Array.from(a.d!.data);
      const to = [2, 2, 0, 3, 3, 1];
      for (let n = 0; n < 2; n++) for (let j = 0; j < 3; j++) for (let c = 0; c < 3; c++) out[(n * 4 + to[n * 3 + j]!) * 3 + c] += a.u!.data[(n * 3 + j) * 3 + c]!;
      return R.arr(out, [2, 4, 3]);
    },
  },
  {
    name: "ReduceMean",
    inputs: { a: [2, 5] },
    build: (b, v) => b.op1("ReduceMean", [v.a!, b.int64([-1])]),
    ref: (a) => R.arr([0, 1].map((r) => a.a!.data.slice(r * 5, r * 5 + 5).reduce((x, y) => x + y) / 5), [2, 1]),
  },
  { name: "Resize nearest ×2", inputs: { a: [1, 2, 3, 2] }, symbolic: { a: [B, 2, H, W] }, build: (b, v) => b.upsampleNearest2x(v.a!), ref: (a) => R.upsampleNearest2x(a.a!) },
  {
    name: "Expand + Where",
    inputs: { a: [1, 4], b: [3, 1] },
    build: (b, v) => {
      const e = b.op1("Expand", [v.a!, b.int64([3, 4])]);
      return b.op1("Where", [b.op1("Greater", [e, v.b!]), e, v.b!]);
    },
    ref: (a) => R.binary(a.a!, a.b!, (x, y) => Math.max(x, y)),
  },
  // composites: each is run in both lowerings below
  {
    name: "GroupNorm",
    inputs: { x: [2, 6, 3, 2], "n.weight": [6], "n.bias": [6] },
    symbolic: { x: [B, 6, H, W] },
    consts: ["n.weight", "n.bias"],
    build: (b, v) => b.groupNorm(v.x!, "n", 6, 3, 1e-5),
    ref: (a) => R.groupNorm(a.x!, a["n.weight"]!, a["n.bias"]!, 3, 1e-5),
  },
  {
    name: "LayerNorm",
    inputs: { x: [2, 3, 8], "n.weight": [8], "n.bias": [8] },
    consts: ["n.weight", "n.bias"],
    build: (b, v) => b.layerNorm(v.x!, "n", 8, 1e-5),
    ref: (a) => R.layerNorm(a.x!, a["n.weight"]!, a["n.bias"]!, 1e-5),
  },
  {
    name: "Attention cross, 2 heads",
    inputs: { q: [2, 5, 8], k: [2, 3, 8], v: [2, 3, 6] },
    symbolic: { q: [B, sym("s"), 8], k: [B, 3, 8], v: [B, 3, 6] },
    build: (b, v) => b.attention(v.q!, v.k!, v.v!, 2, 0.5),
    ref: (a) => R.attention(a.q!, a.k!, a.v!, 2, 0.5, null),
  },
  {
    name: "Attention self with additive causal mask",
    inputs: { q: [2, 4, 8] },
    build: (b, v) => {
      const m = new Float32Array(16);
      for (let i = 0; i < 4; i++) for (let j = i + 1; j < 4; j++) m[i * 4 + j] = -3.4e38;
      return b.attention(v.q!, v.q!, v.q!, 4, 0.7, b.float(m, [4, 4]));
    },
    ref: (a) => {
      const m = new Float64Array(16);
      for (let i = 0; i < 4; i++) for (let j = i + 1; j < 4; j++) m[i * 4 + j] = -1e300;
      return R.attention(a.q!, a.q!, a.q!, 4, 0.7, R.arr(m, [4, 4]));
    },
  },
];

function concat1(a: R.Arr, b: R.Arr): R.Arr {
  const [n, ca, w] = a.shape as [number, number, number];
  const cb = b.shape[1]!;
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(...a.data.slice(i * ca * w, (i + 1) * ca * w), ...b.data.slice(i * cb * w, (i + 1) * cb * w));
  return R.arr(out, [n, ca + cb, w]);
}

function sliceCols(a: R.Arr, from: number, to: number): R.Arr {
  const [r, c] = a.shape as [number, number];
  const out: number[] = [];
  for (let i = 0; i < r; i++) out.push(...a.data.slice(i * c + from, i * c + to));
  return R.arr(out, [r, to - from]);
}

async function runRow(row: Row, primitivesOnly: boolean): Promise<{ got: Float32Array; dims: readonly number[]; want: R.Arr }> {
  const data: Record<string, Float32Array> = {};
  let seed = 11;
  for (const [k, shape] of Object.entries(row.inputs)) data[k] = randomFloats(shape.reduce((a, b) => a * b, 1), seed++);
  const b = new Builder("t", (key) => ({ kind: "bytes", bytes: new Uint8Array(data[key]!.buffer.slice(0)) }));
  const vals: Record<string, Value> = {};
  const feeds: Record<string, ort.Tensor> = {};
  for (const [k, shape] of Object.entries(row.inputs)) {
    if (row.consts?.includes(k)) continue;
    vals[k] = b.input(k, "float32", row.symbolic?.[k] ?? shape);
    feeds[k] = new ort.Tensor("float32", data[k]!, shape);
  }
  b.output("y", row.build(b, vals));
  lowerComposites(b.graph, { ep: "cpu", training: false, primitivesOnly });
  const out = await runGraph(b.graph, feeds);
  const args = Object.fromEntries(Object.entries(row.inputs).map(([k, s]) => [k, R.arr(data[k]!, s)]));
  return { got: out.y!.data as Float32Array, dims: out.y!.dims, want: row.ref(args) };
}

describe("ops against float64 references", () => {
  for (const row of rows) {
    const composite = ["GroupNorm", "LayerNorm", "Attention", "Gelu", "Upsample2xConv"].some((c) => row.name.startsWith(c));
    for (const prim of composite ? [false, true] : [false]) {
      it(`${row.name}${composite ? (prim ? " (primitives)" : " (fused)") : ""}`, async () => {
        const { got, dims, want } = await runRow(row, prim);
        expect([...dims]).toEqual(want.shape);
        let scale = 1;
        for (const x of want.data) scale = Math.max(scale, Math.abs(x));
        let err = 0;
        got.forEach((x, i) => (err = Math.max(err, Math.abs(x - want.data[i]!))));
        expect(err / scale).toBeLessThan(row.tol ?? 2e-6);
      });
    }
  }
});
