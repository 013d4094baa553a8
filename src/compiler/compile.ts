/**
 * `sdc compile`: a loaded pipeline → `compiled/<name>/`, in the ONNX layout of diffusers'
 * OnnxStableDiffusionPipeline (model_index.json, text_encoder/, unet/, vae_decoder/, vae_encoder/,
 * tokenizer/, scheduler/) plus sdc's plan.json.
 *
 * Incremental: each graph's build hash covers its architecture, compile options and the identity
 * of its weight files. A graph whose hash is unchanged is not rebuilt (its files are hard-linked
 * from the previous output); an edit that touches only the scheduler rewrites plan.json alone, and
 * run settings (prompts, guidance, image size, seed, output, ...) are not compiled at all: the
 * runner gets them with each run. The folder is written to a temporary sibling and renamed, so a
 * failed compile leaves the previous output intact.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { LoadedPipeline } from "../config/load.js";
import { dimStr } from "../ir/dims.js";
import type { Graph } from "../ir/graph.js";
import { lowerComposites, type LowerTarget } from "../ir/passes/lower.js";
import { vaeScaleFactor } from "../models/arch.js";
import { readPlanIfValid } from "../plan/read.js";
import { encodeNonFinite, GRAPH_NAMES, PLAN_FORMAT, type DeepCacheSpecT, type GraphName, type GraphSpecT, type Plan, type TomeSpecT, type TrainGraphName } from "../plan/schema.js";
import { writePlan } from "../plan/write.js";
import { tokenizerFiles, readTokenizerConfig } from "../tokenizer/clip.js";
import { createScheduler, schedulerConfigJson, stableDiffusionPipelineFixups } from "../schedulers/index.js";
import { UserError } from "../util/errors.js";
import { writeDirAtomic } from "../util/fs.js";
import { withDirLock } from "../util/lock.js";
import { canonicalJson, fileIdentity, hashValue, sha256, sha256File } from "../util/hash.js";
import { buildAndWrite, deepCacheJob, graphJobs, type DeepCacheGraphOptions, type TomeGraphOptions } from "./graphs.js";
import { tomeLevels } from "../models/tome.js";
import { trainGraphConfig, trainingJobs, type TrainGraphJob } from "./train.js";
import { openModelWeights, providerFor, unusedLora, type ModelWeights } from "./weights.js";
import type { WeightProvider } from "../ir/builder.js";
import { DEEPCACHE_FEATURE } from "../models/unet.js";

export const SDC_VERSION = "0.1.0";
/** Bump when generated graphs change for the same inputs: every build hash changes with it. */
export const COMPILER_VERSION = "sdc-compiler/1";

export interface CompileOptions {
  /** Output folder (default: compiled/<name> under cwd). */
  outDir?: string;
  /** Rebuild every graph even when its build hash is unchanged. */
  force?: boolean;
  /** Working directory for the default output folder. */
  cwd?: string;
  /** Progress lines for a person. */
  log?: (line: string) => void;
  /**
   * Called once the compiler knows it will replace the folder, before it writes anything (not
   * called when the folder is up to date): `sdc watch --run` stops a run that reads the folder.
   */
  beforeWrite?: () => Promise<void> | void;
}

export interface CompileResult {
  dir: string;
  plan: Plan;
  rebuilt: (GraphName | TrainGraphName | "unet_shallow")[];
  reused: (GraphName | TrainGraphName | "unet_shallow")[];
  /** Nothing changed: the folder was left as it was. */
  upToDate: boolean;
  seconds: number;
  summary: string;
}

/** fp16 graphs for CUDA, fp32 on the CPU (fp16 on onnxruntime's CPU provider is slower, not faster). */
export function resolvePrecision(rt: { device: string; precision: string }): "fp32" | "fp16" {
  if (rt.precision === "fp16") return "fp16";
  if (rt.precision === "fp32") return "fp32";
  return rt.device === "cuda" ? "fp16" : "fp32";
}

