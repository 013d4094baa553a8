/**
 * Model resolution: from `model:` in the YAML to the architecture of every component.
 *
 * `model.from` names a diffusers folder (its component config.json files are read and checked,
 * with positions, and its weights looked for), a single `.safetensors` checkpoint (architecture from
 * the YAML sections, defaulting to SD 1.5's), or nothing (an inline architecture for training from
 * scratch, diffusers' defaults under the YAML sections). YAML component sections override the
 * folder's keys. Every problem is located: in the YAML for what the YAML wrote, in the JSON file for
 * what a config.json holds. Weights are not read here; the weights module does that.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { z } from "zod";
import {
  type AutoencoderKLConfig,
  AutoencoderKLConfigSchema,
  type CLIPTextConfig,
  CLIPTextConfigSchema,
  SD15,
  type UNet2DConditionConfig,
  UNet2DConditionConfigSchema,
} from "../models/arch.js";
import { loadSingleFile } from "../models/weights/single-file.js";
import { SCHEDULER_CLASS_NAMES, SCHEDULER_SHORT_NAMES, schedulerClassName } from "../schedulers/registry.js";
import { isUserError, type Problem } from "../util/errors.js";
import { packageRoot } from "../util/paths.js";
import { issuesToProblems } from "./issues.js";
import { isPlainObject, type Origins, type Where, whereInSource } from "./origins.js";
import { type ParsedPipelineConfig, SchedulerConfigFileSchema } from "./schema.js";
import { parseSource, type Path, type SourceDoc } from "./source.js";

export type ComponentName = "unet" | "vae" | "text_encoder";
export const COMPONENTS: readonly ComponentName[] = ["unet", "vae", "text_encoder"];

/** Where a component's weights are. */
export interface WeightsRef {
  /** The .safetensors files (one, or the shards an index lists). */
  files: string[];
  /** The sharded index (`*.safetensors.index.json`), when sharded. */
  index?: string;
}

export interface ResolvedModel {
  kind: "diffusers" | "single-file" | "inline";
  /** The folder (diffusers) or the checkpoint file (single-file); absolute. */
  path?: string;
  variant?: string;
  unet: UNet2DConditionConfig;
  vae: AutoencoderKLConfig;
  textEncoder: CLIPTextConfig & { clip_skip: number };
  /** Folder with vocab.json and merges.txt (diffusers folders). */
  tokenizerDir?: string;
  /** The folder's scheduler_config.json under the YAML scheduler options; `_class_name` always set. */
  schedulerConfig: Record<string, unknown>;
  lora: { file: string; scale: number }[];
  /** Weights per component (diffusers folders; a single file holds all components). */
  weights: Partial<Record<ComponentName, WeightsRef>>;
  /** Config files read (for the watcher). */
  files: string[];
}

/** The parsed JSON configs of a folder, kept so later checks can point into them. */
export type ComponentSources = Partial<Record<ComponentName | "scheduler", { source: SourceDoc; raw: Record<string, unknown> }>>;

export interface ModelContext {
  origins: Origins;
  display: (abs: string) => string;
}

const WEIGHT_BASENAMES: Record<ComponentName, string> = {
  unet: "diffusion_pytorch_model",
  vae: "diffusion_pytorch_model",
  text_encoder: "model",
};

const PICKLE_EXTS = [".ckpt", ".pt", ".pth", ".bin", ".pkl"];

const ARCH_SCHEMAS = {
  unet: UNet2DConditionConfigSchema,
  vae: AutoencoderKLConfigSchema,
  text_encoder: CLIPTextConfigSchema,
} as const;

const DEFAULT_INLINE_SCHEDULER = "DDPMScheduler";

export interface ModelResult {
  model?: ResolvedModel;
  problems: Problem[];
  json: ComponentSources;
}

