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
import { isFloat, type DType, type Graph, type Value } from "../ir/graph.js";
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

  for (let i = forward.length - 1; i >= 0; i--) {
    const n = forward[i]!;
    if (!n.outputs.some((o) => active(o) && cot.has(o))) continue;
    const wants = n.inputs.map((v) => active(v));
    if (!wants.some(Boolean)) continue;
    const where = `${n.name} (${n.domain ? n.domain + "::" : ""}${n.op})`;
    const def = getOp(n.domain, n.op);
    if (!def.grad) throw new GradError(`${where}: no gradient rule for ${n.op}; it lies between a trained value and the loss`);
    const dy = n.outputs.map((o) => (active(o) ? total(o) : null));
    b.enterNodeScope(`grad.${n.name}`);
    let res: (Value | null)[];
    try {
      res = def.grad({ b, node: n, x: n.inputs, y: n.outputs, dy, wants });
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
