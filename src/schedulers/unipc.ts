/**
 * UniPC: Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
 * Diffusion Models" (arXiv:2302.04867), as diffusers 0.24's UniPCMultistepScheduler. Each step first
 * corrects the previous step's result with the new model output (UniC, effective order p + 1), then
 * predicts the next sample from the stored outputs (UniP-p, Algorithm 2 with the B(h) variants: "bh1"
 * B(h) = h, "bh2" B(h) = e^h − 1). Works on x̂_0 (predict_x0, default) or on ε̂.
 */
import { z } from "zod";

import {
  betaSchedule,
  checkTrainedBetas,
  commonOptions,
  predictionType,
  resolveOptions,
  thresholdingOptions,
  timestepSpacing,
  type SchedulerDefinition,
} from "./options.js";
import {
  checkInferenceSteps,
  checkTimestepsNonNegative,
  initialStepIndex,
  requireTimesteps,
  thresholdSample,
  uniqueIndexOf,
} from "./sample-ops.js";
import {
  f32,
  interpIndex,
  karrasSigmas,
  logSigmasF32,
  multistepTimesteps,
  noiseSchedule,
  roundHalfEven,
  sigmaToT,
  trainingSigmas,
} from "./schedule.js";
import type { NoiseSource, Scheduler, StepOutput } from "./types.js";

const shape = {
  num_train_timesteps: commonOptions.num_train_timesteps,
  beta_start: commonOptions.beta_start,
  beta_end: commonOptions.beta_end,
  beta_schedule: betaSchedule(["linear", "scaled_linear", "squaredcos_cap_v2"]),
  trained_betas: commonOptions.trained_betas,
  solver_order: z.number().int().min(1).default(2),
  prediction_type: predictionType(["epsilon", "sample", "v_prediction"]),
  ...thresholdingOptions,
  predict_x0: z.boolean().default(true),
  solver_type: z.enum(["bh1", "bh2"]).default("bh2"),
  lower_order_final: z.boolean().default(true),
  disable_corrector: z.array(z.number().int()).default([]),
  solver_p: z.null().default(null),
  use_karras_sigmas: z.boolean().default(false),
  timestep_spacing: timestepSpacing("linspace"),
  steps_offset: commonOptions.steps_offset,
};
export const unipcOptions = z.object(shape);
export type UniPCConfig = z.infer<typeof unipcOptions>;

const CLASS = "UniPCMultistepScheduler";

export const unipcDefinition: SchedulerDefinition<UniPCConfig> = {
  className: CLASS,
  shortName: "unipc",
  schema: unipcOptions,
  keys: Object.keys(shape),
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
  check: (c) => checkTrainedBetas(CLASS, c),
};

function alphaSigma(sigma: number): [number, number] {
  const alpha = f32(1 / f32(Math.sqrt(f32(f32(sigma * sigma) + 1))));
  return [alpha, f32(sigma * alpha)];
}

function lambdaOf(alpha: number, sigma: number): number {
  return f32(f32(Math.log(alpha)) - f32(Math.log(sigma)));
}

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

export class UniPCMultistepScheduler implements Scheduler {
  readonly className = CLASS;
  readonly order = 1;
  readonly initNoiseSigma = 1.0;
  readonly config: Readonly<UniPCConfig>;
  readonly alphasCumprod: Float32Array;
  timesteps: Float64Array = new Float64Array(0);
  sigmas: Float64Array = new Float64Array(0);
  private numInferenceSteps: number | null = null;
  private modelOutputs: (Float32Array | null)[] = [];
  private lowerOrderNums = 0;
  private lastSample: Float32Array | null = null;
  private thisOrder = 0;
  private stepIndex: number | null = null;