export function resolveModel(cfg: ParsedPipelineConfig, ctx: ModelContext): ModelResult {
  const problems: Problem[] = [];
  const json: ComponentSources = {};
  const m = cfg.model;
  const at = (p: Path, mode: "key" | "value" = "value") => ctx.origins.where(p, mode);
  const files: string[] = [];

  let kind: ResolvedModel["kind"];
  let base: Partial<Record<ComponentName, Record<string, unknown>>> = {};
  let baseScheduler: Record<string, unknown> = {};
  let tokenizerDir: string | undefined;
  const weights: ResolvedModel["weights"] = {};

  if (m.from === undefined) {
    kind = "inline";
    if (!m.unet && !m.vae && !m.text_encoder) {
      problems.push({
        message: "the model section says neither where the weights come from nor what to build",
        ...at(["model"], "key"),
        hint: "add `from:` (a diffusers folder or a .safetensors file, relative to this file), or inline architecture sections (unet, vae, text_encoder) to train from scratch",
      });
      return { problems, json };
    }
  } else {
    const target = m.from;
    const stat = statOrUndefined(target);
    if (!stat) {
      problems.push({
        message: `model.from: "${ctx.display(target)}" does not exist`,
        ...at(["model", "from"]),
        hint: "model.from is a diffusers folder or a .safetensors file, relative to the YAML file that names it",
      });
      return { problems, json };
    }
    if (stat.isDirectory()) {
      kind = "diffusers";
      const folder = readFolder(target, m.variant, ctx, problems, files, weights);
      base = folder.components;
      Object.assign(json, folder.json);
      baseScheduler = folder.scheduler ?? {};
      tokenizerDir = folder.tokenizerDir;
    } else {
      kind = "single-file";
      const ext = path.extname(target).toLowerCase();
      if (PICKLE_EXTS.includes(ext)) {
        problems.push({
          message: `model.from: sdc loads only .safetensors checkpoints, and "${path.basename(target)}" is a PyTorch pickle (${ext})`,
          ...at(["model", "from"]),
          hint:
            "pickles can run code when loaded, so sdc does not read them; convert once, e.g. with diffusers' " +
            "scripts/convert_original_stable_diffusion_to_diffusers.py --checkpoint_path <file> --dump_path <folder> --to_safetensors, " +
            "or in Python: safetensors.torch.save_file(torch.load(<file>)['state_dict'], '<name>.safetensors')",
        });
        return { problems, json };
      }
      if (ext !== ".safetensors") {
        problems.push({
          message: `model.from: "${path.basename(target)}" is neither a diffusers folder nor a .safetensors file`,
          ...at(["model", "from"]),
          hint: "point model.from at a diffusers folder (with model_index.json) or a single .safetensors checkpoint",
        });
        return { problems, json };
      }
      // The architecture comes from the checkpoint's tensors (names and shapes; the header only).
      try {
        const inferred = loadSingleFile(target).inferred;
        base = { unet: inferred.unet, vae: inferred.vae, text_encoder: inferred.textEncoder };
        baseScheduler = { ...inferred.scheduler };
        tokenizerDir = path.join(packageRoot(), "models", "clip-tokenizer", inferred.family);
      } catch (e) {
        if (!isUserError(e)) throw e;
        for (const p of e.problems) problems.push({ ...p, message: `model.from: ${p.subject ? `${ctx.display(p.subject)}: ` : ""}${p.message}`, subject: undefined, ...at(["model", "from"]) });
        return { problems, json };
      }
      files.push(target);
    }
  }

  // Component configs: the folder's (or the preset's) keys, then the YAML's.
  const resolved: Partial<Record<ComponentName, Record<string, unknown>>> = {};
  for (const c of COMPONENTS) {
    const yaml = { ...((m[c] as Record<string, unknown> | undefined) ?? {}) };
    delete yaml.clip_skip;
    const merged = { ...(base[c] ?? {}), ...yaml };
    const r = ARCH_SCHEMAS[c].safeParse(merged);
    if (!r.success) {
      // The parts were valid on their own (each was checked where it was written), so only keys that
      // arrive from the preset can fail here; point at whichever text wrote the key.
      problems.push(...issuesToProblems(ARCH_SCHEMAS[c] as z.ZodType, merged, r.error.issues, archWhere(c, ctx, json)));
    } else resolved[c] = r.data as Record<string, unknown>;
  }

  // Scheduler: the folder's scheduler_config.json, then the YAML options; `type` picks the class.
  const scheduler = resolveScheduler(cfg, baseScheduler, kind, ctx, json, problems);

  const lora = m.lora.map((l, i) => {
    checkFile(l.file, ["model", "lora", i, "file"], ".safetensors", "LoRA weights", ctx, problems);
    return { file: l.file, scale: l.scale };
  });

  if (problems.length > 0 || !resolved.unet || !resolved.vae || !resolved.text_encoder) return { problems, json };
  const model: ResolvedModel = {
    kind,
    ...(m.from !== undefined ? { path: m.from } : {}),
    ...(m.variant !== undefined ? { variant: m.variant } : {}),
    unet: resolved.unet as UNet2DConditionConfig,
    vae: resolved.vae as AutoencoderKLConfig,
    textEncoder: { ...(resolved.text_encoder as CLIPTextConfig), clip_skip: m.text_encoder?.clip_skip ?? 0 },
    ...(tokenizerDir ? { tokenizerDir } : {}),
    schedulerConfig: scheduler,
    lora,
    weights,
    files,
  };
  return { model, problems, json };
}

