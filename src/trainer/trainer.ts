/**
 * The trainer: runs a compiled folder's training graphs (plan.training) over a dataset, the way
 * the seed's recipe and diffusers' training scripts do it — the frozen VAE turns images into
 * latents, the frozen text encoder captions into embeddings (or, when the text encoder is trained
 * with the U-Net, the captions go into the step as token ids), the host draws every random value (noise,
 * timesteps, posterior ε, caption drops) from a seeded torch-compatible generator, and the step
 * graph returns the loss with the updated parameters and optimizer state.
 *
 * Everything a step depends on is either in the graphs or in a checkpoint (parameters, optimizer
 * state, EMA, step, the data loader's position, the generator's state), so a run interrupted at any
 * step and resumed continues with the same batches, the same random values and the same numbers.
 *
 * Per micro-batch the generator is drawn in this order: noise (B·C·h·w normals), timesteps (B
 * integers in [0, T)), offset noise (B·C), perturbation noise (B·C·h·w), posterior ε (B·C·h·w),
 * caption drops (B uniforms), LoRA dropout masks (uniforms, one tensor per adapted module in the
 * graph's input order); each only when the step graph takes it.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import type { Dataset } from "../data/dataset.js";
import { itemLatentKey } from "../data/cache.js";
import { DataLoader, type Batch, type LoaderPosition } from "../data/loader.js";
import { evalDim } from "../plan/dims.js";
import { readPlan } from "../plan/read.js";
import type { GraphSpecT, Plan, TrainingSpecT } from "../plan/schema.js";
import { samplerName, type RgbImage } from "../image/image.js";
import { plotLossCurve, saveValidationGrid, TrainLog, type TrainEvent } from "./report.js";
import { openPlanGraphs, type GraphRunner, type OpenedGraphs } from "../runtime/graphs.js";
import { decodeImage, denoiseLoop, encodePrompts, initialLatents, prepareSchedule, type LatentShape } from "../runtime/stages/index.js";
import { TorchGenerator, type GeneratorState } from "../runtime/rng.js";
import { openSession } from "../runtime/session.js";
import { checkGraphFiles } from "../runtime/verify.js";
import { ClipTokenizer } from "../tokenizer/clip.js";
import { learningRate, type LrSchedule } from "../training/lr.js";
import { UserError } from "../util/errors.js";
import { latestCheckpoint, loadCheckpoint, saveCheckpoint, type CheckpointTensor, type TensorGroup } from "./checkpoint.js";

export interface TrainSettings {
  dataset: Dataset;
  batch: number;
  /** Optimizer steps; or epochs (passes over the data) when steps is null. */
  steps: number | null;
  epochs: number | null;
  seed: number;
  lr: number;
  schedule: Omit<LrSchedule, "totalSteps">;
  /** Probability of dropping a caption (classifier-free guidance training). */
  cfgDropout: number;
  emaMaxDecay: number;
  checkpoints: { dir: string; every: number; keep: number };
  /** "latest": the newest checkpoint in checkpoints.dir, a checkpoint folder, or null: start fresh. */
  resume: string | null;
  /** The training settings a resume must keep (graphs, data, batch, seed, schedule), flattened to dotted keys. */
  config: Record<string, unknown>;
  /** Resume even when `config` differs from the checkpoint's (the differences are still reported). */
  forceResume?: boolean;
  /** The initial value of a trained parameter (full fine-tunes), by state-dict name. */
  initialParameter(name: string, shape: number[]): Float32Array;
  /** CPU threads (0: one per core); the same count on resume keeps results bit-identical. */
  threads?: number;
  /**
   * Cache of the frozen VAE encoder's posterior (mean and log-variance) per image and transform,
   * on disk under this folder (train.data.cache_latents); the posterior is sampled afresh each time.
   */
  latentCacheDir: string | null;
  /** Where the step log (train_log.jsonl) and the loss curve (loss.png) go; null: neither is written. */
  reportDir: string | null;
  /** Validation images: at step 0 (a fresh run), every `every` steps and at the end, as a grid PNG per step. */
  validation: { items: ValidationItem[]; every: number; dir: string } | null;
  /** Validation loss: the train_eval graph over every batch of a held-out set, with the same noise each time (at the validation steps). */
  holdout: { dataset: Dataset; every: number } | null;
}

