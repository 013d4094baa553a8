/**
 * Composite ops (domain "sdc"): GroupNorm, LayerNorm, Attention. Models build these; the
 * `lowerComposites` pass then rewrites each one either into a fused ONNX/onnxruntime op
 * (GroupNormalization-21, LayerNormalization-17, com.microsoft MultiHeadAttention) or into
 * primitive ops — for gradients, or where the fused op has no kernel — recording why.
 * The shape rule and both expansions of each composite sit together here.
 */
import { dimEq, dimStr, shapeStr } from "../dims.js";
import type { Builder } from "../builder.js";
import type { Node, Value } from "../graph.js";
import { attrInt, check, checkRank, defineOps, need } from "./registry.js";

function num(n: Node, name: string): number {
  const v = n.attrs[name];
  if (typeof v !== "number") throw new Error(`${n.name}: attribute ${name} missing`);
  return v;
}

defineOps(
  {
    op: "GroupNorm",
    domain: "sdc",
    infer([d, s, b], attrs) {
      const x = need(d, "X");
      checkRank(x, [3, 4], "GroupNorm input");
      const groups = attrInt(attrs, "num_groups");
      const c = x.shape[1]!;
      check(typeof c === "number" && c % groups === 0, () => `GroupNorm: ${dimStr(c)} channels are not divisible into ${groups} groups`);
      for (const [v, what] of [[need(s, "scale"), "scale"], [need(b, "bias"), "bias"]] as const)
        check(v.rank === 1 && dimEq(v.shape[0]!, c), () => `GroupNorm ${what} ${shapeStr(v.shape)} must be [${dimStr(c)}]`);
      return [{ dtype: x.dtype, shape: [...x.shape] }];
    },
  },
  {
    op: "LayerNorm",
    domain: "sdc",
    infer([d, s, b]) {
      const x = need(d, "X");
      const c = x.shape[x.rank - 1]!;
      for (const [v, what] of [[need(s, "scale"), "scale"], [need(b, "bias"), "bias"]] as const)
        check(v.rank === 1 && dimEq(v.shape[0]!, c), () => `LayerNorm ${what} ${shapeStr(v.shape)} must be [${dimStr(c)}]`);
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
  },
  {
    op: "Attention",
    domain: "sdc",
    infer([qv, kv, vv, mv], attrs) {
      const q = need(qv, "query");
      const k = need(kv, "key");
      const v = need(vv, "value");
      const h = attrInt(attrs, "num_heads");
      for (const t of [q, k, v]) checkRank(t, 3, `Attention ${t === q ? "query" : t === k ? "key" : "value"}`);
      check(dimEq(q.shape[0]!, k.shape[0]!) && dimEq(k.shape[0]!, v.shape[0]!), "Attention batch sizes differ");
      check(dimEq(q.shape[2]!, k.shape[2]!), () => `Attention query ${shapeStr(q.shape)} and key ${shapeStr(k.shape)} widths differ`);
      check(dimEq(k.shape[1]!, v.shape[1]!), () => `Attention key ${shapeStr(k.shape)} and value ${shapeStr(v.shape)} lengths differ`);
      for (const t of [q, v]) check(typeof t.shape[2] === "number" && (t.shape[2] as number) % h === 0, () => `Attention width ${dimStr(t.shape[2]!)} is not divisible by ${h} heads`);
      if (mv) check(mv.rank === 2 && dimEq(mv.shape[0]!, q.shape[1]!) && dimEq(mv.shape[1]!, k.shape[1]!), () => `Attention mask ${shapeStr(mv.shape)} must be [query length, key length]`);
      return [{ dtype: q.dtype, shape: [q.shape[0]!, q.shape[1]!, v.shape[2]!] }];
    },
  },
);

/** How a composite is expanded: `fused` into one onnxruntime op, or `primitive` ops. */
export interface Expansion {
  fused(b: Builder, n: Node): Value;
  primitive(b: Builder, n: Node): Value;
}

export const EXPANSIONS: Record<string, Expansion> = {
  GroupNorm: {
    fused(b, n) {
      const [x, s, bias] = n.inputs as Value[];
      return b.op1("GroupNormalization", [x!, s!, bias!], { num_groups: num(n, "num_groups"), epsilon: num(n, "epsilon") });
    },
    primitive(b, n) {
      // x [B, C, ...] → [B, G, rest]; normalise over rest; back; affine per channel.
      const [x, s, bias] = n.inputs as Value[];
      const g = num(n, "num_groups");
      const eps = num(n, "epsilon");
      const xg = b.reshape(x!, [0, g, -1]);
      const y = normalizeLast(b, xg, eps);
      const back = b.reshapeLike(y, x!);
      const bshape = [-1, ...Array(x!.rank - 2).fill(1)];
      return b.add(b.mul(back, b.reshape(s!, bshape)), b.reshape(bias!, bshape));
    },
  },
  LayerNorm: {
    fused(b, n) {
      const [x, s, bias] = n.inputs as Value[];
      return b.op1("LayerNormalization", [x!, s!, bias!], { axis: -1, epsilon: num(n, "epsilon") });
    },
    primitive(b, n) {
      const [x, s, bias] = n.inputs as Value[];
      return b.add(b.mul(normalizeLast(b, x!, num(n, "epsilon")), s!), bias!);
    },
  },
  Gelu: {
    fused(b, n) {
      return b.op1("Gelu", [n.inputs[0]!]);
    },
    primitive(b, n) {
      // written with Div(x, √2): the form onnxruntime's GELU fusion recognises
      const x = n.inputs[0]!;
      const e = b.op1("Erf", [b.div(x, b.float(Math.SQRT2))]);
      return b.mul(b.mul(x, b.add(e, b.float(1))), b.float(0.5));
    },
  },
  Attention: {
    fused(b, n) {
      const [q, k, v, mask] = n.inputs;
      const attrs = { num_heads: num(n, "num_heads"), scale: num(n, "scale") };
      // MultiHeadAttention's attention_bias input is [B or 1, H or 1, S, L].
      const bias = mask ? b.unsqueeze(mask, [0, 1]) : null;
      const inputs = bias ? [q!, k!, v!, null, null, bias] : [q!, k!, v!];
      return b.op1("MultiHeadAttention", inputs, attrs, "com.microsoft");
    },
    primitive(b, n) {
      const [q, k, v, mask] = n.inputs;
      const h = num(n, "num_heads");
      const d = (q!.shape[2] as number) / h;
      const dv = (v!.shape[2] as number) / h;
      const qh = b.transpose(b.reshape(q!, [0, 0, h, d]), [0, 2, 1, 3]); // [B, H, S, d]
      const kt = b.transpose(b.reshape(k!, [0, 0, h, d]), [0, 2, 3, 1]); // [B, H, d, L]
      const vh = b.transpose(b.reshape(v!, [0, 0, h, dv]), [0, 2, 1, 3]); // [B, H, L, dv]
      let scores = b.mul(b.matmul(qh, kt), b.float(num(n, "scale")));
      if (mask) scores = b.add(scores, mask);
      const o = b.matmul(b.softmax(scores, -1), vh); // [B, H, S, dv]
      return b.reshape(b.transpose(o, [0, 2, 1, 3]), [0, 0, -1]);
    },
  },
};

/** (x − mean) / sqrt(var + eps) over the last axis, with the biased variance torch uses. */
function normalizeLast(b: Builder, x: Value, eps: number): Value {
  const axes = b.int64([-1]);
  const mean = b.op1("ReduceMean", [x, axes]);
  const xc = b.sub(x, mean);
  const variance = b.op1("ReduceMean", [b.mul(xc, xc), axes]);
  return b.div(xc, b.op1("Sqrt", [b.add(variance, b.float(eps))]));
}
