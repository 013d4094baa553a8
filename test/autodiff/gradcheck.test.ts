/**
 * Every gradient rule, checked through onnxruntime against central finite differences of the
 * same graph (JAX-style: the derivative along random directions, one input at a time).
 *
 * For each row: y = build(inputs); loss = Σ y ⊙ w with a fixed random w; the analytic gradient
 * of each input (from `differentiate`) projected on a random direction v must equal
 * (loss(x + h·v) − loss(x − h·v)) / 2h. Rows run in float64 (h = 1e-5, tolerance 1e-6 of the
 * derivative's scale) where onnxruntime's CPU kernels have float64, else in float32 (h = 1e-2,
 * tolerance 1e-3: the truncation error h²·f‴ and rounding eps/h dominate there; measured ≤ 8e-5).
 */
import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { differentiate, GradError } from "../../src/autodiff/reverse.js";
import { Builder } from "../../src/ir/builder.js";
import { sym, type Dim } from "../../src/ir/dims.js";
import type { DType, Value } from "../../src/ir/graph.js";
import { defineOps } from "../../src/ir/ops/registry.js";
import { lowerComposites } from "../../src/ir/passes/lower.js";
import { randomFloats, runGraph } from "../helpers/ort.js";
import { tempDir } from "../helpers/repo.js";
import { verify } from "../../src/ir/verify.js";
import { writeOnnx } from "../../src/ir/onnx/writer.js";
import * as fs from "node:fs";
import * as path from "node:path";

type Domain = "any" | "positive" | "awayFromZero";

interface Input {
  shape: number[];
  /** symbolic dims to declare the graph input with (the feed uses `shape`) */
  sym?: Dim[];
  domain?: Domain;
  /** fed but not differentiated (a mask, a shape donor) */
  nodiff?: boolean;
  /** an integer input (indices) with values in [0, n) */
  int?: number;
}

interface Row {
  name: string;
  dtype?: DType;
  inputs: Record<string, Input>;
  build(b: Builder, v: Record<string, Value>): Value;
}

const N = sym("n");
const H = sym("h");
const W = sym("w");
const S = sym("s");

const un = (op: string, domain: Domain = "any", shape = [3, 4]): Row => ({ name: op, inputs: { x: { shape, domain } }, build: (b, v) => b.op1(op, [v.x!]) });

