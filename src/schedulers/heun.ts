/**
 * Heun: Algorithm 1 of Karras et al. 2022 (arXiv:2206.00364), a second-order predictor–corrector
 * step of the probability-flow ODE, as diffusers 0.24's HeunDiscreteScheduler. diffusers interleaves
 * the two model calls into the timesteps: every timestep but the first appears twice
 * ([t0, t1, t1, t2, t2, ...]) and sigmas likewise; the first call of a pair takes an Euler step and
 * remembers its derivative, the second averages the two derivatives and redoes the step from the saved
 * sample. The last timestep's pair is cut short: the schedule ends on a plain Euler step to σ = 0.
 */
import { z } from "zod";

import { SigmaScheduler } from "./base.js";
import { clipOptions, defineScheduler, type OptionsOf } from "./options.js";
import { addNoiseSigma, indicesOf, limitX0, predictX0Sigma } from "./sample-ops.js";
import { f32 } from "./schedule.js";
import type { StepOutput } from "./types.js";

export const heunDefinition = defineScheduler({
  className: "HeunDiscreteScheduler",
  shortName: "heun",
  uiName: "Heun",
  betaSchedules: ["linear", "scaled_linear", "squaredcos_cap_v2", "exp"],
  timestepSpacing: "linspace",
  betaRange: [0.00085, 0.012],
  options: {
    use_karras_sigmas: z.boolean().default(false),
    ...clipOptions(false),
  },
  later: { use_exponential_sigmas: [false], use_beta_sigmas: [false] },
});
type HeunConfig = OptionsOf<typeof heunDefinition>;

export class HeunDiscreteScheduler extends SigmaScheduler<HeunConfig> {
  override readonly order = 2;
  // first-order state, kept for the second call of a pair (null: the next call is a first-order one)
  private prevDerivative: Float32Array | null = null;
  private dt: number | null = null;
  private savedSample: Float32Array | null = null;
  // calls per timestep value (diffusers' _index_counter; add_noise uses it to pick among duplicates)
  private indexCounter = new Map<number, number>();

  constructor(config: Record<string, unknown> = {}, overrides: Record<string, unknown> = {}) {
    super(heunDefinition, config, overrides);
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    const { timesteps, sigmas } = this.schedule(numInferenceSteps, c.use_karras_sigmas);
    const s = Float64Array.from([...sigmas, 0], f32);
    // [σ0, σ1, σ1, ..., σ_{n-1}, σ_{n-1}, 0] and [t0, t1, t1, ..., t_{n-1}, t_{n-1}]
    this.setSchedule(
      Float64Array.from([timesteps[0]!, ...Array.from(timesteps.subarray(1)).flatMap((t) => [t, t])]),
      Float64Array.from([s[0]!, ...Array.from(s.subarray(1, -1)).flatMap((v) => [v, v]), s[s.length - 1]!]),
    );
    this.prevDerivative = null;
    this.dt = null;
    this.savedSample = null;
    this.indexCounter = new Map();
  }

  private get stateInFirstOrder(): boolean {
    return this.dt === null;
  }

  step(modelOutput: Float32Array, timestep: number, sample: Float32Array): StepOutput {
    const c = this.config;
    const idx = this.ensureStepIndex(timestep);
    this.indexCounter.set(timestep, (this.indexCounter.get(timestep) ?? 0) + 1);

    const first = this.stateInFirstOrder;
    // first call: σ_i → σ_{i+1}; second call: the model was evaluated at σ_{i+1}
    const sigma = first ? this.sigmas[idx]! : this.sigmas[idx - 1]!;
    const sigmaNext = first ? this.sigmas[idx + 1]! : this.sigmas[idx]!;
    const sigmaHat = sigma; // γ = 0
    const sigmaInput = first ? sigmaHat : sigmaNext;

    // 1. predicted x_0 at the σ the model saw
    const predOriginal = limitX0(predictX0Sigma(c.prediction_type, sigmaInput, modelOutput, sample), c, undefined);

    let derivative: Float32Array;
    let dt: number;
    let x = sample;
    if (first) {
      // 2. Euler: d = (x − x_0)/σ̂, Δσ = σ_{i+1} − σ̂; keep them for the correction
      derivative = sample.map((v, i) => f32(f32(v - predOriginal[i]!) / sigmaHat));
      dt = f32(sigmaNext - sigmaHat);
      this.prevDerivative = derivative;
      this.dt = dt;
      this.savedSample = sample;
    } else {
      // 2. Heun: d' = (x − x_0)/σ_{i+1}, d = (d_prev + d')/2, from the saved x_i
      const prevD = this.prevDerivative!;
      derivative = sample.map((v, i) => f32(f32(prevD[i]! + f32(f32(v - predOriginal[i]!) / sigmaNext)) / 2));
      dt = this.dt!;
      x = this.savedSample!;
      this.prevDerivative = null;
      this.dt = null;
      this.savedSample = null;
    }
    // 3. x_{i+1} = x_i + d·Δσ
    const prev = x.map((v, i) => f32(v + f32(derivative[i]! * dt)));
    this.stepIndex = idx + 1;
    return { prevSample: prev };
  }

  /** Entered mid-schedule (img2img) before any step, a duplicated timestep means its second occurrence. */
  override addNoise(original: Float32Array, noise: Float32Array, timestep: number): Float32Array {
    const idx = indicesOf(this.timesteps, timestep);
    if (idx.length === 0) throw new Error(`HeunDiscreteScheduler.addNoise: timestep ${timestep} is not in the schedule`);
    const calls = this.indexCounter.size === 0 ? (idx.length > 1 ? 1 : 0) : (this.indexCounter.get(timestep) ?? 0);
    if (calls >= idx.length) throw new Error(`HeunDiscreteScheduler.addNoise: timestep ${timestep} was already stepped past`);
    return addNoiseSigma(this.sigmas[idx[calls]!]!, original, noise);
  }
}
