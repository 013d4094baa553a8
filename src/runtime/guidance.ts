/**
 * Classifier-free guidance, as diffusers' StableDiffusionPipeline applies it:
 *   ε̂ = ε_uncond + s · (ε_text − ε_uncond)
 * and, with `rescale` φ > 0, the rescaling of "Common Diffusion Noise Schedules and Sample Steps
 * are Flawed" (arXiv 2305.08891, §3.4): ε̂ ← φ · ε̂ · σ(ε_text)/σ(ε̂) + (1 − φ) · ε̂, with σ the
 * per-sample standard deviation (unbiased, as torch.std).
 * The U-Net sees both halves in one batch: [uncond..., text...] (diffusers' order).
 */

/** Split a batched prediction [2B, ...] into its unconditional and text halves and guide them. */
export function guide(pred: Float32Array, scale: number, rescale: number, batch: number): Float32Array {
  const half = pred.length / 2;
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const u = pred[i]!;
    out[i] = u + scale * (pred[half + i]! - u);
  }
  if (rescale > 0) rescaleNoiseCfg(out, pred.subarray(half), rescale, batch);
  return out;
}

function std(x: Float32Array): number {
  let mean = 0;
  for (let i = 0; i < x.length; i++) mean += x[i]!;
  mean /= x.length;
  let v = 0;
  for (let i = 0; i < x.length; i++) v += (x[i]! - mean) ** 2;
  return Math.sqrt(v / (x.length - 1));
}

/** In place: cfg ← φ · cfg · std(text)/std(cfg) + (1 − φ) · cfg, per sample. */
function rescaleNoiseCfg(cfg: Float32Array, text: Float32Array, phi: number, batch: number): void {
  const per = cfg.length / batch;
  for (let b = 0; b < batch; b++) {
    const c = cfg.subarray(b * per, (b + 1) * per);
    const ratio = std(text.subarray(b * per, (b + 1) * per)) / std(c);
    for (let i = 0; i < per; i++) c[i] = phi * (c[i]! * ratio) + (1 - phi) * c[i]!;
  }
}

/**
 * The guidance-scale embedding of LCM checkpoints (diffusers' LatentConsistencyModelPipeline
 * `get_guidance_scale_embedding`, after VDM): for w = guidance scale − 1 (the pipeline's Imagen-style
 * scale, less one), sin and cos of 1000·w·exp(−i·ln(10⁴)/(half − 1)), i < half = ⌊dim/2⌋, zero-padded
 * to an odd `dim`. One row per image: [images, dim], float32 as torch computes it.
 */
export function guidanceScaleEmbedding(guidanceScale: number, dim: number, images: number): Float32Array {
  const f32 = Math.fround;
  const half = Math.floor(dim / 2);
  const w = f32(f32(guidanceScale - 1) * 1000);
  const step = f32(f32(Math.log(10000)) / (half - 1));
  const row = new Float32Array(dim);
  for (let i = 0; i < half; i++) {
    const x = f32(w * f32(Math.exp(f32(i * -step))));
    row[i] = f32(Math.sin(x));
    row[half + i] = f32(Math.cos(x));
  }
  const out = new Float32Array(images * dim);
  for (let b = 0; b < images; b++) out.set(row, b * dim);
  return out;
}
