import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { fmaf, TorchGenerator } from "../../src/runtime/rng.js";
import { UserError } from "../../src/util/errors.js";
import { FIXTURES } from "../helpers/repo.js";
import { readSafetensorsWithMetadata } from "./helpers.js";

const { tensors, metadata } = readSafetensorsWithMetadata(path.join(FIXTURES, "runtime", "torch_rng.safetensors"));

function ref(name: string): Float32Array {
  const t = tensors.get(name);
  if (!t || !(t.data instanceof Float32Array)) throw new Error(`fixture ${name} missing`);
  return t.data;
}

/** Indices where the float32 bit patterns differ (bit-exact comparison; -0 and +0 differ). */
function bitDiff(a: Float32Array, b: Float32Array): number[] {
  expect(a.length).toBe(b.length);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  const bad: number[] = [];
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) bad.push(i);
  return bad;
}

const SEEDS = [0n, 1n, 42n, 2n ** 32n - 1n, 2n ** 32n + 5n, 2n ** 63n + 12345n, 2n ** 64n - 1n];
const SIZES = [1, 2, 15, 16, 17, 31, 64, 4 * 64 * 64];

describe("TorchGenerator reproduces torch's CPU generator bit for bit", () => {
  it(`randn for seeds ${SEEDS.join(", ")} and sizes ${SIZES.join(", ")}`, () => {
    for (const seed of SEEDS) {
      for (const n of SIZES) {
        const got = new TorchGenerator(seed).randn(n);
        expect(bitDiff(got, ref(`randn.s${seed}.n${n}`)), `seed ${seed}, n ${n}`).toEqual([]);
      }
    }
  });

  it("consecutive randn calls of mixed sizes continue the stream (scalar cache included)", () => {
    const sizes = JSON.parse(metadata.seq_sizes!) as number[];
    for (const seed of [0, 123]) {
      const g = new TorchGenerator(seed);
      const parts = sizes.map((n) => g.randn(n));
      const got = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
      let o = 0;
      for (const p of parts) {
        got.set(p, o);
        o += p.length;
      }
      expect(bitDiff(got, ref(`seq.randn.s${seed}`))).toEqual([]);
    }
  });

  it("2000 scalar randn(1) calls (float64 Box-Muller, cached pair)", () => {
    const g = new TorchGenerator(3);
    const got = new Float32Array(2000);
    for (let i = 0; i < 2000; i++) got[i] = g.randn(1)[0]!;
    expect(bitDiff(got, ref("scalar.s3"))).toEqual([]);
  });

  it("rand and randint, alone and interleaved with randn", () => {
    for (const seed of [0, 7]) {
      for (const n of [1, 7, 16, 100]) expect(bitDiff(new TorchGenerator(seed).rand(n), ref(`rand.s${seed}.n${n}`))).toEqual([]);
      for (const [lo, hi, n] of [
        [0, 1000, 64],
        [-5, 5, 10],
        [0, 2 ** 32, 4],
        [0, 2 ** 40, 8],
        [3, 4, 3],
      ] as const) {
        const want = tensors.get(`randint.s${seed}.${lo}_${hi}.n${n}`)!.data as BigInt64Array;
        expect(new TorchGenerator(seed).randint(lo, hi, n)).toEqual(Array.from(want, Number));
      }
    }
    const mixed = JSON.parse(metadata.mixed!) as [string, number | [number, number, number]][];
    for (const seed of [0, 123]) {
      const g = new TorchGenerator(seed);
      const got: number[] = [];
      for (const [kind, arg] of mixed) {
        if (kind === "randn") got.push(...g.randn(arg as number));
        else if (kind === "rand") got.push(...g.rand(arg as number));
        else got.push(...g.randint(...(arg as [number, number, number])));
      }
      expect(bitDiff(Float32Array.from(got), ref(`mixed.s${seed}`))).toEqual([]);
    }
  });

  it("seeds by the low 32 bits, like at::mt19937", () => {
    expect(Array.from(new TorchGenerator(2n ** 32n + 5n).randn(20))).toEqual(Array.from(new TorchGenerator(5).randn(20)));
    expect(new TorchGenerator(2n ** 63n).seed).toBe(2n ** 63n);
  });

  it("clone continues the same stream", () => {
    const g = new TorchGenerator(9);
    g.randn(3);
    const c = g.clone();
    expect(Array.from(c.randn(40))).toEqual(Array.from(g.randn(40)));
  });

  it("rejects seeds torch would not take", () => {
    for (const bad of [-1, 1.5, Number.NaN, 2 ** 60, -1n, 2n ** 64n]) {
      expect(() => new TorchGenerator(bad as number | bigint), String(bad)).toThrow(UserError);
    }
    expect(() => new TorchGenerator(0).randint(5, 5, 1)).toThrow(UserError);
  });
});

describe("fmaf", () => {
  it("rounds once, also where rounding through float64 would round twice", () => {
    // a*b + c = 1 + 3*2^-24 - 3*2^-56 exactly. Rounded to float64 that is 1 + 3*2^-24, halfway
    // between the floats 1 + 2^-23 and 1 + 2^-22, and ties-to-even picks 1 + 2^-22; the exact value
    // is below the midpoint, so a single rounding gives 1 + 2^-23.
    const a = 3 * 2 ** -24 * (1 + 2 ** -16);
    const b = 1 - 2 ** -16;
    expect(Math.fround(a)).toBe(a);
    expect(Math.fround(b)).toBe(b);
    expect(Math.fround(a * b + 1)).toBe(1 + 2 ** -22);
    expect(fmaf(a, b, 1)).toBe(1 + 2 ** -23);
    expect(fmaf(-a, b, -1)).toBe(-(1 + 2 ** -23));
    expect(fmaf(Math.fround(0.1), Math.fround(0.2), Math.fround(0.3))).toBe(Math.fround(Math.fround(0.1) * Math.fround(0.2) + Math.fround(0.3)));
  });
});
