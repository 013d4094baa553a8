/**
 * GELU and its relatives: ONNX Gelu-20 (erf or tanh form), com.microsoft QuickGelu
 * (x · sigmoid(αx): SiLU with α = 1, CLIP's quick_gelu with α = 1.702), and the composite
 * sdc.Gelu models build, lowered to Gelu-20 or to the erf expression onnxruntime fuses.
 */
import type { DType } from "../graph.js";
import { like } from "./grad-util.js";
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
    // erf form: d/dx x·Φ(x) = Φ(x) + x·φ(x), Φ(x) = ½(1 + erf(x/√2)), φ(x) = e^(−x²/2)/√(2π)
    grad({ b, node, x: [x], dy: [d] }) {
      check((node.attrs.approximate ?? "none") === "none", "sdc has no gradient rule for Gelu's tanh approximation; use the erf form (approximate: none)");
      const cdf = b.mul(b.add(b.op1("Erf", [b.div(x!, like(b, x!, Math.SQRT2))]), like(b, x!, 1)), like(b, x!, 0.5));
      const pdf = b.mul(b.op1("Exp", [b.mul(b.mul(x!, x!), like(b, x!, -0.5))]), like(b, x!, 1 / Math.sqrt(2 * Math.PI)));
      return [b.mul(d!, b.add(cdf, b.mul(x!, pdf)))];
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
    // y = x·σ(αx): dy/dx = σ(αx) + αx·σ(αx)(1 − σ(αx))
    grad({ b, node, x: [x], dy: [d] }) {
      const alpha = typeof node.attrs.alpha === "number" ? node.attrs.alpha : 1;
      const ax = b.mul(x!, like(b, x!, alpha));
      const s = b.sigmoid(ax);
      return [b.mul(d!, b.add(s, b.mul(ax, b.mul(s, b.sub(like(b, s, 1), s)))))];
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
