/**
 * LMS: the linear multistep sampler of Karras et al. 2022 / k-diffusion (`sample_lms`), as diffusers
 * 0.24's LMSDiscreteScheduler. The probability-flow ODE dx/dσ = (x − x̂_0)/σ is integrated from σ_i to
 * σ_{i+1} with an Adams–Bashforth rule of order ≤ 4 on non-uniform steps: the weights are integrals of
 * the Lagrange basis through the last derivatives' sigmas.
 */
import { z } from "zod";

import { SigmaScheduler } from "./base.js";
import { defineScheduler, type OptionsOf } from "./options.js";
import { predictX0Sigma } from "./sample-ops.js";
import { f32 } from "./schedule.js";
import type { StepOutput } from "./types.js";

export const lmsDefinition = defineScheduler({
  className: "LMSDiscreteScheduler",
  shortName: "lms",
  uiName: "LMS",
  uiKarrasName: "LMS Karras",
  timestepSpacing: "linspace",
  options: { use_karras_sigmas: z.boolean().default(false) },
  later: { use_exponential_sigmas: [false], use_beta_sigmas: [false] },
});
type LMSConfig = OptionsOf<typeof lmsDefinition>;

/** Maximum order of the multistep rule (diffusers' step(order=4) default, which pipelines keep). */
const LMS_ORDER = 4;

// 4-point Gauss–Legendre: exact for the ≤ cubic Lagrange basis polynomials integrated here
// (diffusers uses scipy's adaptive quadrature, which is exact for them up to rounding)
const GL_X = [-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526];
const GL_W = [0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538];

export class LMSDiscreteScheduler extends SigmaScheduler<LMSConfig> {
  private derivatives: Float32Array[] = [];

  constructor(config: Record<string, unknown> = {}, overrides: Record<string, unknown> = {}) {
    super(lmsDefinition, config, overrides);
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    const { timesteps, sigmas } = this.schedule(numInferenceSteps, c.use_karras_sigmas);
    // Karras timesteps stay float64 (numpy); the spaced ones are float32
    this.setSchedule(timesteps, Float64Array.from([...sigmas, 0], f32));
    this.derivatives = [];
  }

  /** ∫_{σ_i}^{σ_{i+1}} Π_{k≠j} (τ − σ_{i−k}) / (σ_{i−j} − σ_{i−k}) dτ */
  private lmsCoefficient(order: number, i: number, j: number): number {
    const s = this.sigmas;
    const basis = (tau: number): number => {
      let prod = 1.0;
      for (let k = 0; k < order; k++) {
        if (k === j) continue;
        prod *= (tau - s[i - k]!) / (s[i - j]! - s[i - k]!);
      }
      return prod;
    };
    const a = s[i]!;
    const b = s[i + 1]!;
    const half = (b - a) / 2;
    const mid = (a + b) / 2;
    let sum = 0;
    for (let q = 0; q < GL_X.length; q++) sum += GL_W[q]! * basis(mid + half * GL_X[q]!);
    return sum * half;
  }

  step(modelOutput: Float32Array, timestep: number, sample: Float32Array): StepOutput {
    const idx = this.ensureStepIndex(timestep);
    const sigma = this.sigmas[idx]!;

    // 1. predicted x_0 from the σ-scaled prediction
    const predOriginal = predictX0Sigma(this.config.prediction_type, sigma, modelOutput, sample);

    // 2. ODE derivative d = (x − x_0)/σ
    const derivative = sample.map((x, i) => f32(f32(x - predOriginal[i]!) / sigma));
    this.derivatives.push(derivative);
    if (this.derivatives.length > LMS_ORDER) this.derivatives.shift();

    // 3. linear multistep coefficients
    const order = Math.min(idx + 1, LMS_ORDER);
    const coeffs = Array.from({ length: order }, (_, j) => f32(this.lmsCoefficient(order, idx, j)));

    // 4. x_{i+1} = x_i + Σ_j c_j·d_{i−j}
    // (entered mid-schedule there are fewer derivatives than the order: diffusers' zip() uses what there is)
    const ds = this.derivatives;
    const acc = ds[ds.length - 1]!.map((d) => f32(coeffs[0]! * d));
    for (let j = 1; j < Math.min(coeffs.length, ds.length); j++) {
      const d = ds[ds.length - 1 - j]!;
      for (let i = 0; i < acc.length; i++) acc[i] = f32(acc[i]! + f32(coeffs[j]! * d[i]!));
    }
    const prev = sample.map((x, i) => f32(x + acc[i]!));
    this.stepIndex = idx + 1;
    return { prevSample: prev, predOriginalSample: predOriginal };
  }
}
