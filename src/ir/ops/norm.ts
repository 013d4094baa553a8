/**
 * Normalisations. The composites models build (sdc.GroupNorm, sdc.LayerNorm) and the ONNX ops
 * they fuse into (GroupNormalization-21 with per-channel scale and bias — opset 18's per-group
 * form is avoided — and LayerNormalization-17) share their shape rules here, with both
 * lowerings and the rule deciding between them.
 */
import { dimEq, dimStr, shapeStr } from "../dims.js";
import type { Builder } from "../builder.js";
import type { Attrs, Value } from "../graph.js";
import { attrInt, check, checkRank, defineOps, need, nodeNum, normAxis, type InferResult } from "./registry.js";

/** x [B, C, ...] normalised in `num_groups` groups of channels; scale and bias are [C]. */
function groupNormShape(op: string, [d, s, b]: (Value | null)[], attrs: Attrs): InferResult[] {
  const x = need(d, "X");
  checkRank(x, [3, 4], `${op} input`);
  const groups = attrInt(attrs, "num_groups");
  const c = x.shape[1]!;
  check(typeof c === "number" && c % groups === 0, () => `${op}: ${dimStr(c)} channels are not divisible into ${groups} groups`);
  for (const [v, what] of [[need(s, "scale"), "scale"], [need(b, "bias"), "bias"]] as const)
    check(v.rank === 1 && dimEq(v.shape[0]!, c), () => `${op} ${what} ${shapeStr(v.shape)} must be [${dimStr(c)}]`);
  return [{ dtype: x.dtype, shape: [...x.shape] }];
}

/** x normalised over its axes from `axis` on; scale (and bias) have the normalised shape. */
function layerNormShape(op: string, [d, s, b]: (Value | null)[], axisAttr: number): InferResult[] {
  const x = need(d, "X");
  const axis = normAxis(axisAttr, x.rank);
  const normShape = x.shape.slice(axis);
  for (const [v, what] of [[need(s, "scale"), "scale"], [b, "bias"]] as const)
    if (v) check(v.rank === normShape.length && v.shape.every((z, i) => dimEq(z, normShape[i]!)), () => `${op} ${what} ${shapeStr(v.shape)} does not match normalised shape ${shapeStr(normShape)}`);
  return [{ dtype: x.dtype, shape: [...x.shape] }];
}

const trainingReason = "gradients are taken through it";

defineOps(
  {
    op: "GroupNormalization",
    domain: "",
    attrs: { num_groups: "int", epsilon: "float", stash_type: "int" },
    infer: (inputs, attrs) => groupNormShape("GroupNormalization", inputs, attrs),
  },
  {
    // x [B, C, ...] normalised over its spatial axes per (b, c), with per-channel scale and bias
    op: "InstanceNormalization",
    domain: "",
    attrs: { epsilon: "float" },
    infer([d, s, b]) {
      const x = need(d, "input");
      check(x.rank >= 3, () => `InstanceNormalization input must have rank ≥ 3, got ${shapeStr(x.shape)}`);
      for (const [v, what] of [[need(s, "scale"), "scale"], [need(b, "B"), "B"]] as const)
        check(v.rank === 1 && dimEq(v.shape[0]!, x.shape[1]!), () => `InstanceNormalization ${what} ${shapeStr(v.shape)} must be [${dimStr(x.shape[1]!)}]`);
      return [{ dtype: x.dtype, shape: [...x.shape] }];
    },
  },
  {
    op: "LayerNormalization",
    domain: "",
    attrs: { axis: "int", epsilon: "float", stash_type: "int" },
    infer: (inputs, attrs) => layerNormShape("LayerNormalization", inputs, attrInt(attrs, "axis", -1)),
  },
  {
    op: "GroupNorm",
    domain: "sdc",
    infer: (inputs, attrs) => groupNormShape("GroupNorm", inputs, attrs),
    lower: {
      whyNot: (_n, t) => (t.training ? trainingReason : null),
      fused(b, n, t) {
        const [x, s, bias] = n.inputs as Value[];
        const groups = nodeNum(n, "num_groups");
        const eps = nodeNum(n, "epsilon");
        if (t.ep === "cuda") return b.op1("GroupNormalization", [x!, s!, bias!], { num_groups: groups, epsilon: eps });
        // onnxruntime's CPU provider expands GroupNormalization-21 into a dozen nodes; the
        // InstanceNormalization form (what torch.onnx exports) runs as one kernel: x [B, C, ...] →
        // [B, G, rest] normalised per group, back, then the per-channel affine
        const xg = b.reshape(x!, [0, groups, -1]);
        const ones = b.float(new Array(groups).fill(1), [groups]);
        const zeros = b.float(new Array(groups).fill(0), [groups]);
        const back = b.reshapeLike(b.op1("InstanceNormalization", [xg, ones, zeros], { epsilon: eps }), x!);
        const bshape = [-1, ...Array(x!.rank - 2).fill(1)];
        return b.add(b.mul(back, b.reshape(s!, bshape)), b.reshape(bias!, bshape));
      },
      primitive(b, n) {
        // x [B, C, ...] → [B, G, rest]; normalise over rest; back; affine per channel.
        const [x, s, bias] = n.inputs as Value[];
        const xg = b.reshape(x!, [0, nodeNum(n, "num_groups"), -1]);
        const back = b.reshapeLike(normalizeLast(b, xg, nodeNum(n, "epsilon")), x!);
        const bshape = [-1, ...Array(x!.rank - 2).fill(1)];
        return b.add(b.mul(back, b.reshape(s!, bshape)), b.reshape(bias!, bshape));
      },
    },
  },
  {
    op: "LayerNorm",
    domain: "sdc",
    infer: (inputs) => layerNormShape("LayerNorm", [inputs[0]!, need(inputs[1], "scale"), need(inputs[2], "bias")], -1),
    lower: {
      whyNot: (_n, t) => (t.training ? trainingReason : null),
      fused(b, n) {
        const [x, s, bias] = n.inputs as Value[];
        return b.op1("LayerNormalization", [x!, s!, bias!], { axis: -1, epsilon: nodeNum(n, "epsilon") });
      },
      primitive(b, n) {
        const [x, s, bias] = n.inputs as Value[];
        return b.add(b.mul(normalizeLast(b, x!, nodeNum(n, "epsilon")), s!), bias!);
      },
    },
  },
);

/** (x − mean) / sqrt(var + eps) over the last axis, with the biased variance torch uses. */
function normalizeLast(b: Builder, x: Value, eps: number): Value {
  const axes = b.int64([-1]);
  const mean = b.op1("ReduceMean", [x, axes]);
  const xc = b.sub(x, mean);
  const variance = b.op1("ReduceMean", [b.mul(xc, xc), axes]);
  return b.div(xc, b.op1("Sqrt", [b.add(variance, b.float(eps))]));
}
