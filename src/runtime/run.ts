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
import { openPlanGraphs, type Phase } from "./graphs.js";
import { guidanceScaleEmbedding } from "./guidance.js";
import { progressBar } from "./progress.js";
import { tomeFeeds } from "./tome.js";
import { TorchGenerator } from "./rng.js";
import { checkRunSettings, imageCount, type RunSettings } from "./settings.js";
import { decodeAndSave, denoiseLoop, encodePrompts, imageParameters, initialLatents, prepareSchedule, type LatentShape, type LatentSource } from "./stages/index.js";
import { UserError } from "../util/errors.js";
import type { RgbImage } from "../image/image.js";
import { decodeImage } from "./stages/index.js";

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
  /**
   * Previews: every `every` denoising steps (not at the last one: the result is that), the first
   * image's latents as they are then, decoded by the run's own VAE decoder. Off unless given; each
   * costs one decoder call. The run waits for the previews before it decodes the result.
   */
  preview?: { every: number; onImage: (step: number, total: number, image: RgbImage) => void | Promise<void> };
  /** Sees the intermediate tensors (for tests and debugging): prompt embeddings, latents, decoded images. */
  trace?: (stage: "prompt_embeds" | "negative_prompt_embeds" | "latents_init" | "latents" | "decoded", data: Float32Array, step?: number) => void;
  /**
   * Sees the phases of the run's start, timed (performance.now(), ms): reading the plan, checking
   * and opening each graph (with how it used the optimised-graph cache), tokenizing, encoding the
   * prompts, the initial latents, the first U-Net step. Phases overlap: sessions open in the background.
   */
  onPhase?: (p: Phase) => void;
  /**
   * How sessions open (for benchmarks and tests): `sequential` opens one at a time, each when it is
   * first needed, as sdc did before; `cache: false` skips the optimised-graph cache; `prepacking: false`
   * turns off onnxruntime's weight prepacking.
   */
  sessions?: { sequential?: boolean; cache?: boolean; prepacking?: boolean };
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
  /** With DeepCache: U-Net calls that ran the full and the shallow graph. */
  deepcache?: { full: number; shallow: number };
}

