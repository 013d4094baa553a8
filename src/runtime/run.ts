/**
 * Running a compiled plan: txt2img and img2img, as diffusers' StableDiffusionPipeline and
 * StableDiffusionImg2ImgPipeline (v0.24) compute them.
 *
 * `runPlan(dir, settings)` executes a compiled folder's plan.json with the run settings given:
 * tokenize → text encoder → initial latents (PyTorch-compatible CPU generator, or a latents file,
 * or the encoded init image noised to the first timestep) → denoising loop with classifier-free
 * guidance → VAE decoder → PNGs with their generation parameters. The runtime reads only the plan,
 * the compiled files and the settings; it writes only into the output folder. Compiling first when
 * a pipeline changed is src/pipeline.ts's business.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import { SafetensorsFile } from "../models/weights/safetensors.js";
import { readPlan } from "../plan/read.js";
import { decodeNonFinite, type GraphName, type Plan } from "../plan/schema.js";
import { createScheduler, img2imgTimesteps, schedulerDefinition, withStableDiffusionPipelineFixups, type Scheduler } from "../schedulers/index.js";
import { UserError } from "../util/errors.js";
import { f16ToF32, f32ToF16 } from "../util/half.js";
import { Cancelled, denoise } from "./denoise.js";
import { formatParameters, imageToTensor, loadImage, makeGrid, samplerName, savePng, tensorToImages } from "../image/image.js";
import { progressBar } from "./progress.js";
import { TorchGenerator } from "./rng.js";
import { checkRunSettings, imageCount, type RunSettings } from "./settings.js";
import { openSession, type Device, type OpenedSession } from "./session.js";
import { ClipTokenizer, truncationWarning } from "../tokenizer/clip.js";

export interface RunPlanOptions {
  /** Aborting stops the run between denoising steps; the result then has `cancelled: true`. */
  signal?: AbortSignal;
  /** Lines for a person (EP notice, truncation warnings, files written). */
  log?: (line: string) => void;
  /** Show a progress bar on stderr when it is a TTY (default true). */
  progress?: boolean;
  /** Output file names get this counter (watch --run numbers its runs). */
  runIndex?: number;
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
  const plan = readPlan(dir);
  checkRunSettings(plan, s);
  const prompts = s.prompts;
  const negatives = s.negativePrompts;
  const perPrompt = s.batch;
  const total = imageCount(s);
  const cfg = s.guidanceScale > 1;
  const img2img = s.initImage !== null;

  // sessions (the first one decides the execution provider)
  const sessions = new Sessions(dir, plan, plan.runtime.device as Device, s.threads);
  try {
    const te = await sessions.get("text_encoder");
    if (te.fallback) log(`running on CPU: ${te.fallback}`);
    else log(`running on ${te.ep === "cuda" ? "CUDA" : "CPU"}`);

    // 1. prompt embeddings, each prompt repeated `perPrompt` times (diffusers' order)
    const tok = ClipTokenizer.fromFolder(path.join(dir, plan.tokenizer.dir));
    const embed = async (texts: string[]) => {
      const enc = tok.encodeBatch(texts);
      enc.truncated.forEach((cut) => cut && log(`warning: ${truncationWarning(cut, tok.modelMaxLength)}`));
      const out = await sessions.run("text_encoder", { input_ids: new ort.Tensor("int32", enc.ids, enc.shape) });
      return out.last_hidden_state!;
    };
    const text = await embed(prompts);
    const [, seqLen, width] = text.dims as [number, number, number];
    const repeat = (e: Float32Array) => {
      const per = seqLen * width;
      const out = new Float32Array(total * per);
      for (let i = 0; i < total; i++) out.set(e.subarray(Math.floor(i / perPrompt) * per, (Math.floor(i / perPrompt) + 1) * per), i * per);
      return out;
    };
    const textEmb = repeat(text.data);
    const uncondEmb = cfg ? repeat((await embed(prompts.map((_, i) => negatives[negatives.length === 1 ? 0 : i]!))).data) : null;
    opts.trace?.("prompt_embeds", textEmb);
    if (uncondEmb) opts.trace?.("negative_prompt_embeds", uncondEmb);

    // 2. scheduler and timesteps
    const scheduler = withStableDiffusionPipelineFixups(createScheduler(plan.scheduler.className, decodeNonFinite(plan.scheduler.config)));
    const gen = new TorchGenerator(s.seed);
    const C = plan.vae.latentChannels;
    const h = s.height / plan.vae.scaleFactor;
    const w = s.width / plan.vae.scaleFactor;
    const latentShape = [total, C, h, w];
    let timesteps: Float64Array;
    let latents: Float32Array;
    if (!img2img) {
      scheduler.setTimesteps(plan.scheduler.steps);
      timesteps = scheduler.timesteps;
      const init = s.latents ? readLatents(s.latents, latentShape) : gen.randn(total * C * h * w);
      latents = Float32Array.from(init, (x) => Math.fround(x * scheduler.initNoiseSigma));
    } else {
      const t = img2imgTimesteps(scheduler, plan.scheduler.steps, s.strength);
      timesteps = t.timesteps;
      latents = await img2imgLatents(sessions, plan, s, s.initImage!, scheduler, gen, total, t.startTimestep);
    }

    opts.trace?.("latents_init", latents);

    // 3. denoising loop
    const bar = progressBar(opts.progress ?? true);
    bar.start(timesteps.length, img2img ? "img2img" : "txt2img");
    const loopStart = performance.now();
    let evals = 0;
    try {
      latents = await denoise({
        scheduler,
        timesteps,
        latents,
        batch: total,
        text: textEmb,
        uncond: uncondEmb,
        guidanceScale: s.guidanceScale,
        guidanceRescale: s.guidanceRescale,
        noise: gen,
        unet: async (sample, t, emb, n) => {
          evals++;
          const out = await sessions.run("unet", {
            sample: [sample, [n, C, h, w]],
            timestep: [new Float32Array(n).fill(t), [n]],
            encoder_hidden_states: [emb, [n, seqLen, width]],
          });
          return out.out_sample!.data;
        },
        onStep: (i, _n, l) => {
          bar.tick();
          opts.trace?.("latents", l, i - 1);
        },
        cancelled: () => opts.signal?.aborted === true,
      });
    } catch (e) {
      bar.stop();
      if (e instanceof Cancelled) {
        const seconds = (performance.now() - t0) / 1000;
        return { outputs: [], summary: `cancelled after step ${e.step} of ${timesteps.length}`, cancelled: true, ep: te.ep, seconds, itPerSec: evals / ((performance.now() - loopStart) / 1000) };
      }
      throw e;
    }
    bar.stop();
    const itPerSec = timesteps.length / ((performance.now() - loopStart) / 1000);

    // 4. decode each image (bounded memory) and save
    const inv = 1 / plan.vae.scalingFactor;
    const per = C * h * w;
    const outDir = s.outputDir;
    const outputs: string[] = [];
    const images: { width: number; height: number; data: Uint8Array }[] = [];
    const karras = plan.scheduler.config.use_karras_sigmas === true;
    const first = nextIndex(outDir);
    for (let i = 0; i < total; i++) {
      const z = Float32Array.from(latents.subarray(i * per, (i + 1) * per), (x) => Math.fround(x * inv));
      const out = await sessions.run("vae_decoder", { latent_sample: [z, [1, C, h, w]] });
      opts.trace?.("decoded", out.sample!.data, i);
      const rgb = tensorToImages(out.sample!.data, [1, 3, s.height, s.width])[0]!;
      const prompt = prompts[Math.floor(i / perPrompt)]!;
      const params = formatParameters({
        prompt,
        negativePrompt: cfg ? negatives[negatives.length === 1 ? 0 : Math.floor(i / perPrompt)] : undefined,
        steps: plan.scheduler.steps,
        sampler: samplerName(schedulerDefinition(plan.scheduler.className).shortName, { karras }),
        cfgScale: s.guidanceScale,
        seed: s.latents ? "from latents file" : s.seed,
        width: s.width,
        height: s.height,
        modelHash: plan.model.hash,
        modelName: plan.model.name,
        denoisingStrength: img2img ? s.strength : undefined,
        extra: { ...(total > 1 ? { "Batch size": total, "Batch pos": i } : {}), ...(s.guidanceRescale > 0 ? { "CFG rescale": s.guidanceRescale } : {}), Generator: "sdc (PyTorch CPU)" },
      });
      const file = path.join(outDir, `${opts.runIndex !== undefined ? `run${String(opts.runIndex).padStart(3, "0")}-` : ""}${String(first + i).padStart(5, "0")}-${s.seed}.png`);
      await savePng(file, rgb, s.width, s.height, { parameters: params });
      outputs.push(file);
      images.push({ width: s.width, height: s.height, data: rgb });
    }
    if (s.grid && images.length > 1) {
      const g = makeGrid(images);
      const file = path.join(outDir, `${opts.runIndex !== undefined ? `run${String(opts.runIndex).padStart(3, "0")}-` : ""}grid-${String(first).padStart(5, "0")}.png`);
      await savePng(file, g.data, g.width, g.height, {});
      outputs.push(file);
    }
    const seconds = (performance.now() - t0) / 1000;
    for (const f of outputs) log(`wrote ${displayPath(f)}`);
    const what = `${total} image${total === 1 ? "" : "s"}${outputs.length > total ? " and a grid" : ""}`;
    return { outputs, summary: `wrote ${what} to ${displayPath(outDir)} in ${seconds.toFixed(1)} s (${itPerSec.toFixed(2)} it/s on ${te.ep.toUpperCase()})`, cancelled: false, ep: te.ep, seconds, itPerSec };
  } finally {
    await sessions.release();
  }
}