export function defaultCompiledDir(p: LoadedPipeline, cwd = process.cwd()): string {
  return path.resolve(cwd, "compiled", p.name);
}

/** Hashes that decide what must be rebuilt, computed without building anything. */
export function compileKeys(p: LoadedPipeline): {
  graphs: Record<GraphName, string>;
  training: Partial<Record<TrainGraphName, string>>;
  /** Build hash of DeepCache's shallow U-Net, when sample.deepcache asks for it. */
  deepcache: string | null;
  compileHash: string;
  pipelineHash: string;
  sources: Plan["sources"];
} {
  if (p.model.kind === "inline") {
    throw new UserError({
      message: "an inline architecture has no weights, so there is nothing to compile for inference",
      ...p.where(["model"], "key"),
      hint: "point model.from at a diffusers folder or a .safetensors checkpoint (training from scratch comes with the train section)",
    });
  }
  const precision = resolvePrecision(p.config.runtime);
  const target = lowerTarget(p);
  const dc = deepCacheOptions(p);
  const tome = tomeOptions(p);
  tomeSpec(p); // refuses a ToMe that would merge nothing, before anything is built
  const jobs = graphJobs(p.model, precision, target, dc, tome);
  const ids = weightIdentities(p);
  const graphs = Object.fromEntries(jobs.map((j) => [j.name, hashValue({ v: COMPILER_VERSION, graph: j.name, options: j.options, weights: ids[j.component] })])) as Record<GraphName, string>;
  const shallow = dc ? deepCacheJob(p.model, precision, target, dc, tome) : null;
  const deepcache = shallow ? hashValue({ v: COMPILER_VERSION, graph: shallow.name, options: shallow.options, weights: ids.unet }) : null;
  const training = Object.fromEntries(
    (p.config.train ? trainingJobs(p, precision, target).jobs : []).map((j) => [
      j.name,
      hashValue({ v: COMPILER_VERSION, graph: j.name, options: j.options, weights: ids[j.component], ...(p.config.train!.train_text_encoder ? { textEncoderWeights: ids.text_encoder } : {}) }),
    ]),
  ) as Partial<Record<TrainGraphName, string>>;
  // without DeepCache the hash is what it always was: existing compiled folders stay up to date
  const compileHash = hashValue(deepcache ? { graphs, training, deepcache } : { graphs, training });
  const sources = [...new Set([...p.sources, ...p.model.files, ...allWeightFiles(p), ...p.model.lora.map((l) => l.file)])].filter((f) => fs.existsSync(f)).map(fileIdentity);
  const pipelineHash = hashValue({ compileHash, config: planConfig(p), scheduler: p.model.schedulerConfig, sdc: SDC_VERSION });
  return { graphs, training, deepcache, compileHash, pipelineHash, sources };
}

/** The compiled part of sample.deepcache (where the U-Net is cut); its schedule is a run setting. */
function deepCacheOptions(p: LoadedPipeline): DeepCacheGraphOptions | undefined {
  const dc = p.config.sample.deepcache;
  return dc ? { branch: dc.branch, ...(dc.layer !== undefined ? { layer: dc.layer } : {}) } : undefined;
}

/** The compiled part of sample.tome: the merging, for the latent size of the pipeline's images. */
function tomeOptions(p: LoadedPipeline): TomeGraphOptions | undefined {
  const t = p.config.sample.tome;
  if (!t) return undefined;
  const f = vaeScaleFactor(p.model.vae);
  const { width, height } = p.config.sample;
  for (const [k, v] of [["width", width], ["height", height]] as const)
    if (v % f !== 0)
      throw new UserError({ message: `sample.${k} ${v} is not a multiple of ${f}`, ...p.where(["sample", k]), hint: `sample.tome compiles the U-Net for the image size: use a multiple of ${f}` });
  return { ratio: t.ratio, maxDownsample: t.max_downsample, sx: t.sx, sy: t.sy, latentHeight: height / f, latentWidth: width / f };
}

