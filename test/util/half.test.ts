/** float16 → float32: the table-driven bulk conversion gives halfToFloat's value for every one of the 65,536 halfs. */
import { describe, expect, it } from "vitest";
import { f16ToF32, halfToFloat } from "../../src/util/half.js";

describe("f16ToF32", () => {
  it("equals halfToFloat on every bit pattern (NaNs stay NaN, ±0 keep their sign)", () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const got = f16ToF32(new Uint8Array(all.buffer));
    const wrong: number[] = [];
    for (let h = 0; h < 65536; h++) {
      const want = Math.fround(halfToFloat(h));
      if (!(Object.is(got[h], want) || (Number.isNaN(got[h]) && Number.isNaN(want)))) wrong.push(h);
    }
    expect(wrong).toEqual([]);
    expect([got[0x3c00], got[0xc000], got[0x0001], got[0x7bff], got[0x7c00]]).toEqual([1, -2, 2 ** -24, 65504, Infinity]);
    expect(Object.is(got[0x8000], -0)).toBe(true);
  });
  it("reads from an unaligned view", () => {
    const bytes = new Uint8Array([0xff, 0x00, 0x3c, 0x00, 0xc0]);
    expect(Array.from(f16ToF32(bytes.subarray(1)))).toEqual([1, -2]);
  });
});
