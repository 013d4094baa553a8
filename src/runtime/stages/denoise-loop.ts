/**
 * Stage 3, the denoising loop: the scheduler over the schedule's timesteps, the U-Net on
 * [negative; positive] embeddings in one batch, classifier-free guidance (optionally rescaled), a
 * progress bar, and cancellation between steps. The loop itself is ../denoise.ts; this stage feeds
 * it a U-Net runner.
 */
import type { NoiseSource } from "../../schedulers/index.js";
import { Cancelled, denoise } from "../denoise.js";
import type { Feed, GraphRunner } from "../graphs.js";
import type { Progress } from "../progress.js";
import type { PromptEmbeddings } from "./encode-prompts.js";
import type { LatentShape } from "./initial-latents.js";
import type { Schedule } from "./schedule.js";
import { UserError } from "../../util/errors.js";
import { deepCacheRunner, type DeepCacheSettings } from "../deepcache.js";

export interface DenoiseLoopOptions {
  schedule: Schedule;
  /** The initial latents [images, C, h, w]. */
  latents: Float32Array;
  shape: LatentShape;
  embeddings: PromptEmbeddings;
  guidanceScale: number;
  guidanceRescale: number;
  /**
   * LCM checkpoints: the guidance-scale embedding [images, time_cond_proj_dim] fed to the U-Net's
   * `timestep_cond` at every step (guidance then happens inside the U-Net: no negative half).
   */
  timestepCond?: Float32Array;
  /** Noise for the stochastic schedulers (the run's generator). */
  noise: NoiseSource;
  /** Aborting stops the loop between steps. */
  signal?: AbortSignal;
  progress?: Progress;
  /** Label of the progress bar. */
  label?: string;
  /** After each step: its number (1-based) and the latents. */
  onStep?: (step: number, latents: Float32Array) => void;
  /** DeepCache: the shallow U-Net, the name of the feature it reuses, and when to run the full one. */
  deepcache?: { shallow: GraphRunner; feature: string; settings: DeepCacheSettings };
  /** More U-Net inputs for each call, given its batch (token merging's splits). */
  unetFeeds?: (batch: number) => Record<string, Feed>;
}

export interface DenoiseLoopResult {
  /** The final latents, or the latest ones when cancelled. */
  latents: Float32Array;
  /** Steps completed (U-Net evaluations). */
  steps: number;
  /** Steps the schedule has. */
  total: number;
  /** Seconds spent in the loop. */
  seconds: number;
  /** The loop stopped early because the signal aborted. */
  cancelled: boolean;
  /** With DeepCache: U-Net calls that ran the full and the shallow graph. */
  calls?: { full: number; shallow: number };
}

export async function denoiseLoop(unet: GraphRunner, o: DenoiseLoopOptions): Promise<DenoiseLoopResult> {
  const { channels: C, height: h, width: w } = o.shape;
  const { sequence, width } = o.embeddings;
  const total = o.schedule.timesteps.length;
  const bar = o.progress;
  // the bar counts what the loop runs, one U-Net call per timestep; "steps" only when that is what they are
  const scheduled = o.schedule.steps;
  bar?.start(total, o.label ?? "denoise", total === scheduled ? "steps" : `U-Net calls (${scheduled} steps)`);
  const t0 = performance.now();
  let steps = 0;
  let latest = o.latents;
  const dc = o.deepcache ? deepCacheRunner(unet, o.deepcache.shallow, o.deepcache.feature, o.deepcache.settings) : null;
  const calls = dc ? { calls: dc.calls } : {};
  try {
    const latents = await denoise({
      scheduler: o.schedule.scheduler,
      timesteps: o.schedule.timesteps,
      latents: o.latents,
      batch: o.shape.images,
      text: o.embeddings.text,
      uncond: o.embeddings.uncond,
      guidanceScale: o.guidanceScale,
      guidanceRescale: o.guidanceRescale,
      noise: o.noise,
      unet: async (sample, t, emb, n) => {
        const feeds = {
          sample: { data: sample, dims: [n, C, h, w] },
          timestep: { data: new Float32Array(n).fill(t), dims: [n] },
          encoder_hidden_states: { data: emb, dims: [n, sequence, width] },
          ...(o.timestepCond ? { timestep_cond: { data: o.timestepCond, dims: [n, o.timestepCond.length / n] } } : {}),
          ...o.unetFeeds?.(n),
        };
        if (dc) return (await dc.run(feeds)).data;
        const out = await unet.run(feeds, ["out_sample"]);
        return out.out_sample!.data;
      },
      onStep: (i, _n, l) => {
        // a diverged schedule gives NaN or Infinity, which would be written as black images
        if (!allFinite(l)) throw divergedError(i, total, o.schedule.timesteps[i - 1]);
        steps = i;
        latest = l;
        bar?.tick();
        o.onStep?.(i, l);
      },
      cancelled: () => o.signal?.aborted === true,
    });
    return { latents, steps, total, seconds: (performance.now() - t0) / 1000, cancelled: false, ...calls };
  } catch (e) {
    if (e instanceof Cancelled) return { latents: latest, steps: e.step, total, seconds: (performance.now() - t0) / 1000, cancelled: true, ...calls };
    throw e;
  } finally {
    bar?.stop();
  }
}

function allFinite(x: Float32Array): boolean {
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i]!)) return false;
  return true;
}

function divergedError(step: number, total: number, t: number | undefined): UserError {
  return new UserError({
    message: `the denoising diverged at step ${step} of ${total}${t === undefined ? "" : ` (timestep ${t})`}: the latents hold NaN or Infinity, so no image is written`,
    subject: "scheduler",
    hint:
      "these scheduler settings do not suit this model: try another scheduler type, scheduler.use_karras_sigmas: false, or scheduler.timestep_spacing: leading " +
      "(schedules with almost no signal at their last timestep, such as cosine betas, need it); on CUDA with fp16, runtime.precision: fp32 rules out an overflow",
  });
}