/** The plan's description of the ToMe U-Net (the levels its inputs feed). */
function tomeSpec(p: LoadedPipeline): TomeSpecT | undefined {
  const o = tomeOptions(p);
  if (!o) return undefined;
  const levels = tomeLevels(p.model.unet, o.latentHeight, o.latentWidth, o);
  if (!levels.length)
    throw new UserError({
      message: `sample.tome merges no tokens at ${p.config.sample.width}×${p.config.sample.height} with max_downsample ${o.maxDownsample} and ratio ${o.ratio}`,
      ...p.where(["sample", "tome"], "key"),
      hint: "this U-Net has no self-attention at those resolutions, or the ratio rounds to no token: raise max_downsample or ratio, or leave sample.tome out",
    });
  return { ...o, levels: levels.map(({ level, downsample, height, width, tokens, dst, src, merged, blocks, srcInput, dstInput }) => ({ level, downsample, height, width, tokens, dst, src, merged, blocks, srcInput, dstInput })) };
}

/** The config without its run settings: what the plan is made from (prompts, guidance, sizes, seed, output, threads and the trainer's data, lengths and schedule never re-plan). */
function planConfig(p: LoadedPipeline): Record<string, unknown> {
  const { sample: _sample, guidance: _guidance, output: _output, runtime, train, ...rest } = p.config;
  return { ...rest, runtime: { device: runtime.device, precision: runtime.precision }, train: train ? trainGraphConfig(train) : null };
}

function lowerTarget(p: LoadedPipeline): LowerTarget {
  return { ep: p.config.runtime.device === "cuda" ? "cuda" : "cpu", training: false };
}

function allWeightFiles(p: LoadedPipeline): string[] {
  if (p.model.kind === "single-file") return [p.model.path!];
  return Object.values(p.model.weights).flatMap((w) => (w ? [...w.files, ...(w.index ? [w.index] : [])] : []));
}

function weightIdentities(p: LoadedPipeline): Record<"unet" | "vae" | "text_encoder", unknown> {
  const lora = p.model.lora.map((l) => ({ ...fileIdentity(l.file), scale: l.scale }));
  if (p.model.kind === "single-file") {
    const f = fileIdentity(p.model.path!);
    return { unet: { f, lora }, vae: { f }, text_encoder: { f, lora } };
  }
  const w = p.model.weights;
  const id = (c: "unet" | "vae" | "text_encoder") => (w[c]?.files ?? []).map(fileIdentity);
  return { unet: { f: id("unet"), lora }, vae: { f: id("vae") }, text_encoder: { f: id("text_encoder"), lora } };
}

/**
 * Compile, holding the compiled folder's lock (src/util/lock.ts) from reading the old folder to
 * swapping in the new one, so a second sdc process compiling into the same folder waits its turn.
 */
export async function compile(p: LoadedPipeline, opts: CompileOptions = {}): Promise<CompileResult> {
  return withDirLock(opts.outDir ?? defaultCompiledDir(p, opts.cwd), () => compileUnlocked(p, opts), { log: opts.log ?? (() => {}) });
}

