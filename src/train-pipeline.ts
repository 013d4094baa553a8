/**
 * A loaded training pipeline, from its config to trained weights: compile the training graphs
 * when stale, open the data set, hand the trainer its settings (everything in `train` that is not
 * compiled), then export what was trained where the common tools load it. Like pipeline.ts, this is
 * where config, compiler and runtime meet; the trainer itself never sees the config.
 *
 * Output (output.dir, default out/<name>):
 *   checkpoints/checkpoint-NNNNNN/   resumable state (train.checkpointing.dir to put it elsewhere)
 *   lora/pytorch_lora_weights.safetensors  (LoRA, diffusers/PEFT keys: diffusers' load_lora_weights)
 *   lora/<name>.safetensors                 (LoRA, kohya keys and metadata: AUTOMATIC1111, ComfyUI)
 *   model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/
 *                                           (full fine-tunes: the whole pipeline as a diffusers folder,
 *                                           the trained components as trained, the others as the model has them)
 *   unet_ema/, vae_ema/, text_encoder_ema/  (with EMA: the averaged weights, as diffusers saves them)
 *   validation/step-NNNNNN.png              (validation images, a captioned grid per step)
 *   train_log.jsonl, loss.png               (every step's loss, lr and gradient norm; the loss curve)
 *   cache/latents/                          (the frozen VAE's posterior per image and transform: cache_latents)
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { compile } from "./compiler/compile.js";
import { trainGraphConfig } from "./compiler/train.js";
import { openModelWeights, providerFor } from "./compiler/weights.js";
import { loadPipeline, type LoadedPipeline, type LoadOptions } from "./config/load.js";
import { writeInitialModel } from "./models/init.js";
import { openDataset } from "./data/dataset.js";
import { materialize } from "./ir/onnx/writer.js";
import { preflight } from "./preflight.js";
import { saveLora, type LoraFactors } from "./models/weights/lora-save.js";
import { unetLayoutFromConfig } from "./models/weights/keymap.js";
import { COMPONENT_WEIGHT_FILE, componentConfigJson, modelIndexJson } from "./models/weights/diffusers.js";
import { writeSafetensors } from "./models/weights/safetensors.js";
import { saveSingleFile, type ComponentTensors } from "./models/weights/single-file-save.js";
import type { TrainEvent } from "./trainer/report.js";
import { train as runTrainer, type StepReport, type TrainSettings } from "./trainer/trainer.js";
import { UserError } from "./util/errors.js";
import { displayPath } from "./util/paths.js";

export interface TrainRunOptions {
  cwd?: string;
  compiledDir?: string;
  recompile?: boolean;
  signal?: AbortSignal;
  log?: (line: string) => void;
  /** "latest", a checkpoint folder, or null/undefined: start fresh. */
  resume?: string | null;
  /** Resume although training settings changed (they are listed). */
  forceResume?: boolean;
  /** How the pipeline was loaded (its overrides): training from scratch reloads it over its initial weights. */
  loadOptions?: LoadOptions;
  onStep?: (s: StepReport) => void;
  onEvent?: (ev: TrainEvent) => void;
  /** Stop after this many steps of this run (an interrupted run, for tests). */
  stopAfter?: number;
  threads?: number;
}

export interface TrainRunResult {
  outputDir: string;
  steps: number;
  losses: { step: number; loss: number }[];
  checkpoints: string[];
  /** Validation grids written (validation/step-NNNNNN.png). */
  validation: string[];
  /** Files written with the trained weights. */
  exported: string[];
  stopped: boolean;
}