/** Execute a compiled folder's plan.json with these run settings. */
export async function runPlan(dir: string, s: RunSettings, opts: RunPlanOptions = {}): Promise<RunResult> {
  const t0 = performance.now();
  const log = opts.log ?? (() => {});
  const trace = opts.trace;
  const phase = opts.onPhase ?? (() => {});
  const timed = <T>(name: string, f: () => T): T => {
    const start = performance.now();
    const r = f();
    phase({ phase: name, start, end: performance.now() });
    return r;
  };
  const timedAsync = async <T>(name: string, f: () => Promise<T>): Promise<T> => {
    const start = performance.now();
    const r = await f();
    phase({ phase: name, start, end: performance.now() });
    return r;
  };
  const plan = timed("read plan", () => readPlan(dir));
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

  // The sessions open while the prompts are tokenized and encoded: the U-Net's now, in a worker
  // thread (onnxruntime-node creates sessions on the calling thread, so only a second thread
  // overlaps them), where its steps then run; for img2img the VAE encoder's; the VAE decoder's on
  // the main thread once the first step is done, so that it never delays the first step and is
  // ready when the loop ends.
  const seq = opts.sessions?.sequential === true;
  const opened = await openPlanGraphs(dir, plan, {
    threads: s.threads,
    open: seq ? [] : img2img ? ["vae_encoder", "unet"] : ["unet"],
    worker: seq ? [] : ["unet"],
    sequential: seq,
    ...(opts.sessions?.cache === false ? { cache: false } : {}),
    ...(opts.sessions?.prepacking === false ? { prepacking: false } : {}),
    onPhase: phase,
    log,
  });
  const { graphs, ep } = opened;
  try {
    log(opened.fallback ? `running on CPU: ${opened.fallback}` : `running on ${ep === "cuda" ? "CUDA" : "CPU"}`);

    // 1. prompt embeddings
    const tokenizer = timed("tokenizer", () => ClipTokenizer.fromFolder(path.join(dir, plan.tokenizer.dir)));
    // an LCM checkpoint's U-Net takes the guidance scale as an embedding (LatentConsistencyModelPipeline):
    // one U-Net batch, no negative prompt
    const condShape = plan.graphs.unet.inputs.find((i) => i.name === "timestep_cond")?.shape[1];
    const condDim = typeof condShape === "number" ? condShape : undefined;
    const cfg = condDim === undefined && s.guidanceScale > 1;
    if (condDim !== undefined && s.negativePrompts.some((n) => n !== ""))
      log("note: this U-Net embeds the guidance scale (an LCM checkpoint): it runs no negative batch, so the negative prompt is not used");
    const embeddings = await timedAsync("encode prompts", () =>
      encodePrompts(graphs.text_encoder, tokenizer, { prompts: s.prompts, negativePrompts: s.negativePrompts, perPrompt: s.batch, guidance: cfg, log }),
    );
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
    const latents = await timedAsync("initial latents", () => initialLatents(source, { shape, schedule, generator }));
    trace?.("latents_init", latents);

    // 3. denoising loop (previews decoded one after another, in step order, beside it)
    const preview = opts.preview;
    if (preview && !(Number.isInteger(preview.every) && preview.every >= 1))
      throw new UserError({ message: `preview every ${preview.every} steps: expected a whole number ≥ 1`, subject: "preview.every" });
    const firstImage = shape.channels * shape.height * shape.width;
    let previews: Promise<void> = Promise.resolve();
    let previewError: unknown;
    const total = schedule.timesteps.length;
    const loopStart = performance.now();
    const loop = await denoiseLoop(graphs.unet, {
      schedule,
      latents,
      shape,
      embeddings,
      guidanceScale: cfg ? s.guidanceScale : 1,
      guidanceRescale: s.guidanceRescale,
      ...(condDim !== undefined ? { timestepCond: guidanceScaleEmbedding(s.guidanceScale, condDim, shape.images) } : {}),
      noise: generator,
      signal: opts.signal,
      progress: progressBar(opts.progress ?? true),
      label: img2img ? "img2img" : "txt2img",
      ...(plan.tome ? { unetFeeds: tomeFeeds(plan.tome, s.seed, s.tome ?? { random: true }).next } : {}),
      ...(s.deepcache && plan.deepcache && opened.unetShallow ? { deepcache: { shallow: opened.unetShallow, feature: plan.deepcache.feature, settings: s.deepcache } } : {}),
      onStep: (step, l) => {
        if (step === 1) {
          phase({ phase: "first step", start: loopStart, end: performance.now() });
          if (!seq) opened.prepare("vae_decoder");
        }
        trace?.("latents", l, step - 1);
        opts.onStep?.(step, total);
        if (preview && step % preview.every === 0 && step < total) {
          const z = l.slice(0, firstImage);
          previews = previews.then(async () => {
            if (previewError !== undefined) return;
            try {
              const { image } = await decodeImage(graphs.vae_decoder, z, { ...shape, images: 1 }, plan.vae.scalingFactor);
              await preview.onImage(step, total, image);
            } catch (e) {
              previewError = e; // raised after the loop, never an unhandled rejection in between
            }
          });
        }
      },
    });
    await previews;
    if (previewError !== undefined) throw previewError;
    const itPerSec = loop.steps / loop.seconds;
    const dc = loop.calls ? { deepcache: loop.calls } : {};
    if (loop.cancelled) {
      const seconds = (performance.now() - t0) / 1000;
      return { outputs: [], summary: `cancelled after step ${loop.steps} of ${loop.total}`, cancelled: true, ep, seconds, itPerSec, ...dc };
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
    const cached = loop.calls ? `; DeepCache: ${loop.calls.full} full and ${loop.calls.shallow} shallow U-Net calls` : "";
    return { outputs, summary: `wrote ${what} to ${displayPath(s.outputDir)} in ${seconds.toFixed(1)} s (${itPerSec.toFixed(2)} it/s on ${ep.toUpperCase()}${cached})`, cancelled: false, ep, seconds, itPerSec, ...dc };
  } finally {
    await opened.release();
  }
}

function displayPath(f: string): string {
  const r = path.relative(process.cwd(), f);
  return r && !r.startsWith("..") ? r : f;
}
