/**
 * UniPC: Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
 * Diffusion Models" (arXiv:2302.04867), as diffusers 0.24's UniPCMultistepScheduler. Each step first
 * corrects the previous step's result with the new model output (UniC, effective order p + 1), then
 * predicts the next sample from the stored outputs (UniP-p, Algorithm 2 with the B(h) variants: "bh1"
 * B(h) = h, "bh2" B(h) = e^h − 1). Works on x̂_0 (predict_x0, default) or on ε̂.
 */
import { z } from "zod";

import { MultistepScheduler } from "./base.js";
import { defineScheduler, type OptionsOf, thresholdingOptions } from "./options.js";
import { limitX0, predictEpsilon, predictX0 } from "./sample-ops.js";
import { alphaSigma, f32, lambdaOf } from "./schedule.js";
import type { NoiseSource, StepOutput } from "./types.js";

export const unipcDefinition = defineScheduler({
  className: "UniPCMultistepScheduler",
  shortName: "unipc",
  uiName: "UniPC",
  timestepSpacing: "linspace",
  options: {
    solver_order: z.int().min(1).default(2),
    ...thresholdingOptions,
    predict_x0: z.boolean().default(true),
    solver_type: z.enum(["bh1", "bh2"]).default("bh2"),
    lower_order_final: z.boolean().default(true),
    disable_corrector: z.array(z.int().min(0)).default([]),
    solver_p: z.null().default(null),
    use_karras_sigmas: z.boolean().default(false),
  },
  later: {
    use_exponential_sigmas: [false],
    use_beta_sigmas: [false],
    use_flow_sigmas: [false],
    flow_shift: [1.0],
    final_sigmas_type: ["sigma_min"],
    rescale_betas_zero_snr: [false],
    use_dynamic_shifting: [false],
    time_shift_type: ["exponential", "linear"],
    sigma_min: [null],
    sigma_max: [null],
    shift_terminal: [null],
  },
  // diffusers rewrites DPM-Solver's solver types when a DPM-Solver config is loaded into UniPC
  normalize: (raw) => {
    if (raw.solver_type === "midpoint" || raw.solver_type === "heun" || raw.solver_type === "logrho") raw.solver_type = "bh2";
  },
  hints: { solver_p: "an external predictor scheduler cannot be given in a config; sdc runs UniPC's own predictor" },
});
type UniPCConfig = OptionsOf<typeof unipcDefinition>;

/** torch.pow(x, k) on float32 for the small integer k the Vandermonde rows need. */
function powF32(x: number, k: number): number {
  if (k === 0) return 1;
  if (k === 1) return x;
  if (k === 2) return f32(x * x);
  if (k === 3) return f32(f32(x * x) * x);
  return f32(Math.pow(x, k));
}

/** Solve A·x = b (small, dense) by Gaussian elimination with partial pivoting; float64, rounded to float32. */
function solve(A: number[][], b: number[]): number[] {
  const n = b.length;
  const M = A.map((row, i) => [...row, b[i]!]);
  for (let col = 0; col < n; col++) {
    let p = col;
    for (let r = col + 1; r < n; r++) if (Math.abs(M[r]![col]!) > Math.abs(M[p]![col]!)) p = r;
    [M[col], M[p]] = [M[p]!, M[col]!];
    for (let r = col + 1; r < n; r++) {
      const l = M[r]![col]! / M[col]![col]!;
      for (let k = col; k <= n; k++) M[r]![k]! -= l * M[col]![k]!;
    }
  }
  const x = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; r--) {
    let s = M[r]![n]!;
    for (let k = r + 1; k < n; k++) s -= M[r]![k]! * x[k]!;
    x[r] = s / M[r]![r]!;
  }
  return x.map(f32);
}

export class UniPCMultistepScheduler extends MultistepScheduler<UniPCConfig> {
  private lastSample: Float32Array | null = null;
  private thisOrder = 0;

  constructor(config: Record<string, unknown> = {}, overrides: Record<string, unknown> = {}) {
    super(unipcDefinition, config, overrides);
  }

  setTimesteps(numInferenceSteps: number): void {
    const { timesteps, sigmas, sigmaLast } = this.schedule(numInferenceSteps, this.config.num_train_timesteps);
    this.setSchedule(timesteps, sigmas, sigmaLast);
    this.lastSample = null;
  }

  private convertModelOutput(m: Float32Array, x: Float32Array, batchSize: number | undefined): Float32Array {
    const c = this.config;
    const [alphaT, sigmaT] = alphaSigma(this.sigmas[this.stepIndex!]!);
    return c.predict_x0
      ? limitX0(predictX0(c.prediction_type, alphaT, sigmaT, m, x), c, batchSize)
      : predictEpsilon(c.prediction_type, alphaT, sigmaT, m, x);
  }

