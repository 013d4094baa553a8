/**
 * Elementwise ops: numpy broadcasting binaries, comparisons, unaries, Where and Cast, each with
 * its gradient rule (a broadcast operand's gradient is summed back to its shape). GELU and its
 * relatives are in activation.ts.
 */
import { dimEq, shapeStr, type Dim } from "../dims.js";
import type { Builder } from "../builder.js";
import type { DType, Value } from "../graph.js";
import { like, sumTo } from "./grad-util.js";
import { attrInt, check, defineOps, need, type GradRule, type OpDef } from "./registry.js";

/** numpy broadcasting of two shapes; symbolic dims must match exactly or meet a 1. */
export function broadcast(a: readonly Dim[], b: readonly Dim[]): Dim[] {
  const n = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (dimEq(x, y) || y === 1) out.push(x);
    else if (x === 1) out.push(y);
    else throw new Error(`shapes ${shapeStr(a)} and ${shapeStr(b)} do not broadcast`);
  }
  return out;
}

function bcast(vals: Value[]): Dim[] {
  try {
    return vals.map((v) => v.shape).reduce((acc, s) => broadcast(acc, s));
  } catch (e) {
    check(false, (e as Error).message);
    throw e;
  }
}

const FLOATS: DType[] = ["float32", "float16", "bfloat16", "float64"];
const NUMERIC: DType[] = [...FLOATS, "int64", "int32", "int8", "uint8"];

function binary(op: string, grad?: GradRule, types: DType[] = NUMERIC): OpDef {
  return {
    op,
    domain: "",
    grad,
    infer([a, b]) {
      const x = need(a, "A");
      const y = need(b, "B");
      check(x.dtype === y.dtype, () => `${op} operands differ in dtype: ${x.dtype} vs ${y.dtype}`);
      check(types.includes(x.dtype), () => `${op} does not take ${x.dtype}`);
      return [{ dtype: x.dtype, shape: bcast([x, y]) }];
    },
  };
}

function compare(op: string): OpDef {
  return {
    op,
    domain: "",
    infer([a, b]) {
      const x = need(a, "A");
      const y = need(b, "B");
      check(x.dtype === y.dtype, () => `${op} operands differ in dtype: ${x.dtype} vs ${y.dtype}`);
      return [{ dtype: "bool", shape: bcast([x, y]) }];
    },
  };
}

function unary(op: string, grad?: GradRule, types: DType[] = FLOATS, domain = ""): OpDef {
  return {
    op,
    domain,
    grad,
    infer([a]) {
      const x = need(a, "X");
      check(types.includes(x.dtype), () => `${op} does not take ${x.dtype}`);
      return [{ dtype: x.dtype, shape: [...x.shape] }];
    },
  };
}