function displayPath(f: string): string {
  const r = path.relative(process.cwd(), f);
  return r && !r.startsWith("..") ? r : f;
}

/** The next free image number in an output folder (files are never overwritten). */
function nextIndex(dir: string): number {
  if (!fs.existsSync(dir)) return 0;
  let n = 0;
  for (const f of fs.readdirSync(dir)) {
    const m = /^(?:run\d+-)?(\d{5})-/.exec(f);
    if (m) n = Math.max(n, Number(m[1]) + 1);
  }
  return n;
}

function readLatents(file: string, shape: number[]): Float32Array {
  const st = SafetensorsFile.open(file);
  const name = st.tensors.has("latents") ? "latents" : st.tensors.size === 1 ? [...st.tensors.keys()][0]! : null;
  if (!name) throw new UserError({ message: `has ${st.tensors.size} tensors and none is named "latents"`, subject: file, hint: "store the initial latents as a tensor named latents" });
  const info = st.tensors.get(name)!;
  const want = shape.join("×");
  if (info.shape.join("×") !== want)
    throw new UserError({ message: `tensor ${name} has shape ${info.shape.join("×")}, the run needs ${want} ([images, latent channels, height/${"f"}, width/${"f"}])`, subject: file, hint: "match sample.batch × prompts, and width/height divided by the VAE factor" });
  return st.readFloat32(name);
}