  /**
   * The shared part of UniP and UniC between σ_s0 (where the last stored output m0 was made) and σ_t:
   * h, the ratios r_k and differences D1_k = (m_k − m0)/r_k of the older outputs, and the
   * coefficients h·φ_1(h), B(h) and the right-hand side b of the order conditions.
   */
  private bhTerms(idxT: number, idxS0: number, olderIdx: (k: number) => number, order: number) {
    const mo = this.modelOutputs;
    const m0 = mo[mo.length - 1]!;
    const [alphaT, sigmaT] = alphaSigma(this.sigmas[idxT]!);
    const [alphaS0, sigmaS0] = alphaSigma(this.sigmas[idxS0]!);
    const lambdaS0 = lambdaOf(alphaS0, sigmaS0);
    const h = f32(lambdaOf(alphaT, sigmaT) - lambdaS0);
    const rks: number[] = [];
    const D1s: Float32Array[] = [];
    for (let k = 1; k < order; k++) {
      const mk = mo[mo.length - 1 - k]!;
      const [ak, sk] = alphaSigma(this.sigmas[olderIdx(k)]!);
      const rk = f32(f32(lambdaOf(ak, sk) - lambdaS0) / h);
      rks.push(rk);
      D1s.push(mk.map((v, i) => f32(f32(v - m0[i]!) / rk)));
    }
    rks.push(1.0);
    const hh = this.config.predict_x0 ? f32(-h) : h;
    const hPhi1 = f32(Math.expm1(hh)); // h·φ_1(h) = e^h − 1
    const Bh = this.config.solver_type === "bh1" ? hh : f32(Math.expm1(hh));
    // order conditions: R[i][k] = r_k^i, b_i = h·φ_{i+1}(h)·(i+1)!/B(h)
    const R: number[][] = [];
    const b: number[] = [];
    let hPhiK = f32(f32(hPhi1 / hh) - 1);
    let factorial = 1;
    for (let i = 1; i <= order; i++) {
      R.push(rks.map((r) => powF32(r, i - 1)));
      b.push(f32(f32(hPhiK * factorial) / Bh));
      factorial *= i + 1;
      hPhiK = f32(f32(hPhiK / hh) - f32(1 / factorial));
    }
    return { m0, alphaT, sigmaT, alphaS0, sigmaS0, hPhi1, Bh, R, b, D1s };
  }

  /** x_t without the correction terms: (σ_t/σ_s0)·x − α_t·h·φ_1·m0 (data prediction) or its ε form. */
  private base(x: Float32Array, t: ReturnType<UniPCMultistepScheduler["bhTerms"]>): { out: Float32Array; scale: number } {
    if (this.config.predict_x0) {
      const c1 = f32(t.sigmaT / t.sigmaS0);
      const c2 = f32(t.alphaT * t.hPhi1);
      return { out: x.map((v, i) => f32(f32(c1 * v) - f32(c2 * t.m0[i]!))), scale: f32(t.alphaT * t.Bh) };
    }
    const c1 = f32(t.alphaT / t.alphaS0);
    const c2 = f32(t.sigmaT * t.hPhi1);
    return { out: x.map((v, i) => f32(f32(c1 * v) - f32(c2 * t.m0[i]!))), scale: f32(t.sigmaT * t.Bh) };
  }

  /** UniP-p: predict x at σ_{i+1} from x at σ_i and the last p outputs. */
  private predictor(x: Float32Array, order: number): Float32Array {
    const i = this.stepIndex!;
    const t = this.bhTerms(i + 1, i, (k) => i - k, order);
    const { out, scale } = this.base(x, t);
    if (t.D1s.length === 0) return out;
    // ρ_p: 1/2 for order 2, else the order conditions without the newest row/column
    const rhos = order === 2 ? [0.5] : solve(t.R.slice(0, -1).map((r) => r.slice(0, -1)), t.b.slice(0, -1));
    return out.map((v, k) => {
      let res = f32(rhos[0]! * t.D1s[0]![k]!);
      for (let j = 1; j < t.D1s.length; j++) res = f32(res + f32(rhos[j]! * t.D1s[j]![k]!));
      return f32(v - f32(scale * res));
    });
  }

  /** UniC-p: redo the last step from `xLast`, now also using the model output `modelT` at its result. */
  private corrector(modelT: Float32Array, xLast: Float32Array, order: number): Float32Array {
    const i = this.stepIndex!;
    const t = this.bhTerms(i, i - 1, (k) => i - (k + 1), order);
    const { out, scale } = this.base(xLast, t);
    const rhos = order === 1 ? [0.5] : solve(t.R, t.b);
    const rhoT = rhos[rhos.length - 1]!;
    return out.map((v, k) => {
      const d1t = f32(modelT[k]! - t.m0[k]!);
      let res = f32(rhoT * d1t);
      if (t.D1s.length) {
        let corr = f32(rhos[0]! * t.D1s[0]![k]!);
        for (let j = 1; j < t.D1s.length; j++) corr = f32(corr + f32(rhos[j]! * t.D1s[j]![k]!));
        res = f32(corr + res);
      }
      return f32(v - f32(scale * res));
    });
  }

  step(modelOutput: Float32Array, timestep: number, sample: Float32Array, _noise?: NoiseSource, batchSize?: number): StepOutput {
    const c = this.config;
    const i = this.beginStep(timestep);
    const useCorrector = i > 0 && !c.disable_corrector.includes(i - 1) && this.lastSample !== null;

    const converted = this.convertModelOutput(modelOutput, sample, batchSize);
    let x = sample;
    if (useCorrector) x = this.corrector(converted, this.lastSample!, this.thisOrder);

    this.pushOutput(converted);

    const order = c.lower_order_final ? Math.min(c.solver_order, this.timesteps.length - i) : c.solver_order;
    this.thisOrder = Math.min(order, this.lowerOrderNums + 1); // warm-up of the multistep history

    this.lastSample = x;
    const prev = this.predictor(x, this.thisOrder);
    this.endStep(i);
    return { prevSample: prev };
  }
}