export interface ValidationItem {
  prompt: string;
  negativePrompt: string;
  seed: number;
  guidance: number;
  steps: number;
  width: number;
  height: number;
}

export interface TrainOptions {
  signal?: AbortSignal;
  log?: (line: string) => void;
  /** Called after every optimizer step. */
  onStep?: (s: StepReport) => void;
  /** Checkpoints, validation grids, a resume: for a progress display. */
  onEvent?: (ev: TrainEvent) => void;
  /** Stop after this many steps of this run (tests: an interrupted run). */
  stopAfter?: number;
}

export interface StepReport {
  step: number;
  total: number;
  epoch: number;
  loss: number;
  lr: number;
  gradNorm: number | null;
  seconds: number;
}

export interface TrainResult {
  steps: number;
  losses: { step: number; loss: number }[];
  /** The trained tensors by state-dict name (and their EMA when on). */
  parameters: Map<string, Float32Array>;
  ema: Map<string, Float32Array> | null;
  checkpoints: string[];
  /** Validation grids written. */
  validation: string[];
  stopped: boolean;
}

interface TrainState {
  step: number;
  loader: LoaderPosition;
  generator: GeneratorState;
  config: Record<string, unknown>;
  losses: { step: number; loss: number }[];
}

type Spec = GraphSpecT["inputs"][number];

/** The size of each symbolic dimension name for this micro-batch. */
type Sizes = Record<string, number>;

function concreteShape(t: Spec, sizes: Sizes, graph: string): number[] {
  return t.shape.map((d) => {
    if (typeof d === "number") return d;
    const v = sizes[d];
    if (v === undefined) throw new Error(`${graph}: no size for dimension ${d} of ${t.name}`);
    return v;
  });
}

const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);

