import { describe, expect, it } from "vitest";
import { dimDiv, dimDivRound, dimEq, dimEval, dimMul, dimProd, dimRequirement, dimStr, sym } from "../../src/ir/dims.js";

describe("symbolic dimensions", () => {
  const h = sym("height");
  const w = sym("width");
  it("multiplies and divides monomials exactly", () => {
    const hw8 = dimDiv(dimMul(h, w), 64);
    expect(dimStr(hw8)).toBe("height*width/64");
    expect(dimStr(dimMul(dimDiv(h, 8), 2))).toBe("height/4");
    expect(dimEq(dimMul(dimDiv(h, 2), 2), h)).toBe(true);
    expect(dimStr(dimProd([2, sym("batch")]))).toBe("2*batch");
    expect(dimDiv(dimMul(h, 6), dimMul(h, 3))).toBe(2);
  });
  it("refuses symbols in a denominator", () => {
    expect(() => dimDiv(8, h)).toThrow(/cannot divide 8 by height/);
    expect(() => dimDiv(h, w)).toThrow(/cannot divide height by width/);
  });
  it("records divisibility requirements and evaluates", () => {
    expect(dimRequirement(dimDiv(h, 8))).toEqual({ expr: "height", multipleOf: 8 });
    expect(dimRequirement(h)).toBeNull();
    expect(dimEval(dimDiv(dimMul(h, w), 64), { height: 64, width: 96 })).toBe(96);
    expect(() => dimEval(dimDiv(h, 8), { height: 12 })).toThrow(/not an integer/);
  });

  it("rounds quotients into atoms that nest and evaluate like ⌈x/a⌉ and ⌊x/a⌋", () => {
    const c2 = dimDivRound(h, 2, "ceil");
    expect(dimStr(c2)).toBe("⌈height/2⌉");
    expect(dimEq(dimDivRound(c2, 2, "ceil"), dimDivRound(h, 4, "ceil"))).toBe(true);
    expect(dimEq(dimDivRound(h, 2, "floor"), c2)).toBe(false);
    expect(dimDivRound(dimMul(h, 4), 2, "ceil")).toEqual(dimMul(h, 2)); // exact: no atom
    expect(dimDivRound(9, 2, "ceil")).toBe(5);
    for (const x of [8, 9, 10, 13, 85]) {
      expect(dimEval(dimDivRound(dimDivRound(h, 2, "ceil"), 2, "ceil"), { height: x })).toBe(Math.ceil(Math.ceil(x / 2) / 2));
      expect(dimEval(dimDivRound(h, 8, "floor"), { height: x })).toBe(Math.floor(x / 8));
    }
  });
});