export async function trainPipeline(p0: LoadedPipeline, o: TrainRunOptions = {}): Promise<TrainRunResult> {
  let p = p0;
  let t = p.config.train;
  if (!t) throw new UserError({ message: "this pipeline has no train section", subject: p.file, hint: "add a train section, or use sdc run to sample" });
  const cwd = o.cwd ?? process.cwd();
  const log = o.log ?? (() => {});
  // writable output, checkpoint and compiled folders, CUDA: before any weights are written
  for (const note of await preflight(p, { cwd, ...(o.compiledDir !== undefined ? { compiledDir: o.compiledDir } : {}) })) log(`note: ${note}`);
  if (p.model.kind === "inline") {
    // from scratch: seeded initial weights for the inline architecture, written once as a diffusers
    // folder (out/<name>/init), and the pipeline loaded again over it
    const init = path.join(p.config.output.dir, "init");
    if (!fs.existsSync(path.join(init, "model_index.json"))) {
      writeInitialModel(init, p.model, t.seed);
      log(`initial weights (seed ${t.seed}) in ${displayPath(init, cwd)}`);
    }
    const lo = o.loadOptions ?? { cwd };
    p = await loadPipeline(p.file, { ...lo, cwd, overrides: [...(lo.overrides ?? []), `model.from=${init}`] });
    t = p.config.train!;
  }
  const c = await compile(p, { outDir: o.compiledDir, cwd, force: o.recompile, log });
  if (!c.upToDate) log(c.summary);
  const spec = c.plan.training!;

  const display = (abs: string) => displayPath(abs, cwd);
  const dataset = await openDataset(t.data, { where: p.where, display });
  // the held-out set: the same layout and options as train.data, its own folder
  const holdout = t.validation.holdout_dir ? await openDataset({ ...t.data, dir: t.validation.holdout_dir, subsets: undefined }, { where: p.where, display, path: ["train", "validation"] }) : null;
  const outputDir = p.config.output.dir;
  const checkpointsDir = t.checkpointing.dir ?? path.join(outputDir, "checkpoints");
  const weights = spec.lora ? null : openModelWeights(p.model, (i) => p.where(["model", "lora", i, "file"]));
  const provider = weights ? providerFor(weights, spec.component) : null;
  const textProvider = weights && spec.textEncoder ? providerFor(weights, "text_encoder") : null;
  const settings: TrainSettings = {
    dataset,
    batch: t.batch,
    steps: t.steps ?? null,
    epochs: t.epochs ?? null,
    seed: t.seed,
    lr: t.optimizer.lr,
    schedule: { type: t.lr_schedule.type, warmupSteps: t.lr_schedule.warmup_steps, numCycles: t.lr_schedule.num_cycles, power: t.lr_schedule.power, lrEnd: t.lr_schedule.lr_end },
    cfgDropout: t.objective.cfg_dropout,
    emaMaxDecay: t.ema.max_decay,
    checkpoints: { dir: checkpointsDir, every: t.checkpointing.every, keep: t.checkpointing.keep },
    resume: o.resume ?? null,
    config: flatten({
      train: { ...trainGraphConfig(t), batch: t.batch, seed: t.seed, steps: t.steps, epochs: t.epochs, lr: t.optimizer.lr, lr_schedule: t.lr_schedule },
      data: dataset.fingerprint,
    }),
    forceResume: o.forceResume === true,
    initialParameter: (name, shape) => {
      const bytes = materialize((spec.textEncoder && name.startsWith("text_model.") ? textProvider! : provider!)(name, shape, "float32"), "float32");
      return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    },
    threads: o.threads ?? p.config.runtime.threads,
    reportDir: outputDir,
    holdout: holdout ? { dataset: holdout, every: t.validation.every } : null,
    latentCacheDir: t.data.cache_latents && spec.component === "unet" ? path.join(outputDir, "cache", "latents") : null,
    validation: t.validation.prompts.length
      ? {
          every: t.validation.every,
          dir: path.join(outputDir, "validation"),
          items: t.validation.prompts.map((v) => {
            const o2 = typeof v === "string" ? { prompt: v } : v;
            return {
              prompt: o2.prompt,
              negativePrompt: o2.negative_prompt ?? t.validation.negative_prompt,
              seed: o2.seed ?? t.validation.seed ?? t.seed,
              guidance: o2.guidance ?? t.validation.guidance,
              steps: o2.steps ?? t.validation.steps,
              width: o2.width ?? t.data.resolution,
              height: o2.height ?? t.data.resolution,
            };
          }),
        }
      : null,
  };
  const r = await runTrainer(c.dir, settings, { signal: o.signal, log, onStep: o.onStep, onEvent: o.onEvent, stopAfter: o.stopAfter });

  const exported: string[] = [];
  if (!r.stopped) {
    checkFinite(r.parameters);
    const shapes = new Map(spec.graphs.train_step.inputs.map((i) => [i.name, i.shape as number[]]));
    if (spec.lora) exported.push(...exportLora(p, outputDir, r.parameters, spec.lora, shapes));
    else {
      // the trained tensors by component: a step that trains the text encoder names its tensors text_model.…
      const trained = new Map<Component, Map<string, Float32Array>>();
      const split = (m: Map<string, Float32Array>) => {
        const out = new Map<Component, Map<string, Float32Array>>();
        for (const [k, v] of m) {
          const c: Component = spec.textEncoder && k.startsWith("text_model.") ? "text_encoder" : spec.component;
          if (!out.has(c)) out.set(c, new Map());
          out.get(c)!.set(k, v);
        }
        return out;
      };
      const order: Component[] = ["unet", "vae", "text_encoder"];
      const parts = split(r.parameters);
      for (const c of order) if (parts.has(c)) trained.set(c, parts.get(c)!);
      const stepInputs = c.plan.training!.graphs.train_step.inputs;
      // parameters that do not reach the loss (e.g. layers clip_skip skips) are written as the model has them
      const untrained = (c: Component, m: Map<string, Float32Array>) => untrainedTensors(p, c, m);
      for (const [component, m] of trained) exported.push(exportComponent(path.join(outputDir, component), m, componentConfig(p, component), stepInputs, untrained(component, m)));
      if (r.ema)
        for (const [component, m] of [...split(r.ema)].sort(([a], [b]) => order.indexOf(a) - order.indexOf(b)))
          exported.push(exportComponent(path.join(outputDir, `${component}_ema`), m, componentConfig(p, component), stepInputs, untrained(component, m)));
      exported.push(...exportRest(p, outputDir, c.dir, new Set(trained.keys())));
      if (t.export.single_file) {
        if (spec.textEncoder) throw new UserError({ message: "single-file export of a trained text encoder is not built yet", ...p.where(["train", "export", "single_file"]), hint: "use the diffusers folder export (train.export.single_file: false)" });
        exported.push(exportSingleFile(p, path.join(outputDir, `${p.name}.safetensors`), spec.component, r.ema ?? r.parameters, shapes, t.export.dtype));
      }
    }
    for (const f of exported) log(`wrote ${displayPath(f, cwd)}`);
  }
  return { outputDir, steps: r.steps, losses: r.losses, checkpoints: r.checkpoints, validation: r.validation, exported, stopped: r.stopped };
}