  constructor(config: Record<string, unknown> = {}, overrides: Record<string, unknown> = {}) {
    this.config = resolveOptions(unipcDefinition, config, overrides);
    this.alphasCumprod = noiseSchedule(this.config).alphasCumprod;
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    const T = c.num_train_timesteps;
    const n = numInferenceSteps;
    checkInferenceSteps(this.className, n, T);
    let timesteps = multistepTimesteps(c.timestep_spacing, T, T, n, c.steps_offset);
    const train = trainingSigmas(this.alphasCumprod);
    let sigmas: number[];
    let sigmaLast: number;
    if (c.use_karras_sigmas) {
      const logSigmas = logSigmasF32(train);
      sigmas = Array.from(karrasSigmas(train[0]!, train[T - 1]!, n));
      timesteps = sigmas.map((s) => roundHalfEven(sigmaToT(s, logSigmas)));
      sigmaLast = sigmas[sigmas.length - 1]!;
    } else {
      sigmas = timesteps.map((t) => interpIndex(t, train));
      sigmaLast = train[0]!;
    }
    checkTimestepsNonNegative(this.className, timesteps, n);
    this.sigmas = Float64Array.from([...sigmas, sigmaLast], f32);
    this.timesteps = Float64Array.from(timesteps);
    this.numInferenceSteps = timesteps.length;
    this.modelOutputs = new Array<Float32Array | null>(c.solver_order).fill(null);
    this.lowerOrderNums = 0;
    this.lastSample = null;
    this.stepIndex = null;
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample.slice();
  }

  private convertModelOutput(m: Float32Array, x: Float32Array, batchSize: number | undefined): Float32Array {
    const c = this.config;
    const [alphaT, sigmaT] = alphaSigma(this.sigmas[this.stepIndex!]!);
    if (c.predict_x0) {
      let x0: Float32Array;
      if (c.prediction_type === "epsilon") x0 = x.map((v, i) => f32(f32(v - f32(sigmaT * m[i]!)) / alphaT));
      else if (c.prediction_type === "sample") x0 = m.slice();
      else x0 = x.map((v, i) => f32(f32(alphaT * v) - f32(sigmaT * m[i]!)));
      return c.thresholding ? thresholdSample(x0, batchSize, c.dynamic_thresholding_ratio, c.sample_max_value) : x0;
    }
    if (c.prediction_type === "epsilon") return m.slice();
    if (c.prediction_type === "sample") return x.map((v, i) => f32(f32(v - f32(alphaT * m[i]!)) / sigmaT));
    return x.map((v, i) => f32(f32(alphaT * m[i]!) + f32(sigmaT * v)));
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
    requireTimesteps(this.className, this.numInferenceSteps);
    const c = this.config;
    if (this.stepIndex === null) {
      const i = initialStepIndex(this.timesteps, timestep);
      this.stepIndex = i >= 0 ? i : this.timesteps.length - 1;
    }
    const i = this.stepIndex;
    const useCorrector = i > 0 && !c.disable_corrector.includes(i - 1) && this.lastSample !== null;

    const converted = this.convertModelOutput(modelOutput, sample, batchSize);
    let x = sample;
    if (useCorrector) x = this.corrector(converted, this.lastSample!, this.thisOrder);

    this.modelOutputs.shift();
    this.modelOutputs.push(converted);

    const order = c.lower_order_final ? Math.min(c.solver_order, this.timesteps.length - i) : c.solver_order;
    this.thisOrder = Math.min(order, this.lowerOrderNums + 1); // warm-up of the multistep history

    this.lastSample = x;
    const prev = this.predictor(x, this.thisOrder);
    if (this.lowerOrderNums < c.solver_order) this.lowerOrderNums += 1;
    this.stepIndex = i + 1;
    return { prevSample: prev };
  }

  addNoise(original: Float32Array, noise: Float32Array, timestep: number): Float32Array {
    const [alphaT, sigmaT] = alphaSigma(this.sigmas[uniqueIndexOf(this.className, this.timesteps, timestep)]!);
    return original.map((x, i) => f32(f32(alphaT * x) + f32(sigmaT * noise[i]!)));
  }
}