export async function train(dir: string, s: TrainSettings, o: TrainOptions = {}): Promise<TrainResult> {
  const log = o.log ?? (() => {});
  const plan = readPlan(dir);
  const t = plan.training;
  if (!t) throw new UserError({ message: "the compiled folder has no training graphs", subject: dir, hint: "compile a pipeline with a train section" });

  const threads = s.threads ?? 0;
  const sess = async (g: GraphSpecT) => (await openSession(checkGraphFiles(dir, g), { device: "cpu", threads })).session;
  const stepSession = await sess(t.graphs.train_step);
  const accSession = t.graphs.train_accumulate ? await sess(t.graphs.train_accumulate) : null;
  const inference = t.component === "unet" ? await openPlanGraphs(dir, plan, { device: "cpu", threads }) : null;
  const tokenizer = t.component === "unet" ? ClipTokenizer.fromFolder(path.join(dir, plan.tokenizer.dir)) : null;
  const extra: ort.InferenceSession[] = [];

  try {
    const perEpoch = Math.max(1, Math.floor(new DataLoader(s.dataset, { batch: s.batch, seed: s.seed }).batchesPerEpoch / t.microBatches));
    const total = s.steps ?? (s.epochs ?? 1) * perEpoch;
    const schedule: LrSchedule = { ...s.schedule, totalSteps: total };

    // the trained tensors and their state, by graph input name
    const params = new Map<string, Float32Array>();
    const state = new Map<string, Float32Array>();
    const shapes = new Map<string, number[]>();
    for (const e of t.graphs.train_step.inputs.filter((x) => x.role === "parameter")) shapes.set(e.name, e.shape as number[]);

    // start: a checkpoint, or the model's weights (a LoRA: PEFT's init, A random and B zero)
    let start = 0;
    let losses: { step: number; loss: number }[] = [];
    const gen0 = new TorchGenerator(BigInt(s.seed) + 1n);
    let gen = gen0;
    let loader: DataLoader;
    const resumeDir = s.resume === "latest" ? (latestCheckpoint(s.checkpoints.dir)?.dir ?? null) : s.resume;
    if (resumeDir) {
      const ck = loadCheckpoint<TrainState>(resumeDir);
      const changed = configChanges(ck.state.config ?? {}, s.config);
      if (changed.length && !s.forceResume)
        throw new UserError({
          message: `the checkpoint ${resumeDir} was made with other training settings: ${changed.join("; ")}`,
          subject: resumeDir,
          hint: "resume with the settings it was made with, or force it (sdc run --resume --force-resume): the run then differs from the one the checkpoint began",
        });
      if (changed.length) log(`resuming with changed settings: ${changed.join("; ")}`);
      for (const [group, target] of [["weights", params], ["optimizer", state], ["ema", state]] as const) {
        if (!ck.groups.includes(group)) continue;
        for (const [k, v] of Object.entries(ck.readGroup(group))) target.set(k, v.data as Float32Array);
      }
      start = ck.state.step;
      losses = ck.state.losses;
      gen = TorchGenerator.fromState(ck.state.generator);
      loader = new DataLoader(s.dataset, { batch: s.batch, seed: s.seed }, ck.state.loader);
      log(`resumed from ${resumeDir} at step ${start}`);
    } else {
      loader = new DataLoader(s.dataset, { batch: s.batch, seed: s.seed });
      for (const [name, shape] of shapes) params.set(name, t.lora ? loraInit(name, shape, gen0) : s.initialParameter(name, shape));
    }
    for (const e of t.graphs.train_step.inputs) {
      if ((e.role === "optimizer_state" || e.role === "ema") && !state.has(e.name)) {
        const p = params.get(e.stateDictName!)!;
        state.set(e.name, e.role === "ema" ? p.slice() : new Float32Array(p.length));
      }
    }

    const embeddings = new Map<string, Float32Array>();
    const encodeText = async (captions: string[]): Promise<{ data: Float32Array; seq: number; width: number }> => {
      const missing = [...new Set(captions.filter((c) => !embeddings.has(c)))];
      if (missing.length) {
        const enc = tokenizer!.encodeBatch(missing);
        const out = await inference!.graphs.text_encoder.run({ input_ids: { data: enc.ids, dims: enc.shape } });
        const [, seq, width] = out.last_hidden_state!.dims as [number, number, number];
        missing.forEach((c, i) => embeddings.set(c, out.last_hidden_state!.data.slice(i * seq * width, (i + 1) * seq * width)));
      }
      const first = embeddings.get(captions[0]!)!;
      const data = new Float32Array(first.length * captions.length);
      captions.forEach((c, i) => data.set(embeddings.get(c)!, i * first.length));
      const seq = tokenizer!.modelMaxLength;
      return { data, seq, width: first.length / seq };
    };

    const event = (ev: TrainEvent) => {
      o.onEvent?.(ev);
      trainLog?.event(ev);
    };
    const trainLog = s.reportDir ? TrainLog.open(path.join(s.reportDir, "train_log.jsonl"), resumeDir ? { resumeStep: start } : {}) : null;
    if (resumeDir) event({ event: "resume", step: start, checkpoint: resumeDir });
    const plot = async () => {
      if (s.reportDir && losses.length) await plotLossCurve(losses, path.join(s.reportDir, "loss.png"), { maxStep: total, validation: valLosses });
    };
    const result: TrainResult = { steps: start, losses, parameters: new Map(), ema: null, checkpoints: [], validation: [], stopped: false };
    const trainUnet = s.validation && s.validation.items.length && t.graphs.train_unet ? await sess(t.graphs.train_unet) : null;
    if (trainUnet) extra.push(trainUnet);
    const trainText = trainUnet && t.graphs.train_text_encoder ? await sess(t.graphs.train_text_encoder) : null;
    if (trainText) extra.push(trainText);
    if (t.textEncoder) {
      const ids = t.graphs.train_step.inputs.find((e) => e.name === "input_ids");
      if (ids && ids.shape[1] !== tokenizer!.modelMaxLength)
        throw new UserError({
          message: `the tokenizer pads to ${tokenizer!.modelMaxLength} tokens but the text encoder's position table has ${String(ids.shape[1])}`,
          subject: path.join(dir, plan.tokenizer.dir),
          hint: "use a tokenizer whose model_max_length equals text_encoder max_position_embeddings",
        });
    }
    const evalSession = s.holdout ? await sess(t.graphs.train_eval) : null;
    if (evalSession) extra.push(evalSession);
    const valLosses: { step: number; loss: number }[] = [];
    const holdoutLoss = async (step: number) => {
      if (!evalSession || !s.holdout) return;
      // the same batches and the same random values every time: a generator seeded afresh, no shuffling
      const g = new TorchGenerator(BigInt(s.seed) + 2n);
      const hl = new DataLoader(s.holdout.dataset, { batch: s.batch, seed: s.seed, shuffle: false });
      let sum = 0;
      let n = 0;
      for (let i = 0; i < hl.batchesPerEpoch; i++) {
        const batch = await hl.next();
        const feeds = await batchFeeds(t.graphs.train_eval, t, plan, batch, g, { ...s, cfgDropout: 0 }, inference, encodeText, tokenizer);
        for (const e of t.graphs.train_eval.inputs) if (e.role === "parameter") feeds[e.name] = new ort.Tensor("float32", params.get(e.name)!, shapes.get(e.name)!);
        const out = await evalSession.run(feeds);
        sum += Number(out.loss!.data[0]) * batch.items.length;
        n += batch.items.length;
      }
      const loss = sum / Math.max(1, n);
      valLosses.push({ step, loss });
      event({ event: "validation", step, loss });
    };
    const validate = async (step: number) => {
      await holdoutLoss(step);
      if (!trainUnet || !s.validation) return;
      // the EMA weights when EMA is on, as diffusers' scripts do
      const weights = (name: string) => (t.ema ? (state.get(`ema.${name}`) ?? params.get(name)!) : params.get(name)!);
      const textEncoder = trainText ? paramRunner(trainText, t.graphs.train_text_encoder!, weights) : inference!.graphs.text_encoder;
      const file = await validationGrid(plan, paramRunner(trainUnet, t.graphs.train_unet!, weights), textEncoder, inference!, tokenizer!, s.validation, step, o.signal);
      result.validation.push(file);
      event({ event: "validation", step, grid: path.relative(process.cwd(), file) || file });
    };
    if (start === 0) await validate(0);
    const inputs = (g: GraphSpecT) => g.inputs;
    let stopped = false;
    const skippedSeen = new Set<string>();
    for (let step = start + 1; step <= total; step++) {
      if (o.signal?.aborted || (o.stopAfter !== undefined && step - start > o.stopAfter)) {
        stopped = true;
        break;
      }
      const t0 = performance.now();
      const lr = learningRate(schedule, s.lr, step);
      let loss = 0;
      let gradNorm: number | null = null;
      let next: ort.InferenceSession.OnnxValueMapType | null = null;
      for (let mb = 1; mb <= t.microBatches; mb++) {
        // on_bad_image: skip — a file that fails to decode is left out of its batch (a batch left
        // empty is replaced by the next) and named once
        let batch: Batch;
        do {
          batch = await loader.next();
          for (const b of batch.skipped)
            if (!skippedSeen.has(b.file)) {
              skippedSeen.add(b.file);
              event({ event: "note", step, message: `skipped ${b.file}: ${b.reason} (${skippedSeen.size} skipped so far)` });
            }
        } while (batch.items.length === 0);
        const session = mb < t.microBatches ? accSession! : stepSession;
        const spec = mb < t.microBatches ? t.graphs.train_accumulate! : t.graphs.train_step;
        const feeds = await batchFeeds(spec, t, plan, batch, gen, s, inference, encodeText, tokenizer);
        for (const e of inputs(spec)) {
          if (e.role === "parameter") feeds[e.name] = new ort.Tensor("float32", params.get(e.name)!, shapes.get(e.name)!);
          else if (e.role === "optimizer_state" || e.role === "ema") feeds[e.name] = new ort.Tensor("float32", state.get(e.name)!, shapes.get(e.stateDictName!)!);
          else if (e.role === "grad_accumulator") feeds[e.name] = new ort.Tensor("float32", state.get(e.name) ?? new Float32Array(numel(shapes.get(e.stateDictName!)!)), shapes.get(e.stateDictName!)!);
          else if (e.role === "learning_rate") feeds[e.name] = new ort.Tensor("float64", new Float64Array([lr]), []);
          else if (e.role === "step") feeds[e.name] = new ort.Tensor("int64", new BigInt64Array([BigInt(step)]), []);
          else if (e.role === "ema_decay") feeds[e.name] = new ort.Tensor("float64", new Float64Array([emaDecay(step, s.emaMaxDecay)]), []);
        }
        const out = await session.run(feeds);
        const l = Number(out.loss!.data[0]);
        if (!Number.isFinite(l)) {
          event({ event: "nonfinite_loss", step, loss: l, action: "stopped; the last checkpoint is intact" });
          trainLog?.close();
          throw new UserError({
            message: `the loss is ${l} at step ${step} (micro-batch ${mb}): training stopped, and no checkpoint of this state is written`,
            subject: "training",
            hint: "lower optimizer.lr, keep gradient clipping on (optimizer.max_grad_norm), train in fp32; resume from the last checkpoint",
          });
        }
        loss += l / t.microBatches;
        if (mb < t.microBatches) {
          for (const [k, v] of Object.entries(out)) if (k.startsWith("next.grad_acc.")) state.set(k.slice(5), v.data as Float32Array);
        } else next = out;
      }
      // the step's outputs become the state; the accumulators start again from zero
      for (const [k, v] of Object.entries(next!)) {
        if (!k.startsWith("next.")) continue;
        const name = k.slice(5);
        if (params.has(name)) params.set(name, v.data as Float32Array);
        else state.set(name, v.data as Float32Array);
      }
      for (const k of [...state.keys()]) if (k.startsWith("grad_acc.")) state.delete(k);
      if (next!.grad_norm) gradNorm = Number(next!.grad_norm.data[0]);
      losses.push({ step, loss });
      const report: StepReport = { step, total, epoch: loader.position().epoch, loss, lr, gradNorm, seconds: (performance.now() - t0) / 1000 };
      o.onStep?.(report);
      trainLog?.step({ step, loss, lr, epoch: report.epoch, gradNorm, seconds: report.seconds, samples: s.batch * t.microBatches });
      result.steps = step;
      const every = s.validation?.every ?? s.holdout?.every;
      if (every && (step % every === 0 || step === total)) await validate(step);
      if (step % s.checkpoints.every === 0 || step === total) {
        const dirSaved = save(s, t, step, params, state, { step, loader: loader.position(), generator: gen.getState(), config: s.config, losses });
        result.checkpoints.push(dirSaved);
        event({ event: "checkpoint", step, path: path.relative(process.cwd(), dirSaved) || dirSaved });
      }
      if (step % 25 === 0 || step === total) await plot();
    }
    result.stopped = stopped;
    await plot();
    if (!stopped) event({ event: "done", step: result.steps, loss: losses.at(-1)?.loss });
    trainLog?.close();
    const byStateDict = (m: Map<string, Float32Array>, prefix: string) => new Map([...m].filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v]));
    result.parameters = new Map(params);
    result.ema = t.ema ? byStateDict(state, "ema.") : null;
    return result;
  } finally {
    await stepSession.release();
    await accSession?.release();
    for (const x of extra) await x.release();
    await inference?.release();
  }
}