async function compileUnlocked(p: LoadedPipeline, opts: CompileOptions): Promise<CompileResult> {
  const t0 = performance.now();
  const log = opts.log ?? (() => {});
  const dir = opts.outDir ?? defaultCompiledDir(p, opts.cwd);
  const keys = compileKeys(p);
  const old = readPlanIfValid(dir); // an older or damaged plan is rebuilt, not trusted
  const graphFilesPresent = (name: GraphName) => old !== null && [old.graphs[name].file, ...old.graphs[name].externalData.map((f) => path.join(path.dirname(old.graphs[name].file), f))].every((f) => fs.existsSync(path.join(dir, f)));
  const reusable = (name: GraphName) => !opts.force && old !== null && old.graphs[name].buildHash === keys.graphs[name] && graphFilesPresent(name);
  const oldTrain = (name: TrainGraphName) => old?.training?.graphs[name];
  const trainReusable = (name: TrainGraphName) => {
    const g = oldTrain(name);
    return !opts.force && !!g && g.buildHash === keys.training[name] && [g.file, ...g.externalData.map((f) => path.join(path.dirname(g.file), f))].every((f) => fs.existsSync(path.join(dir, f)));
  };
  const trainNames = Object.keys(keys.training) as TrainGraphName[];
  const shallowReusable = () => {
    if (keys.deepcache === null) return true;
    const g = old?.deepcache?.shallow;
    return !opts.force && !!g && g.buildHash === keys.deepcache && [g.file, ...g.externalData.map((f) => path.join(path.dirname(g.file), f))].every((f) => fs.existsSync(path.join(dir, f)));
  };

  if (!opts.force && old && old.pipelineHash === keys.pipelineHash && GRAPH_NAMES.every(reusable) && trainNames.every(trainReusable) && shallowReusable()) {
    const seconds = (performance.now() - t0) / 1000;
    return { dir, plan: old, rebuilt: [], reused: [...GRAPH_NAMES, ...trainNames, ...(keys.deepcache ? ["unet_shallow" as const] : [])], upToDate: true, seconds, summary: `${rel(dir, opts.cwd)} is up to date` };
  }

  await opts.beforeWrite?.();
  const precision = resolvePrecision(p.config.runtime);
  const target = lowerTarget(p);
  const dcOptions = deepCacheOptions(p);
  const tome = tomeOptions(p);
  const jobs = graphJobs(p.model, precision, target, dcOptions, tome);
  const shallowJob = dcOptions ? deepCacheJob(p.model, precision, target, dcOptions, tome) : null;
  const train = p.config.train ? trainingJobs(p, precision, target) : null;
  const needBuild = [
    ...jobs.filter((j) => !reusable(j.name)),
    ...(train?.jobs ?? []).filter((j) => !trainReusable(j.name)),
    ...(shallowJob && !shallowReusable() ? [shallowJob] : []),
  ];
  const weights = needBuild.length ? openModelWeights(p.model, (i) => p.where(["model", "lora", i, "file"])) : null;
  const trainSpecs: Partial<Record<TrainGraphName, GraphSpecT>> = {};
  const rebuilt: (GraphName | TrainGraphName | "unet_shallow")[] = [];
  const reused: (GraphName | TrainGraphName | "unet_shallow")[] = [];
  let deepcache: DeepCacheSpecT | undefined;
  const specs = {} as Record<GraphName, GraphSpecT>;
  let plan!: Plan;

  await writeDirAtomic(dir, async (tmp) => {
    /** Build a graph into the new folder and describe it for the plan. */
    const buildSpec = (job: (typeof jobs)[number] | NonNullable<typeof shallowJob>, component: Parameters<typeof providerFor>[1], buildHash: string): GraphSpecT => {
      const t = performance.now();
      const built = buildAndWrite(job, providerFor(weights!, component), precision === "fp16" ? "float16" : "float32", target, tmp);
      const file = `${job.name}/model.onnx`;
      rebuilt.push(job.name as (typeof rebuilt)[number]);
      log(`  built ${job.name}: ${built.graph.nodes.length} nodes, ${(built.graph.paramCount() / 1e6).toFixed(2)} M parameters (${((performance.now() - t) / 1000).toFixed(2)} s)`);
      return {
        file,
        sha256: sha256File(path.join(tmp, file)),
        externalData: built.write.externalFiles,
        buildHash,
        inputs: ioSpecs(built.graph, "inputs"),
        outputs: ioSpecs(built.graph, "outputs"),
        requirements: built.requirements,
        parameters: built.graph.paramCount(),
        nodes: built.graph.nodes.length,
        bytesLinked: built.write.bytesLinked,
        bytesWritten: built.write.bytesWritten,
        precision,
        notes: built.graph.notes,
      };
    };
    for (const job of jobs) {
      if (reusable(job.name)) {
        linkGraphFolder(path.join(dir, job.name), path.join(tmp, job.name));
        specs[job.name] = old!.graphs[job.name];
        reused.push(job.name);
        continue;
      }
      specs[job.name] = buildSpec(job, job.component, keys.graphs[job.name]);
    }
    if (shallowJob) {
      const cut = shallowJob.options.deepcache as { skips: number };
      const common = { branch: dcOptions!.branch, layer: dcOptions!.layer ?? null, skips: cut.skips, feature: DEEPCACHE_FEATURE };
      if (shallowReusable()) {
        linkGraphFolder(path.join(dir, shallowJob.name), path.join(tmp, shallowJob.name));
        deepcache = { ...common, shallow: old!.deepcache!.shallow };
        reused.push(shallowJob.name);
      } else {
        deepcache = { ...common, shallow: buildSpec(shallowJob, "unet", keys.deepcache!) };
      }
    }
    for (const job of train?.jobs ?? []) {
      if (trainReusable(job.name)) {
        linkGraphFolder(path.join(dir, job.name), path.join(tmp, job.name));
        trainSpecs[job.name] = oldTrain(job.name)!;
        reused.push(job.name);
        continue;
      }
      const t = performance.now();
      const built = buildAndWrite(job, trainProvider(weights!, job, train!.spec.textEncoder), "float32", { ...target, training: job.name !== "train_unet" && job.name !== "train_text_encoder" }, tmp);
      trainSpecs[job.name] = trainGraphSpec(job, built, tmp, keys.training[job.name]!);
      rebuilt.push(job.name);
      log(`  built ${job.name}: ${built.graph.nodes.length} nodes, ${job.signature().inputs.filter((e) => e.role === "parameter").length} trained tensors (${((performance.now() - t) / 1000).toFixed(2)} s)`);
    }
    if (weights) {
      // only components something was built from this time: the others' weights were not read at all
      const built = new Set(needBuild.map((j) => j.component));
      const unused = [
        ...(built.has("unet") ? weights.sets.unet.unused().map((k) => `unet.${k}`) : []),
        ...(built.has("vae") && needBuild.some((j) => j.name === "vae_decoder") && needBuild.some((j) => j.name === "vae_encoder") ? weights.sets.vae.unused().map((k) => `vae.${k}`) : []),
        ...(built.has("text_encoder") ? weights.sets.text_encoder.unused().map((k) => `text_encoder.${k}`) : []),
        ...unusedLora(weights),
      ];
      if (unused.length) log(`  note: ${unused.length} tensors in the checkpoint were not used: ${unused.slice(0, 5).join(", ")}${unused.length > 5 ? ", …" : ""}`);
    }
    const training = train ? { ...train.spec, graphs: trainSpecs as { train_step: GraphSpecT; train_eval: GraphSpecT; train_accumulate?: GraphSpecT; train_unet?: GraphSpecT } } : undefined;
    plan = writeSupportFiles(p, tmp, dir, specs, keys, old, log, training, deepcache);
  });

  const seconds = (performance.now() - t0) / 1000;
  const what = rebuilt.length ? `rebuilt ${rebuilt.join(", ")}` : "graphs unchanged, plan rewritten";
  return { dir, plan, rebuilt, reused, upToDate: false, seconds, summary: `compiled ${rel(dir, opts.cwd)} in ${seconds.toFixed(2)} s (${what})` };
}