/**
 * img2img's initial latents (StableDiffusionImg2ImgPipeline.prepare_latents, v0.24): encode the
 * image, draw from the posterior with the generator, scale, repeat over the batch, then noise to
 * the first timestep with a second draw.
 */
async function img2imgLatents(sessions: Sessions, plan: Plan, s: RunSettings, file: string, scheduler: Scheduler, gen: TorchGenerator, total: number, startTimestep: number): Promise<Float32Array> {
  const image = await loadImage(file, { width: s.width, height: s.height, resize: "stretch" });
  const x = imageToTensor(image);
  const out = await sessions.run("vae_encoder", { sample: [x.data, x.shape] });
  const params = out.latent_parameters!.data;
  const per = params.length / 2; // [1, 2C, h, w]: mean then logvar
  const eps = gen.randn(per);
  const f = Math.fround;
  const one = new Float32Array(per);
  for (let i = 0; i < per; i++) {
    const logvar = Math.min(Math.max(params[per + i]!, -30), 20);
    const std = f(Math.exp(f(0.5 * logvar)));
    one[i] = f(f(params[i]! + f(std * eps[i]!)) * plan.vae.scalingFactor);
  }
  const init = new Float32Array(total * per);
  for (let b = 0; b < total; b++) init.set(one, b * per);
  const noise = gen.randn(total * per);
  return scheduler.addNoise(init, noise, startTimestep);
}

/** The plan's sessions, opened on first use, with inputs/outputs converted to the graphs' dtypes. */
class Sessions {
  private open = new Map<GraphName, OpenedSession>();
  constructor(
    private dir: string,
    private plan: Plan,
    private device: Device,
    private threads: number,
  ) {}

  async get(name: GraphName): Promise<OpenedSession> {
    let s = this.open.get(name);
    if (!s) {
      // after the first session, follow its provider (no second CUDA attempt after a fallback)
      const first = [...this.open.values()][0];
      const device = first ? first.ep : this.device;
      s = await openSession(path.join(this.dir, this.plan.graphs[name].file), { device, threads: this.threads });
      this.open.set(name, s);
    }
    return s;
  }

  /** Run a graph; float inputs given as [Float32Array, dims] are converted to the graph's dtype. */
  async run(name: GraphName, feeds: Record<string, ort.Tensor | [Float32Array, readonly number[]]>): Promise<Record<string, { data: Float32Array; dims: readonly number[] }>> {
    const s = await this.get(name);
    const spec = this.plan.graphs[name];
    const inputs: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(feeds)) {
      if (v instanceof ort.Tensor) inputs[k] = v;
      else {
        const [data, dims] = v as [Float32Array, readonly number[]];
        const dtype = spec.inputs.find((i) => i.name === k)?.dtype ?? "float32";
        inputs[k] = dtype === "float16" ? new ort.Tensor("float16", f32ToF16(data), dims) : new ort.Tensor("float32", data, dims);
      }
    }
    const out = await s.session.run(inputs);
    const res: Record<string, { data: Float32Array; dims: readonly number[] }> = {};
    for (const [k, t] of Object.entries(out)) {
      const data = t.type === "float16" ? f16ToF32(new Uint8Array((t.data as Uint16Array).buffer, (t.data as Uint16Array).byteOffset, (t.data as Uint16Array).byteLength)) : (t.data as Float32Array);
      res[k] = { data, dims: t.dims };
    }
    return res;
  }

  async release(): Promise<void> {
    for (const s of this.open.values()) await s.session.release();
    this.open.clear();
  }
}