/**
 * The whole model as one single-file checkpoint (LDM names): the trained component (its EMA
 * weights when EMA is on) with the other components as the model has them.
 */
function exportSingleFile(p: LoadedPipeline, file: string, trained: "unet" | "vae", params: Map<string, Float32Array>, shapes: Map<string, number[]>, dtype: "fp16" | "fp32"): string {
  // SD 1.x text encoders are OpenAI CLIP (quick_gelu); SD 2.x's OpenCLIP tower has other single-file names
  if (p.model.textEncoder.hidden_act !== "quick_gelu")
    throw new UserError({
      message: "single-file export writes SD 1.x (OpenAI CLIP) text encoders; this model's is an SD 2.x (OpenCLIP) one",
      ...p.where(["train", "export", "single_file"]),
      hint: "use the diffusers folder export for SD 2.x models (train.export.single_file: false)",
    });
  const weights = openModelWeights(p.model);
  const base = (component: "unet" | "vae" | "text_encoder"): ComponentTensors => {
    const provider = providerFor(weights, component);
    const set = weights.sets[component];
    return {
      keys: () => set.keys(),
      get: (key) => {
        const shape = set.get(key).shape;
        const bytes = materialize(provider(key, shape, "float32"), "float32");
        return { data: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)), shape };
      },
    };
  };
  const fromTrained: ComponentTensors = { keys: () => [...params.keys()], get: (key) => ({ data: params.get(key)!, shape: shapes.get(key)! }) };
  const vae = p.model.vae;
  const lpb = p.model.unet.layers_per_block;
  if (Array.isArray(lpb) && lpb.some((x) => x !== lpb[0]))
    throw new UserError({ message: "single-file (LDM) names need the same layers_per_block on every level", ...p.where(["train", "export", "single_file"]), hint: "use the diffusers folder export" });
  saveSingleFile(
    file,
    { unet: trained === "unet" ? fromTrained : base("unet"), vae: trained === "vae" ? fromTrained : base("vae"), textEncoder: base("text_encoder") },
    { unet: unetLayoutFromConfig({ ...p.model.unet, layers_per_block: Array.isArray(lpb) ? lpb[0]! : lpb }), vae: { levels: vae.block_out_channels.length, layersPerBlock: vae.layers_per_block } },
    { dtype: dtype === "fp16" ? "F16" : "F32", metadata: { "sdc.trained": trained } },
  );
  return file;
}