/**
 * Where a component key was written: the YAML section if it sets the key, else the folder's
 * config.json if it has it, else (a default) the `model.from` or `model` entry.
 */
export function archWhere(c: ComponentName, ctx: ModelContext, json: ComponentSources) {
  return (p: Path, mode: "key" | "value"): Where => {
    const key = p[0];
    const origin = ctx.origins.originOf(["model", c, ...(key === undefined ? [] : [key])]);
    if (origin?.exact) return ctx.origins.where(["model", c, ...p], mode);
    const src = json[c];
    if (src && key !== undefined && typeof key === "string" && key in src.raw) return whereInSource(src.source, p, mode);
    const fromSet = ctx.origins.originOf(["model", "from"])?.exact;
    return ctx.origins.where(fromSet ? ["model", "from"] : ["model", c], "key");
  };
}

function statOrUndefined(p: string): fs.Stats | undefined {
  try {
    return fs.statSync(p);
  } catch {
    return undefined;
  }
}

function checkFile(file: string, at: Path, ext: string | undefined, what: string, ctx: ModelContext, problems: Problem[]): boolean {
  const st = statOrUndefined(file);
  const where = ctx.origins.where(at);
  if (!st) {
    problems.push({ message: `${what} "${ctx.display(file)}" does not exist`, ...where, hint: ctx.origins.pathHint(at) });
    return false;
  }
  if (!st.isFile()) {
    problems.push({ message: `${what} "${ctx.display(file)}" is not a file`, ...where });
    return false;
  }
  if (ext && path.extname(file).toLowerCase() !== ext) {
    const pickle = PICKLE_EXTS.includes(path.extname(file).toLowerCase());
    problems.push({
      message: `${what} must be a ${ext} file, got "${path.basename(file)}"`,
      ...where,
      hint: pickle ? "sdc loads only safetensors; convert it with safetensors.torch.save_file(torch.load(file), 'out.safetensors')" : undefined,
    });
    return false;
  }
  return true;
}

interface FolderResult {
  components: Partial<Record<ComponentName, Record<string, unknown>>>;
  json: ComponentSources;
  scheduler?: Record<string, unknown>;
  tokenizerDir?: string;
}

