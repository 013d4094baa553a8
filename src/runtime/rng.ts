/**
 * PyTorch's CPU random number generator, reproduced so that a seed gives the numbers
 * `torch.Generator("cpu").manual_seed(seed)` gives: the initial latents and ancestral noise diffusers
 * draws with a CPU generator, on every machine sdc runs on.
 *
 * What it matches (bit-exact, tested against recorded torch outputs):
 *  - seeding: at::mt19937 seeded with the low 32 bits of the 64-bit seed (so 2^32+5 acts as 5);
 *  - `randn(n)` for float32, contiguous:
 *      n >= 16: torch's `normal_fill` path on x86-64 CPUs with AVX2 (official wheels, Linux/Windows,
 *        Intel Macs): n uniforms (24 random bits each), then Box–Muller in blocks of 16 pairing lanes
 *        j and j+8, using the float32 Cephes polynomials of ATen's avx_mathfun.h with the fused
 *        multiply-adds GCC contracts them into; if n is not a multiple of 16, the last 16 values
 *        are drawn again and recomputed;
 *      n < 16: the scalar path, float64 Box–Muller from two 53-bit uniforms per pair, caching the
 *        second value for the next small call (manual_seed clears the cache);
 *  - `rand(n)`: float32 uniforms in [0, 1), 24 random bits each;
 *  - `randint(low, high, n)`: int64 as torch.randint: one 32-bit draw modulo the range, or a 64-bit
 *    draw when the range is 2^32 or more;
 *  - consecutive calls of any sizes continue the same stream.
 * Not matched: torch builds without AVX2 (e.g. Apple Silicon) compute the n >= 16 path with libm
 * and differ in the last bits; float16/bfloat16 `randn`; CUDA generators.
 */
import { fail } from "../util/errors.js";

const N = 624;
const M = 397;

// float32 bit access for the exponent/mantissa split in log and for float neighbours
const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);
const fr = Math.fround;

export interface GeneratorState {
  seed: string;
  /** The 624 words of the Mersenne Twister, base64. */
  state: string;
  index: number;
  nextDoubleNormal: number | null;
}

export class TorchGenerator {
  /** The seed as torch stores it (what `initial_seed()` returns). */
  readonly seed: bigint;
  private readonly state = new Uint32Array(N);
  private index = N;
  /** The second value of the last scalar Box–Muller pair, used by the next small randn. */
  private nextDoubleNormal: number | null = null;

  /** `torch.Generator("cpu").manual_seed(seed)`; seed is an integer in [0, 2^64). */
  constructor(seed: number | bigint) {
    this.seed = checkSeed(seed);
    const s = this.state;
    s[0] = Number(this.seed & 0xffffffffn);
    for (let i = 1; i < N; i++) {
      const prev = s[i - 1]!;
      s[i] = Math.imul(1812433253, prev ^ (prev >>> 30)) + i;
    }
  }

  /** The full state, as plain JSON (for checkpoints): restoring it continues the stream exactly. */
  getState(): GeneratorState {
    return { seed: this.seed.toString(), state: Buffer.from(this.state.buffer.slice(0)).toString("base64"), index: this.index, nextDoubleNormal: this.nextDoubleNormal };
  }