function rel(p: string, cwd = process.cwd()): string {
  const r = path.relative(cwd, p);
  return r && !r.startsWith("..") ? r : p;
}

/** The weights a training graph is built from: a step that runs the text encoder reads its `text_model.…` tensors from the text encoder's. */
function trainProvider(weights: ModelWeights, job: TrainGraphJob, textEncoder: boolean): WeightProvider {
  const own = providerFor(weights, job.component);
  if (!textEncoder || job.component !== "unet" || job.name === "train_unet") return own;
  const te = providerFor(weights, "text_encoder");
  return (key, shape, dtype) => (key.startsWith("text_model.") ? te(key, shape, dtype) : own(key, shape, dtype));
}

/** A training graph's plan entry: its I/O with each tensor's role and state-dict name. */
function trainGraphSpec(job: TrainGraphJob, built: ReturnType<typeof buildAndWrite>, tmp: string, buildHash: string): GraphSpecT {
  const sig = job.signature();
  const byName = new Map([...sig.inputs, ...sig.outputs].map((e) => [e.name, e]));
  const tag = (list: GraphSpecT["inputs"]) =>
    list.map((t) => {
      const e = byName.get(t.name);
      if (!e) throw new Error(`${job.name}: ${t.name} has no role`);
      return { ...t, role: e.role, ...(e.stateDictName ? { stateDictName: e.stateDictName } : {}) };
    });
  const file = `${job.name}/model.onnx`;
  return {
    file,
    sha256: sha256File(path.join(tmp, file)),
    externalData: built.write.externalFiles,
    buildHash,
    inputs: tag(ioSpecs(built.graph, "inputs")),
    outputs: tag(ioSpecs(built.graph, "outputs")),
    requirements: built.requirements,
    parameters: built.graph.paramCount(),
    nodes: built.graph.nodes.length,
    bytesLinked: built.write.bytesLinked,
    bytesWritten: built.write.bytesWritten,
    precision: "fp32",
    notes: built.graph.notes,
  };
}

