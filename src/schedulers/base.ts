/**
 * What the scheduler classes share, by family: every one holds its validated options and the
 * training noise schedule; the DDPM family (DDPM, DDIM, PNDM) indexes ᾱ by integer timesteps; the
 * σ-based ones (Euler, Euler ancestral, LMS, Heun) step through a σ schedule and scale the model
 * input by it; the multistep solvers (DPM-Solver, UniPC) keep a history of converted model outputs.
 */
import { type SchedulerDefinition, resolveOptions } from "./options.js";
import {
  addNoiseAlphaBar,
  addNoiseSigma,
  alphaBarAt,
  checkInferenceSteps,
  checkTimestepsNonNegative,
  firstStepIndex,
  initialStepIndex,
  requireTimesteps,
  scaleBySigma,
  uniqueIndexOf,
} from "./sample-ops.js";
import {
  alphaSigma,
  type BetaOptions,
  discreteTimesteps,
  f32,
  interpIndex,
  karrasSigmas,
  kInitNoiseSigma,
  kSigmas,
  logSigmasF32,
  multistepTimesteps,
  noiseSchedule,
  npLinspace,
  roundHalfEven,
  sigmaToT,
  type Spacing,
  trainingSigmas,
} from "./schedule.js";
import type { NoiseSource, Scheduler, StepOutput } from "./types.js";

type Options = Record<string, unknown>;

interface BaseConfig extends BetaOptions {
  rescale_betas_zero_snr?: boolean;
  timestep_spacing: Spacing;
  steps_offset: number;
}

export abstract class SchedulerBase<C extends BaseConfig> implements Scheduler {
  readonly className: string;
  readonly order: number = 1;
  initNoiseSigma = 1.0;
  readonly config: Readonly<C>;
  readonly alphasCumprod: Float32Array;
  timesteps: Float64Array = new Float64Array(0);
  sigmas: Float64Array = new Float64Array(0);

  protected constructor(definition: SchedulerDefinition<C>, config: Options, overrides: Options) {
    this.className = definition.className;
    this.config = resolveOptions(definition, config, overrides);
    this.alphasCumprod = noiseSchedule(this.config).alphasCumprod;
  }

  abstract setTimesteps(numInferenceSteps: number): void;
  abstract step(modelOutput: Float32Array, timestep: number, sample: Float32Array, noise?: NoiseSource, batchSize?: number): StepOutput;
  abstract addNoise(original: Float32Array, noise: Float32Array, timestep: number): Float32Array;

  scaleModelInput(sample: Float32Array, _timestep: number): Float32Array {
    return sample.slice();
  }
}

/** DDPM, DDIM, PNDM: integer timesteps that index ᾱ; add_noise in the ᾱ parametrisation. */
export abstract class AlphaBarScheduler<C extends BaseConfig & { set_alpha_to_one?: boolean }> extends SchedulerBase<C> {
  /** ᾱ of the step that leaves t = 0: 1, or ᾱ_0 with set_alpha_to_one false (SD's config). */
  protected readonly finalAlphaCumprod: number;
  protected numInferenceSteps: number | null = null;

  protected constructor(definition: SchedulerDefinition<C>, config: Options, overrides: Options) {
    super(definition, config, overrides);
    this.finalAlphaCumprod = this.config.set_alpha_to_one === false ? this.alphasCumprod[0]! : 1;
  }

  /** DDPM and DDIM: the spaced integer timesteps, descending. */
  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    checkInferenceSteps(this.className, numInferenceSteps, c.num_train_timesteps);
    const ts = discreteTimesteps(c.timestep_spacing, c.num_train_timesteps, numInferenceSteps, c.steps_offset);
    checkTimestepsNonNegative(this.className, ts, numInferenceSteps);
    this.timesteps = Float64Array.from(ts);
    this.numInferenceSteps = numInferenceSteps;
  }

  /** ᾱ at a step's target timestep `prevT` (the final ᾱ below 0). */
  protected alphaBarPrev(prevT: number): number {
    return prevT >= 0 ? this.alphasCumprod[prevT]! : this.finalAlphaCumprod;
  }

  addNoise(original: Float32Array, noise: Float32Array, timestep: number): Float32Array {
    return addNoiseAlphaBar(alphaBarAt(this.className, this.alphasCumprod, timestep), original, noise);
  }
}

interface SigmaConfig extends BaseConfig {
  sigma_min?: number | null;
  sigma_max?: number | null;
}

/** Euler, Euler ancestral, LMS, Heun: a σ schedule walked by a step index; model input x/sqrt(σ² + 1). */
export abstract class SigmaScheduler<C extends SigmaConfig> extends SchedulerBase<C> {
  protected stepIndex: number | null = null;

  /** set_timesteps' shared part: the step count checked, diffusers' timesteps and σs (Karras σs with `karras`). */
  protected schedule(n: number, karras: boolean): { timesteps: Float64Array; sigmas: Float64Array } {
    const c = this.config;
    checkInferenceSteps(this.className, n, c.num_train_timesteps);
    const r = kSigmas({ spacing: c.timestep_spacing, numTrain: c.num_train_timesteps, n, stepsOffset: c.steps_offset, alphasCumprod: this.alphasCumprod, karras, sigmaMin: c.sigma_min, sigmaMax: c.sigma_max });
    checkTimestepsNonNegative(this.className, r.timesteps, n);
    return r;
  }

