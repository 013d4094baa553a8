/**
 * Training objectives as IR, following the seed's recipe and diffusers' training scripts.
 *
 * Diffusion (U-Net): every random value is a graph input the host draws from sdc's seeded
 * generator — the noise ε, the timesteps t, the noise-offset noise, the input-perturbation noise
 * and the caption-drop mask — so a step is reproducible and resumable bit for bit:
 *
 *   noise  = ε (+ offset · n[B, C, 1, 1])
 *   noisy  = √ᾱ_t · x₀ + √(1 − ᾱ_t) · (noise + γₚ · ξ)        (add_noise; ξ only with input perturbation)
 *   target = noise | √ᾱ_t · noise − √(1 − ᾱ_t) · x₀ (v) | x₀ (sample)
 *   loss   = mean(ℓ(pred − target) · w)                         ℓ: squared, absolute or Huber
 *   w      = min(snr, γ)/snr (ε) or min(snr, γ)/(snr + 1) (v), snr = ᾱ_t/(1 − ᾱ_t)  (min-SNR-γ)
 *
 * VAE stage 1: z = μ + exp(½ · clamp(log σ², −30, 20)) · ε with a host ε (diffusers'
 * DiagonalGaussianDistribution), loss = mean ℓ(decode(z) − x) + β · mean_B KL(q(z|x) ‖ N(0, I)).
 */
import type { Builder } from "../ir/builder.js";
import { dimMul, sym, type Dim } from "../ir/dims.js";
import type { Value } from "../ir/graph.js";

export type PredictionType = "epsilon" | "v_prediction" | "sample";
export type LossKind = "mse" | "l1" | "huber";

export interface DiffusionObjective {
  prediction: PredictionType;
  loss: LossKind;
  /** Huber's c (loss "huber"). */
  huberC: number;
  /** min-SNR-γ weighting; null: off. */
  snrGamma: number | null;
  /** 0: off. */
  noiseOffset: number;
  /** 0: off. */
  inputPerturbation: number;
  /** Caption dropout through a mask input and an empty-prompt embedding input. */
  captionDropout: boolean;
}

/** A graph input the trainer feeds, with its role in the step's signature. */
export type InputRole = "batch" | "random" | "hyperparameter";

export interface StepInputs {
  /** Role of each graph input the objective declared. */
  roles: Map<string, InputRole>;
}

/** √ᾱ and √(1 − ᾱ) per timestep, rounded to float32 as diffusers' float32 tables are. */
export function noiseTables(alphasCumprod: Float32Array): { sqrtAc: Float32Array; sqrtOneMinusAc: Float32Array } {
  const sqrtAc = alphasCumprod.map((a) => Math.sqrt(a));
  const sqrtOneMinusAc = alphasCumprod.map((a) => Math.sqrt(Math.fround(1 - a)));
  return { sqrtAc, sqrtOneMinusAc };
}

export interface DiffusionLossGraph {
  loss: Value;
  /** U-Net inputs computed in the graph. */
  noisy: Value;
  timestep: Value;
  encoderHiddenStates: Value;
}

/**
 * Declares the diffusion step's batch and random inputs, and returns the U-Net's inputs and a
 * function that turns its prediction into the loss.
 */