/** A graph with the trained tensors as inputs, run as an ordinary graph: the other inputs as the spec types them, the trained ones from `weights`. */
function paramRunner(session: ort.InferenceSession, spec: GraphSpecT, weights: (name: string) => Float32Array): GraphRunner {
  return {
    run: async (feeds) => {
      const t: Record<string, ort.Tensor> = {};
      for (const e of spec.inputs) {
        if (e.role === "parameter") {
          t[e.name] = new ort.Tensor("float32", weights(e.name), e.shape as number[]);
          continue;
        }
        const x = feeds[e.name];
        if (!x) throw new Error(`${spec.file}: no value for input ${e.name}`);
        const data = e.dtype === "int32" ? (x.data instanceof Int32Array ? x.data : Int32Array.from(x.data as ArrayLike<number>)) : x.data instanceof Float32Array ? x.data : Float32Array.from(x.data as ArrayLike<number>);
        t[e.name] = new ort.Tensor(e.dtype === "int32" ? "int32" : "float32", data, x.dims);
      }
      const out = await session.run(t);
      return Object.fromEntries(Object.entries(out).map(([k, x]) => [k, { data: x.data as Float32Array, dims: x.dims }]));
    },
  };
}

/**
 * One grid of validation images, with the weights in training: the sampling stages (the same the
 * runner uses) over the train_unet graph (and train_text_encoder when the text encoder is
 * trained), which take the trained tensors as inputs.
 */
