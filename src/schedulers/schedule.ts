/**
 * The noise schedule shared by all schedulers: betas, alphas_cumprod, zero-terminal-SNR rescaling,
 * timestep spacings, sigma interpolation, Karras sigmas and the sigma → timestep inverse.
 *
 * diffusers computes these with a mix of torch float32 tensors and numpy float64 arrays, and the
 * results feed every later step, so each function here mirrors that mix operation by operation:
 * `f32` (Math.fround) marks every place where torch or numpy rounds to float32. Float32 +, −, ×, ÷
 * and √ computed in float64 and rounded once are exactly IEEE float32 results; exp/log are within an
 * ulp of PyTorch's (SLEEF) and numpy's float32 versions.
 */

export const f32 = Math.fround;

/** numpy's round(): half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * torch.linspace(start, end, steps, dtype=float32) as PyTorch's CPU (AVX2) kernel computes it: the
 * first half counts up from `start`, the second half down from `end`, and within each 8-lane vector
 * the lanes are base + k·step (base by a fused multiply-add).
 */
export function linspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 1) {
    out[0] = start;
    return out;
  }
  const s = f32(start);
  const e = f32(end);
  const step = f32((e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  const scalar = (i: number): number => (i < half ? f32(s + step * i) : f32(e - step * (steps - i - 1)));
  const W = 8;
  let i = 0;
  for (; i <= steps - 2 * W; i += W) {
    const base = scalar(i);
    out[i] = base;
    for (let k = 1; k < W; k++) out[i + k] = f32(base + f32(k * step));
  }
  for (; i < steps; i++) out[i] = scalar(i);
  return out;
}

/** numpy.linspace(start, stop, num) in float64. */
export function npLinspace(start: number, stop: number, num: number): Float64Array {
  const out = new Float64Array(num);
  const div = num - 1;
  const step = div > 0 ? (stop - start) / div : 0;
  for (let i = 0; i < num; i++) out[i] = i * step + start;
  if (num > 1) out[num - 1] = stop;
  return out;
}

/** numpy.arange(start, stop, step) for floats: the length is ceil((stop − start)/step), values start + i·delta. */
export function npArange(start: number, stop: number, step: number): Float64Array {
  const len = Math.max(0, Math.ceil((stop - start) / step));
  const out = new Float64Array(len);
  if (len > 0) out[0] = start;
  if (len > 1) out[1] = start + step;
  const delta = out[1]! - start;
  for (let i = 2; i < len; i++) out[i] = start + i * delta;
  return out;
}

// ---------------------------------------------------------------------------------------------
// betas and alphas

export interface BetaOptions {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: string;
  trained_betas: readonly number[] | null;
}

/** Glide's cosine schedule (diffusers' betas_for_alpha_bar), computed in float64, stored as float32. */
function betasForAlphaBar(n: number, transform: "cosine" | "exp", maxBeta = 0.999): Float32Array {
  const alphaBar =
    transform === "cosine"
      ? (t: number) => Math.cos((((t + 0.008) / 1.008) * Math.PI) / 2) ** 2
      : (t: number) => Math.exp(t * -12.0);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const t1 = i / n;
    const t2 = (i + 1) / n;
    out[i] = Math.min(1 - alphaBar(t2) / alphaBar(t1), maxBeta);
  }
  return out;
}

/** The betas of diffusers' schedulers (float32), for each beta_schedule. */
function makeBetas(o: BetaOptions): Float32Array {
  if (o.trained_betas) return Float32Array.from(o.trained_betas);
  const n = o.num_train_timesteps;
  switch (o.beta_schedule) {
    case "linear":
      return linspaceF32(o.beta_start, o.beta_end, n);
    case "scaled_linear": {
      // this schedule is very specific to the latent diffusion model: linear in sqrt(beta)
      const b = linspaceF32(o.beta_start ** 0.5, o.beta_end ** 0.5, n);
      return b.map((x) => f32(x * x));
    }
    case "squaredcos_cap_v2":
      return betasForAlphaBar(n, "cosine");
    case "exp":
      return betasForAlphaBar(n, "exp");
    case "sigmoid": {
      // GeoDiff: sigmoid(linspace(-6, 6)) * (beta_end - beta_start) + beta_start, in float32
      const x = linspaceF32(-6, 6, n);
      const scale = f32(o.beta_end - o.beta_start);
      const shift = f32(o.beta_start);
      return x.map((v) => f32(f32(f32(1 / f32(1 + f32(Math.exp(-v)))) * scale) + shift));
    }
    default:
      throw new Error(`unknown beta_schedule ${o.beta_schedule}`); // options are validated before this
  }
}