function readFolder(
  dir: string,
  variant: string | undefined,
  ctx: ModelContext,
  problems: Problem[],
  files: string[],
  weights: ResolvedModel["weights"],
): FolderResult {
  const out: FolderResult = { components: {}, json: {} };
  const at = ctx.origins.where(["model", "from"]);
  const missing = (rel: string, what: string, hint: string) =>
    problems.push({ message: `model folder "${ctx.display(dir)}" has no ${rel} (${what})`, ...at, hint });

  const indexFile = path.join(dir, "model_index.json");
  if (!statOrUndefined(indexFile)?.isFile()) {
    missing("model_index.json", "not a diffusers folder", "point model.from at a folder written by diffusers' save_pretrained, or at a single .safetensors checkpoint");
    return out;
  }
  files.push(indexFile);
  const index = readJson(indexFile, ctx, problems);
  if (index && !isPlainObject(index.value)) problems.push(index.source.problem({ start: 0, end: 1 }, "model_index.json must be a JSON object"));

  const variantMissing: string[] = [];
  for (const c of COMPONENTS) {
    const cfgFile = path.join(dir, c, "config.json");
    if (!statOrUndefined(cfgFile)?.isFile()) {
      missing(`${c}/config.json`, `the ${c}'s architecture`, "the folder looks incomplete; download or save the whole pipeline again");
      continue;
    }
    files.push(cfgFile);
    const parsed = readJson(cfgFile, ctx, problems);
    if (!parsed) continue;
    if (!isPlainObject(parsed.value)) {
      problems.push(parsed.source.problem({ start: 0, end: 1 }, `${c}/config.json must be a JSON object`));
      continue;
    }
    out.json[c] = { source: parsed.source, raw: parsed.value };
    const r = ARCH_SCHEMAS[c].safeParse(parsed.value);
    if (!r.success) {
      const src = parsed.source;
      const found = issuesToProblems(ARCH_SCHEMAS[c] as z.ZodType, parsed.value, r.error.issues, (p, mode) => whereInSource(src, p, mode));
      problems.push(...found.map((p) => withHint(p, `fix ${c}/config.json, or override the key under model.${c} in the pipeline`)));
    } else out.components[c] = parsed.value;
    const w = findWeights(path.join(dir, c), WEIGHT_BASENAMES[c], variant, c, ctx, problems, at, variantMissing);
    if (w) weights[c] = w;
  }
  if (variantMissing.length)
    problems.push({
      message: `model.variant is "${variant}", but the model folder has no ${variantMissing.join(", ")}`,
      ...ctx.origins.where(["model", "variant"]),
      hint: "remove model.variant to use the folder's default weights",
    });

  const tok = path.join(dir, "tokenizer");
  const tokMissing = ["vocab.json", "merges.txt"].filter((f) => !statOrUndefined(path.join(tok, f))?.isFile());
  if (tokMissing.length) missing(tokMissing.map((f) => `tokenizer/${f}`).join(" or "), "the CLIP tokenizer", "the folder looks incomplete; download or save the whole pipeline again");
  else out.tokenizerDir = tok;

  const schedFile = path.join(dir, "scheduler", "scheduler_config.json");
  if (!statOrUndefined(schedFile)?.isFile()) {
    missing("scheduler/scheduler_config.json", "the noise schedule the model was trained with", "the folder looks incomplete; download or save the whole pipeline again");
  } else {
    files.push(schedFile);
    const parsed = readJson(schedFile, ctx, problems);
    if (parsed && isPlainObject(parsed.value)) {
      out.json.scheduler = { source: parsed.source, raw: parsed.value };
      const r = SchedulerConfigFileSchema.safeParse(parsed.value);
      const src = parsed.source;
      if (!r.success) {
        const found = issuesToProblems(SchedulerConfigFileSchema, parsed.value, r.error.issues, (p, mode) => whereInSource(src, p, mode));
        problems.push(...found.map((p) => withHint(p, "fix scheduler_config.json, or set the option under scheduler in the pipeline")));
      }
      else out.scheduler = parsed.value;
    } else if (parsed) problems.push(parsed.source.problem({ start: 0, end: 1 }, "scheduler_config.json must be a JSON object"));
  }
  return out;
}

function withHint(p: Problem, extra: string): Problem {
  return { ...p, hint: p.hint ? `${p.hint}; ${extra}` : extra };
}

function readJson(file: string, ctx: ModelContext, problems: Problem[]): { source: SourceDoc; value: unknown } | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    problems.push({ message: `cannot read ${ctx.display(file)}: ${(e as Error).message}`, subject: ctx.display(file) });
    return undefined;
  }
  const parsed = parseSource(file, ctx.display(file), text);
  if (parsed.problems.length) {
    problems.push(...parsed.problems);
    return undefined;
  }
  return { source: parsed.source, value: parsed.value };
}

