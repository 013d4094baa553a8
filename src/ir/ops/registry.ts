/**
 * The op registry: one `OpDef` per op, holding everything sdc knows about it: its shape rule,
 * the ONNX types of its attributes, its gradient rule, and for composites (domain "sdc") how
 * they are lowered. Op families live one per file (elementwise.ts, conv.ts, norm.ts, ...);
 * adding an op touches its family file and nothing else. The builder calls `infer` on every
 * node it creates, and `verify()` calls it again after each pass, so a shape error names the node.
 */
import { shapeStr, type Dim } from "../dims.js";
import type { Builder } from "../builder.js";
import type { Attrs, DType, Node, TensorType, Value } from "../graph.js";

/** ONNX attribute types; the writer emits each attribute as its op declares it. */
export type AttrType = "int" | "ints" | "float" | "floats" | "string" | "strings" | "tensor";

/** What a graph is lowered for: the composites' fusion rules decide from this. */
export interface LowerTarget {
  /** Execution provider the graph is meant for. */
  ep: "cpu" | "cuda";
  /** Gradients will be taken through the graph (fused contrib ops have no gradient rules). */
  training: boolean;
  /** Force primitives everywhere (tests compare the two lowerings). */
  primitivesOnly?: boolean;
  /** Force primitives for these composites only (measurements of one fusion at a time). */
  unfused?: string[];
}

/** How a composite op becomes ONNX: one fused onnxruntime op, or primitive ops, and when to fuse. */
export interface Lowering {
  /** The fused form for this target (a family may pick the op per execution provider). */
  fused(b: Builder, n: Node, t: LowerTarget): Value;
  primitive(b: Builder, n: Node): Value;
  /** null: fuse for this target; a string: the reason not to (recorded in the graph's notes). */
  whyNot(n: Node, t: LowerTarget): string | null;
}

/**
 * A vector-Jacobian product. Given the node and the cotangents of its outputs (null where an
 * output does not reach the loss), build the cotangent of each input with `b` (null: no gradient
 * flows into that input, e.g. an integer index or a shape). `wants[i]` says whether input i
 * needs a gradient at all, so a rule can skip work. Each result must have its input's dtype and
 * shape; the autodiff pass checks that and names the op and input when it does not.
 */
export type GradRule = (g: GradArgs) => (Value | null)[];

export interface GradArgs {
  b: Builder;
  node: Node;
  /** The node's inputs (null for omitted optional inputs). */
  x: (Value | null)[];
  /** The node's outputs. */
  y: Value[];
  /** Cotangents of the outputs, same dtype and shape as each output (null: no gradient). */
  dy: (Value | null)[];
  wants: boolean[];
}

export interface OpDef {
  op: string;
  /** ONNX domain: "" (ai.onnx), "com.microsoft", or "sdc" for composites that passes rewrite. */
  domain: string;
  /** Shape rule. Throws `ShapeError` (via `check`) with what was expected. Inputs may be null
   * for omitted optional inputs. May set `known` on outputs (see infer result). */
  infer(inputs: (Value | null)[], attrs: Attrs): InferResult[];
  /** ONNX types of the attributes this op takes; the writer refuses an undeclared attribute. */
  attrs?: Record<string, AttrType>;
  /** Gradient rule; absent: the op is not differentiable (autodiff names it if asked to). */
  grad?: GradRule;
  /** Composites only: the lowering into ONNX ops. */
  lower?: Lowering;
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
    if ((d.domain === "sdc") !== !!d.lower) throw new Error(`op ${k}: composites (domain sdc), and only they, need a lowering`);
    registry.set(k, d);
  }
}

/** Every registered op (tests check each one's declarations). */
export function allOps(): OpDef[] {
  return [...registry.values()];
}

/** The scalar value of a numeric attribute a node must have (lowerings and gradient rules). */
export function nodeNum(n: Node, name: string): number {
  const v = n.attrs[name];
  if (typeof v !== "number") throw new Error(`${n.name}: attribute ${name} missing`);
  return v;
}

export function getOp(domain: string, op: string): OpDef {
  const d = registry.get(opKey(domain, op));
  if (!d) throw new Error(`unknown op ${opKey(domain, op)}`);
  return d;
}
