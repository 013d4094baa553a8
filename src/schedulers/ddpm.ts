/**
 * DDPM: ancestral sampling of Ho et al. 2020, "Denoising Diffusion Probabilistic Models"
 * (arXiv:2006.11239), as diffusers 0.24's DDPMScheduler. Each step samples x_{t-1} from the posterior
 * q(x_{t-1} | x_t, x_0) with x_0 predicted by the model, drawing fresh noise at every t > 0.
 *
 * `rescale_betas_zero_snr` is implemented as later diffusers (0.25+) does for this class: the betas are
 * rescaled before ᾱ is formed; nothing else changes.
 */
import { z } from "zod";

import {
  betaSchedule,
  checkTrainedBetas,
  clipOptions,
  commonOptions,
  predictionType,
  resolveOptions,
  thresholdingOptions,
  timestepSpacing,
  type SchedulerDefinition,
} from "./options.js";
import {
  addNoiseAlphaBar,
  alphaBarAt,
  checkInferenceSteps,
  checkTimestepsNonNegative,
  clipSample,
  requireTimesteps,
  thresholdSample,
} from "./sample-ops.js";
import { discreteTimesteps, f32, noiseSchedule } from "./schedule.js";
import type { NoiseSource, Scheduler, StepOutput } from "./types.js";

const shape = {
  num_train_timesteps: commonOptions.num_train_timesteps,
  beta_start: commonOptions.beta_start,
  beta_end: commonOptions.beta_end,
  beta_schedule: betaSchedule(["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"]),
  trained_betas: commonOptions.trained_betas,
  variance_type: z.enum(["fixed_small", "fixed_small_log", "fixed_large"]).default("fixed_small"),
  clip_sample: clipOptions(true).clip_sample,
  prediction_type: predictionType(["epsilon", "sample", "v_prediction"]),
  ...thresholdingOptions,
  clip_sample_range: clipOptions(true).clip_sample_range,
  timestep_spacing: timestepSpacing("leading"),
  steps_offset: commonOptions.steps_offset,
  rescale_betas_zero_snr: z.boolean().default(false),
};
export const ddpmOptions = z.object(shape);
export type DDPMConfig = z.infer<typeof ddpmOptions>;

export const ddpmDefinition: SchedulerDefinition<DDPMConfig> = {
  className: "DDPMScheduler",
  shortName: "ddpm",
  schema: ddpmOptions,
  keys: Object.keys(shape),
  extensions: ["rescale_betas_zero_snr"],
  hints: {
    variance_type:
      "learned / learned_range need a model that predicts its variance (SD's UNet does not); fixed_large_log gives NaN in diffusers 0.24",
  },
  check: (c) => checkTrainedBetas("DDPMScheduler", c),
};

export class DDPMScheduler implements Scheduler {
  readonly className = "DDPMScheduler";
  readonly order = 1;
  readonly initNoiseSigma = 1.0;
  readonly config: Readonly<DDPMConfig>;
  readonly alphasCumprod: Float32Array;
  timesteps: Float64Array = new Float64Array(0);
  readonly sigmas = new Float64Array(0);
  private numInferenceSteps: number | null = null;

  constructor(config: Record<string, unknown> = {}, overrides: Record<string, unknown> = {}) {
    this.config = resolveOptions(ddpmDefinition, config, overrides);
    this.alphasCumprod = noiseSchedule(this.config).alphasCumprod;
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    checkInferenceSteps(this.className, numInferenceSteps, c.num_train_timesteps);
    const ts = discreteTimesteps(c.timestep_spacing, c.num_train_timesteps, numInferenceSteps, c.steps_offset);
    checkTimestepsNonNegative(this.className, ts, numInferenceSteps);
    this.timesteps = Float64Array.from(ts);
    this.numInferenceSteps = numInferenceSteps;
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample.slice();
  }

  private previousTimestep(t: number): number {
    return t - Math.floor(this.config.num_train_timesteps / (this.numInferenceSteps ?? this.config.num_train_timesteps));
  }

