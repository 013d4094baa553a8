/**
 * Operations on latents that several schedulers share: clipping and dynamic thresholding of the
 * predicted x_0, forward noising (add_noise) in the two parametrisations, and the step-index lookup
 * that lets sigma-based schedulers start mid-schedule (img2img). All arithmetic mirrors PyTorch's
 * float32 tensor ops one rounding at a time.
 */
import { UserError } from "../util/errors.js";
import { f32, inputScaleDenominator } from "./schedule.js";

/** x.clamp(-range, range). */
function clipSample(x: Float32Array, range: number): Float32Array {
  const r = f32(range);
  return x.map((v) => Math.min(Math.max(v, -r), r));
}

/**
 * Dynamic thresholding (Imagen, Saharia et al. 2022, §2.3): per sample, s = the `ratio` quantile of
 * |x_0|, clamped to [1, maxValue]; x_0 is clamped to [-s, s] and divided by s.
 */
function thresholdSample(x: Float32Array, batchSize: number | undefined, ratio: number, maxValue: number): Float32Array {
  if (batchSize === undefined || batchSize < 1 || x.length % batchSize !== 0)
    throw new Error(`thresholding needs the batch size of the latents (got ${batchSize} for ${x.length} values): pass it to step()`);
  const n = x.length / batchSize;
  const out = new Float32Array(x.length);
  const q = f32(ratio);
  const rank = f32(q * (n - 1));
  const below = Math.floor(rank);
  const above = Math.ceil(rank);
  const w = f32(rank - below);
  const maxV = f32(maxValue);
  for (let b = 0; b < batchSize; b++) {
    const row = x.subarray(b * n, (b + 1) * n);
    const sorted = Float32Array.from(row, Math.abs).sort();
    const lo = sorted[below]!;
    const hi = sorted[above]!;
    // torch.lerp: from the nearer end, so that w = 0 and w = 1 are exact
    let s = w < 0.5 ? f32(lo + f32(w * f32(hi - lo))) : f32(hi - f32(f32(hi - lo) * f32(1 - w)));
    s = Math.min(Math.max(s, 1), maxV);
    for (let i = 0; i < n; i++) out[b * n + i] = f32(Math.min(Math.max(row[i]!, -s), s) / s);
  }
  return out;
}

/** Options that limit the predicted x_0, where a scheduler has them. */
export interface LimitOptions {
  thresholding?: boolean;
  dynamic_thresholding_ratio?: number;
  sample_max_value?: number;
  clip_sample?: boolean;
  clip_sample_range?: number;
}

/** The predicted x_0, dynamically thresholded or clipped as the options say (thresholding wins). */
export function limitX0(x0: Float32Array, c: LimitOptions, batchSize: number | undefined): Float32Array {
  if (c.thresholding) return thresholdSample(x0, batchSize, c.dynamic_thresholding_ratio!, c.sample_max_value!);
  if (c.clip_sample) return clipSample(x0, c.clip_sample_range!);
  return x0;
}

/**
 * x̂_0 from the model output m at x = α·x_0 + σ·ε (the DDPM family: α = sqrt(ᾱ_t), σ = sqrt(1 − ᾱ_t);
 * DPM-Solver and UniPC: α_t, σ_t of the noise level).
 */
export function predictX0(type: "epsilon" | "sample" | "v_prediction", alpha: number, sigma: number, m: Float32Array, x: Float32Array): Float32Array {
  if (type === "epsilon") return x.map((v, i) => f32(f32(v - f32(sigma * m[i]!)) / alpha));
  if (type === "sample") return m.slice();
  return x.map((v, i) => f32(f32(alpha * v) - f32(sigma * m[i]!)));
}

/** ε̂ from the model output m at x = α·x_0 + σ·ε (see predictX0). */
export function predictEpsilon(type: "epsilon" | "sample" | "v_prediction", alpha: number, sigma: number, m: Float32Array, x: Float32Array): Float32Array {
  if (type === "epsilon") return m.slice();
  if (type === "sample") return x.map((v, i) => f32(f32(v - f32(alpha * m[i]!)) / sigma));
  return x.map((v, i) => f32(f32(alpha * m[i]!) + f32(sigma * v)));
}

/**
 * x̂_0 of the σ-parametrised schedulers (x = x_0 + σ·ε) from the model output m: for v-prediction
 * x_0 = c_out·v + c_skip·x with c_out = −σ/sqrt(σ² + 1), c_skip = 1/(σ² + 1).
 */
export function predictX0Sigma(type: "epsilon" | "v_prediction" | "sample" | "original_sample", sigma: number, m: Float32Array, x: Float32Array): Float32Array {
  if (type === "epsilon") return x.map((v, i) => f32(v - f32(sigma * m[i]!)));
  if (type === "v_prediction") {
    const cOut = f32(-sigma / inputScaleDenominator(sigma));
    const skipDen = f32(f32(sigma * sigma) + 1);
    return x.map((v, i) => f32(f32(m[i]! * cOut) + f32(v / skipDen)));
  }
  return m.slice();
}

