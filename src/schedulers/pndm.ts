/**
 * PNDM: Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds"
 * (arXiv:2202.09778), as diffusers 0.24's PNDMScheduler. Every step moves along the transfer of
 * eq. 9; the ε it uses is a Runge–Kutta combination (PRK, four model calls per step, for the first
 * three steps) or a 4th-order linear multistep combination (PLMS). With `skip_prk_steps` (Stable
 * Diffusion's config) the warm-up is crowsonkb's PLMS: one extra model call at the second timestep,
 * which is why diffusers' timesteps repeat it.
 */
import { z } from "zod";

import { UserError } from "../util/errors.js";
import { AlphaBarScheduler } from "./base.js";
import { defineScheduler, type OptionsOf } from "./options.js";
import { alphaBarAt, checkInferenceSteps, checkTimestepsNonNegative, predictEpsilon, requireTimesteps } from "./sample-ops.js";
import { discreteTimesteps, f32 } from "./schedule.js";
import type { StepOutput } from "./types.js";

export const pndmDefinition = defineScheduler({
  className: "PNDMScheduler",
  shortName: "pndm",
  uiName: "PLMS",
  predictionTypes: ["epsilon", "v_prediction"],
  timestepSpacing: "leading",
  options: {
    skip_prk_steps: z.boolean().default(false),
    set_alpha_to_one: z.boolean().default(false),
  },
  hints: { prediction_type: "diffusers 0.24's PNDM handles only epsilon and v_prediction models" },
});
type PNDMConfig = OptionsOf<typeof pndmDefinition>;

const PNDM_ORDER = 4;

export class PNDMScheduler extends AlphaBarScheduler<PNDMConfig> {
  private prkTimesteps: number[] = [];

  // running values: the ε history (PLMS), the RK accumulator and the sample it started from
  private ets: Float32Array[] = [];
  private counter = 0;
  private curModelOutput: Float32Array | null = null;
  private curSample: Float32Array | null = null;

  constructor(config: Record<string, unknown> = {}, overrides: Record<string, unknown> = {}) {
    super(pndmDefinition, config, overrides);
  }

  override setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    const T = c.num_train_timesteps;
    const n = numInferenceSteps;
    checkInferenceSteps(this.className, n, T);
    if (!c.skip_prk_steps && n < PNDM_ORDER)
      throw new UserError({
        subject: `scheduler ${this.className}`,
        message: `the Runge–Kutta warm-up (skip_prk_steps: false) needs at least ${PNDM_ORDER} steps, got ${n}`,
        hint: "use more steps or set skip_prk_steps: true",
      });
    // ascending training timesteps of the inference schedule
    const ts = discreteTimesteps(c.timestep_spacing, T, n, c.steps_offset).reverse();
    checkTimestepsNonNegative(this.className, ts, n);

