/**
 * The contract between the sampling loop and a noise scheduler.
 *
 * A scheduler mirrors one diffusers (v0.24) scheduler class: after `setTimesteps(n)` the loop walks
 * `timesteps`, scales each model input with `scaleModelInput`, and hands the model output to `step`,
 * which returns the next latents. Tensors are flat float32 arrays in NCHW order; a scheduler only
 * needs their length (and, for dynamic thresholding, the batch size). Stateful schedulers (multistep,
 * Heun, PLMS) keep their history between `step` calls, reset by `setTimesteps`.
 */

/**
 * A PyTorch-compatible random source: `randn(n)` returns what `torch.randn(shape, generator=g)` returns
 * for a shape of n elements. Schedulers call it once per `randn_tensor` call diffusers makes, in the
 * same order and with the same size, so a seeded generator reproduces diffusers' images.
 */
export interface NoiseSource {
  randn(n: number): Float32Array;
}

export interface StepOutput {
  /** x_{t-1}: the latents to feed the next step. */
  prevSample: Float32Array;
  /** The model's estimate of x_0 at this step, where diffusers returns it (DDPM, DDIM, LMS, Euler, Euler a). */
  predOriginalSample?: Float32Array;
}

export interface Scheduler {
  /** The diffusers class this mirrors, e.g. "EulerDiscreteScheduler". */
  readonly className: string;
  /** Fully defaulted options under diffusers' keys (what scheduler_config.json holds; see `schedulerConfigJson`). */
  readonly config: Readonly<Record<string, unknown>>;
  /** Model evaluations per denoising step in `timesteps` (Heun: 2); img2img slices timesteps by it. */
  readonly order: number;
  /** Standard deviation of the initial noise: initial latents = randn * initNoiseSigma. */
  readonly initNoiseSigma: number;
  /** After setTimesteps: exactly diffusers' `scheduler.timesteps` (float32 or float64 values where diffusers' are float). */
  readonly timesteps: Float64Array;
  /** The noise levels of the sigma-based schedulers (diffusers' `scheduler.sigmas`, float32 values); empty otherwise. */
  readonly sigmas: Float64Array;
  setTimesteps(numInferenceSteps: number): void;
  /** The model input for timestep `t` (a new array; the input is not modified). */
  scaleModelInput(sample: Float32Array, timestep: number): Float32Array;
  /**
   * One denoising step. `noise` is required by the stochastic schedulers (DDPM, DDIM with eta > 0,
   * Euler ancestral, SDE variants of DPM-Solver) and advanced exactly as diffusers advances its generator.
   * `batchSize` is needed only with `thresholding` (the quantile is taken per sample).
   */
  step(
    modelOutput: Float32Array,
    timestep: number,
    sample: Float32Array,
    noise?: NoiseSource,
    batchSize?: number,
  ): StepOutput;
  /** Forward diffusion to `timestep` (one timestep for the whole batch), as img2img does before sampling. */
  addNoise(original: Float32Array, noise: Float32Array, timestep: number): Float32Array;
}
