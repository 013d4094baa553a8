/**
 * GELU and its relatives: ONNX Gelu-20 (erf or tanh form), com.microsoft QuickGelu
 * (x · sigmoid(αx): SiLU with α = 1, CLIP's quick_gelu with α = 1.702), and the composite
 * sdc.Gelu models build, lowered to Gelu-20 or to the erf expression onnxruntime fuses.
 */
import type { DType } from "../graph.js";
import { check, defineOps, need } from "./registry.js";

const FLOATS: DType[] = ["float32", "float16", "bfloat16", "float64"];

defineOps(
  {
    op: "Gelu",
    domain: "",
    attrs: { approximate: "string" },
    infer([a], attrs) {
      const x = need(a, "X");
      const approx = attrs.approximate ?? "none";
      check(approx === "none" || approx === "tanh", `Gelu approximate must be none or tanh`);
      return [{ dtype: x.dtype, shape: [...x.shape] }];
    },
  },
  {
    op: "QuickGelu",
    domain: "com.microsoft",
    attrs: { alpha: "float" },
    infer([a]) {
      const x = need(a, "X");
      check(FLOATS.includes(x.dtype), () => `QuickGelu does not take ${x.dtype}`);
      return [{ dtype: x.dtype, shape: [...x.shape] }];
    },
  },
  {
    op: "Gelu",
    domain: "sdc",
    infer([d]) {
      const x = need(d, "X");
      return [{ dtype: x.dtype, shape: [...x.shape] }];
    },
    lower: {
      whyNot: () => null,
      fused: (b, n) => b.op1("Gelu", [n.inputs[0]!]),
      primitive(b, n) {
        // written with Div(x, √2): the form onnxruntime's GELU fusion recognises
        const x = n.inputs[0]!;
        const e = b.op1("Erf", [b.div(x, b.float(Math.SQRT2))]);
        return b.mul(b.mul(x, b.add(e, b.float(1))), b.float(0.5));
      },
    },
  },
);
