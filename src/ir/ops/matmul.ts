/** MatMul (numpy semantics, batched with broadcasting) and Gemm. */
import { dimEq, dimStr, shapeStr } from "../dims.js";
import { broadcast } from "./elementwise.js";
import { check, defineOps, need } from "./registry.js";

defineOps(
  {
    op: "MatMul",
    domain: "",
    infer([a, b]) {
      const x = need(a, "A");
      const y = need(b, "B");
      check(x.dtype === y.dtype, () => `MatMul operands differ in dtype: ${x.dtype} vs ${y.dtype}`);
      check(x.rank >= 1 && y.rank >= 1, "MatMul operands must have rank >= 1");
      const xs = x.rank === 1 ? [1, x.shape[0]!] : x.shape;
      const ys = y.rank === 1 ? [y.shape[0]!, 1] : y.shape;
      const k1 = xs[xs.length - 1]!;
      const k2 = ys[ys.length - 2]!;
      check(dimEq(k1, k2), () => `MatMul inner dimensions differ: A ${shapeStr(x.shape)} has ${dimStr(k1)}, B ${shapeStr(y.shape)} has ${dimStr(k2)}`);
      let batch;
      try {
        batch = broadcast(xs.slice(0, -2), ys.slice(0, -2));
      } catch {
        check(false, () => `MatMul batch dimensions do not broadcast: ${shapeStr(x.shape)} × ${shapeStr(y.shape)}`);
      }
      const out = [...batch!];
      if (x.rank !== 1) out.push(xs[xs.length - 2]!);
      if (y.rank !== 1) out.push(ys[ys.length - 1]!);
      return [{ dtype: x.dtype, shape: out }];
    },
  },
);
