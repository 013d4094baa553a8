/** onnxruntime's com.microsoft MultiHeadAttention (inference: self and cross attention). */
import { dimEq, shapeStr } from "../dims.js";
import { check, checkRank, defineOps, need } from "./registry.js";

defineOps({
  op: "MultiHeadAttention",
  domain: "com.microsoft",
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
});