const rows: Row[] = [
  { name: "Add broadcast", inputs: { a: { shape: [2, 3, 4] }, b: { shape: [3, 1] } }, build: (b, v) => b.add(v.a!, v.b!) },
  { name: "Sub broadcast", inputs: { a: { shape: [3, 1] }, b: { shape: [2, 3, 4] } }, build: (b, v) => b.sub(v.a!, v.b!) },
  { name: "Mul broadcast both", inputs: { a: { shape: [2, 1, 4] }, b: { shape: [3, 1] } }, build: (b, v) => b.mul(v.a!, v.b!) },
  { name: "Div", inputs: { a: { shape: [2, 5] }, b: { shape: [5], domain: "positive" } }, build: (b, v) => b.div(v.a!, v.b!) },
  { name: "Pow (both operands)", inputs: { a: { shape: [4, 3], domain: "positive" }, b: { shape: [3] } }, build: (b, v) => b.op1("Pow", [v.a!, v.b!]) },
  { name: "Pow (constant exponent)", inputs: { a: { shape: [4, 3] } }, build: (b, v) => b.op1("Pow", [v.a!, b.scalar(3, "float64")]) },
  { name: "Max", inputs: { a: { shape: [3, 4] }, b: { shape: [4] } }, build: (b, v) => b.op1("Max", [v.a!, v.b!]) },
  { name: "Min", inputs: { a: { shape: [3, 4] }, b: { shape: [3, 4] } }, build: (b, v) => b.op1("Min", [v.a!, v.b!]) },
  un("Neg"),
  un("Abs", "awayFromZero"),
  un("Exp"),
  un("Log", "positive"),
  un("Sqrt", "positive"),
  un("Reciprocal", "positive"),
  un("Sin"),
  un("Cos"),
  { ...un("Erf"), dtype: "float32" },
  un("Tanh"),
  un("Sigmoid"),
  un("Relu", "awayFromZero"),
  un("Identity"),
  {
    name: "Where",
    inputs: { c: { shape: [3, 4], nodiff: true }, a: { shape: [3, 4] }, b: { shape: [4] } },
    build: (b, v) => b.op1("Where", [b.op1("Greater", [v.c!, b.scalar(0, "float64")]), v.a!, v.b!]),
  },
  { name: "Cast float32 → float64 → float32", dtype: "float32", inputs: { x: { shape: [5] } }, build: (b, v) => b.cast(b.mul(b.cast(v.x!, "float64"), b.scalar(2, "float64")), "float32") },
  { name: "Gelu-20 (erf)", dtype: "float32", inputs: { x: { shape: [3, 5] } }, build: (b, v) => b.op1("Gelu", [b.mul(v.x!, b.float(2))]) },
  { name: "QuickGelu α 1.702", dtype: "float32", inputs: { x: { shape: [3, 5] } }, build: (b, v) => b.op1("QuickGelu", [b.mul(v.x!, b.float(2))], { alpha: 1.702 }, "com.microsoft") },
  { name: "sdc.Gelu (primitives)", dtype: "float32", inputs: { x: { shape: [3, 5] } }, build: (b, v) => b.gelu(b.mul(v.x!, b.float(2))) },
  { name: "MatMul weight [K,N] under batch", inputs: { a: { shape: [2, 3, 4, 5] }, b: { shape: [5, 6] } }, build: (b, v) => b.matmul(v.a!, v.b!) },
  { name: "MatMul batched", inputs: { a: { shape: [2, 3, 4] }, b: { shape: [2, 4, 5] } }, build: (b, v) => b.matmul(v.a!, v.b!) },
  { name: "MatMul broadcast batch", inputs: { a: { shape: [2, 3, 4, 5] }, b: { shape: [3, 5, 2] } }, build: (b, v) => b.matmul(v.a!, v.b!) },
  { name: "MatMul symbolic batch", inputs: { a: { shape: [3, 4, 5], sym: [N, 4, 5] }, b: { shape: [5, 2] } }, build: (b, v) => b.matmul(v.a!, v.b!) },
  ...convRows(),
  { name: "ReduceSum axes keepdims 0", inputs: { x: { shape: [2, 3, 4] } }, build: (b, v) => b.op1("ReduceSum", [v.x!, b.int64([0, 2])], { keepdims: 0 }) },
  { name: "ReduceSum all", inputs: { x: { shape: [2, 3] } }, build: (b, v) => b.op1("ReduceSum", [v.x!], { keepdims: 1 }) },
  { name: "ReduceMean symbolic axes", inputs: { x: { shape: [2, 3, 5], sym: [N, 3, S] } }, build: (b, v) => b.op1("ReduceMean", [v.x!, b.int64([-1])], { keepdims: 1 }) },
  { name: "ReduceMean static", inputs: { x: { shape: [2, 3, 5] } }, build: (b, v) => b.op1("ReduceMean", [v.x!, b.int64([1, 2])], { keepdims: 0 }) },
  { name: "ReduceMax", inputs: { x: { shape: [3, 5] } }, build: (b, v) => b.op1("ReduceMax", [v.x!, b.int64([1])], { keepdims: 0 }) },
  { name: "Softmax last axis", inputs: { x: { shape: [2, 3, 5] } }, build: (b, v) => b.softmax(b.mul(v.x!, b.scalar(3, "float64")), -1) },
  { name: "Softmax axis 1", inputs: { x: { shape: [2, 4, 3] } }, build: (b, v) => b.softmax(v.x!, 1) },
  { name: "Reshape symbolic", inputs: { x: { shape: [2, 3, 4], sym: [N, 3, 4] } }, build: (b, v) => b.reshape(v.x!, [0, -1]) },
  { name: "Transpose", inputs: { x: { shape: [2, 3, 4] } }, build: (b, v) => b.transpose(v.x!, [2, 0, 1]) },
  { name: "Concat static", inputs: { a: { shape: [2, 3] }, b: { shape: [2, 5] } }, build: (b, v) => b.concat([v.a!, v.b!, v.a!], 1) },
  { name: "Concat symbolic equal", inputs: { a: { shape: [2, 3], sym: [N, 3] }, b: { shape: [2, 3], sym: [N, 3] } }, build: (b, v) => b.concat([v.a!, v.b!], 0) },
  { name: "Split (one part unused)", inputs: { x: { shape: [6, 2] } }, build: (b, v) => b.split(v.x!, 3, 0)[1]! },
  { name: "Slice static, negative start", inputs: { x: { shape: [5, 6] } }, build: (b, v) => b.slice(v.x!, [0, 1], [1, -4], [4, 2 ** 40]) },
  { name: "Slice of a symbolic tensor", inputs: { x: { shape: [3, 6], sym: [N, 6] } }, build: (b, v) => b.slice(v.x!, [1], [2], [5]) },
  { name: "Gather rows (embedding)", inputs: { t: { shape: [7, 3] }, i: { shape: [2, 4], int: 7 } }, build: (b, v) => b.gather(v.t!, v.i!, 0) },
  { name: "Expand", inputs: { x: { shape: [3, 1] } }, build: (b, v) => b.op1("Expand", [v.x!, b.int64([2, 3, 4])]) },
  { name: "Unsqueeze/Squeeze", inputs: { x: { shape: [3, 4] } }, build: (b, v) => b.op1("Squeeze", [b.mul(b.unsqueeze(v.x!, [0, 2]), b.scalar(2, "float64")), b.int64([0])]) },
  { name: "Pad", inputs: { x: { shape: [2, 3] } }, build: (b, v) => b.op1("Pad", [v.x!, b.int64([0, 1, 1, 2])]) },
  { name: "Resize nearest 2×", dtype: "float32", inputs: { x: { shape: [1, 2, 3, 2], sym: [N, 2, H, W] } }, build: (b, v) => b.upsampleNearest2x(v.x!) },
  {
    name: "Resize nearest to an odd skip size (2h − 1)",
    dtype: "float32",
    inputs: { x: { shape: [1, 2, 3, 4], sym: [N, 2, H, W] }, like: { shape: [1, 1, 5, 7], sym: [N, 1, S, sym("t")], nodiff: true } },
    build: (b, v) => b.upsampleNearestTo(v.x!, v.like!),
  },
  {
    name: "GroupNorm (primitives)",
    dtype: "float32",
    inputs: { x: { shape: [2, 4, 3, 3], sym: [N, 4, H, W] }, s: { shape: [4] }, c: { shape: [4] } },
    build: (b, v) => b.op1("GroupNorm", [v.x!, v.s!, v.c!], { num_groups: 2, epsilon: 1e-5 }, "sdc"),
  },
  {
    name: "LayerNorm (primitives)",
    inputs: { x: { shape: [2, 3, 6], sym: [N, S, 6] }, s: { shape: [6] }, c: { shape: [6] } },
    build: (b, v) => b.op1("LayerNorm", [v.x!, v.s!, v.c!], { epsilon: 1e-5 }, "sdc"),
  },
  {
    name: "Attention with mask (primitives)",
    inputs: { q: { shape: [2, 3, 4], sym: [N, S, 4] }, k: { shape: [2, 5, 4] , sym: [N, sym("l"), 4] }, v: { shape: [2, 5, 6], sym: [N, sym("l"), 6] }, m: { shape: [3, 5], sym: [S, sym("l")], nodiff: true } },
    build: (b, v) => b.attention(v.q!, v.k!, v.v!, 2, 0.7, v.m!),
  },
];