    let plms: number[];
    if (c.skip_prk_steps) {
      // [t_{n-1}, t_{n-2}, t_{n-2}, t_{n-3}, ..., t_0]: the second timestep is visited twice
      this.prkTimesteps = [];
      plms = [...ts.slice(0, -1), ...ts.slice(-2, -1), ...ts.slice(-1)].reverse();
    } else {
      // four RK steps per timestep on the last PNDM_ORDER timesteps, at t and t + δ/2
      const half = Math.floor(Math.floor(T / n) / 2);
      const prk = ts.slice(-PNDM_ORDER).flatMap((t) => [t, t + half]);
      const stretched = prk.slice(0, -1).flatMap((t) => [t, t]).slice(1, -1);
      this.prkTimesteps = stretched.reverse();
      plms = ts.slice(0, -3).reverse();
    }
    this.timesteps = Float64Array.from([...this.prkTimesteps, ...plms]);
    this.numInferenceSteps = n;
    this.ets = [];
    this.counter = 0;
    this.curModelOutput = null;
    this.curSample = null;
  }

  step(modelOutput: Float32Array, timestep: number, sample: Float32Array): StepOutput {
    requireTimesteps(this.className, this.numInferenceSteps);
    if (this.counter < this.prkTimesteps.length && !this.config.skip_prk_steps)
      return this.stepPrk(modelOutput, timestep, sample);
    return this.stepPlms(modelOutput, timestep, sample);
  }

  /** Runge–Kutta (eq. 13): ε' = (e1 + 2·e2 + 2·e3 + e4)/6 over four calls, each transfer starting from x_t. */
  private stepPrk(modelOutput: Float32Array, timestep: number, sample: Float32Array): StepOutput {
    const T = this.config.num_train_timesteps;
    const n = this.numInferenceSteps!;
    const diffToPrev = this.counter % 2 ? 0 : Math.floor(Math.floor(T / n) / 2);
    const prevTimestep = timestep - diffToPrev;
    const t = this.prkTimesteps[Math.floor(this.counter / 4) * 4]!;

    const sixth = f32(1 / 6);
    const third = f32(1 / 3);
    let eps = modelOutput;
    const phase = this.counter % 4;
    if (phase === 0) {
      this.curModelOutput = modelOutput.map((m) => f32(sixth * m));
      this.ets.push(modelOutput);
      this.curSample = sample;
    } else if (phase === 1 || phase === 2) {
      const acc = this.curModelOutput!;
      this.curModelOutput = acc.map((a, i) => f32(a + f32(third * modelOutput[i]!)));
    } else {
      const acc = this.curModelOutput!;
      eps = acc.map((a, i) => f32(a + f32(sixth * modelOutput[i]!)));
      this.curModelOutput = null;
    }
    const curSample = this.curSample ?? sample;
    const prev = this.prevSample(curSample, t, prevTimestep, eps);
    this.counter += 1;
    return { prevSample: prev };
  }

  /** Linear multistep (eq. 12): ε' from the last four ε by the Adams–Bashforth weights (lower order at the start). */
  private stepPlms(modelOutput: Float32Array, timestep: number, sample: Float32Array): StepOutput {
    const T = this.config.num_train_timesteps;
    const n = this.numInferenceSteps!;
    if (!this.config.skip_prk_steps && this.ets.length < 3)
      throw new Error("PNDMScheduler: PLMS steps need the Runge–Kutta warm-up first (setTimesteps resets it)");
    let t = timestep;
    let prevTimestep = timestep - Math.floor(T / n);

    if (this.counter !== 1) {
      this.ets = this.ets.slice(-3);
      this.ets.push(modelOutput);
    } else {
      // the repeated timestep: step from t + δ to t again, with the averaged ε
      prevTimestep = timestep;
      t = timestep + Math.floor(T / n);
    }

    const e = this.ets;
    const k = e.length;
    let eps: Float32Array;
    let x = sample;
    if (k === 1 && this.counter === 0) {
      eps = modelOutput;
      this.curSample = sample;
    } else if (k === 1 && this.counter === 1) {
      const e1 = e[0]!;
      eps = modelOutput.map((m, i) => f32(f32(m + e1[i]!) / 2));
      x = this.curSample!;
      this.curSample = null;
    } else if (k === 2) {
      const [e2, e1] = [e[k - 2]!, e[k - 1]!];
      eps = e1.map((v, i) => f32(f32(f32(3 * v) - e2[i]!) / 2));
    } else if (k === 3) {
      const [e3, e2, e1] = [e[k - 3]!, e[k - 2]!, e[k - 1]!];
      eps = e1.map((v, i) => f32(f32(f32(f32(23 * v) - f32(16 * e2[i]!)) + f32(5 * e3[i]!)) / 12));
    } else {
      const [e4, e3, e2, e1] = [e[k - 4]!, e[k - 3]!, e[k - 2]!, e[k - 1]!];
      const c = f32(1 / 24);
      eps = e1.map((v, i) =>
        f32(c * f32(f32(f32(f32(55 * v) - f32(59 * e2[i]!)) + f32(37 * e3[i]!)) - f32(9 * e4[i]!))),
      );
    }
    const prev = this.prevSample(x, t, prevTimestep, eps);
    this.counter += 1;
    return { prevSample: prev };
  }

  /**
   * The transfer φ(x_t, ε, t, t−δ) of eq. 9:
   * x_{t−δ} = sqrt(ᾱ_{t−δ}/ᾱ_t)·x_t − (ᾱ_{t−δ} − ᾱ_t)·ε / (ᾱ_t·sqrt(1 − ᾱ_{t−δ}) + sqrt(ᾱ_t(1 − ᾱ_t)ᾱ_{t−δ}))
   */
  private prevSample(sample: Float32Array, t: number, prevT: number, modelOutput: Float32Array): Float32Array {
    const alphaProdT = alphaBarAt(this.className, this.alphasCumprod, t);
    const alphaProdTPrev = this.alphaBarPrev(prevT);
    const betaProdT = f32(1 - alphaProdT);
    const betaProdTPrev = f32(1 - alphaProdTPrev);

    const eps = predictEpsilon(this.config.prediction_type, f32(Math.sqrt(alphaProdT)), f32(Math.sqrt(betaProdT)), modelOutput, sample);
    const sampleCoeff = f32(Math.sqrt(f32(alphaProdTPrev / alphaProdT)));
    const denom = f32(
      f32(alphaProdT * f32(Math.sqrt(betaProdTPrev))) + f32(Math.sqrt(f32(f32(alphaProdT * betaProdT) * alphaProdTPrev))),
    );
    const diff = f32(alphaProdTPrev - alphaProdT);
    return sample.map((x, i) => f32(f32(sampleCoeff * x) - f32(f32(diff * eps[i]!) / denom)));
  }
}