async function validationGrid(
  plan: Plan,
  unet: GraphRunner,
  textEncoder: GraphRunner,
  inference: OpenedGraphs,
  tokenizer: ClipTokenizer,
  v: NonNullable<TrainSettings["validation"]>,
  step: number,
  signal?: AbortSignal,
): Promise<string> {
  const images: RgbImage[] = [];
  const f = plan.vae.scaleFactor;
  for (const item of v.items) {
    const shape: LatentShape = { images: 1, channels: plan.vae.latentChannels, height: item.height / f, width: item.width / f };
    const embeddings = await encodePrompts(textEncoder, tokenizer, { prompts: [item.prompt], negativePrompts: [item.negativePrompt], perPrompt: 1, guidance: item.guidance > 1 });
    const schedule = prepareSchedule(plan, { steps: item.steps });
    const generator = new TorchGenerator(item.seed);
    const latents = await initialLatents({ kind: "noise" }, { shape, schedule, generator });
    const loop = await denoiseLoop(unet, { schedule, latents, shape, embeddings, guidanceScale: item.guidance, guidanceRescale: 0, noise: generator, signal });
    images.push((await decodeImage(inference.graphs.vae_decoder, loop.latents, shape, plan.vae.scalingFactor)).image);
  }
  const file = path.join(v.dir, `step-${String(step).padStart(6, "0")}.png`);
  fs.mkdirSync(v.dir, { recursive: true });
  // a grid wants one size: the images of the first item's size (the others' sizes are refused by the config check only when they differ from the VAE factor)
  const first = images[0]!;
  const samples = v.items.map((it, i) => ({ image: images[i]!, prompt: it.prompt, negativePrompt: it.negativePrompt, seed: it.seed })).filter((x) => x.image.width === first.width && x.image.height === first.height);
  await saveValidationGrid(file, samples, { step, steps: v.items[0]!.steps, sampler: samplerName(plan.scheduler.type), cfgScale: v.items[0]!.guidance });
  return file;
}

