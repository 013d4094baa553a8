/**
 * Euler ancestral: k-diffusion's `sample_euler_ancestral` (Karras et al. 2022's Euler step plus
 * ancestral noise), as diffusers 0.24's EulerAncestralDiscreteScheduler. Each step goes deterministically
 * from σ_i down to σ_down and adds fresh noise of size σ_up, where σ_down² + σ_up² = σ_{i+1}².
 * One noise draw per step, after the deterministic part, as diffusers draws it.
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
import { f32, inputScaleDenominator, kInitNoiseSigma, noiseSchedule } from "./schedule.js";
import type { NoiseSource, Scheduler, StepOutput } from "./types.js";

const shape = {
  num_train_timesteps: commonOptions.num_train_timesteps,
  beta_start: commonOptions.beta_start,
  beta_end: commonOptions.beta_end,
  beta_schedule: betaSchedule(["linear", "scaled_linear", "squaredcos_cap_v2"]),
  trained_betas: commonOptions.trained_betas,
  prediction_type: predictionType(["epsilon", "v_prediction"]),
  timestep_spacing: timestepSpacing("linspace"),
  steps_offset: commonOptions.steps_offset,
};
export const eulerAncestralOptions = z.object(shape);
export type EulerAncestralConfig = z.infer<typeof eulerAncestralOptions>;

export const eulerAncestralDefinition: SchedulerDefinition<EulerAncestralConfig> = {
  className: "EulerAncestralDiscreteScheduler",
  shortName: "euler-ancestral",
  schema: eulerAncestralOptions,
  keys: Object.keys(shape),
  later: { rescale_betas_zero_snr: [false] },
  hints: { prediction_type: 'diffusers 0.24 raises NotImplementedError for "sample" with this scheduler' },
  check: (c) => checkTrainedBetas("EulerAncestralDiscreteScheduler", c),
};

export class EulerAncestralDiscreteScheduler implements Scheduler {
  readonly className = "EulerAncestralDiscreteScheduler";
  readonly order = 1;
  readonly config: Readonly<EulerAncestralConfig>;
  readonly alphasCumprod: Float32Array;
  timesteps: Float64Array = new Float64Array(0);
  sigmas: Float64Array = new Float64Array(0);
  initNoiseSigma = 1.0;
  private stepIndex: number | null = null;

  constructor(config: Record<string, unknown> = {}, overrides: Record<string, unknown> = {}) {
    this.config = resolveOptions(eulerAncestralDefinition, config, overrides);
    this.alphasCumprod = noiseSchedule(this.config).alphasCumprod;
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    const { timesteps, sigmas } = sigmaSchedule(this.className, c, numInferenceSteps, this.alphasCumprod, false);
    this.timesteps = timesteps;
    this.sigmas = Float64Array.from([...sigmas, 0], f32);
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
    if (!noise) throw new Error("EulerAncestralDiscreteScheduler.step needs a NoiseSource: it adds fresh noise every step");
    const idx = this.ensureStepIndex(timestep);
    const sigma = this.sigmas[idx]!;

    // 1. predicted x_0
    let predOriginal: Float32Array;
    if (this.config.prediction_type === "epsilon")
      predOriginal = sample.map((x, i) => f32(x - f32(sigma * modelOutput[i]!)));
    else {
      const cOut = f32(-sigma / inputScaleDenominator(sigma));
      const skipDen = f32(f32(sigma * sigma) + 1);
      predOriginal = sample.map((x, i) => f32(f32(modelOutput[i]! * cOut) + f32(x / skipDen)));
    }

    // 2. σ_up = sqrt(σ_to²(σ_from² − σ_to²)/σ_from²), σ_down = sqrt(σ_to² − σ_up²)
    const from2 = f32(sigma * sigma);
    const sigmaTo = this.sigmas[idx + 1]!;
    const to2 = f32(sigmaTo * sigmaTo);
    const sigmaUp = f32(Math.sqrt(f32(f32(to2 * f32(from2 - to2)) / from2)));
    const sigmaDown = f32(Math.sqrt(f32(to2 - f32(sigmaUp * sigmaUp))));

    // 3. Euler step to σ_down, then add σ_up·z
    const dt = f32(sigmaDown - sigma);
    const prev = sample.map((x, i) => f32(x + f32(f32(f32(x - predOriginal[i]!) / sigma) * dt)));
    const z = noise.randn(prev.length);
    for (let i = 0; i < prev.length; i++) prev[i] = f32(prev[i]! + f32(z[i]! * sigmaUp));
    this.stepIndex = idx + 1;
    return { prevSample: prev, predOriginalSample: predOriginal };
  }

  addNoise(original: Float32Array, noise: Float32Array, timestep: number): Float32Array {
    return addNoiseSigma(this.sigmas[uniqueIndexOf(this.className, this.timesteps, timestep)]!, original, noise);
  }
}