  static fromState(s: GeneratorState): TorchGenerator {
    const g = new TorchGenerator(BigInt(s.seed));
    const bytes = Buffer.from(s.state, "base64");
    if (bytes.byteLength !== N * 4 || !Number.isInteger(s.index) || s.index < 0 || s.index > N) throw new Error("a generator state that is not one: wrong size or index");
    g.state.set(new Uint32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)));
    g.index = s.index;
    g.nextDoubleNormal = s.nextDoubleNormal;
    return g;
  }

  /** A copy with the same state, for continuing one stream in two places. */
  clone(): TorchGenerator {
    const g = new TorchGenerator(this.seed);
    g.state.set(this.state);
    g.index = this.index;
    g.nextDoubleNormal = this.nextDoubleNormal;
    return g;
  }

  /** One 32-bit draw (CPUGeneratorImpl::random). */
  random(): number {
    if (this.index >= N) this.twist();
    let y = this.state[this.index++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** One 64-bit draw: the first 32-bit draw is the high half (CPUGeneratorImpl::random64). */
  random64(): bigint {
    const hi = this.random();
    const lo = this.random();
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  /** What torch.randn(n, generator=g, dtype=torch.float32) gives on the CPU. */
  randn(n: number): Float32Array {
    checkCount(n);
    const out = new Float32Array(n);
    if (n >= 16) {
      for (let i = 0; i < n; i++) out[i] = this.uniform24();
      for (let i = 0; i + 16 <= n; i += 16) normalFill16(out, i);
      if (n % 16 !== 0) {
        const tail = n - 16;
        for (let j = 0; j < 16; j++) out[tail + j] = this.uniform24();
        normalFill16(out, tail);
      }
    } else {
      for (let i = 0; i < n; i++) out[i] = this.scalarNormal();
    }
    return out;
  }

  /** What torch.rand(n, generator=g) (float32, uniform in [0, 1)) gives. */
  rand(n: number): Float32Array {
    checkCount(n);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.uniform24();
    return out;
  }

  /** What torch.randint(low, high, (n,), generator=g) (int64) gives; values as numbers. */
  randint(low: number, high: number, n: number): number[] {
    checkCount(n);
    if (!Number.isSafeInteger(low) || !Number.isSafeInteger(high) || high <= low)
      fail(`randint needs integers low < high, got low=${low}, high=${high}`, { subject: "randint" });
    const range = BigInt(high) - BigInt(low);
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      if (range >= 1n << 32n) out.push(Number((this.random64() % range) + BigInt(low)));
      else out.push((this.random() % Number(range)) + low);
    }
    return out;
  }

  /** uniform_real_distribution<float>(0, 1): 24 random bits. */
  private uniform24(): number {
    return (this.random() & 0xffffff) * 5.9604644775390625e-8; // 2^-24
  }

  /** normal_distribution<double>(0, 1), cast to float. */
  private scalarNormal(): number {
    if (this.nextDoubleNormal !== null) {
      const v = this.nextDoubleNormal;
      this.nextDoubleNormal = null;
      return fr(v);
    }
    const u1 = this.uniform53();
    const u2 = this.uniform53();
    // torch >= 2.1 writes log1p(-u2), 1.13 log(1 - u2): 1 - u2 is exact, so both are log of one number
    const r = Math.sqrt(-2 * Math.log1p(-u2));
    const theta = 2 * Math.PI * u1;
    this.nextDoubleNormal = r * Math.sin(theta);
    return fr(r * Math.cos(theta));
  }

  /** uniform_real_distribution<double>(0, 1): 53 bits of a 64-bit draw. */
  private uniform53(): number {
    const hi = this.random() & 0x1fffff;
    const lo = this.random();
    return (hi * 4294967296 + lo) * 1.1102230246251565e-16; // 2^-53
  }

  private twist(): void {
    const s = this.state;
    for (let i = 0; i < N; i++) {
      const y = (s[i]! & 0x80000000) | (s[(i + 1) % N]! & 0x7fffffff);
      s[i] = s[(i + M) % N]! ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
    }
    this.index = 0;
  }
}

function checkSeed(seed: number | bigint): bigint {
  if (typeof seed === "number") {
    if (!Number.isSafeInteger(seed) || seed < 0)
      fail(`seed must be a whole number from 0 to 2^64-1, got ${seed}`, {
        subject: "seed",
        hint: "use a non-negative integer (larger than 2^53 only as a bigint)",
      });
    return BigInt(seed);
  }
  if (seed < 0n || seed >= 1n << 64n)
    fail(`seed must be from 0 to 2^64-1, got ${seed}`, { subject: "seed", hint: "torch.manual_seed accepts unsigned 64-bit seeds" });
  return seed;
}

function checkCount(n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`element count must be a non-negative integer, got ${n}`);
}

// ------------------------------------------------------------------------------------------------
// normal_fill_16_AVX2: Box–Muller on 8 lanes, u1 = 1 - data[j], u2 = data[j + 8].

const TWO_PI = fr(2 * Math.PI);

function normalFill16(data: Float32Array, base: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = fr(1 - data[base + j]!); // (0, 1] for log
    const u2 = data[base + j + 8]!;
    const radius = fr(Math.sqrt(fr(-2 * logPs(u1))));
    const theta = fr(TWO_PI * u2);
    sincosPs(theta);
    // the kernel ends with fmadd(n, std=1, mean=0), which turns -0 into +0
    data[base + j] = fr(radius * cosOut) + 0;
    data[base + j + 8] = fr(radius * sinOut) + 0;
  }
}