/** x_t = sqrt(ᾱ_t)·x_0 + sqrt(1 − ᾱ_t)·ε (DDPM, DDIM, PNDM). */
export function addNoiseAlphaBar(alphaBar: number, original: Float32Array, noise: Float32Array): Float32Array {
  const sa = f32(Math.sqrt(alphaBar));
  const sb = f32(Math.sqrt(f32(1 - alphaBar)));
  return original.map((x, i) => f32(f32(sa * x) + f32(sb * noise[i]!)));
}

/** x_σ = x_0 + σ·ε (the sigma-parametrised schedulers). */
export function addNoiseSigma(sigma: number, original: Float32Array, noise: Float32Array): Float32Array {
  return original.map((x, i) => f32(x + f32(noise[i]! * sigma)));
}

/** All positions of `t` in the schedule. */
export function indicesOf(timesteps: Float64Array, t: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < timesteps.length; i++) if (timesteps[i] === t) out.push(i);
  return out;
}

/**
 * The step index for the first `step` (diffusers' `_init_step_index`): the position of `t` in the
 * schedule; when `t` occurs twice, the second, so a schedule entered mid-way (img2img) never skips a sigma.
 * Returns -1 when `t` is not in the schedule.
 */
export function initialStepIndex(timesteps: Float64Array, t: number): number {
  const idx = indicesOf(timesteps, t);
  if (idx.length === 0) return -1;
  return idx.length > 1 ? idx[1]! : idx[0]!;
}

/** The step index of a sigma-based scheduler's first call; `t` must be in the schedule. */
export function firstStepIndex(className: string, timesteps: Float64Array, t: number): number {
  if (timesteps.length === 0) throw new Error(`${className}: call setTimesteps() before stepping`);
  const i = initialStepIndex(timesteps, t);
  return i >= 0 ? i : uniqueIndexOf(className, timesteps, t); // the latter throws: t is not in the schedule
}

/** Where add_noise finds `t`: diffusers requires exactly one match. */
export function uniqueIndexOf(className: string, timesteps: Float64Array, t: number): number {
  const idx = indicesOf(timesteps, t);
  if (idx.length !== 1)
    throw new UserError({
      subject: `scheduler ${className}`,
      message: idx.length
        ? `timestep ${t} occurs ${idx.length} times in the schedule, so add_noise cannot tell which noise level it means (diffusers 0.24 fails here too)`
        : `timestep ${t} is not in the schedule [${Array.from(timesteps).join(", ")}]`,
      hint: idx.length ? "choose another strength or number of steps" : "call setTimesteps first and pass one of its timesteps",
    });
  return idx[0]!;
}

/** Steps must be a positive integer no larger than the training schedule. */
export function checkInferenceSteps(className: string, n: number, numTrain: number): void {
  if (!Number.isInteger(n) || n < 1 || n > numTrain)
    throw new UserError({
      subject: `scheduler ${className}`,
      message: `num_inference_steps must be an integer from 1 to num_train_timesteps (${numTrain}), got ${n}`,
      hint: "use a step count like 20–50",
    });
}

/** diffusers' trailing spacing yields a timestep of -1 for some step counts (numpy arange rounding): refuse those. */
export function checkTimestepsNonNegative(className: string, timesteps: ArrayLike<number>, n: number): void {
  for (let i = 0; i < timesteps.length; i++)
    if (timesteps[i]! < 0)
      throw new UserError({
        subject: `scheduler ${className}`,
        message: `with ${n} steps this spacing produces a negative timestep (${timesteps[i]}) — a numpy rounding artefact in diffusers 0.24's trailing spacing`,
        hint: "use another number of steps or another timestep_spacing",
      });
}

/** ᾱ_t of an integer training timestep (the DDPM-family schedulers index by it). */
export function alphaBarAt(className: string, alphasCumprod: Float32Array, t: number): number {
  const a = alphasCumprod[t];
  if (!Number.isInteger(t) || a === undefined)
    throw new Error(`${className}: timestep ${t} is not a training timestep (0..${alphasCumprod.length - 1}); pass one of scheduler.timesteps`);
  return a;
}

/** The scheduler was stepped or scaled before setTimesteps. */
export function requireTimesteps(className: string, n: number | null): void {
  if (n === null) throw new Error(`${className}: call setTimesteps() before stepping`);
}

/** The model input at noise level σ: x / sqrt(σ² + 1), in float32 as diffusers' scale_model_input. */
export function scaleBySigma(sample: Float32Array, sigma: number): Float32Array {
  const d = inputScaleDenominator(sigma);
  return sample.map((x) => f32(x / d));
}
