/**
 * The sampling loop of diffusers' StableDiffusionPipeline (v0.24), independent of how the U-Net
 * runs: for each timestep, scale the latents, evaluate the U-Net on [uncond; text] in one batch,
 * guide, and step the scheduler. Cancellation and progress happen between steps; the loop yields
 * to the event loop after each step so Ctrl-C and file watchers are heard.
 */
import type { NoiseSource, Scheduler } from "../schedulers/index.js";
import { guide } from "./guidance.js";

/** One U-Net evaluation: sample [N, C, h, w], timestep, embeddings [N, S, D] → prediction [N, C, h, w]. */
export type UNetCall = (sample: Float32Array, timestep: number, embeddings: Float32Array, n: number) => Promise<Float32Array>;

export interface DenoiseOptions {
  scheduler: Scheduler;
  timesteps: Float64Array;
  /** [B, C, h, w], already scaled by the scheduler's init_noise_sigma (txt2img) or noised (img2img) */
  latents: Float32Array;
  batch: number;
  /** text embeddings [B, S, D] */
  text: Float32Array;
  /** unconditional embeddings [B, S, D]; null when guidance is off (scale ≤ 1) */
  uncond: Float32Array | null;
  guidanceScale: number;
  guidanceRescale: number;
  unet: UNetCall;
  noise: NoiseSource;
  onStep?: (index: number, total: number, latents: Float32Array) => void;
  /** Checked between steps; true stops the loop with a Cancelled error. */
  cancelled?: () => boolean;
}

export class Cancelled extends Error {
  constructor(readonly step: number) {
    super(`cancelled after step ${step}`);
    this.name = "Cancelled";
  }
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

export async function denoise(o: DenoiseOptions): Promise<Float32Array> {
  let latents = o.latents;
  const cfg = o.uncond !== null;
  const embeddings = cfg ? concat(o.uncond!, o.text) : o.text;
  const n = cfg ? 2 * o.batch : o.batch;
  const total = o.timesteps.length;
  for (let i = 0; i < total; i++) {
    const t = o.timesteps[i]!;
    const input = cfg ? concat(latents, latents) : latents;
    const scaled = o.scheduler.scaleModelInput(input, t);
    const pred = await o.unet(scaled, t, embeddings, n);
    const eps = cfg ? guide(pred, o.guidanceScale, o.guidanceRescale, o.batch) : pred;
    latents = o.scheduler.step(eps, t, latents, o.noise, o.batch).prevSample;
    o.onStep?.(i + 1, total, latents);
    await yieldToEventLoop();
    if (o.cancelled?.() && i + 1 < total) throw new Cancelled(i + 1);
  }
  return latents;
}

function concat(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
