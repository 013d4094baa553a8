/** MatMul (numpy semantics, batched with broadcasting) and its gradient. */
import { dimEq, dimStr, shapeStr } from "../dims.js";
import type { Builder } from "../builder.js";
import type { Value } from "../graph.js";
import { broadcast } from "./elementwise.js";
import { sumTo } from "./grad-util.js";
import { check, defineOps, need } from "./registry.js";

/** Swap the last two axes. */
function mT(b: Builder, v: Value): Value {
  return b.transpose(v, [...Array(v.rank - 2).keys(), v.rank - 1, v.rank - 2]);
}

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
    // Y = A B: dA = dY Bᵀ, dB = Aᵀ dY, each summed over the batch axes its operand was broadcast
    // along. A weight [K, N] against batched A [..., M, K] folds the batch into M instead, so
    // dB is one [K, ·] × [·, N] product and not a stack of them.
    grad({ b, x: [p, q], dy: [d], wants }) {
      const a = p!;
      const w = q!;
      if (a.rank < 2 || w.rank < 2) throw new Error("the MatMul gradient needs operands of rank ≥ 2");
      const da = wants[0] ? sumTo(b, b.matmul(d!, mT(b, w)), a) : null;
      let dw: Value | null = null;
      if (wants[1]) {
        const [k, n] = w.shape;
        if (w.rank === 2 && a.rank > 2 && typeof k === "number" && typeof n === "number") {
          dw = b.matmul(b.transpose(b.reshape(a, [-1, k]), [1, 0]), b.reshape(d!, [-1, n]));
        } else dw = sumTo(b, b.matmul(mT(b, a), d!), w);
      }
      return [da, dw];
    },
  },
);
