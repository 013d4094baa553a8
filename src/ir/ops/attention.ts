/**
 * Attention: the composite models build (sdc.Attention: softmax(q kᵀ · scale + mask) v over
 * heads), onnxruntime's com.microsoft MultiHeadAttention it fuses into for inference, the
 * primitive expansion used for gradients, and the rule choosing between them.
 */
import { dimEq, dimStr, shapeStr } from "../dims.js";
import type { Value } from "../graph.js";
import { attrInt, check, checkRank, defineOps, need, nodeNum } from "./registry.js";

defineOps(
  {
    op: "MultiHeadAttention",
    domain: "com.microsoft",
    attrs: { num_heads: "int", scale: "float", mask_filter_value: "float", unidirectional: "int" },
    infer([qv, kv, vv, bias, kpm, ab]) {
      const q = need(qv, "query");
      const k = need(kv, "key");
      const v = need(vv, "value");
      for (const t of [q, k, v]) checkRank(t, 3, "MultiHeadAttention input");
      check(!bias && !kpm, "MultiHeadAttention bias/key_padding_mask inputs are not used by sdc");
      check(dimEq(q.shape[2]!, k.shape[2]!), () => `MultiHeadAttention query ${shapeStr(q.shape)} and key ${shapeStr(k.shape)} widths differ`);
      if (ab) checkRank(ab, 4, "MultiHeadAttention attention_bias");
      return [{ dtype: q.dtype, shape: [q.shape[0]!, q.shape[1]!, v.shape[2]!] }];
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
    lower: {
      whyNot(n, t) {
        if (t.training) return "gradients are taken through it (MultiHeadAttention has no gradient)";
        const q = n.inputs[0]!;
        if (q.dtype !== "float32" && q.dtype !== "float16") return `MultiHeadAttention does not take ${q.dtype}`;
        return null;
      },
      fused(b, n) {
        const [q, k, v, mask] = n.inputs;
        const attrs = { num_heads: nodeNum(n, "num_heads"), scale: nodeNum(n, "scale") };
        // MultiHeadAttention's attention_bias input is [B or 1, H or 1, S, L].
        const bias = mask ? b.unsqueeze(mask, [0, 1]) : null;
        const inputs = bias ? [q!, k!, v!, null, null, bias] : [q!, k!, v!];
        return b.op1("MultiHeadAttention", inputs, attrs, "com.microsoft");
      },
      primitive(b, n) {
        const [q, k, v, mask] = n.inputs as [Value, Value, Value, Value | null];
        const h = nodeNum(n, "num_heads");
        const d = (q.shape[2] as number) / h;
        const dv = (v.shape[2] as number) / h;
        const qh = b.transpose(b.reshape(q, [0, 0, h, d]), [0, 2, 1, 3]); // [B, H, S, d]
        const kt = b.transpose(b.reshape(k, [0, 0, h, d]), [0, 2, 3, 1]); // [B, H, d, L]
        const vh = b.transpose(b.reshape(v, [0, 0, h, dv]), [0, 2, 1, 3]); // [B, H, L, dv]
        let scores = b.mul(b.matmul(qh, kt), b.float(nodeNum(n, "scale")));
        if (mask) scores = b.add(scores, mask);
        const o = b.matmul(b.softmax(scores, -1), vh); // [B, H, S, dv]
        return b.reshape(b.transpose(o, [0, 2, 1, 3]), [0, 0, -1]);
      },
    },
  },
);
