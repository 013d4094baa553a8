/**
 * LCM: multistep consistency sampling of Luo et al. 2023, "Latent Consistency Models" (arXiv:2310.04378),
 * as diffusers 0.24's LCMScheduler. The model output is turned into x̂_0 as in DDIM, then mixed with the
 * sample by the consistency model's boundary conditions (Song et al. 2023, arXiv:2303.01469, §3):
 *   f(x, t) = c_skip(t)·x + c_out(t)·x̂_0,  c_skip = σ_d²/((s·t)² + σ_d²),  c_out = s·t/sqrt((s·t)² + σ_d²)
 * with σ_d = 0.5 and s = timestep_scaling. Every step but the last re-noises that estimate to the next
 * timestep with fresh noise (one draw of the latents' size, as diffusers draws it), so LCM is stochastic
 * like Euler ancestral and reproducible from the run's seed.
 *
 * The timesteps are a subset of the distillation schedule: the `original_inference_steps` timesteps
 * k−1, 2k−1, ..., T−1 (k = T / original_inference_steps), of which `numInferenceSteps` are taken at
 * evenly spaced indices from the top. `timestep_spacing` and `steps_offset` are accepted (diffusers has
 * them) and, as in diffusers, unused.
 */
import { z } from "zod";

import { UserError } from "../util/errors.js";
import { AlphaBarScheduler } from "./base.js";
import { clipOptions, defineScheduler, optionProblem, type OptionsOf, thresholdingOptions } from "./options.js";
import { alphaBarAt, checkInferenceSteps, firstStepIndex, limitX0, predictX0, requireTimesteps } from "./sample-ops.js";
import { f32 } from "./schedule.js";
import type { NoiseSource, StepOutput } from "./types.js";

export const lcmDefinition = defineScheduler({
  className: "LCMScheduler",
  shortName: "lcm",
  uiName: "LCM",
  timestepSpacing: "leading",
  betaRange: [0.00085, 0.012],
  options: {
    beta_schedule: z.enum(["linear", "scaled_linear", "squaredcos_cap_v2"]).default("scaled_linear"),
    original_inference_steps: z
      .int()
      .min(1)
      .describe("Length of the distillation schedule the timesteps are drawn from (LCM's default 50).")
      .default(50),
    ...clipOptions(false),
    set_alpha_to_one: z.boolean().default(true),
    ...thresholdingOptions,
    timestep_scaling: z
      .number()
      .positive()
      .describe("Factor on t in the boundary conditions c_skip and c_out (LCM's default 10).")
      .default(10.0),
    rescale_betas_zero_snr: z.boolean().default(false),
  },
  check: (c) =>
    c.original_inference_steps > c.num_train_timesteps
      ? [
          optionProblem(
            "LCMScheduler",
            "original_inference_steps",
            `${c.original_inference_steps} is more than num_train_timesteps (${c.num_train_timesteps})`,
            "LCM-LoRA and LCM checkpoints are distilled with 50",
          ),
        ]
      : [],
});
type LCMConfig = OptionsOf<typeof lcmDefinition>;

const SIGMA_DATA_SQ = 0.25; // σ_d = 0.5

/** c_skip and c_out at timestep t (float32, as torch computes them from an integer timestep tensor). */
export function lcmBoundaryScalings(t: number, timestepScaling: number): { cSkip: number; cOut: number } {
  const s = f32(t * timestepScaling);
  const denom = f32(f32(s * s) + SIGMA_DATA_SQ);
  return { cSkip: f32(SIGMA_DATA_SQ / denom), cOut: f32(s / f32(Math.sqrt(denom))) };
}

export class LCMScheduler extends AlphaBarScheduler<LCMConfig> {
  private stepIndex: number | null = null;

  constructor(config: Record<string, unknown> = {}, overrides: Record<string, unknown> = {}) {
    super(lcmDefinition, config, overrides);
  }

  override setTimesteps(numInferenceSteps: number): void {
    this.setTimestepsWithStrength(numInferenceSteps, 1);
  }