/** torch.cumprod(1 − betas) on float32: PyTorch accumulates in float64 and rounds each output. */
export function alphasCumprod(betas: Float32Array): Float32Array {
  const out = new Float32Array(betas.length);
  let acc = 1;
  for (let i = 0; i < betas.length; i++) {
    acc *= f32(1 - betas[i]!);
    out[i] = acc;
  }
  return out;
}

/**
 * Rescale betas to zero terminal SNR (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample
 * Steps are Flawed", Algorithm 1): shift sqrt(ᾱ) so its last value is 0 and scale it so the first is unchanged.
 */
function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
  const abarSqrt = alphasCumprod(betas).map((a) => f32(Math.sqrt(a)));
  const first = abarSqrt[0]!;
  const last = abarSqrt[abarSqrt.length - 1]!;
  const scale = f32(first / f32(first - last));
  for (let i = 0; i < abarSqrt.length; i++) abarSqrt[i] = f32(f32(abarSqrt[i]! - last) * scale);
  const abar = abarSqrt.map((x) => f32(x * x));
  const out = new Float32Array(betas.length);
  out[0] = f32(1 - abar[0]!);
  for (let i = 1; i < abar.length; i++) out[i] = f32(1 - f32(abar[i]! / abar[i - 1]!));
  return out;
}

/** σ(t) = sqrt((1 − ᾱ_t)/ᾱ_t) for every training timestep, as diffusers computes it (float32 tensor ops). */
export function trainingSigmas(ac: Float32Array): Float32Array {
  return ac.map((a) => f32(Math.sqrt(f32(f32(1 - a) / a))));
}

/** numpy.interp(x, arange(len(fp)), fp) in float64. */
export function interpIndex(x: number, fp: ArrayLike<number>): number {
  const n = fp.length;
  if (x <= 0) return fp[0]!;
  if (x >= n - 1) return fp[n - 1]!;
  const j = Math.floor(x);
  if (j === x) return fp[j]!;
  const slope = (fp[j + 1]! - fp[j]!) / 1;
  return slope * (x - j) + fp[j]!;
}

// ---------------------------------------------------------------------------------------------
// timestep spacings ("linspace", "leading", "trailing": Table 2 of arXiv:2305.08891)

export type Spacing = "linspace" | "leading" | "trailing";

/** DDPM / DDIM: integer timesteps, descending. */
export function discreteTimesteps(spacing: Spacing, T: number, n: number, stepsOffset: number): number[] {
  if (spacing === "linspace") return Array.from(npLinspace(0, T - 1, n), roundHalfEven).reverse();
  if (spacing === "leading") {
    const ratio = Math.floor(T / n);
    return Array.from({ length: n }, (_, i) => i * ratio + stepsOffset).reverse();
  }
  return Array.from(npArange(T, 0, -T / n), (x) => roundHalfEven(x) - 1);
}

/** Euler, Euler ancestral, LMS, Heun: float32 timesteps, descending (before any Karras conversion). */
function floatTimesteps(spacing: Spacing, T: number, n: number, stepsOffset: number): Float64Array {
  if (spacing === "linspace") return Float64Array.from(npLinspace(0, T - 1, n), f32).reverse();
  if (spacing === "leading") {
    const ratio = Math.floor(T / n);
    return Float64Array.from({ length: n }, (_, i) => f32(f32(i * ratio) + stepsOffset)).reverse();
  }
  return Float64Array.from(npArange(T, 0, -T / n), (x) => f32(f32(roundHalfEven(x)) - 1));
}

/**
 * DPM-Solver and UniPC: n + 1 points from `last` down, the final one dropped; `last` is below T when
 * lambda_min_clipped cuts the schedule short. Trailing spacing divides T (not `last`) by n, as diffusers does.
 */
export function multistepTimesteps(
  spacing: Spacing,
  T: number,
  last: number,
  n: number,
  stepsOffset: number,
): number[] {
  if (spacing === "linspace") return Array.from(npLinspace(0, last - 1, n + 1), roundHalfEven).reverse().slice(0, n);
  if (spacing === "leading") {
    const ratio = Math.floor(last / (n + 1));
    return Array.from({ length: n + 1 }, (_, i) => i * ratio)
      .reverse()
      .slice(0, n)
      .map((t) => t + stepsOffset);
  }
  return Array.from(npArange(last, 0, -T / n), (x) => roundHalfEven(x) - 1);
}

// ---------------------------------------------------------------------------------------------
// Karras sigmas and the sigma → timestep inverse

