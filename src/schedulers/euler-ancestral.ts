/**
 * Euler ancestral: k-diffusion's `sample_euler_ancestral` (Karras et al. 2022's Euler step plus
 * ancestral noise), as diffusers 0.24's EulerAncestralDiscreteScheduler. Each step goes deterministically
 * from σ_i down to σ_down and adds fresh noise of size σ_up, where σ_down² + σ_up² = σ_{i+1}².
 * One noise draw per step, after the deterministic part, as diffusers draws it.
 */
import { SigmaScheduler } from "./base.js";
import { defineScheduler, type OptionsOf } from "./options.js";
import { predictX0Sigma } from "./sample-ops.js";
import { f32 } from "./schedule.js";
import type { NoiseSource, StepOutput } from "./types.js";

export const eulerAncestralDefinition = defineScheduler({
  className: "EulerAncestralDiscreteScheduler",
  shortName: "euler-ancestral",
  uiName: "Euler a",
  predictionTypes: ["epsilon", "v_prediction"],
  timestepSpacing: "linspace",
  later: { rescale_betas_zero_snr: [false] },
  hints: { prediction_type: 'diffusers 0.24 raises NotImplementedError for "sample" with this scheduler' },
});
type EulerAncestralConfig = OptionsOf<typeof eulerAncestralDefinition>;

export class EulerAncestralDiscreteScheduler extends SigmaScheduler<EulerAncestralConfig> {
  constructor(config: Record<string, unknown> = {}, overrides: Record<string, unknown> = {}) {
    super(eulerAncestralDefinition, config, overrides);
  }

  setTimesteps(numInferenceSteps: number): void {
    const { timesteps, sigmas } = this.schedule(numInferenceSteps, false);
    this.setSchedule(timesteps, Float64Array.from([...sigmas, 0], f32));
  }

  step(modelOutput: Float32Array, timestep: number, sample: Float32Array, noise?: NoiseSource): StepOutput {
    if (!noise) throw new Error("EulerAncestralDiscreteScheduler.step needs a NoiseSource: it adds fresh noise every step");
    const idx = this.ensureStepIndex(timestep);
    const sigma = this.sigmas[idx]!;

    // 1. predicted x_0
    const predOriginal = predictX0Sigma(this.config.prediction_type, sigma, modelOutput, sample);

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
}