export function diffusionInputs(
  b: Builder,
  o: DiffusionObjective,
  shape: { channels: number; sequence: Dim; crossDim: number },
  alphasCumprod: Float32Array,
  roles: Map<string, InputRole>,
  /**
   * The text encoder trained with the U-Net: the step takes token ids (`input_ids` [B, S] int32, and
   * `empty_prompt_ids` [1, S] with caption dropout) and this turns them into the U-Net's context.
   */
  encodeText?: (ids: Value) => Value,
): { unet: { sample: Value; timestep: Value; encoderHiddenStates: Value }; loss(pred: Value): Value } {
  const B = sym("batch");
  const H = sym("height");
  const W = sym("width");
  const input = (name: string, role: InputRole, dtype: "float32" | "int64" | "int32", dims: Dim[]) => {
    roles.set(name, role);
    return b.input(name, dtype, dims);
  };
  const x0 = input("latents", "batch", "float32", [B, shape.channels, H, W]);
  let ids = encodeText ? input("input_ids", "batch", "int32", [B, shape.sequence]) : null;
  let ctx = ids ? null : input("encoder_hidden_states", "batch", "float32", [B, shape.sequence, shape.crossDim]);
  const eps = input("noise", "random", "float32", [B, shape.channels, H, W]);
  const t = input("timesteps", "random", "int64", [B]);

  let noise = eps;
  if (o.noiseOffset > 0) {
    const n = input("offset_noise", "random", "float32", [B, shape.channels, 1, 1]);
    noise = b.add(eps, b.mul(b.float32(o.noiseOffset), n));
  }
  let noiseIn = noise;
  if (o.inputPerturbation > 0) {
    const xi = input("perturbation_noise", "random", "float32", [B, shape.channels, H, W]);
    noiseIn = b.add(noise, b.mul(b.float32(o.inputPerturbation), xi));
  }
  if (o.captionDropout) {
    const mask = input("caption_drop_mask", "random", "int64", [B]);
    if (ids) {
      // the dropped captions are the empty prompt's tokens (diffusers replaces the caption with "")
      const empty = input("empty_prompt_ids", "batch", "int32", [1, shape.sequence]);
      ids = b.op1("Where", [b.reshape(b.op1("Equal", [mask, b.int64(1)]), [-1, 1]), empty, ids]);
    } else {
      const empty = input("empty_prompt_embedding", "batch", "float32", [1, shape.sequence, shape.crossDim]);
      const drop = b.reshape(b.op1("Equal", [mask, b.int64(1)]), [-1, 1, 1]);
      ctx = b.op1("Where", [drop, empty, ctx!]);
    }
  }
  const context = ids ? encodeText!(ids) : ctx!;

  const tables = noiseTables(alphasCumprod);
  const perSample = (table: Float32Array) => b.reshape(b.gather(b.float32(table), t), [-1, 1, 1, 1]); // [B, 1, 1, 1]
  const sa = perSample(tables.sqrtAc);
  const so = perSample(tables.sqrtOneMinusAc);
  const noisy = b.add(b.mul(sa, x0), b.mul(so, noiseIn));
  const target = o.prediction === "epsilon" ? noise : o.prediction === "v_prediction" ? b.sub(b.mul(sa, noise), b.mul(so, x0)) : x0;

  return {
    unet: { sample: noisy, timestep: b.cast(t, "float32"), encoderHiddenStates: context },
    loss(pred: Value): Value {
      const d = b.sub(pred, target);
      const elem = elementLoss(b, d, o.loss, o.huberC);
      if (o.snrGamma === null) return b.op1("ReduceMean", [elem], { keepdims: 0 });
      // min-SNR-γ: per-sample means, weighted, then the batch mean
      const snr = b.reshape(b.op1("Pow", [b.div(sa, so), b.float32(2)]), [-1]); // [B]
      const clipped = b.op1("Min", [snr, b.float32(o.snrGamma)]);
      const w = b.div(clipped, o.prediction === "v_prediction" ? b.add(snr, b.float32(1)) : snr);
      const perSampleLoss = b.op1("ReduceMean", [elem, b.int64([1, 2, 3])], { keepdims: 0 });
      return b.op1("ReduceMean", [b.mul(perSampleLoss, w)], { keepdims: 0 });
    },
  };
}

function elementLoss(b: Builder, d: Value, kind: LossKind, c: number): Value {
  if (kind === "mse") return b.mul(d, d);
  if (kind === "l1") return b.op1("Abs", [d]);
  // 2c·(√(d² + c²) − c): quadratic near 0, linear far away (diffusers' "huber")
  const cc = b.float32(c);
  return b.mul(b.float32(2 * c), b.sub(b.op1("Sqrt", [b.add(b.mul(d, d), b.mul(cc, cc))]), cc));
}

export interface VaeObjective {
  reconstruction: "mse" | "l1";
  klWeight: number;
}

/**
 * The VAE's batch input: images [B, C, f·h, f·w] in [−1, 1], f the VAE's downsampling factor, so
 * the reconstruction has the images' size for every latent size h × w.
 */
export function vaeInputs(b: Builder, channels: number, factor: number, roles: Map<string, InputRole>): { images: Value } {
  roles.set("images", "batch");
  const side = (s: string) => dimMul(factor, sym(s));
  return { images: b.input("images", "float32", [sym("batch"), channels, side("latent_height"), side("latent_width")]) };
}

/**
 * z = μ + exp(½ log σ²) · ε from the encoder's moments [B, 2C, h, w], with ε the random input
 * `posterior_noise` shaped like μ; also the KL term's mean over the batch.
 */
export function samplePosterior(b: Builder, moments: Value, roles: Map<string, InputRole>): { z: Value; kl: Value } {
  const [mean, logvar0] = b.split(moments, 2, 1);
  roles.set("posterior_noise", "random");
  const eps = b.input("posterior_noise", "float32", mean!.shape);
  const logvar = b.op1("Min", [b.op1("Max", [logvar0!, b.float32(-30)]), b.float32(20)]);
  const std = b.op1("Exp", [b.mul(logvar, b.float32(0.5))]);
  const variance = b.op1("Exp", [logvar]);
  const z = b.add(mean!, b.mul(std, eps));
  // 0.5 · Σ_chw (μ² + σ² − 1 − log σ²), averaged over the batch
  const terms = b.sub(b.sub(b.add(b.mul(mean!, mean!), variance), b.float32(1)), logvar);
  const kl = b.op1("ReduceMean", [b.mul(b.op1("ReduceSum", [terms, b.int64([1, 2, 3])], { keepdims: 0 }), b.float32(0.5))], { keepdims: 0 });
  return { z, kl };
}

export function vaeLoss(b: Builder, recon: Value, images: Value, kl: Value, o: VaeObjective): Value {
  const d = b.sub(recon, images);
  const rec = b.op1("ReduceMean", [o.reconstruction === "mse" ? b.mul(d, d) : b.op1("Abs", [d])], { keepdims: 0 });
  return b.add(rec, b.mul(b.float32(o.klWeight), kl));
}