/** What differs between two flattened configs, as "key: old → new". */
export function configChanges(was: Record<string, unknown>, now: Record<string, unknown>): string[] {
  const keys = [...new Set([...Object.keys(was), ...Object.keys(now)])].sort();
  const show = (v: unknown) => (v === undefined ? "(unset)" : JSON.stringify(v));
  return keys.filter((k) => JSON.stringify(was[k]) !== JSON.stringify(now[k])).map((k) => `${k}: ${show(was[k])} → ${show(now[k])}`);
}

/** diffusers' EMAModel decay: 0 at its first step, then (1 + s)/(10 + s) up to the maximum, s = step − 1. */
export function emaDecay(step: number, maxDecay: number): number {
  const s = Math.max(0, step - 1);
  return s <= 0 ? 0 : Math.min(maxDecay, (1 + s) / (10 + s));
}

/**
 * PEFT's initialisation: A as nn.Linear's default (kaiming-uniform with a = √5, i.e. uniform in
 * ±1/√fan_in), B zero, so the adapted model starts as the base model. Drawn from the trainer's
 * generator before any step, in the graph's parameter order.
 */
function loraInit(name: string, shape: number[], gen: TorchGenerator): Float32Array {
  const n = numel(shape);
  if (/lora_B\.weight$/.test(name)) return new Float32Array(n);
  const fanIn = n / shape[0]!;
  const bound = 1 / Math.sqrt(fanIn);
  return gen.rand(n).map((u) => (2 * u - 1) * bound);
}

