/**
 * The data layer's randomness: sdc's torch-compatible generator (src/runtime/rng.ts), counted.
 *
 * Every random choice of the loader (epoch order, crops, flips, caption dropout and tag shuffles)
 * is drawn from one `TorchGenerator` stream, and every draw the data layer makes consumes a known
 * number of 32-bit values: `uniform` and `below` one each, `randperm(n)` n − 1. The generator's
 * state is therefore exactly (seed, number of 32-bit values drawn), a two-field object that JSON
 * carries, and restoring it is a fresh generator advanced by that many draws.
 */
import { TorchGenerator } from "../runtime/rng.js";
import { fail } from "../util/errors.js";

/** A generator state: the seed (decimal string, so 64-bit seeds survive JSON) and the draws made. */
export interface RngState {
  seed: string;
  draws: number;
}

export class DataRng {
  private readonly gen: TorchGenerator;
  private count = 0;

  constructor(seed: number | bigint | string, draws = 0) {
    this.gen = new TorchGenerator(toBigInt(seed));
    if (!Number.isSafeInteger(draws) || draws < 0) fail(`generator state has a bad draw count ${draws}`, { subject: "data loader state" });
    for (let i = 0; i < draws; i++) this.gen.random();
    this.count = draws;
  }

  static restore(state: RngState): DataRng {
    return new DataRng(state.seed, state.draws);
  }

  state(): RngState {
    return { seed: this.gen.seed.toString(), draws: this.count };
  }

  /** `torch.rand(1, generator=g).item()`: a float32 uniform in [0, 1) (one draw). */
  uniform(): number {
    this.count++;
    return this.gen.rand(1)[0]!;
  }

  /** `torch.randint(0, n, (1,), generator=g).item()` for 1 <= n < 2^32 (one draw). */
  below(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n >= 2 ** 32) throw new RangeError(`below(n) needs an integer 1 <= n < 2^32, got ${n}`);
    this.count++;
    return this.gen.randint(0, n, 1)[0]!;
  }

  /**
   * `torch.randperm(n, generator=g)` on the CPU, following ATen's randperm_cpu for n < 2^32 / 20:
   * start from 0..n-1 and, for i = 0 .. n-2, swap item i with item i + (draw mod (n − i)).
   */
  randperm(n: number): number[] {
    if (!Number.isInteger(n) || n < 0 || n >= 2 ** 32 / 20) throw new RangeError(`randperm(n) needs an integer 0 <= n < 2^32/20, got ${n}`);
    const r = Array.from({ length: n }, (_, i) => i);
    for (let i = 0; i < n - 1; i++) {
      this.count++;
      const z = this.gen.random() % (n - i);
      const t = r[i]!;
      r[i] = r[z + i]!;
      r[z + i] = t;
    }
    return r;
  }

  /** Items of `list` in a random order (randperm). */
  shuffle<T>(list: readonly T[]): T[] {
    return this.randperm(list.length).map((i) => list[i]!);
  }
}

function toBigInt(seed: number | bigint | string): bigint {
  try {
    return BigInt(seed);
  } catch {
    return fail(`seed must be a whole number, got ${JSON.stringify(seed)}`, { subject: "data loader seed" });
  }
}
