/**
 * Running a compiled plan: txt2img and img2img, as diffusers' StableDiffusionPipeline and
 * StableDiffusionImg2ImgPipeline (v0.24) compute them.
 *
 * `runPlan(dir, settings)` executes a compiled folder's plan.json with the run settings given, as
 * the stages in ./stages/ (each takes the graphs it runs, so the trainer's validation images reuse
 * them with weights held in memory):
 *
 *   1. encodePrompts   tokenize → text encoder (prompts, and negative prompts for guidance)
 *   2. initialLatents  PyTorch-compatible CPU generator, a latents file, or the encoded init image
 *                      noised to the first timestep of prepareSchedule's schedule
 *   3. denoiseLoop     scheduler + classifier-free guidance + U-Net, progress, cancellation
 *   4. decodeAndSave   VAE decoder → PNGs with their generation parameters, grid
 *
 * The runtime reads only the plan, the compiled files and the settings, and writes only into the
 * output folder. Compiling first when a pipeline changed is src/pipeline.ts's business.
 */
import * as path from "node:path";
import { readPlan } from "../plan/read.js";
import { ClipTokenizer } from "../tokenizer/clip.js";
import { openPlanGraphs } from "./graphs.js";
import { progressBar } from "./progress.js";
import { TorchGenerator } from "./rng.js";
import { checkRunSettings, imageCount, type RunSettings } from "./settings.js";
import { decodeAndSave, denoiseLoop, encodePrompts, imageParameters, initialLatents, prepareSchedule, type LatentShape, type LatentSource } from "./stages/index.js";
import { UserError } from "../util/errors.js";

export interface RunPlanOptions {
  /** Aborting stops the run between denoising steps; the result then has `cancelled: true`. */
  signal?: AbortSignal;
  /** Lines for a person (EP notice, truncation warnings, files written). */
  log?: (line: string) => void;
  /** Show a progress bar on stderr when it is a TTY (default true). */
  progress?: boolean;
  /** Output file names get this counter (watch --run numbers its runs). */
  runIndex?: number;
  /**
   * The pipelineHash of the plan the caller compiled: a folder whose plan.json is another (a second
   * sdc process compiled into it in between) is refused instead of run with these settings.
   */
  expectPipelineHash?: string;
  /** After each denoising step: its number (1-based) and the number of steps. */
  onStep?: (step: number, total: number) => void;
  /** Sees the intermediate tensors (for tests and debugging): prompt embeddings, latents, decoded images. */
  trace?: (stage: "prompt_embeds" | "negative_prompt_embeds" | "latents_init" | "latents" | "decoded", data: Float32Array, step?: number) => void;
}

export interface RunResult {
  /** Files written (images, grid). */
  outputs: string[];
  summary: string;
  cancelled: boolean;
  /** Execution provider that ran the graphs. */
  ep: "cuda" | "cpu";
  seconds: number;
  /** U-Net evaluations per second in the denoising loop. */
  itPerSec: number;
}

/** Execute a compiled folder's plan.json with these run settings. */
export async function runPlan(dir: string, s: RunSettings, opts: RunPlanOptions = {}): Promise<RunResult> {
  const t0 = performance.now();
  const log = opts.log ?? (() => {});
  const trace = opts.trace;
  const plan = readPlan(dir);
  if (opts.expectPipelineHash !== undefined && plan.pipelineHash !== opts.expectPipelineHash)
    throw new UserError({
      message: "the compiled folder changed between compiling and running: another process compiled a different pipeline into it",
      subject: dir,
      hint: "run again, and give concurrent runs of different pipelines their own compiled folders (the pipeline's name, or --compiled DIR)",
    });
  checkRunSettings(plan, s);
  const img2img = s.initImage !== null;
  const f = plan.vae.scaleFactor;
  const shape: LatentShape = { images: imageCount(s), channels: plan.vae.latentChannels, height: s.height / f, width: s.width / f };

  const opened = await openPlanGraphs(dir, plan, { threads: s.threads });
  const { graphs, ep } = opened;
  try {
    log(opened.fallback ? `running on CPU: ${opened.fallback}` : `running on ${ep === "cuda" ? "CUDA" : "CPU"}`);

    // 1. prompt embeddings
    const tokenizer = ClipTokenizer.fromFolder(path.join(dir, plan.tokenizer.dir));
    const embeddings = await encodePrompts(graphs.text_encoder, tokenizer, { prompts: s.prompts, negativePrompts: s.negativePrompts, perPrompt: s.batch, guidance: s.guidanceScale > 1, log });
    trace?.("prompt_embeds", embeddings.text);
    if (embeddings.uncond) trace?.("negative_prompt_embeds", embeddings.uncond);

    // 2. schedule and initial latents
    const schedule = prepareSchedule(plan, img2img ? { strength: s.strength } : {});
    const generator = new TorchGenerator(s.seed);
    const source: LatentSource = img2img
      ? { kind: "image", file: s.initImage!, vaeEncoder: graphs.vae_encoder, scalingFactor: plan.vae.scalingFactor, width: s.width, height: s.height, tiling: s.vaeTiling && { ...s.vaeTiling, scaleFactor: f } }
      : s.latents
        ? { kind: "file", file: s.latents }
        : { kind: "noise" };
    const latents = await initialLatents(source, { shape, schedule, generator });
    trace?.("latents_init", latents);

    // 3. denoising loop
    const loop = await denoiseLoop(graphs.unet, {
      schedule,
      latents,
      shape,
      embeddings,
      guidanceScale: s.guidanceScale,
      guidanceRescale: s.guidanceRescale,
      noise: generator,
      signal: opts.signal,
      progress: progressBar(opts.progress ?? true),
      label: img2img ? "img2img" : "txt2img",
      onStep: (step, l) => {
        trace?.("latents", l, step - 1);
        opts.onStep?.(step, schedule.timesteps.length);
      },
    });
    const itPerSec = loop.steps / loop.seconds;
    if (loop.cancelled) {
      const seconds = (performance.now() - t0) / 1000;
      return { outputs: [], summary: `cancelled after step ${loop.steps} of ${loop.total}`, cancelled: true, ep, seconds, itPerSec };
    }

    // 4. decode each image and save
    const outputs = await decodeAndSave(graphs.vae_decoder, loop.latents, {
      shape,
      scalingFactor: plan.vae.scalingFactor,
      tiling: s.vaeTiling && { ...s.vaeTiling, scaleFactor: f },
      dir: s.outputDir,
      seed: s.seed,
      runIndex: opts.runIndex,
      grid: s.grid,
      parameters: (i) => imageParameters(plan, s, i),
      onDecoded: (i, decoded) => trace?.("decoded", decoded, i),
    });
    const seconds = (performance.now() - t0) / 1000;
    for (const file of outputs) log(`wrote ${displayPath(file)}`);
    const what = `${shape.images} image${shape.images === 1 ? "" : "s"}${outputs.length > shape.images ? " and a grid" : ""}`;
    return { outputs, summary: `wrote ${what} to ${displayPath(s.outputDir)} in ${seconds.toFixed(1)} s (${itPerSec.toFixed(2)} it/s on ${ep.toUpperCase()})`, cancelled: false, ep, seconds, itPerSec };
  } finally {
    await opened.release();
  }
}

function displayPath(f: string): string {
  const r = path.relative(process.cwd(), f);
  return r && !r.startsWith("..") ? r : f;
}
