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

import { SigmaScheduler } from "./base.js";
import { defineScheduler, type OptionsOf } from "./options.js";
import { predictX0Sigma } from "./sample-ops.js";
import { f32, trainingSigmas } from "./schedule.js";
import type { NoiseSource, StepOutput } from "./types.js";

export const eulerDefinition = defineScheduler({
  className: "EulerDiscreteScheduler",
  shortName: "euler",
  uiName: "Euler",
  predictionTypes: ["epsilon", "sample", "v_prediction", "original_sample"],
  timestepSpacing: "linspace",
  options: {
    interpolation_type: z.enum(["linear"]).default("linear"),
    use_karras_sigmas: z.boolean().default(false),
    sigma_min: z.number().positive().nullable().default(null),
    sigma_max: z.number().positive().nullable().default(null),
    timestep_type: z.enum(["discrete", "continuous"]).default("discrete"),
    final_sigmas_type: z.enum(["zero", "sigma_min"]).default("zero"),
  },
  extensions: ["final_sigmas_type"],
  later: { use_exponential_sigmas: [false], use_beta_sigmas: [false], rescale_betas_zero_snr: [false] },
  hints: { interpolation_type: 'diffusers 0.24\'s "log_linear" fails (it passes a torch tensor to numpy)' },
});
type EulerConfig = OptionsOf<typeof eulerDefinition>;

export class EulerDiscreteScheduler extends SigmaScheduler<EulerConfig> {
  constructor(config: Record<string, unknown> = {}, overrides: Record<string, unknown> = {}) {
    super(eulerDefinition, config, overrides);
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    const { timesteps, sigmas } = this.schedule(numInferenceSteps, c.use_karras_sigmas);
    const s32 = Float64Array.from(sigmas, f32);
    const last = c.final_sigmas_type === "zero" ? 0 : trainingSigmas(this.alphasCumprod)[0]!;
    this.setSchedule(
      c.timestep_type === "continuous" && c.prediction_type === "v_prediction"
        ? s32.map((s) => f32(f32(0.25) * f32(Math.log(s)))) // EDM's c_noise = ln(σ)/4
        : Float64Array.from(timesteps, f32),
      Float64Array.from([...s32, last]),
    );
  }

  step(modelOutput: Float32Array, timestep: number, sample: Float32Array, noise?: NoiseSource): StepOutput {
    const idx = this.ensureStepIndex(timestep);
    const sigma = this.sigmas[idx]!;
    // S_churn = 0: γ = 0, σ̂ = σ, and the drawn noise is not used
    noise?.randn(sample.length);
    const sigmaHat = sigma;

    // 1. predicted x_0
    const predOriginal = predictX0Sigma(this.config.prediction_type, sigmaHat, modelOutput, sample);

    // 2. d = (x − x_0)/σ̂, x_{i+1} = x + d·(σ_{i+1} − σ̂)
    const dt = f32(this.sigmas[idx + 1]! - sigmaHat);
    const prev = sample.map((x, i) => f32(x + f32(f32(f32(x - predOriginal[i]!) / sigmaHat) * dt)));
    this.stepIndex = idx + 1;
    return { prevSample: prev, predOriginalSample: predOriginal };
  }
}