/** diffusers' `_add_variant`: `model.safetensors` + fp16 → `model.fp16.safetensors`. */
function addVariant(name: string, variant: string | undefined): string {
  if (!variant) return name;
  const parts = name.split(".");
  return [...parts.slice(0, -1), variant, parts[parts.length - 1]].join(".");
}

function findWeights(
  dir: string,
  base: string,
  variant: string | undefined,
  c: ComponentName,
  ctx: ModelContext,
  problems: Problem[],
  at: Where,
  variantMissing: string[],
): WeightsRef | undefined {
  const exists = (f: string) => statOrUndefined(path.join(dir, f))?.isFile() ?? false;
  const single = addVariant(`${base}.safetensors`, variant);
  if (exists(single)) return { files: [path.join(dir, single)] };
  const indexName = addVariant(`${base}.safetensors.index.json`, variant);
  if (exists(indexName)) {
    const indexPath = path.join(dir, indexName);
    const parsed = readJson(indexPath, ctx, problems);
    if (!parsed) return undefined;
    const map = isPlainObject(parsed.value) ? parsed.value.weight_map : undefined;
    if (!isPlainObject(map)) {
      problems.push(parsed.source.problem({ start: 0, end: 1 }, `${indexName} has no "weight_map" object`, "a sharded index maps every tensor name to its shard file"));
      return undefined;
    }
    const shards = [...new Set(Object.values(map).map(String))];
    const absent = shards.filter((s) => !exists(s));
    if (absent.length) {
      problems.push({ ...whereInSource(parsed.source, ["weight_map"], "key"), message: `shard files listed in weight_map are missing: ${absent.join(", ")}`, hint: "download the missing shards" });
      return undefined;
    }
    return { files: shards.map((s) => path.join(dir, s)), index: indexPath };
  }
  const rel = `${c}/${single}`;
  const pickles = [addVariant(`${base}.bin`, variant), addVariant("pytorch_model.bin", variant), `${base}.bin`, "pytorch_model.bin"].filter(exists);
  if (pickles.length) {
    problems.push({
      message: `${ctx.display(dir)} has only PyTorch .bin weights (${pickles[0]}); sdc loads only safetensors`,
      ...at,
      hint: "convert the folder once in Python: DiffusionPipeline.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)",
    });
    return undefined;
  }
  if (variant && exists(`${base}.safetensors`)) {
    variantMissing.push(`${c}/${single}`);
    return undefined;
  }
  problems.push({ message: `model folder has no weights for the ${c}: ${rel} is missing`, ...at, hint: "the folder looks incomplete; download or save the whole pipeline again" });
  return undefined;
}

function resolveScheduler(
  cfg: ParsedPipelineConfig,
  base: Record<string, unknown>,
  kind: ResolvedModel["kind"],
  ctx: ModelContext,
  json: ComponentSources,
  problems: Problem[],
): Record<string, unknown> {
  const { type, steps: _steps, eta: _eta, ...options } = cfg.scheduler;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(options)) if (v !== undefined) out[k] = v;
  if (type !== undefined) out._class_name = schedulerClassName(type);
  else if (base._class_name === undefined) out._class_name = kind === "inline" ? DEFAULT_INLINE_SCHEDULER : SD15.scheduler._class_name;
  else if (!schedulerClassName(String(base._class_name))) {
    const src = json.scheduler?.source;
    problems.push({
      message: `the model's scheduler ${JSON.stringify(base._class_name)} is not one sdc implements`,
      ...(src ? whereInSource(src, ["_class_name"], "value") : ctx.origins.where(["model", "from"])),
      hint: `set scheduler.type in the pipeline; sdc has: ${SCHEDULER_SHORT_NAMES.join(", ")} (or ${SCHEDULER_CLASS_NAMES.join(", ")})`,
    });
  }
  if (typeof out.lambda_min_clipped === "string") out.lambda_min_clipped = -Infinity;
  return out;
}