  /**
   * diffusers' `set_timesteps(n, strength=...)`, as LatentConsistencyModelImg2ImgPipeline calls it: the
   * distillation schedule is cut to its lowest ⌊original_inference_steps·strength⌋ timesteps and `n` are
   * taken from those, so img2img keeps all `n` steps. (sdc's img2img follows StableDiffusionImg2ImgPipeline,
   * which LCM-LoRA uses: set_timesteps(n), then the tail of the schedule.)
   */
  setTimestepsWithStrength(numInferenceSteps: number, strength: number): void {
    const c = this.config;
    const T = c.num_train_timesteps;
    const original = c.original_inference_steps;
    checkInferenceSteps(this.className, numInferenceSteps, T);
    if (!(strength > 0 && strength <= 1))
      throw new UserError({ subject: "strength", message: `must be in (0, 1], got ${strength}`, hint: "0.3–0.8 is typical for img2img" });
    const k = Math.floor(T / original);
    const count = Math.trunc(original * strength);
    // the distillation timesteps k−1, 2k−1, ..., count·k − 1, highest first
    const origin = Array.from({ length: count }, (_, i) => (count - i) * k - 1);
    if (Math.floor(origin.length / numInferenceSteps) < 1 || numInferenceSteps > original)
      throw new UserError({
        subject: `scheduler ${this.className}`,
        message:
          numInferenceSteps > original
            ? `${numInferenceSteps} steps is more than original_inference_steps (${original}): LCM's timesteps are a subset of that schedule`
            : `original_inference_steps × strength = ${original} × ${strength} leaves ${count} timesteps, fewer than the ${numInferenceSteps} steps asked for`,
        hint: `LCM draws good images in 2–8 steps; use at most ${Math.min(original, count)} steps`,
      });
    // numpy: floor(linspace(0, len, n, endpoint=False)), i.e. floor(i · (len / n))
    const step = origin.length / numInferenceSteps;
    this.timesteps = Float64Array.from({ length: numInferenceSteps }, (_, i) => origin[Math.floor(i * step)]!);
    this.numInferenceSteps = numInferenceSteps;
    this.stepIndex = null;
  }

  step(modelOutput: Float32Array, timestep: number, sample: Float32Array, noise?: NoiseSource, batchSize?: number): StepOutput {
    requireTimesteps(this.className, this.numInferenceSteps);
    const c = this.config;
    this.stepIndex ??= firstStepIndex(this.className, this.timesteps, timestep);
    const idx = this.stepIndex;

    // 1. the next timestep in the schedule (this one at the end: unused then)
    const prevTimestep = idx + 1 < this.timesteps.length ? this.timesteps[idx + 1]! : timestep;

    // 2. ᾱ_t, ᾱ_prev
    const alphaProdT = alphaBarAt(this.className, this.alphasCumprod, timestep);
    const alphaProdTPrev = this.alphaBarPrev(prevTimestep);
    const sqrtAlphaProdT = f32(Math.sqrt(alphaProdT));
    const sqrtBetaProdT = f32(Math.sqrt(f32(1 - alphaProdT)));

    // 3. boundary conditions, 4. x̂_0 from the model output, 5. clipped or thresholded
    const { cSkip, cOut } = lcmBoundaryScalings(timestep, c.timestep_scaling);
    const predOriginal = limitX0(predictX0(c.prediction_type, sqrtAlphaProdT, sqrtBetaProdT, modelOutput, sample), c, batchSize);

    // 6. the consistency function's output: c_out·x̂_0 + c_skip·x
    const denoised = predOriginal.map((x0, i) => f32(f32(cOut * x0) + f32(cSkip * sample[i]!)));

    // 7. every step but the last: noise the estimate to the next timestep
    let prev = denoised;
    if (idx !== this.numInferenceSteps! - 1) {
      if (!noise) throw new Error("LCMScheduler.step needs a NoiseSource: it re-noises the estimate between steps");
      const z = noise.randn(denoised.length);
      const a = f32(Math.sqrt(alphaProdTPrev));
      const b = f32(Math.sqrt(f32(1 - alphaProdTPrev)));
      prev = denoised.map((d, i) => f32(f32(a * d) + f32(b * z[i]!)));
    }
    this.stepIndex = idx + 1;
    return { prevSample: prev, predOriginalSample: denoised };
  }
}