function convRows(): Row[] {
  const conv = (name: string, x: Input, w: number[], attrs: Record<string, number[] | number>, bias = true): Row => ({
    name,
    dtype: "float32",
    inputs: { x, w: { shape: w }, ...(bias ? { c: { shape: [w[0]!] } } : {}) },
    build: (b, v) => b.op1("Conv", v.c ? [v.x!, v.w!, v.c] : [v.x!, v.w!], { kernel_shape: w.slice(2), ...attrs }),
  });
  return [
    conv("Conv 3×3 pad 1, symbolic size", { shape: [2, 3, 5, 4], sym: [N, 3, H, W] }, [4, 3, 3, 3], { pads: [1, 1, 1, 1] }),
    conv("Conv 3×3 asymmetric pads", { shape: [1, 2, 6, 5] }, [3, 2, 3, 3], { pads: [0, 1, 2, 1] }),
    conv("Conv 1×1", { shape: [2, 3, 4, 4] }, [5, 3, 1, 1], {}),
    conv("Conv 3×3 stride 2 pad 1, odd symbolic size", { shape: [1, 2, 7, 5], sym: [N, 2, H, W] }, [3, 2, 3, 3], { strides: [2, 2], pads: [1, 1, 1, 1] }),
    conv("Conv 3×3 stride 2 pad (0,1) (VAE downsampler), symbolic", { shape: [1, 2, 8, 6], sym: [N, 2, H, W] }, [3, 2, 3, 3], { strides: [2, 2], pads: [0, 0, 1, 1] }),
    conv("Conv 3×3 stride 2 no pad, static", { shape: [1, 2, 9, 7] }, [2, 2, 3, 3], { strides: [2, 2] }, false),
    conv("Conv dilation 2", { shape: [1, 2, 7, 7] }, [3, 2, 3, 3], { dilations: [2, 2], pads: [2, 2, 2, 2] }),
    conv("Conv groups 2", { shape: [2, 4, 5, 5] }, [6, 2, 3, 3], { group: 2, pads: [1, 1, 1, 1] }),
    conv("Conv 1-D", { shape: [2, 3, 9] }, [4, 3, 3], { pads: [1, 1] }),
  ];
}

