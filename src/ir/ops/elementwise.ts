/**
 * Elementwise ops: numpy broadcasting binaries, comparisons, unaries, Where and Cast. (GELU and
 * its relatives are in activation.ts.)
 */
import { dimEq, shapeStr, type Dim } from "../dims.js";
import type { DType, Value } from "../graph.js";
import { attrInt, check, defineOps, need, type OpDef } from "./registry.js";

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

function binary(op: string, types: DType[] = NUMERIC): OpDef {
  return {
    op,
    domain: "",
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

function unary(op: string, types: DType[] = FLOATS, domain = ""): OpDef {
  return {
    op,
    domain,
    infer([a]) {
      const x = need(a, "X");
      check(types.includes(x.dtype), () => `${op} does not take ${x.dtype}`);
      return [{ dtype: x.dtype, shape: [...x.shape] }];
    },
  };
}

defineOps(
  binary("Add"),
  binary("Sub"),
  binary("Mul"),
  binary("Div"),
  binary("Pow", FLOATS),
  binary("Max"),
  binary("Min"),
  compare("Equal"),
  compare("Less"),
  compare("Greater"),
  unary("Neg", [...FLOATS, "int64", "int32"]),
  unary("Abs", [...FLOATS, "int64", "int32"]),
  unary("Exp"),
  unary("Log"),
  unary("Sqrt"),
  unary("Reciprocal"),
  unary("Sin"),
  unary("Cos"),
  unary("Erf"),
  unary("Tanh"),
  unary("Sigmoid"),
  unary("Relu"),
  unary("Identity", NUMERIC),
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
  },
);

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
