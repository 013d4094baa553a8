/** Reductions (opset 18 form: axes as an input), Softmax, ArgMax, TopK, and their gradients. */
import { shapeStr, type Dim } from "../dims.js";
import type { Builder } from "../builder.js";
import type { Node, Value } from "../graph.js";
import { like } from "./grad-util.js";
import { attrInt, check, checkDtype, defineOps, need, normAxis, type GradRule, type OpDef } from "./registry.js";

function reducedAxes(x: Value, a: Value | null): number[] {
  if (!a) return [...Array(x.rank).keys()];
  check(a.known !== null && a.known.every((k) => typeof k === "number"), "reduction axes must be constant");
  return (a.known as number[]).map((ax) => normAxis(ax, x.rank));
}

function reduce(op: string, grad?: GradRule): OpDef {
  return {
    op,
    domain: "",
    attrs: { keepdims: "int", noop_with_empty_axes: "int" },
    infer([d, a], attrs) {
      const x = need(d, "data");
      const keep = attrInt(attrs, "keepdims", 1);
      const axes = reducedAxes(x, a);
      const shape: Dim[] = [];
      x.shape.forEach((dim, i) => {
        if (!axes.includes(i)) shape.push(dim);
        else if (keep) shape.push(1);
      });
      return [{ dtype: x.dtype, shape }];
    },
    grad,
  };
}

/** A reduction's output (or its cotangent) with the reduced axes kept as 1s. */
function keptDims(b: Builder, n: Node, v: Value): Value {
  if (attrInt(n.attrs, "keepdims", 1)) return v;
  return b.unsqueeze(v, reducedAxes(n.inputs[0]!, n.inputs[1] ?? null));
}

/** dY spread over the reduced axes: the gradient of a sum. */
function spread(b: Builder, n: Node, d: Value): Value {
  return b.op1("Expand", [keptDims(b, n, d), b.op1("Shape", [n.inputs[0]!])]);
}

defineOps(
  reduce("ReduceSum", ({ b, node, dy: [d] }) => [spread(b, node, d!), null]),
  // the sum's gradient divided by the number of elements averaged (counted at run time when symbolic)
  reduce("ReduceMean", ({ b, node, x: [x], dy: [d] }) => {
    const axes = reducedAxes(x!, node.inputs[1] ?? null);
    const dims = axes.map((a) => x!.shape[a]!);
    let count: Value;
    if (dims.every((z) => typeof z === "number")) count = like(b, d!, (dims as number[]).reduce((p, q) => p * q, 1));
    else count = b.cast(b.op1("ReduceProd", [b.gather(b.op1("Shape", [x!]), b.int64(axes))], { keepdims: 0 }), d!.dtype);
    return [b.div(spread(b, node, d!), count), null];
  }),
  // shared evenly among the elements equal to the maximum, as torch.amax does
  reduce("ReduceMax", ({ b, node, x: [x], y: [y], dy: [d] }) => {
    const axes = b.int64(reducedAxes(x!, node.inputs[1] ?? null));
    const mask = b.cast(b.op1("Equal", [x!, keptDims(b, node, y!)]), x!.dtype);
    const share = b.div(mask, b.op1("ReduceSum", [mask, axes], { keepdims: 1 }));
    return [b.mul(share, spread(b, node, d!)), null];
  }),
  reduce("ReduceProd"),
  {
    op: "Softmax",
    domain: "",
    attrs: { axis: "int" },
    infer([d], attrs) {
      const x = need(d, "input");
      normAxis(attrInt(attrs, "axis", -1), x.rank);
      return [{ dtype: x.dtype, shape: [...x.shape] }];
    },
    // dX = Y ⊙ (dY − Σ dY ⊙ Y) along the axis
    grad({ b, node, y: [y], dy: [d] }) {
      const axis = normAxis(attrInt(node.attrs, "axis", -1), y!.rank);
      const dot = b.op1("ReduceSum", [b.mul(d!, y!), b.int64([axis])], { keepdims: 1 });
      return [b.mul(y!, b.sub(d!, dot))];
    },
  },
  {
    op: "ArgMax",
    domain: "",
    attrs: { axis: "int", keepdims: "int", select_last_index: "int" },
    infer([d], attrs) {
      const x = need(d, "data");
      checkDtype(x, ["float32", "float16", "int32", "int64"], "ArgMax input");
      const axis = normAxis(attrInt(attrs, "axis", 0), x.rank);
      const keep = attrInt(attrs, "keepdims", 1);
      const shape = x.shape.flatMap((dim, i) => (i !== axis ? [dim] : keep ? [1] : []));
      return [{ dtype: "int64", shape }];
    },
  },
  {
    // TopK-11: the k largest (or smallest) along an axis, values and int64 indices; equal values in
    // index order (ONNX's tie rule). k must be a build-time constant. Not differentiable in sdc.
    op: "TopK",
    domain: "",
    attrs: { axis: "int", largest: "int", sorted: "int" },
    infer([d, kv], attrs) {
      const x = need(d, "X");
      const axis = normAxis(attrInt(attrs, "axis", -1), x.rank);
      check(!!kv && kv.known !== null && kv.known.length === 1 && typeof kv.known[0] === "number", "TopK k must be a constant [1] tensor");
      const k = kv!.known![0] as number;
      const dim = x.shape[axis]!;
      check(k >= 0 && (typeof dim !== "number" || k <= dim), () => `TopK k ${k} exceeds axis ${axis} of ${shapeStr(x.shape)}`);
      const shape = x.shape.map((z, i) => (i === axis ? k : z));
      return [
        { dtype: x.dtype, shape },
        { dtype: "int64", shape: [...shape] },
      ];
    },
  },
);