  /** σ_t² of the posterior (eq. 6–7), clamped away from 0; in the form the variance_type asks for. */
  private noiseScale(t: number): number {
    const ac = this.alphasCumprod;
    const prevT = this.previousTimestep(t);
    const alphaProdT = ac[t]!;
    const alphaProdTPrev = prevT >= 0 ? ac[prevT]! : 1;
    const currentBetaT = f32(1 - f32(alphaProdT / alphaProdTPrev));
    let variance = f32(f32(f32(1 - alphaProdTPrev) / f32(1 - alphaProdT)) * currentBetaT);
    variance = Math.max(variance, f32(1e-20));
    switch (this.config.variance_type) {
      case "fixed_small":
        return f32(Math.sqrt(variance));
      case "fixed_small_log":
        // diffusers returns exp(log(σ²)/2) = σ here and does not take another square root
        return f32(Math.exp(f32(0.5 * f32(Math.log(variance)))));
      case "fixed_large":
        return f32(Math.sqrt(currentBetaT));
    }
  }

  step(modelOutput: Float32Array, timestep: number, sample: Float32Array, noise?: NoiseSource, batchSize?: number): StepOutput {
    requireTimesteps(this.className, this.numInferenceSteps);
    const c = this.config;
    const t = timestep;
    const prevT = this.previousTimestep(t);

    // 1. compute ᾱ_t, ᾱ_{t-1}, β_t
    const alphaProdT = alphaBarAt(this.className, this.alphasCumprod, t);
    const alphaProdTPrev = prevT >= 0 ? this.alphasCumprod[prevT]! : 1;
    const betaProdT = f32(1 - alphaProdT);
    const betaProdTPrev = f32(1 - alphaProdTPrev);
    const currentAlphaT = f32(alphaProdT / alphaProdTPrev);
    const currentBetaT = f32(1 - currentAlphaT);
    const sqrtAlphaProdT = f32(Math.sqrt(alphaProdT));
    const sqrtBetaProdT = f32(Math.sqrt(betaProdT));

    // 2. predicted x_0 (eq. 15)
    let predOriginal: Float32Array;
    if (c.prediction_type === "epsilon")
      predOriginal = sample.map((x, i) => f32(f32(x - f32(sqrtBetaProdT * modelOutput[i]!)) / sqrtAlphaProdT));
    else if (c.prediction_type === "sample") predOriginal = modelOutput.slice();
    else predOriginal = sample.map((x, i) => f32(f32(sqrtAlphaProdT * x) - f32(sqrtBetaProdT * modelOutput[i]!)));

    // 3. clip or threshold x_0
    if (c.thresholding)
      predOriginal = thresholdSample(predOriginal, batchSize, c.dynamic_thresholding_ratio, c.sample_max_value);
    else if (c.clip_sample) predOriginal = clipSample(predOriginal, c.clip_sample_range);

    // 4. coefficients of x_0 and x_t in the posterior mean μ̃_t (eq. 7)
    const x0Coeff = f32(f32(f32(Math.sqrt(alphaProdTPrev)) * currentBetaT) / betaProdT);
    const xtCoeff = f32(f32(f32(Math.sqrt(currentAlphaT)) * betaProdTPrev) / betaProdT);

    // 5. μ̃_t
    const prev = predOriginal.map((x0, i) => f32(f32(x0Coeff * x0) + f32(xtCoeff * sample[i]!)));

    // 6. add σ_t·z
    if (t > 0) {
      if (!noise) throw new Error("DDPMScheduler.step needs a NoiseSource: it samples fresh noise at every t > 0");
      const z = noise.randn(prev.length);
      const std = this.noiseScale(t);
      for (let i = 0; i < prev.length; i++) prev[i] = f32(prev[i]! + f32(std * z[i]!));
    }
    return { prevSample: prev, predOriginalSample: predOriginal };
  }

  addNoise(original: Float32Array, noise: Float32Array, timestep: number): Float32Array {
    return addNoiseAlphaBar(alphaBarAt(this.className, this.alphasCumprod, timestep), original, noise);
  }
}
