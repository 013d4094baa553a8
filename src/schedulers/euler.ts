/**
 * Euler: Algorithm 2 of Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
 * Generative Models" (arXiv:2206.00364) with S_churn = 0, as diffusers 0.24's EulerDiscreteScheduler:
 * one explicit Euler step of dx/dσ = (x − x̂_0)/σ per timestep. Its timesteps are float32 (fractional
 * with linspace spacing or Karras sigmas), and the model input is scaled by 1/sqrt(σ² + 1).
 *
 * `final_sigmas_type` is implemented as later diffusers (0.26+) does: "zero" (diffusers 0.24's
 * behaviour, the default here) ends at σ = 0; "sigma_min" ends at the smallest training σ.
 * diffusers 0.24 draws (and discards) a noise tensor at every step; so does this, when given a NoiseSource,
 * to keep a shared generator in step with diffusers'.
 */
import { z } from "zod";

import {
  betaSchedule,
  checkTrainedBetas,
  commonOptions,
  predictionType,
  resolveOptions,
  timestepSpacing,
  type SchedulerDefinition,
} from "./options.js";
import { addNoiseSigma, scaleBySigma, sigmaSchedule, firstStepIndex, uniqueIndexOf } from "./sample-ops.js";
import { f32, inputScaleDenominator, kInitNoiseSigma, noiseSchedule, trainingSigmas } from "./schedule.js";
import type { NoiseSource, Scheduler, StepOutput } from "./types.js";

const shape = {
  num_train_timesteps: commonOptions.num_train_timesteps,
  beta_start: commonOptions.beta_start,
  beta_end: commonOptions.beta_end,
  beta_schedule: betaSchedule(["linear", "scaled_linear", "squaredcos_cap_v2"]),
  trained_betas: commonOptions.trained_betas,
  prediction_type: predictionType(["epsilon", "sample", "v_prediction", "original_sample"]),
  interpolation_type: z.enum(["linear"]).default("linear"),
  use_karras_sigmas: z.boolean().default(false),
  sigma_min: z.number().positive().nullable().default(null),
  sigma_max: z.number().positive().nullable().default(null),
  timestep_spacing: timestepSpacing("linspace"),
  timestep_type: z.enum(["discrete", "continuous"]).default("discrete"),
  steps_offset: commonOptions.steps_offset,
  final_sigmas_type: z.enum(["zero", "sigma_min"]).default("zero"),
};
export const eulerOptions = z.object(shape);
export type EulerConfig = z.infer<typeof eulerOptions>;

export const eulerDefinition: SchedulerDefinition<EulerConfig> = {
  className: "EulerDiscreteScheduler",
  shortName: "euler",
  schema: eulerOptions,
  keys: Object.keys(shape),
  extensions: ["final_sigmas_type"],
  later: { use_exponential_sigmas: [false], use_beta_sigmas: [false], rescale_betas_zero_snr: [false] },
  hints: { interpolation_type: 'diffusers 0.24\'s "log_linear" fails (it passes a torch tensor to numpy)' },
  check: (c) => checkTrainedBetas("EulerDiscreteScheduler", c),
};

export class EulerDiscreteScheduler implements Scheduler {
  readonly className = "EulerDiscreteScheduler";
  readonly order = 1;
  readonly config: Readonly<EulerConfig>;
  readonly alphasCumprod: Float32Array;
  timesteps: Float64Array = new Float64Array(0);
  sigmas: Float64Array = new Float64Array(0);
  initNoiseSigma = 1.0;
  private stepIndex: number | null = null;

  constructor(config: Record<string, unknown> = {}, overrides: Record<string, unknown> = {}) {
    this.config = resolveOptions(eulerDefinition, config, overrides);
    this.alphasCumprod = noiseSchedule(this.config).alphasCumprod;
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    const { timesteps, sigmas } = sigmaSchedule(this.className, c, numInferenceSteps, this.alphasCumprod, c.use_karras_sigmas);
    const s32 = Float64Array.from(sigmas, f32);
    if (c.timestep_type === "continuous" && c.prediction_type === "v_prediction")
      // EDM's c_noise = ln(σ)/4
      this.timesteps = s32.map((s) => f32(f32(0.25) * f32(Math.log(s))));
    else this.timesteps = Float64Array.from(timesteps, f32);
    const last = c.final_sigmas_type === "zero" ? 0 : trainingSigmas(this.alphasCumprod)[0]!;
    this.sigmas = Float64Array.from([...s32, last]);
    this.initNoiseSigma = kInitNoiseSigma(this.sigmas, c.timestep_spacing);
    this.stepIndex = null;
  }

  private ensureStepIndex(timestep: number): number {
    this.stepIndex ??= firstStepIndex(this.className, this.timesteps, timestep);
    return this.stepIndex;
  }

  scaleModelInput(sample: Float32Array, timestep: number): Float32Array {
    return scaleBySigma(sample, this.sigmas[this.ensureStepIndex(timestep)]!);
  }

  step(modelOutput: Float32Array, timestep: number, sample: Float32Array, noise?: NoiseSource): StepOutput {
    const c = this.config;
    const idx = this.ensureStepIndex(timestep);
    const sigma = this.sigmas[idx]!;
    // S_churn = 0: γ = 0, σ̂ = σ, and the drawn noise is not used
    noise?.randn(sample.length);
    const sigmaHat = sigma;

    // 1. predicted x_0
    let predOriginal: Float32Array;
    if (c.prediction_type === "sample" || c.prediction_type === "original_sample") predOriginal = modelOutput.slice();
    else if (c.prediction_type === "epsilon")
      predOriginal = sample.map((x, i) => f32(x - f32(sigmaHat * modelOutput[i]!)));
    else {
      const cOut = f32(-sigma / inputScaleDenominator(sigma));
      const skipDen = f32(f32(sigma * sigma) + 1);
      predOriginal = sample.map((x, i) => f32(f32(modelOutput[i]! * cOut) + f32(x / skipDen)));
    }

    // 2. d = (x − x_0)/σ̂, x_{i+1} = x + d·(σ_{i+1} − σ̂)
    const dt = f32(this.sigmas[idx + 1]! - sigmaHat);
    const prev = sample.map((x, i) => f32(x + f32(f32(f32(x - predOriginal[i]!) / sigmaHat) * dt)));
    this.stepIndex = idx + 1;
    return { prevSample: prev, predOriginalSample: predOriginal };
  }

  addNoise(original: Float32Array, noise: Float32Array, timestep: number): Float32Array {
    return addNoiseSigma(this.sigmas[uniqueIndexOf(this.className, this.timesteps, timestep)]!, original, noise);
  }
}
