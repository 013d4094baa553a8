/**
 * Reverse-mode differentiation over the IR. The engine holds no op-specific code: each op's
 * vector-Jacobian rule sits in its family file (`OpDef.grad`). Work is pruned by reachability:
 * only nodes on a path from a differentiated value to the loss get a rule applied, so frozen
 * weights, integer inputs and shape arithmetic cost nothing. Fan-out cotangents are summed.
 * Every rule's result is checked against its input's dtype and shape, and an error names the
 * node (scoped like the checkpoint key), the op and the input.
 */
import { shapeEq, shapeStr } from "../ir/dims.js";
import { Builder } from "../ir/builder.js";
import { isFloat, Node, Value, type DType, type Graph } from "../ir/graph.js";
import { getOp } from "../ir/ops/index.js";

export class GradError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GradError";
  }
}

export interface GradOptions {
  /** The loss's cotangent (default: ones, i.e. d loss / d loss = 1). */
  seed?: Value;
  /**
   * Gradient checkpointing: the segment (e.g. a module's scope) a forward node belongs to, or
   * null. A segment's activations are not kept for the backward pass: when the backward reaches
   * it, its forward nodes are emitted again from its inputs, made to wait for the backward so far.
   */
  checkpoint?: (nodeName: string) => string | null;
  /** Float type of constants the rules make with `b.float` (the graph's activation dtype). */
  floatType?: DType;
}

/**
 * Appends to `g` the nodes computing d loss / d w for each w in `wrt` (graph inputs or
 * constants) and returns them in order; null where w does not reach the loss.
 */
export function differentiate(g: Graph, loss: Value, wrt: Value[], opts: GradOptions = {}): (Value | null)[] {
  const forward = [...g.nodes];
  // values that depend on something differentiated…
  const depends = new Set<Value>(wrt);
  for (const n of forward) if (n.inputs.some((v) => v && depends.has(v))) for (const o of n.outputs) if (isFloat(o.dtype)) depends.add(o);
  // …and that the loss depends on
  const needed = new Set<Value>([loss]);
  for (let i = forward.length - 1; i >= 0; i--) {
    const n = forward[i]!;
    if (n.outputs.some((o) => needed.has(o))) for (const v of n.inputs) if (v) needed.add(v);
  }
  const active = (v: Value | null): v is Value => !!v && depends.has(v) && needed.has(v);

  const b = new Builder(g, undefined, opts.floatType ?? "float32");
  const cot = new Map<Value, Value[]>();
  const total = (v: Value): Value | null => {
    const list = cot.get(v);
    if (!list) return null;
    if (list.length > 1) {
      b.enterNodeScope(`grad.${v.name}/sum`);
      const sum = list.reduce((acc, t) => b.add(acc, t));
      cot.set(v, [sum]);
      return sum;
    }
    return list[0]!;
  };

  if (!active(loss)) return wrt.map(() => null);
  let seed = opts.seed ?? b.scalar(1, loss.dtype);
  if (!opts.seed && loss.rank > 0) seed = b.op1("Expand", [seed, b.op1("Shape", [loss])]);
  cot.set(loss, [seed]);

  // gradient checkpointing: segments of forward nodes, and their recomputed copies once made
  const segOf = new Map<Node, string>();
  const segments = new Map<string, Node[]>();
  if (opts.checkpoint)
    for (const n of forward) {
      const s = opts.checkpoint(n.name);
      if (s === null) continue;
      segOf.set(n, s);
      const list = segments.get(s);
      if (list) list.push(n);
      else segments.set(s, [n]);
    }
  const copies = new Map<Node, Node>();
  const recompute = (seg: string, anchor: Value) => {
    const nodes = segments.get(seg)!;
    const inside = new Set(nodes.flatMap((n) => n.outputs));
    const map = new Map<Value, Value>();
    b.enterNodeScope(`recompute_inputs.${seg}/x`);
    // the copies' float inputs get + 0·(one element of a cotangent), so they wait for the backward
    const zero = b.mul(b.gather(b.reshape(anchor, [-1]), b.int64(0)), b.scalar(0, anchor.dtype));
    const zeros = new Map<DType, Value>();
    const late = (v: Value): Value => {
      if (!isFloat(v.dtype) || v.kind === "const") return v;
      let z = zeros.get(v.dtype);
      if (!z) zeros.set(v.dtype, (z = b.cast(zero, v.dtype)));
      const w = b.add(v, z);
      map.set(v, w);
      return w;
    };
    for (const n of nodes) {
      const ins = n.inputs.map((v) => (v ? (map.get(v) ?? (inside.has(v) ? v : late(v))) : null));
      const outs = n.outputs.map((o) => new Value(`recompute.${o.name}`, { ...o.type }, "node"));
      const c = new Node(n.op, n.domain, ins, outs, n.attrs, `recompute.${n.name}`);
      outs.forEach((o, k) => {
        o.producer = c;
        o.known = n.outputs[k]!.known;
        map.set(n.outputs[k]!, o);
      });
      g.nodes.push(c);
      copies.set(n, c);
    }
  };

  for (let i = forward.length - 1; i >= 0; i--) {
    const n = forward[i]!;
    if (!n.outputs.some((o) => active(o) && cot.has(o))) continue;
    const wants = n.inputs.map((v) => active(v));
    if (!wants.some(Boolean)) continue;
    const where = `${n.name} (${n.domain ? n.domain + "::" : ""}${n.op})`;
    const def = getOp(n.domain, n.op);
    if (!def.grad) throw new GradError(`${where}: no gradient rule for ${n.op}; it lies between a trained value and the loss`);
    const dy = n.outputs.map((o) => (active(o) ? total(o) : null));
    const seg = segOf.get(n);
    if (seg !== undefined && !copies.has(n)) recompute(seg, dy.find((d) => d)!);
    const at = copies.get(n) ?? n;
    b.enterNodeScope(`grad.${n.name}`);
    let res: (Value | null)[];
    try {
      res = def.grad({ b, node: at, x: at.inputs, y: at.outputs, dy, wants });
    } catch (e) {
      throw new GradError(`${where}: ${(e as Error).message}`);
    }
    n.inputs.forEach((v, k) => {
      const r = res[k];
      if (!wants[k] || !r || !v) return;
      if (r.dtype !== v.dtype || !shapeEq(r.shape, v.shape))
        throw new GradError(`${where}: the gradient of input ${k} (${v.name}) is ${r.dtype}${shapeStr(r.shape)}, expected ${v.dtype}${shapeStr(v.shape)}`);
      const list = cot.get(v);
      if (list) list.push(r);
      else cot.set(v, [r]);
    });
  }
  return wrt.map((w) => (active(w) ? total(w) : null));
}