// Gradient rules: x are the inputs, y the outputs, dy the outputs' cotangents (see GradRule).
defineOps(
  binary("Add", ({ b, x: [p, q], dy: [d] }) => [sumTo(b, d!, p!), sumTo(b, d!, q!)]),
  binary("Sub", ({ b, x: [p, q], dy: [d], wants }) => [sumTo(b, d!, p!), wants[1] ? sumTo(b, b.op1("Neg", [d!]), q!) : null]),
  binary("Mul", ({ b, x: [p, q], dy: [d], wants }) => [wants[0] ? sumTo(b, b.mul(d!, q!), p!) : null, wants[1] ? sumTo(b, b.mul(d!, p!), q!) : null]),
  // y = p / q: dp = d / q, dq = −d · y / q
  binary("Div", ({ b, x: [p, q], y: [y], dy: [d], wants }) => [
    wants[0] ? sumTo(b, b.div(d!, q!), p!) : null,
    wants[1] ? sumTo(b, b.op1("Neg", [b.div(b.mul(d!, y!), q!)]), q!) : null,
  ]),
  // y = p^q: dp = d · q · p^(q−1), dq = d · y · ln p
  binary(
    "Pow",
    ({ b, x: [p, q], y: [y], dy: [d], wants }) => [
      wants[0] ? sumTo(b, b.mul(d!, b.mul(q!, b.op1("Pow", [p!, b.sub(q!, like(b, q!, 1))]))), p!) : null,
      wants[1] ? sumTo(b, b.mul(d!, b.mul(y!, b.op1("Log", [p!]))), q!) : null,
    ],
    FLOATS,
  ),
  // ties go to the first operand
  binary("Max", ({ b, x: [p, q], dy: [d] }) => minMaxGrad(b, p!, q!, d!, "GreaterOrEqual")),
  binary("Min", ({ b, x: [p, q], dy: [d] }) => minMaxGrad(b, p!, q!, d!, "LessOrEqual")),
  compare("Equal"),
  compare("Less"),
  compare("Greater"),
  compare("LessOrEqual"),
  compare("GreaterOrEqual"),
  unary("Neg", ({ b, dy: [d] }) => [b.op1("Neg", [d!])], [...FLOATS, "int64", "int32"]),
  unary("Abs", ({ b, x: [p], dy: [d] }) => [b.mul(d!, b.op1("Sign", [p!]))], [...FLOATS, "int64", "int32"]),
  unary("Sign", ({ b, x: [p], dy: [d] }) => [b.mul(d!, like(b, p!, 0))], [...FLOATS, "int64", "int32"]),
  unary("Exp", ({ b, y: [y], dy: [d] }) => [b.mul(d!, y!)]),
  unary("Log", ({ b, x: [p], dy: [d] }) => [b.div(d!, p!)]),
  // d/dx √x = 1 / (2√x)
  unary("Sqrt", ({ b, y: [y], dy: [d] }) => [b.div(b.mul(d!, like(b, y!, 0.5)), y!)]),
  unary("Reciprocal", ({ b, y: [y], dy: [d] }) => [b.op1("Neg", [b.mul(d!, b.mul(y!, y!))])]),
  unary("Sin", ({ b, x: [p], dy: [d] }) => [b.mul(d!, b.op1("Cos", [p!]))]),
  unary("Cos", ({ b, x: [p], dy: [d] }) => [b.op1("Neg", [b.mul(d!, b.op1("Sin", [p!]))])]),
  // d/dx erf x = 2/√π · e^(−x²)
  unary("Erf", ({ b, x: [p], dy: [d] }) => [b.mul(d!, b.mul(like(b, p!, 2 / Math.sqrt(Math.PI)), b.op1("Exp", [b.op1("Neg", [b.mul(p!, p!)])])))]),
  unary("Tanh", ({ b, y: [y], dy: [d] }) => [b.mul(d!, b.sub(like(b, y!, 1), b.mul(y!, y!)))]),
  unary("Sigmoid", ({ b, y: [y], dy: [d] }) => [b.mul(d!, b.mul(y!, b.sub(like(b, y!, 1), y!)))]),
  unary("Relu", ({ b, x: [p], dy: [d] }) => [b.op1("Where", [b.op1("Greater", [p!, like(b, p!, 0)]), d!, like(b, d!, 0)])]),
  unary("Identity", ({ dy: [d] }) => [d!], NUMERIC),
  unary("Floor", ({ b, x: [p], dy: [d] }) => [b.mul(d!, like(b, p!, 0))]),
  {
    op: "Where",
    domain: "",
    infer([c, a, b]) {
      const cond = need(c, "condition");
      const x = need(a, "X");
      const y = need(b, "Y");
      check(cond.dtype === "bool", `Where condition must be bool, got ${cond.dtype}`);
      check(x.dtype === y.dtype, () => `Where branches differ in dtype: ${x.dtype} vs ${y.dtype}`);
      return [{ dtype: x.dtype, shape: bcast([cond, x, y]) }];
    },
    grad({ b, x: [c, p, q], dy: [d], wants }) {
      const zero = like(b, d!, 0);
      return [null, wants[1] ? sumTo(b, b.op1("Where", [c!, d!, zero]), p!) : null, wants[2] ? sumTo(b, b.op1("Where", [c!, zero, d!]), q!) : null];
    },
  },
  {
    op: "Cast",
    domain: "",
    attrs: { to: "int" },
    infer([a], attrs) {
      const x = need(a, "input");
      const to = attrInt(attrs, "to");
      return [{ dtype: dtypeFromOnnx(to), shape: [...x.shape], known: x.known ?? undefined }];
    },
    // float ↔ float casts pass the gradient back in the input's precision
    grad: ({ b, x: [p], dy: [d] }) => [FLOATS.includes(p!.dtype) ? b.cast(d!, p!.dtype) : null],
  },
);

function minMaxGrad(b: Builder, p: Value, q: Value, d: Value, firstWins: "GreaterOrEqual" | "LessOrEqual"): Value[] {
  const zero = like(b, d, 0);
  const cond = b.op1(firstWins, [p, q]);
  return [sumTo(b, b.op1("Where", [cond, d, zero]), p), sumTo(b, b.op1("Where", [cond, zero, d]), q)];
}

/** ONNX TensorProto.DataType codes. */
export const ONNX_DTYPE: Record<DType, number> = {
  float32: 1,
  uint8: 2,
  int8: 3,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  float64: 11,
  bfloat16: 16,
};

export function dtypeFromOnnx(code: number): DType {
  const e = Object.entries(ONNX_DTYPE).find(([, c]) => c === code);
  check(!!e, `unsupported ONNX dtype code ${code}`);
  return e![0] as DType;
}