function directionalCheck(dtype: DType): { h: number; tol: number } {
  return dtype === "float64" ? { h: 1e-5, tol: 1e-6 } : { h: 1e-2, tol: 1e-3 };
}

function makeData(inp: Input, seed: number): Float64Array {
  const n = inp.shape.reduce((a, b) => a * b, 1);
  const r = randomFloats(n, seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const x = r[i]!;
    if (inp.int) out[i] = Math.floor(((x + 1) / 2) * inp.int);
    else if (inp.domain === "positive") out[i] = 0.5 + Math.abs(x);
    else if (inp.domain === "awayFromZero") out[i] = (x < 0 ? -0.2 : 0.2) + x;
    else out[i] = x;
  }
  return out;
}

function tensor(dtype: DType, data: Float64Array, shape: number[]): ort.Tensor {
  if (dtype === "float64") return new ort.Tensor("float64", Float64Array.from(data), shape);
  if (dtype === "float32") return new ort.Tensor("float32", Float32Array.from(data), shape);
  return new ort.Tensor("int64", BigInt64Array.from(Array.from(data, (x) => BigInt(x))), shape);
}

async function checkRow(row: Row): Promise<{ name: string; worst: number; tol: number }> {
  const dtype = row.dtype ?? "float64";
  const b = new Builder("g", undefined, dtype === "float64" ? "float32" : dtype);
  const vals: Record<string, Value> = {};
  const data: Record<string, Float64Array> = {};
  let seed = 3;
  for (const [k, inp] of Object.entries(row.inputs)) {
    vals[k] = b.input(k, inp.int ? "int64" : dtype, inp.sym ?? inp.shape);
    data[k] = makeData(inp, seed++);
  }
  const y = row.build(b, vals);
  const wv = b.input("wout", y.dtype, y.shape);
  const loss = b.op1("ReduceSum", [b.mul(y, wv)], { keepdims: 0 });
  lowerComposites(b.graph, { ep: "cpu", training: true });
  const wrt = Object.entries(row.inputs).filter(([, i]) => !i.nodiff && !i.int).map(([k]) => vals[k]!);
  const grads = differentiate(b.graph, loss, wrt);
  b.output("loss", loss);
  wrt.forEach((w, i) => b.output(`grad_${w.name}`, grads[i]!));
  verify(b.graph, { final: true });

  const dir = tempDir();
  try {
    writeOnnx(b.graph, { dir });
    const session = await ort.InferenceSession.create(path.join(dir, "model.onnx"), { logSeverityLevel: 3, intraOpNumThreads: 1 });
    const feedsFor = (over: Record<string, Float64Array> = {}) => {
      const f: Record<string, ort.Tensor> = {};
      for (const [k, inp] of Object.entries(row.inputs)) f[k] = tensor(inp.int ? "int64" : dtype, over[k] ?? data[k]!, inp.shape);
      return f;
    };
    const yShape = await outputShape(row, dtype);
    const wdata = makeData({ shape: yShape }, 99);
    const base = feedsFor();
    base.wout = tensor(y.dtype, wdata, yShape);
    const out = await session.run(base);
    const { h, tol } = directionalCheck(dtype);
    let worst = 0;
    for (const w of wrt) {
      const g = Array.from(out[`grad_${w.name}`]!.data as Float64Array | Float32Array);
      for (let d = 0; d < 2; d++) {
        const v = makeData({ shape: row.inputs[w.name]!.shape }, 1000 + d * 17 + w.id);
        const an = g.reduce((acc, gi, i) => acc + gi * v[i]!, 0);
        const plus = data[w.name]!.map((x, i) => x + h * v[i]!);
        const minus = data[w.name]!.map((x, i) => x - h * v[i]!);
        const lp = Number((await session.run({ ...base, ...feedsFor({ [w.name]: plus }), wout: base.wout! })).loss!.data[0]);
        const lm = Number((await session.run({ ...base, ...feedsFor({ [w.name]: minus }), wout: base.wout! })).loss!.data[0]);
        const fd = (lp - lm) / (2 * h);
        const scale = Math.max(1, Math.abs(an), Math.abs(fd));
        worst = Math.max(worst, Math.abs(an - fd) / scale);
      }
    }
    await session.release();
    return { name: row.name, worst, tol };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The output's concrete shape for the row's feeds (a forward-only graph). */
async function outputShape(row: Row, dtype: DType): Promise<number[]> {
  const b = new Builder("g", undefined, dtype === "float64" ? "float32" : dtype);
  const vals: Record<string, Value> = {};
  const feeds: Record<string, ort.Tensor> = {};
  let seed = 3;
  for (const [k, inp] of Object.entries(row.inputs)) {
    vals[k] = b.input(k, inp.int ? "int64" : dtype, inp.sym ?? inp.shape);
    feeds[k] = tensor(inp.int ? "int64" : dtype, makeData(inp, seed++), inp.shape);
  }
  b.output("y", row.build(b, vals));
  lowerComposites(b.graph, { ep: "cpu", training: true });
  const out = await runGraph(b.graph, feeds);
  return [...out.y!.dims];
}

describe("gradient rules against finite differences", () => {
  for (const row of rows) {
    it(row.name, async () => {
      const r = await checkRow(row);
      console.log(`${row.name}: ${r.worst.toExponential(2)} (tolerance ${r.tol})`);
      expect(r.worst, `${row.name}: worst relative error ${r.worst.toExponential(2)}`).toBeLessThan(r.tol);
    });
  }
});

describe("the autodiff engine", () => {
  defineOps({
    op: "BadGrad",
    domain: "test",
    infer: ([x]) => [{ dtype: x!.dtype, shape: [...x!.shape] }],
    grad: ({ b, x: [x] }) => [b.reshape(x!, [-1])],
  });
  defineOps({ op: "NoGrad", domain: "test", infer: ([x]) => [{ dtype: x!.dtype, shape: [...x!.shape] }] });

  it("names the node, op and input whose gradient has the wrong shape", () => {
    const b = new Builder("g");
    const x = b.input("x", "float32", [2, 3]);
    const y = b.scope("down_blocks.0", () => b.op1("BadGrad", [x], {}, "test"));
    const loss = b.op1("ReduceSum", [y], { keepdims: 0 });
    expect(() => differentiate(b.graph, loss, [x])).toThrow(GradError);
    expect(() => differentiate(b.graph, loss, [x])).toThrow("down_blocks.0/BadGrad_0 (test::BadGrad): the gradient of input 0 (x) is float32[6], expected float32[2, 3]");
  });

  it("names an op without a rule that lies on the path, and ignores one that does not", () => {
    const b = new Builder("g");
    const x = b.input("x", "float32", [2]);
    const frozen = b.input("frozen", "float32", [2]);
    const side = b.op1("NoGrad", [frozen], {}, "test"); // no path from x: never differentiated
    const loss = b.op1("ReduceSum", [b.mul(b.op1("NoGrad", [x], {}, "test"), side)], { keepdims: 0 });
    expect(() => differentiate(b.graph, loss, [x])).toThrow("g/NoGrad_1 (test::NoGrad): no gradient rule for NoGrad");
    const b2 = new Builder("g");
    const x2 = b2.input("x", "float32", [2]);
    const f2 = b2.input("frozen", "float32", [2]);
    const unused = b2.input("unused", "float32", [2]);
    const loss2 = b2.op1("ReduceSum", [b2.mul(x2, b2.op1("NoGrad", [f2], {}, "test"))], { keepdims: 0 });
    const before = b2.graph.nodes.length;
    const [gx, gu] = differentiate(b2.graph, loss2, [x2, unused]);
    expect(gx).not.toBeNull();
    expect(gu).toBeNull();
    // d/dx Σ x·f = f: the seed spread over x's shape and one Mul, no work for the frozen branch
    expect(b2.graph.nodes.slice(before).map((n) => n.op).sort()).toEqual(["Expand", "Mul", "Shape", "Unsqueeze"]);
  });

  it("sums fan-out gradients", async () => {
    const b = new Builder("g");
    const x = b.input("x", "float32", [3]);
    const loss = b.op1("ReduceSum", [b.add(b.mul(x, x), b.op1("Sin", [x]))], { keepdims: 0 });
    const [g] = differentiate(b.graph, loss, [x]);
    b.output("g", g!);
    const xs = new Float32Array([0.3, -1.2, 2]);
    const out = await runGraph(b.graph, { x: new ort.Tensor("float32", xs, [3]) });
    const got = Array.from(out.g!.data as Float32Array);
    xs.forEach((v, i) => expect(got[i]).toBeCloseTo(2 * v + Math.cos(v), 6));
  });
});