function save(s: TrainSettings, t: TrainingSpecT, step: number, params: Map<string, Float32Array>, state: Map<string, Float32Array>, st: TrainState): string {
  const group = (m: Iterable<[string, Float32Array]>, shapeOf: (k: string) => number[]): TensorGroup => {
    const g: TensorGroup = {};
    for (const [k, v] of m) g[k] = { dtype: "F32", shape: shapeOf(k), data: v } as CheckpointTensor;
    return g;
  };
  const shapeOfParam = (name: string) => {
    const e = t.graphs.train_step.inputs.find((x) => x.name === name)!;
    return e.shape as number[];
  };
  const stateShape = (k: string) => shapeOfParam(k.slice(k.indexOf(".") + 1));
  const tensors: Record<string, TensorGroup> = {
    weights: group(params, shapeOfParam),
    optimizer: group([...state].filter(([k]) => !k.startsWith("ema.")), stateShape),
  };
  if (t.ema) tensors.ema = group([...state].filter(([k]) => k.startsWith("ema.")), stateShape);
  return saveCheckpoint(s.checkpoints.dir, step, { tensors, state: st }, { keep: s.checkpoints.keep }).dir;
}

const memoryCache = new Map<string, Float32Array>();

/** The encoder's moments [B, 2C, h, w] of a batch: from the latent cache where every item is in it, else encoded (and cached). */
async function posteriors(batch: Batch, plan: Plan, s: TrainSettings, inference: OpenedGraphs, per: number): Promise<Float32Array> {
  const encode = async () => (await inference.graphs.vae_encoder.run({ sample: { data: batch.pixels, dims: batch.shape } })).latent_parameters!.data;
  if (!s.latentCacheDir) return encode();
  const dir = s.latentCacheDir;
  const keys = await Promise.all(batch.items.map((it) => itemLatentKey(s.dataset, it, { vae: plan.graphs.vae_encoder.sha256 })));
  const read = (k: string): Float32Array | null => {
    const hit = memoryCache.get(k);
    if (hit) return hit;
    const f = path.join(dir, `${k}.f32`);
    if (!fs.existsSync(f)) return null;
    const b = fs.readFileSync(f);
    if (b.byteLength !== per * 4) return null; // another model's size: encode again
    const v = new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    memoryCache.set(k, v);
    return v;
  };
  const cached = keys.map(read);
  if (cached.every((c) => c)) {
    const out = new Float32Array(per * keys.length);
    cached.forEach((c, i) => out.set(c!, i * per));
    return out;
  }
  const data = await encode();
  fs.mkdirSync(dir, { recursive: true });
  keys.forEach((k, i) => {
    const v = data.slice(i * per, (i + 1) * per);
    memoryCache.set(k, v);
    const f = path.join(dir, `${k}.f32`);
    const tmp = `${f}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, v);
    fs.renameSync(tmp, f);
  });
  return data;
}

/** The batch and random inputs of one micro-batch. */
async function batchFeeds(
  spec: GraphSpecT,
  t: TrainingSpecT,
  plan: Plan,
  batch: Batch,
  gen: TorchGenerator,
  s: TrainSettings,
  inference: OpenedGraphs | null,
  encodeText: (captions: string[]) => Promise<{ data: Float32Array; seq: number; width: number }>,
  tokenizer: ClipTokenizer | null,
): Promise<Record<string, ort.Tensor>> {
  const [B, , H, W] = batch.shape;
  const f = plan.vae.scaleFactor;
  const C = plan.vae.latentChannels;
  const has = (name: string) => spec.inputs.some((e) => e.name === name);
  const feeds: Record<string, ort.Tensor> = {};
  if (t.component === "vae") {
    feeds.images = new ort.Tensor("float32", batch.pixels, batch.shape);
    feeds.posterior_noise = new ort.Tensor("float32", gen.randn(B * C * (H / f) * (W / f)), [B, C, H / f, W / f]);
    return feeds;
  }
  const h = H / f;
  const w = W / f;
  const lat = [B, C, h, w];
  const n = numel(lat);
  // random values, in the documented order
  feeds.noise = new ort.Tensor("float32", gen.randn(n), lat);
  feeds.timesteps = new ort.Tensor("int64", BigInt64Array.from(gen.randint(0, t.numTrainTimesteps, B), (x) => BigInt(x)), [B]);
  if (has("offset_noise")) feeds.offset_noise = new ort.Tensor("float32", gen.randn(B * C), [B, C, 1, 1]);
  if (has("perturbation_noise")) feeds.perturbation_noise = new ort.Tensor("float32", gen.randn(n), lat);
  const eps = gen.randn(n);
  // latents: the frozen encoder's posterior sampled with the host's ε (diffusers' latent_dist.sample()), scaled
  const moments = { data: await posteriors(batch, plan, s, inference!, 2 * C * h * w) };
  const x0 = new Float32Array(n);
  const per = C * h * w;
  for (let b = 0; b < B; b++)
    for (let i = 0; i < per; i++) {
      const mean = moments.data[b * 2 * per + i]!;
      const logvar = Math.min(Math.max(moments.data[b * 2 * per + per + i]!, -30), 20);
      x0[b * per + i] = Math.fround(Math.fround(mean + Math.fround(Math.exp(0.5 * logvar)) * eps[b * per + i]!) * plan.vae.scalingFactor);
    }
  feeds.latents = new ort.Tensor("float32", x0, lat);
  // the captions: token ids when the step runs the text encoder, else the frozen encoder's embeddings
  let seq: number;
  if (has("input_ids")) {
    const enc = tokenizer!.encodeBatch(batch.captions);
    seq = enc.shape[1];
    feeds.input_ids = new ort.Tensor("int32", enc.ids, enc.shape);
  } else {
    const text = await encodeText(batch.captions);
    seq = text.seq;
    feeds.encoder_hidden_states = new ort.Tensor("float32", text.data, [B, text.seq, text.width]);
  }
  if (has("caption_drop_mask")) {
    const u = gen.rand(B);
    feeds.caption_drop_mask = new ort.Tensor("int64", BigInt64Array.from(u, (x) => (x < s.cfgDropout ? 1n : 0n)), [B]);
    if (has("input_ids")) {
      const empty = tokenizer!.encodeBatch([""]);
      feeds.empty_prompt_ids = new ort.Tensor("int32", empty.ids, empty.shape);
    } else {
      const empty = await encodeText([""]);
      feeds.empty_prompt_embedding = new ort.Tensor("float32", empty.data, [1, empty.seq, empty.width]);
    }
  }
  // LoRA dropout: torch's inverted dropout masks, one per adapted module, in the graph's order
  const p = t.lora?.dropout ?? 0;
  if (p > 0) {
    const sizes = { batch: B, height: h, width: w, sequence: seq };
    for (const e of spec.inputs) {
      if (!e.name.startsWith("lora_dropout.")) continue;
      const shape = e.shape.map((d) => evalDim(d, sizes));
      const keep = 1 / (1 - p);
      feeds[e.name] = new ort.Tensor("float32", gen.rand(numel(shape)).map((u) => (u < p ? 0 : keep)), shape);
    }
  }
  return feeds;
}

