/**
 * Normalisations as ONNX ops: LayerNormalization (opset 17) and GroupNormalization (opset 21,
 * per-channel scale and bias — opset 18's per-group form is avoided). The composite forms that
 * models build (sdc.GroupNorm, sdc.LayerNorm) and their lowering live in composites.ts.
 */
import { dimEq, dimStr, shapeStr } from "../dims.js";
import { attrInt, check, checkRank, defineOps, need, normAxis } from "./registry.js";

defineOps(
  {
    op: "LayerNormalization",
    domain: "",
    infer([d, s, b], attrs) {
      const x = need(d, "X");
      const scale = need(s, "Scale");
      const axis = normAxis(attrInt(attrs, "axis", -1), x.rank);
      const normShape = x.shape.slice(axis);
      check(scale.rank === normShape.length && scale.shape.every((z, i) => dimEq(z, normShape[i]!)), () => `LayerNormalization scale ${shapeStr(scale.shape)} does not match normalised shape ${shapeStr(normShape)}`);
      if (b) check(b.rank === normShape.length && b.shape.every((z, i) => dimEq(z, normShape[i]!)), () => `LayerNormalization bias ${shapeStr(b.shape)} does not match ${shapeStr(normShape)}`);
      return [{ dtype: x.dtype, shape: [...x.shape] }];
    },
  },
  {
    op: "GroupNormalization",
    domain: "",
    infer([d, s, b], attrs) {
      const x = need(d, "X");
      checkRank(x, [3, 4], "GroupNormalization input");
      const groups = attrInt(attrs, "num_groups");
      const c = x.shape[1]!;
      check(typeof c === "number" && c % groups === 0, () => `GroupNormalization: ${dimStr(c)} channels are not divisible into ${groups} groups`);
      for (const [v, what] of [[need(s, "scale"), "scale"], [need(b, "bias"), "bias"]] as const)
        check(v.rank === 1 && dimEq(v.shape[0]!, c), () => `GroupNormalization ${what} ${shapeStr(v.shape)} must be [${dimStr(c)}]`);
      return [{ dtype: x.dtype, shape: [...x.shape] }];
    },
  },
);