  /** Installs a schedule (σs with their final value appended) and rewinds to its start. */
  protected setSchedule(timesteps: Float64Array, sigmas: Float64Array): void {
    this.timesteps = timesteps;
    this.sigmas = sigmas;
    this.initNoiseSigma = kInitNoiseSigma(this.sigmas, this.config.timestep_spacing);
    this.stepIndex = null;
  }

  protected ensureStepIndex(timestep: number): number {
    this.stepIndex ??= firstStepIndex(this.className, this.timesteps, timestep);
    return this.stepIndex;
  }

  override scaleModelInput(sample: Float32Array, timestep: number): Float32Array {
    return scaleBySigma(sample, this.sigmas[this.ensureStepIndex(timestep)]!);
  }

  addNoise(original: Float32Array, noise: Float32Array, timestep: number): Float32Array {
    return addNoiseSigma(this.sigmas[uniqueIndexOf(this.className, this.timesteps, timestep)]!, original, noise);
  }
}

interface MultistepConfig extends BaseConfig {
  solver_order: number;
  use_karras_sigmas: boolean;
}

/** DPM-Solver and UniPC: integer timesteps with σs, a history of `solver_order` converted model outputs. */
export abstract class MultistepScheduler<C extends MultistepConfig> extends SchedulerBase<C> {
  protected numInferenceSteps: number | null = null;
  protected modelOutputs: (Float32Array | null)[] = [];
  protected lowerOrderNums = 0;
  protected stepIndex: number | null = null;

  /**
   * set_timesteps' schedule: the spaced timesteps from `last` down (below T when lambda_min_clipped cuts
   * the schedule) with σ interpolated at them, or Karras / uniform-λ (`lu`) σs with the timesteps
   * recovered from them. The σ after the last step is the smallest training σ, or the last of the σs.
   * Checks the step count and the timesteps.
   */
  protected schedule(n: number, last: number, lu = false): { timesteps: number[]; sigmas: number[]; sigmaLast: number } {
    const c = this.config;
    const T = c.num_train_timesteps;
    checkInferenceSteps(this.className, n, T);
    let timesteps = multistepTimesteps(c.timestep_spacing, T, last, n, c.steps_offset);
    const train = trainingSigmas(this.alphasCumprod);
    let sigmas: number[];
    let sigmaLast: number;
    if (c.use_karras_sigmas || lu) {
      const logSigmas = logSigmasF32(train);
      if (c.use_karras_sigmas) sigmas = Array.from(karrasSigmas(train[0]!, train[T - 1]!, n));
      else {
        // Lu et al.'s uniform-λ steps (diffusers interpolates log σ from its largest to its smallest value)
        const [lo, hi] = [logSigmas[0]!, logSigmas[T - 1]!];
        sigmas = Array.from(npLinspace(0, 1, n), (r) => Math.exp(hi + r * (lo - hi)));
      }
      timesteps = sigmas.map((s) => roundHalfEven(sigmaToT(s, logSigmas)));
      sigmaLast = sigmas[sigmas.length - 1]!;
    } else {
      sigmas = timesteps.map((t) => interpIndex(t, train));
      sigmaLast = train[0]!;
    }
    checkTimestepsNonNegative(this.className, timesteps, n);
    return { timesteps, sigmas, sigmaLast };
  }

  /** Installs a schedule and empties the output history. */
  protected setSchedule(timesteps: number[], sigmas: number[], sigmaLast: number): void {
    this.sigmas = Float64Array.from([...sigmas, sigmaLast], f32);
    this.timesteps = Float64Array.from(timesteps);
    this.numInferenceSteps = timesteps.length;
    this.modelOutputs = new Array<Float32Array | null>(this.config.solver_order).fill(null);
    this.lowerOrderNums = 0;
    this.stepIndex = null;
  }

  /** The step index of this call: found in the schedule on the first call (the last step if absent). */
  protected beginStep(timestep: number): number {
    requireTimesteps(this.className, this.numInferenceSteps);
    if (this.stepIndex === null) {
      const i = initialStepIndex(this.timesteps, timestep);
      this.stepIndex = i >= 0 ? i : this.timesteps.length - 1;
    }
    return this.stepIndex;
  }

  /** Keeps `converted` as the newest model output, dropping the oldest. */
  protected pushOutput(converted: Float32Array): void {
    this.modelOutputs.shift();
    this.modelOutputs.push(converted);
  }

  /** After a step: one more output in the history (up to the order), and the next step index. */
  protected endStep(i: number): void {
    if (this.lowerOrderNums < this.config.solver_order) this.lowerOrderNums += 1;
    this.stepIndex = i + 1;
  }

  addNoise(original: Float32Array, noise: Float32Array, timestep: number): Float32Array {
    const [alphaT, sigmaT] = alphaSigma(this.sigmas[uniqueIndexOf(this.className, this.timesteps, timestep)]!);
    return original.map((x, i) => f32(f32(alphaT * x) + f32(sigmaT * noise[i]!)));
  }
}
