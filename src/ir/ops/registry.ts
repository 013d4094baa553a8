/**
 * The op registry: one `OpDef` per op, each holding its shape rule (and, for composites, its
 * expansion into other ops). Op families live one per file (elementwise.ts, conv.ts, ...); adding
 * an op touches its family file and nothing else. The builder calls `infer` on every node it
 * creates, and `verify()` calls it again after each pass, so a shape error names the node.
 */
import { shapeStr, type Dim } from "../dims.js";
import type { Attrs, DType, TensorType, Value } from "../graph.js";

export interface OpDef {
  op: string;
  /** ONNX domain: "" (ai.onnx), "com.microsoft", or "sdc" for composites that passes rewrite. */
  domain: string;
  /** Shape rule. Throws `ShapeError` (via `check`) with what was expected. Inputs may be null
   * for omitted optional inputs. May set `known` on outputs (see infer result). */
  infer(inputs: (Value | null)[], attrs: Attrs): InferResult[];
}

export interface InferResult extends TensorType {
  /** Known contents of a small integer output (e.g. Shape's). */
  known?: Dim[];
}

export class ShapeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ShapeError";
  }
}

/** Throws a ShapeError when `cond` is false; the builder adds the node's name and op. */
export function check(cond: boolean, message: string | (() => string)): asserts cond {
  if (!cond) throw new ShapeError(typeof message === "string" ? message : message());
}

export function need(v: Value | null | undefined, what: string): Value {
  check(!!v, `missing input ${what}`);
  return v!;
}

export function checkDtype(v: Value, allowed: readonly DType[], what: string): void {
  check(allowed.includes(v.dtype), () => `${what} must be ${allowed.join(" or ")}, got ${v.dtype}`);
}

export function checkRank(v: Value, rank: number | number[], what: string): void {
  const ok = Array.isArray(rank) ? rank.includes(v.rank) : v.rank === rank;
  check(ok, () => `${what} must have rank ${Array.isArray(rank) ? rank.join(" or ") : rank}, got shape ${shapeStr(v.shape)}`);
}

export function attrInt(attrs: Attrs, name: string, dflt?: number): number {
  const v = attrs[name];
  if (v === undefined) {
    if (dflt === undefined) throw new ShapeError(`missing attribute ${name}`);
    return dflt;
  }
  if (typeof v !== "number") throw new ShapeError(`attribute ${name} must be a number`);
  return v;
}

export function attrInts(attrs: Attrs, name: string, dflt?: number[]): number[] {
  const v = attrs[name];
  if (v === undefined) {
    if (dflt === undefined) throw new ShapeError(`missing attribute ${name}`);
    return dflt;
  }
  if (!Array.isArray(v) || v.some((x) => typeof x !== "number")) throw new ShapeError(`attribute ${name} must be a list of ints`);
  return v as number[];
}

export function normAxis(axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  check(a >= 0 && a < rank, `axis ${axis} out of range for rank ${rank}`);
  return a;
}

const registry = new Map<string, OpDef>();

export function opKey(domain: string, op: string): string {
  return domain ? `${domain}::${op}` : op;
}

export function defineOps(...defs: OpDef[]): void {
  for (const d of defs) {
    const k = opKey(d.domain, d.op);
    if (registry.has(k)) throw new Error(`op ${k} defined twice`);
    registry.set(k, d);
  }
}

export function getOp(domain: string, op: string): OpDef {
  const d = registry.get(opKey(domain, op));
  if (!d) throw new Error(`unknown op ${opKey(domain, op)}`);
  return d;
}
