/**
 * DDIM: Song et al. 2020, "Denoising Diffusion Implicit Models" (arXiv:2010.02502), as diffusers 0.24's
 * DDIMScheduler. The generalised (non-Markovian) update of eq. 12 with σ_t(η) of eq. 16: η = 0 is the
 * deterministic DDIM sampler, η = 1 matches DDPM's variance.
 *
 * `eta` is a step() argument in diffusers; here it is an option of this scheduler (default 0, as
 * StableDiffusionPipeline's default), kept in `config` but not a diffusers config key.
 */
import { z } from "zod";

import { AlphaBarScheduler } from "./base.js";
import { clipOptions, defineScheduler, type OptionsOf, thresholdingOptions } from "./options.js";
import { alphaBarAt, limitX0, predictEpsilon, predictX0, requireTimesteps } from "./sample-ops.js";
import { f32 } from "./schedule.js";
import type { NoiseSource, StepOutput } from "./types.js";

export const ddimDefinition = defineScheduler({
  className: "DDIMScheduler",
  shortName: "ddim",
  uiName: "DDIM",
  timestepSpacing: "leading",
  options: {
    ...clipOptions(true),
    set_alpha_to_one: z.boolean().default(true),
    ...thresholdingOptions,
    rescale_betas_zero_snr: z.boolean().default(false),
    eta: z.number().min(0).max(1).describe("DDIM's eta (0: deterministic DDIM, 1: DDPM-like).").default(0),
  },
  extensions: ["eta"],
});
type DDIMConfig = OptionsOf<typeof ddimDefinition>;

export class DDIMScheduler extends AlphaBarScheduler<DDIMConfig> {
  constructor(config: Record<string, unknown> = {}, overrides: Record<string, unknown> = {}) {
    super(ddimDefinition, config, overrides);
  }

  step(modelOutput: Float32Array, timestep: number, sample: Float32Array, noise?: NoiseSource, batchSize?: number): StepOutput {
    requireTimesteps(this.className, this.numInferenceSteps);
    const c = this.config;
    const eta = c.eta;

    // 1. previous step value (t - T/N)
    const prevTimestep = timestep - Math.floor(c.num_train_timesteps / this.numInferenceSteps!);

    // 2. ᾱ_t, ᾱ_{t-1}
    const alphaProdT = alphaBarAt(this.className, this.alphasCumprod, timestep);
    const alphaProdTPrev = this.alphaBarPrev(prevTimestep);
    const betaProdT = f32(1 - alphaProdT);
    const sqrtAlphaProdT = f32(Math.sqrt(alphaProdT));
    const sqrtBetaProdT = f32(Math.sqrt(betaProdT));

    // 3. predicted x_0 ("f_θ(x_t, t)", eq. 12) and ε, then 4. clip or threshold x_0
    const predOriginal = limitX0(predictX0(c.prediction_type, sqrtAlphaProdT, sqrtBetaProdT, modelOutput, sample), c, batchSize);
    const predEpsilon = predictEpsilon(c.prediction_type, sqrtAlphaProdT, sqrtBetaProdT, modelOutput, sample);

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
}
