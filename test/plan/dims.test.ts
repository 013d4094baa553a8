/** Symbolic dimensions as plan.json writes them, evaluated: against the IR's own evaluation of the same dimensions. */
import { describe, expect, it } from "vitest";
import { dimDivRound, dimEval, dimMul, dimStr, sym } from "../../src/ir/dims.js";
import { evalDim } from "../../src/plan/dims.js";

describe("evalDim", () => {
  it("evaluates every form the IR writes, as the IR does", () => {
    const h = sym("height");
    const w = sym("width");
    const b = sym("batch");
    const q = dimDivRound(dimDivRound(h, 2, "ceil"), 2, "ceil");
    const dims = [b, dimMul(2, h), dimMul(dimDivRound(h, 2, "ceil"), dimDivRound(w, 2, "floor")), dimMul(b, dimMul(q, dimDivRound(w, 4, "ceil"))), dimMul(h, h), 7];
    for (const [height, width, batch] of [[9, 13, 2], [64, 48, 1], [7, 5, 3]] as const) {
      const env = { height, width, batch };
      for (const d of dims) expect(evalDim(typeof d === "number" ? d : dimStr(d), env), typeof d === "number" ? String(d) : dimStr(d)).toBe(dimEval(d, env));
    }
    expect(evalDim("height*width/64", { height: 64, width: 128 })).toBe(128);
  });
  it("names what it cannot evaluate", () => {
    expect(() => evalDim("height", {})).toThrow(/no size for height/);
    expect(() => evalDim("height/3", { height: 4 })).toThrow(/not divisible/);
  });
});