/**
 * The noise levels of Karras et al. 2022 (eq. 5, ρ = 7), in float64: n points from sigmaMax to sigmaMin,
 * evenly spaced in σ^(1/ρ).
 */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number): Float64Array {
  const rho = 7.0;
  const ramp = npLinspace(0, 1, n);
  const minInvRho = sigmaMin ** (1 / rho);
  const maxInvRho = sigmaMax ** (1 / rho);
  return ramp.map((r) => (maxInvRho + r * (minInvRho - maxInvRho)) ** rho);
}

/** log of the float32 training sigmas, as numpy computes np.log on a float32 array. */
export function logSigmasF32(sigmas: Float32Array): Float32Array {
  return sigmas.map((s) => f32(Math.log(s)));
}

/**
 * diffusers' `_sigma_to_t`: the fractional training timestep whose sigma is `sigma`, interpolating
 * linearly in log σ. numpy evaluates it partly in float32 (value-based casting with the float32
 * log-sigma table) and partly in float64; mirrored here.
 */
export function sigmaToT(sigma: number, logSigmas: Float32Array): number {
  const logSigma = f32(Math.log(Math.max(sigma, 1e-10)));
  const n = logSigmas.length;
  // index of the last log-sigma ≤ log σ (0 when none), clipped so that idx + 1 exists
  let low = 0;
  for (let i = 0; i < n; i++) if (f32(logSigma - logSigmas[i]!) >= 0) low = i;
  low = Math.min(low, n - 2);
  const high = low + 1;
  const lo = logSigmas[low]!;
  const hi = logSigmas[high]!;
  let w = f32(f32(lo - logSigma) / f32(lo - hi));
  w = Math.min(Math.max(w, 0), 1);
  return f32(1 - w) * low + w * high;
}

/** betas (optionally rescaled to zero terminal SNR) and ᾱ_t = Π(1 − β) for a scheduler's options. */
export function noiseSchedule(o: BetaOptions & { rescale_betas_zero_snr?: boolean }): {
  betas: Float32Array;
  alphasCumprod: Float32Array;
} {
  let betas = makeBetas(o);
  if (o.rescale_betas_zero_snr) betas = rescaleZeroTerminalSnr(betas);
  return { betas, alphasCumprod: alphasCumprod(betas) };
}

/**
 * The inference sigmas of the k-diffusion-style schedulers (LMS, Euler, Heun): σ interpolated at the
 * spaced timesteps, or Karras sigmas between the ends of that range (then the timesteps are recovered
 * from σ, fractional). Returns float64 values; the caller appends the final σ and rounds to float32.
 */
export function kSigmas(o: {
  spacing: Spacing;
  numTrain: number;
  n: number;
  stepsOffset: number;
  alphasCumprod: Float32Array;
  karras: boolean;
  sigmaMin?: number | null;
  sigmaMax?: number | null;
}): { timesteps: Float64Array; sigmas: Float64Array } {
  let timesteps: Float64Array = floatTimesteps(o.spacing, o.numTrain, o.n, o.stepsOffset);
  const train = trainingSigmas(o.alphasCumprod);
  let sigmas: Float64Array = timesteps.map((t) => interpIndex(t, train));
  if (o.karras) {
    const logSigmas = logSigmasF32(train);
    sigmas = karrasSigmas(o.sigmaMin ?? sigmas[sigmas.length - 1]!, o.sigmaMax ?? sigmas[0]!, o.n);
    timesteps = sigmas.map((s) => sigmaToT(s, logSigmas));
  }
  return { timesteps, sigmas };
}

/** init_noise_sigma of the sigma-based schedulers: σ_max, or sqrt(σ_max² + 1) for "leading" spacing (float32). */
export function kInitNoiseSigma(sigmas: ArrayLike<number>, spacing: Spacing): number {
  let max = -Infinity;
  for (let i = 0; i < sigmas.length; i++) max = Math.max(max, sigmas[i]!);
  return spacing === "leading" ? f32(Math.sqrt(f32(f32(max * max) + 1))) : max;
}

/** c_in = 1/sqrt(σ² + 1): the denominator diffusers divides the model input by (float32). */
export function inputScaleDenominator(sigma: number): number {
  return f32(Math.sqrt(f32(f32(sigma * sigma) + 1)));
}

/** α_t = 1/sqrt(σ² + 1), σ_t = σ·α_t (variance-preserving from the k-diffusion σ), float32. */
export function alphaSigma(sigma: number): [number, number] {
  const alpha = f32(1 / inputScaleDenominator(sigma));
  return [alpha, f32(sigma * alpha)];
}

/** λ = log α_t − log σ_t (half the log-SNR), float32. */
export function lambdaOf(alpha: number, sigma: number): number {
  return f32(f32(Math.log(alpha)) - f32(Math.log(sigma)));
}