function ioSpecs(g: Graph, which: "inputs" | "outputs"): GraphSpecT["inputs"] {
  return g[which].map((io) => ({ name: io.name, dtype: io.value.dtype, shape: io.value.shape.map((d) => (typeof d === "number" ? d : dimStr(d))) }));
}

/** Hard-link every file of a previous graph folder (no copy; the old folder is replaced after). */
function linkGraphFolder(from: string, to: string): void {
  fs.mkdirSync(to, { recursive: true });
  for (const f of fs.readdirSync(from)) {
    try {
      fs.linkSync(path.join(from, f), path.join(to, f));
    } catch {
      fs.copyFileSync(path.join(from, f), path.join(to, f));
    }
  }
}

function tokenizerDir(p: LoadedPipeline): string {
  if (!p.model.tokenizerDir) throw new Error("the resolved model has no tokenizer folder");
  return p.model.tokenizerDir;
}

function writeSupportFiles(
  p: LoadedPipeline,
  tmp: string,
  finalDir: string,
  graphs: Record<GraphName, GraphSpecT>,
  keys: ReturnType<typeof compileKeys>,
  old: Plan | null,
  log: (line: string) => void,
  training?: Plan["training"],
  deepcache?: DeepCacheSpecT,
): Plan {
  const c = p.config;
  const tome = tomeSpec(p);
  // tokenizer/: tokenizer.json (built) and the original files, for other runners
  const tokDir = tokenizerDir(p);
  const tokOut = path.join(tmp, "tokenizer");
  fs.mkdirSync(tokOut, { recursive: true });
  for (const [name, text] of tokenizerFiles(tokDir)) fs.writeFileSync(path.join(tokOut, name), text);
  const tokCfg = readTokenizerConfig(tokDir);

  // scheduler/: the scheduler this pipeline runs, as diffusers would write it
  const overrides = schedulerOverrides(p);
  const className = String(p.model.schedulerConfig._class_name);
  // diffusers' pipeline fix-ups, on inherited values only: what the pipeline or --set wrote stays as written.
  // An LCM checkpoint (guidance-embedded U-Net) runs as LatentConsistencyModelPipeline, which makes none.
  const created = createScheduler(className, p.model.schedulerConfig, overrides);
  const { scheduler: sched, fixups } = p.model.unet.time_cond_proj_dim !== null ? { scheduler: created, fixups: [] } : stableDiffusionPipelineFixups(created, Object.keys(overrides));
  if (fixups.length) {
    log(
      `  note: scheduler ${fixups.map((f) => `${f.key} ${JSON.stringify(f.from)} → ${JSON.stringify(f.to)}`).join(", ")} ` +
        "(the model's value, changed as diffusers' StableDiffusionPipeline does; set it under scheduler: to keep another)",
    );
  }
  fs.mkdirSync(path.join(tmp, "scheduler"), { recursive: true });
  fs.writeFileSync(path.join(tmp, "scheduler", "scheduler_config.json"), schedulerConfigJson(sched));

  fs.writeFileSync(
    path.join(tmp, "model_index.json"),
    JSON.stringify(
      {
        _class_name: "OnnxStableDiffusionPipeline",
        _diffusers_version: "0.24.0",
        feature_extractor: [null, null],
        requires_safety_checker: false,
        safety_checker: [null, null],
        scheduler: ["diffusers", sched.className],
        text_encoder: ["diffusers", "OnnxRuntimeModel"],
        tokenizer: ["transformers", "CLIPTokenizer"],
        unet: ["diffusers", "OnnxRuntimeModel"],
        vae_decoder: ["diffusers", "OnnxRuntimeModel"],
        vae_encoder: ["diffusers", "OnnxRuntimeModel"],
      },
      null,
      2,
    ) + "\n",
  );

  const relToPlan = (f: string | undefined) => (f ? path.relative(finalDir, f).split(path.sep).join("/") : null);
  const modelFile = p.model.kind === "single-file" ? p.model.path! : p.model.weights.unet?.files[0];
  // the model hash (A1111's: sha256 of the whole file) reads every byte, 4 s for SD 1.5's U-Net:
  // keep the previous one while that file is unchanged (same path, size and mtime), e.g. a U-Net edit
  const unchanged = (f: string) => {
    const id = fileIdentity(f);
    return old?.sources.some((s) => s.path === relToPlan(f) && s.size === id.size && s.mtimeMs === id.mtimeMs) ?? false;
  };
  const modelHash = old && (old.graphs.unet.buildHash === graphs.unet.buildHash || (modelFile !== undefined && unchanged(modelFile))) ? old.model.hash : modelFile ? sha256File(modelFile).slice(0, 10) : sha256(canonicalJson(keys.graphs)).slice(0, 10);
  return writePlan(tmp, {
    format: PLAN_FORMAT,
    name: p.name,
    sdcVersion: SDC_VERSION,
    compileHash: keys.compileHash,
    pipelineHash: keys.pipelineHash,
    sources: keys.sources.map((s) => ({ ...s, path: relToPlan(s.path)! })),
    model: { kind: p.model.kind, name: path.basename(p.model.path ?? p.name).replace(/\.safetensors$/, ""), hash: modelHash },
    graphs,
    tokenizer: { dir: "tokenizer", modelMaxLength: tokCfg.modelMaxLength, padToken: tokCfg.padToken },
    scheduler: { type: c.scheduler.type ?? className, className: sched.className, steps: c.scheduler.steps, config: encodeNonFinite(sched.config) },
    vae: { scalingFactor: p.model.vae.scaling_factor, scaleFactor: vaeScaleFactor(p.model.vae), latentChannels: p.model.vae.latent_channels },
    runtime: { device: c.runtime.device, precision: resolvePrecision(c.runtime) },
    ...(training ? { training } : {}),
    ...(deepcache ? { deepcache } : {}),
    ...(tome ? { tome } : {}),
  });
}

/** Scheduler options the pipeline file (or --set) gave explicitly: checked against the class. */
function schedulerOverrides(p: LoadedPipeline): Record<string, unknown> {
  const { type: _t, steps: _s, ...rest } = p.config.scheduler as Record<string, unknown>;
  return Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined));
}

export { lowerComposites };