// Cephes constants of avx_mathfun.h, as float32
const SQRTHF = fr(0.707106781186547524);
const LOG_P = [7.0376836292e-2, -1.151461031e-1, 1.167699874e-1, -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1].map(fr);
const LOG_Q1 = fr(-2.1219444e-4);
const LOG_Q2 = fr(0.693359375);
const FOPI = fr(1.27323954473516); // 4 / pi
const DP1 = fr(-0.78515625);
const DP2 = fr(-2.4187564849853515625e-4);
const DP3 = fr(-3.77489497744594108e-8);
const SIN_P0 = fr(-1.9515295891e-4);
const SIN_P1 = fr(8.3321608736e-3);
const SIN_P2 = fr(-1.6666654611e-1);
const COS_P0 = fr(2.443315711809948e-5);
const COS_P1 = fr(-1.388731625493765e-3);
const COS_P2 = fr(4.166664568298827e-2);

/** log256_ps for one positive normal float (u1 is in [2^-24, 1]). */
function logPs(v: number): number {
  F32[0] = v;
  const bits = U32[0]!;
  U32[0] = (bits & ~0x7f800000) | 0x3f000000; // mantissa, scaled into [0.5, 1)
  let x = F32[0];
  let e = fr(((bits >>> 23) - 0x7f) + 1);
  if (x < SQRTHF) {
    e = fr(e - 1);
    x = fr(fr(x - 1) + x);
  } else {
    x = fr(x - 1);
  }
  const z = fr(x * x);
  let y = LOG_P[0]!;
  for (let k = 1; k < 9; k++) y = fmaf(y, x, LOG_P[k]!);
  y = fr(y * x);
  y = fmaf(y, z, fr(e * LOG_Q1));
  y = fr(y - z * 0.5); // fma(-z, 0.5, y): z * 0.5 is exact
  x = fr(x + y);
  return fmaf(e, LOG_Q2, x);
}

let sinOut = 0;
let cosOut = 0;

/** sincos256_ps for one float; results in sinOut / cosOut (no allocation in the hot loop). */
function sincosPs(v: number): void {
  const negative = v < 0 || Object.is(v, -0);
  let x = Math.abs(v);
  let j = Math.trunc(fr(x * FOPI)) | 0;
  j = (j + 1) & ~1;
  const y = j; // small integer: exact as float
  const swapSin = (j & 4) !== 0;
  const sinPoly = (j & 2) === 0;
  const negCos = (~(j - 2) & 4) !== 0;
  // extended-precision modular arithmetic: x - y * pi/4 in three parts
  x = fmaf(y, DP1, x);
  x = fmaf(y, DP2, x);
  x = fmaf(y, DP3, x);
  const z = fr(x * x);
  let yc = fmaf(COS_P0, z, COS_P1);
  yc = fmaf(yc, z, COS_P2);
  yc = fr(yc * z);
  yc = fmaf(yc, z, -fr(z * 0.5));
  yc = fr(yc + 1);
  let ys = fmaf(SIN_P0, z, SIN_P1);
  ys = fmaf(ys, z, SIN_P2);
  ys = fr(ys * z);
  ys = fmaf(ys, x, x);
  const s = sinPoly ? ys : yc;
  const c = sinPoly ? yc : ys;
  sinOut = swapSin !== negative ? -s : s;
  cosOut = negCos ? -c : c;
}

/**
 * Single-rounding float32 fused multiply-add of float32 inputs. a*b is exact in float64; the sum is
 * rounded to float64 and then to float32, which can round twice only when the float64 sum lands
 * exactly halfway between two floats: then the exact error term picks the side.
 */
export function fmaf(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const r = fr(s);
  if (r === s) return r;
  const bb = s - p;
  const err = p - (s - bb) + (c - bb);
  if (err === 0) return r;
  const other = r < s ? nextFloatUp(r) : nextFloatDown(r);
  if ((r + other) / 2 !== s) return r;
  return (err > 0) === other > r ? other : r;
}

function nextFloatUp(x: number): number {
  if (x === 0) return 1.401298464324817e-45;
  F32[0] = x;
  U32[0] = x > 0 ? U32[0]! + 1 : U32[0]! - 1;
  return F32[0];
}

function nextFloatDown(x: number): number {
  return -nextFloatUp(-x);
}
