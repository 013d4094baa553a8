/**
 * DDPM: ancestral sampling of Ho et al. 2020, "Denoising Diffusion Probabilistic Models"
 * (arXiv:2006.11239), as diffusers 0.24's DDPMScheduler. Each step samples x_{t-1} from the posterior
 * q(x_{t-1} | x_t, x_0) with x_0 predicted by the model, drawing fresh noise at every t > 0.
 *
 * `rescale_betas_zero_snr` is implemented as later diffusers (0.25+) does for this class: the betas are
 * rescaled before ᾱ is formed; nothing else changes.
 */
import { z } from "zod";

import { AlphaBarScheduler } from "./base.js";
import { clipOptions, defineScheduler, type OptionsOf, thresholdingOptions } from "./options.js";
import { alphaBarAt, limitX0, predictX0, requireTimesteps } from "./sample-ops.js";
import { f32 } from "./schedule.js";
import type { NoiseSource, StepOutput } from "./types.js";

export const ddpmDefinition = defineScheduler({
  className: "DDPMScheduler",
  shortName: "ddpm",
  uiName: "DDPM",
  betaSchedules: ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"],
  timestepSpacing: "leading",
  options: {
    variance_type: z.enum(["fixed_small", "fixed_small_log", "fixed_large"]).default("fixed_small"),
    ...clipOptions(true),
    ...thresholdingOptions,
    rescale_betas_zero_snr: z.boolean().default(false),
  },
  extensions: ["rescale_betas_zero_snr"],
  hints: {
    variance_type:
      "learned / learned_range need a model that predicts its variance (SD's UNet does not); fixed_large_log gives NaN in diffusers 0.24",
  },
});
type DDPMConfig = OptionsOf<typeof ddpmDefinition>;

export class DDPMScheduler extends AlphaBarScheduler<DDPMConfig> {
  constructor(config: Record<string, unknown> = {}, overrides: Record<string, unknown> = {}) {
    super(ddpmDefinition, config, overrides);
  }

  private previousTimestep(t: number): number {
    return t - Math.floor(this.config.num_train_timesteps / (this.numInferenceSteps ?? this.config.num_train_timesteps));
  }

  /** σ_t² of the posterior (eq. 6–7), clamped away from 0; in the form the variance_type asks for. */
  private noiseScale(t: number): number {
    const alphaProdT = this.alphasCumprod[t]!;
    const alphaProdTPrev = this.alphaBarPrev(this.previousTimestep(t));
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

    // 1. compute ᾱ_t, ᾱ_{t-1}, β_t
    const alphaProdT = alphaBarAt(this.className, this.alphasCumprod, t);
    const alphaProdTPrev = this.alphaBarPrev(this.previousTimestep(t));
    const betaProdT = f32(1 - alphaProdT);
    const betaProdTPrev = f32(1 - alphaProdTPrev);
    const currentAlphaT = f32(alphaProdT / alphaProdTPrev);
    const currentBetaT = f32(1 - currentAlphaT);
    const sqrtAlphaProdT = f32(Math.sqrt(alphaProdT));
    const sqrtBetaProdT = f32(Math.sqrt(betaProdT));

    // 2. predicted x_0 (eq. 15), 3. clipped or thresholded
    const predOriginal = limitX0(predictX0(c.prediction_type, sqrtAlphaProdT, sqrtBetaProdT, modelOutput, sample), c, batchSize);

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
}