/** { a: { b: 1 } } → { "a.b": 1 } (arrays kept whole), for naming what changed. */
function flatten(o: Record<string, unknown>, prefix = "", out: Record<string, unknown> = {}): Record<string, unknown> {
  for (const [k, v] of Object.entries(o)) {
    if (v && typeof v === "object" && !Array.isArray(v)) flatten(v as Record<string, unknown>, `${prefix}${k}.`, out);
    else out[`${prefix}${k}`] = v;
  }
  return out;
}

function checkFinite(m: Map<string, Float32Array>): void {
  for (const [name, a] of m)
    if (!a.every(Number.isFinite)) throw new UserError({ message: `the trained tensor ${name} holds non-finite values: nothing is exported`, subject: name, hint: "resume from an earlier checkpoint with a lower learning rate" });
}

type Component = "unet" | "vae" | "text_encoder";

const WEIGHT_FILE = COMPONENT_WEIGHT_FILE;

function componentConfig(p: LoadedPipeline, c: Component): string {
  return componentConfigJson(c, c === "unet" ? p.model.unet : c === "vae" ? p.model.vae : p.model.textEncoder);
}

/** Writes a folder beside its final place and renames it over, so no reader sees it half-written. */
function writeFolderAtomically(dir: string, fill: (tmp: string) => void): void {
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  try {
    fill(tmp);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

type StTensor = { name: string; dtype: "F32"; shape: number[]; data: Uint8Array };

/** The model's float tensors of a component that are not among the trained ones, as float32. */
function untrainedTensors(p: LoadedPipeline, c: Component, trained: Map<string, Float32Array>): StTensor[] {
  if (p.model.kind === "inline") return [];
  const weights = openModelWeights(p.model);
  const set = weights.sets[c];
  const provider = providerFor(weights, c);
  return set
    .keys()
    .filter((k) => !trained.has(k))
    .map((key) => {
      const shape = set.get(key).shape;
      return { name: key, dtype: "F32" as const, shape, data: materialize(provider(key, shape, "float32"), "float32") };
    });
}

function exportComponent(dir: string, params: Map<string, Float32Array>, config: string, inputs: { name: string; shape: (number | string)[] }[], rest: StTensor[] = []): string {
  const shapes = new Map(inputs.map((i) => [i.name, i.shape as number[]]));
  const component = path.basename(dir).replace(/_ema$/, "") as Component;
  writeFolderAtomically(dir, (tmp) => {
    writeSafetensors(
      path.join(tmp, WEIGHT_FILE[component]),
      [...[...params].map(([name, data]) => ({ name, dtype: "F32" as const, shape: shapes.get(name)!, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) })), ...rest],
      { format: "pt" },
    );
    fs.writeFileSync(path.join(tmp, "config.json"), config);
  });
  return path.join(dir, WEIGHT_FILE[component]);
}

/**
 * The rest of the pipeline beside the trained components, so that the output folder is a diffusers
 * folder (`model.from` of a next stage, diffusers' from_pretrained): the untrained components as the
 * model has them (hard links to a diffusers folder's single weight file; otherwise written as
 * float32, with any model.lora folded in), the tokenizer, the scheduler and model_index.json.
 */
function exportRest(p: LoadedPipeline, outputDir: string, compiledDir: string, trained: Set<Component>): string[] {
  const written: string[] = [];
  let weights: ReturnType<typeof openModelWeights> | null = null;
  for (const c of ["unet", "vae", "text_encoder"] as const) {
    if (trained.has(c)) continue;
    const dir = path.join(outputDir, c);
    const files = p.model.weights[c]?.files ?? [];
    writeFolderAtomically(dir, (tmp) => {
      fs.writeFileSync(path.join(tmp, "config.json"), componentConfig(p, c));
      const dest = path.join(tmp, WEIGHT_FILE[c]);
      if (p.model.kind === "diffusers" && files.length === 1 && p.model.lora.length === 0) {
        try {
          fs.linkSync(files[0]!, dest);
        } catch {
          fs.copyFileSync(files[0]!, dest);
        }
        return;
      }
      weights ??= openModelWeights(p.model);
      const provider = providerFor(weights, c);
      const set = weights.sets[c];
      writeSafetensors(
        dest,
        set.keys().map((key) => {
          const shape = set.get(key).shape;
          const bytes = materialize(provider(key, shape, "float32"), "float32");
          return { name: key, dtype: "F32" as const, shape, data: bytes };
        }),
        { format: "pt" },
      );
    });
    written.push(path.join(dir, WEIGHT_FILE[c]));
  }
  writeFolderAtomically(path.join(outputDir, "tokenizer"), (tmp) => {
    const tok = path.join(compiledDir, "tokenizer");
    for (const f of fs.readdirSync(tok)) fs.copyFileSync(path.join(tok, f), path.join(tmp, f));
  });
  writeFolderAtomically(path.join(outputDir, "scheduler"), (tmp) => {
    fs.writeFileSync(path.join(tmp, "scheduler_config.json"), `${JSON.stringify(p.model.schedulerConfig, null, 2)}\n`);
  });
  const index = path.join(outputDir, "model_index.json");
  fs.writeFileSync(`${index}.tmp-${process.pid}`, modelIndexJson(String(p.model.schedulerConfig._class_name ?? "DDPMScheduler")));
  fs.renameSync(`${index}.tmp-${process.pid}`, index);
  written.push(index);
  return written;
}

function exportLora(p: LoadedPipeline, outputDir: string, params: Map<string, Float32Array>, lora: { rank: number; alpha: number }, shapes: Map<string, number[]>): string[] {
  const factors: LoraFactors[] = [];
  for (const [name, down] of params) {
    const m = /^(.*)\.lora_A\.weight$/.exec(name);
    if (!m) continue;
    const upName = `${m[1]}.lora_B.weight`;
    factors.push({ component: m[1]!.startsWith("text_model.") ? "text_encoder" : "unet", module: m[1]!, down, downShape: shapes.get(name)!, up: params.get(upName)!, upShape: shapes.get(upName)! });
  }
  const unet = p.model.unet;
  const sd2 = (Array.isArray(unet.cross_attention_dim) ? unet.cross_attention_dim[0] : unet.cross_attention_dim) === 1024;
  const base = sd2 ? (p.model.schedulerConfig.prediction_type === "v_prediction" ? "sd2-v" : "sd2") : "sd1";
  const dir = path.join(outputDir, "lora");
  const peft = path.join(dir, "pytorch_lora_weights.safetensors");
  const kohya = path.join(dir, `${p.name}.safetensors`);
  saveLora(peft, factors, { format: "peft", rank: lora.rank, alpha: lora.alpha, base });
  saveLora(kohya, factors, { format: "kohya", rank: lora.rank, alpha: lora.alpha, base, title: p.name });
  return [peft, kohya];
}
