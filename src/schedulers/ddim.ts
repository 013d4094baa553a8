/**
 * DDIM: Song et al. 2020, "Denoising Diffusion Implicit Models" (arXiv:2010.02502), as diffusers 0.24's
 * DDIMScheduler. The generalised (non-Markovian) update of eq. 12 with σ_t(η) of eq. 16: η = 0 is the
 * deterministic DDIM sampler, η = 1 matches DDPM's variance.
 *
 * `eta` is a step() argument in diffusers; here it is an option of this scheduler (default 0, as
 * StableDiffusionPipeline's default), kept in `config` but not a diffusers config key.
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
  beta_schedule: betaSchedule(["linear", "scaled_linear", "squaredcos_cap_v2"]),
  trained_betas: commonOptions.trained_betas,
  clip_sample: clipOptions(true).clip_sample,
  set_alpha_to_one: z.boolean().default(true),
  steps_offset: commonOptions.steps_offset,
  prediction_type: predictionType(["epsilon", "sample", "v_prediction"]),
  ...thresholdingOptions,
  clip_sample_range: clipOptions(true).clip_sample_range,
  timestep_spacing: timestepSpacing("leading"),
  rescale_betas_zero_snr: z.boolean().default(false),
  eta: z.number().min(0).default(0),
};
export const ddimOptions = z.object(shape);
export type DDIMConfig = z.infer<typeof ddimOptions>;

export const ddimDefinition: SchedulerDefinition<DDIMConfig> = {
  className: "DDIMScheduler",
  shortName: "ddim",
  schema: ddimOptions,
  keys: Object.keys(shape),
  extensions: ["eta"],
  check: (c) => checkTrainedBetas("DDIMScheduler", c),
};

export class DDIMScheduler implements Scheduler {
  readonly className = "DDIMScheduler";
  readonly order = 1;
  readonly initNoiseSigma = 1.0;
  readonly config: Readonly<DDIMConfig>;
  readonly alphasCumprod: Float32Array;
  /** ᾱ used for the step that leaves t = 0: 1, or ᾱ_0 (set_alpha_to_one = false, as SD's config). */
  private readonly finalAlphaCumprod: number;
  timesteps: Float64Array = new Float64Array(0);
  readonly sigmas = new Float64Array(0);
  private numInferenceSteps: number | null = null;

  constructor(config: Record<string, unknown> = {}, overrides: Record<string, unknown> = {}) {
    this.config = resolveOptions(ddimDefinition, config, overrides);
    this.alphasCumprod = noiseSchedule(this.config).alphasCumprod;
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0]!;
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

  step(modelOutput: Float32Array, timestep: number, sample: Float32Array, noise?: NoiseSource, batchSize?: number): StepOutput {
    requireTimesteps(this.className, this.numInferenceSteps);
    const c = this.config;
    const eta = c.eta;

    // 1. previous step value (t - T/N)
    const prevTimestep = timestep - Math.floor(c.num_train_timesteps / this.numInferenceSteps!);

    // 2. ᾱ_t, ᾱ_{t-1}
    const alphaProdT = alphaBarAt(this.className, this.alphasCumprod, timestep);
    const alphaProdTPrev = prevTimestep >= 0 ? this.alphasCumprod[prevTimestep]! : this.finalAlphaCumprod;
    const betaProdT = f32(1 - alphaProdT);
    const sqrtAlphaProdT = f32(Math.sqrt(alphaProdT));
    const sqrtBetaProdT = f32(Math.sqrt(betaProdT));

    // 3. predicted x_0 ("f_θ(x_t, t)", eq. 12) and ε
    let predOriginal: Float32Array;
    let predEpsilon: Float32Array;
    if (c.prediction_type === "epsilon") {
      predOriginal = sample.map((x, i) => f32(f32(x - f32(sqrtBetaProdT * modelOutput[i]!)) / sqrtAlphaProdT));
      predEpsilon = modelOutput;
    } else if (c.prediction_type === "sample") {
      predOriginal = modelOutput.slice();
      predEpsilon = sample.map((x, i) => f32(f32(x - f32(sqrtAlphaProdT * modelOutput[i]!)) / sqrtBetaProdT));
    } else {
      predOriginal = sample.map((x, i) => f32(f32(sqrtAlphaProdT * x) - f32(sqrtBetaProdT * modelOutput[i]!)));
      predEpsilon = sample.map((x, i) => f32(f32(sqrtAlphaProdT * modelOutput[i]!) + f32(sqrtBetaProdT * x)));
    }

    // 4. clip or threshold x_0
    if (c.thresholding)
      predOriginal = thresholdSample(predOriginal, batchSize, c.dynamic_thresholding_ratio, c.sample_max_value);
    else if (c.clip_sample) predOriginal = clipSample(predOriginal, c.clip_sample_range);

    // 5. σ_t(η) = η·sqrt((1 − ᾱ_{t-1})/(1 − ᾱ_t))·sqrt(1 − ᾱ_t/ᾱ_{t-1})  (eq. 16)
    const betaProdTPrev = f32(1 - alphaProdTPrev);
    const variance = f32(f32(betaProdTPrev / betaProdT) * f32(1 - f32(alphaProdT / alphaProdTPrev)));
    const stdDevT = f32(f32(eta) * f32(Math.sqrt(variance)));

    // 6. "direction pointing to x_t": sqrt(1 − ᾱ_{t-1} − σ_t²)·ε
    const dirCoeff = f32(Math.sqrt(f32(f32(1 - alphaProdTPrev) - f32(stdDevT * stdDevT))));

    // 7. x_{t-1} = sqrt(ᾱ_{t-1})·x_0 + direction (+ σ_t·z)
    const sqrtAlphaProdTPrev = f32(Math.sqrt(alphaProdTPrev));
    const prev = predOriginal.map((x0, i) => f32(f32(sqrtAlphaProdTPrev * x0) + f32(dirCoeff * predEpsilon[i]!)));
    if (eta > 0) {
      if (!noise) throw new Error("DDIMScheduler.step with eta > 0 needs a NoiseSource");
      const z = noise.randn(prev.length);
      for (let i = 0; i < prev.length; i++) prev[i] = f32(prev[i]! + f32(stdDevT * z[i]!));
    }
    return { prevSample: prev, predOriginalSample: predOriginal };
  }

  addNoise(original: Float32Array, noise: Float32Array, timestep: number): Float32Array {
    return addNoiseAlphaBar(alphaBarAt(this.className, this.alphasCumprod, timestep), original, noise);
  }
}
