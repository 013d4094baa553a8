/**
 * Loading a pipeline: file → extends chain → overrides → schema → model → cross-field checks.
 *
 * Each stage collects every problem it can find before stopping, so one run reports all of a
 * file's mistakes; later stages run only when earlier ones passed (a model cannot be resolved from a
 * config that failed its schema). Paths in the YAML are made absolute relative to the file that
 * wrote them, command-line paths relative to the working directory.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { type Document, parseDocument } from "yaml";
import type { z } from "zod";
import { vaeScaleFactor } from "../models/arch.js";
import { isUserError, type Problem, type SourcePosition, UserError } from "../util/errors.js";
import { displayPath } from "../util/paths.js";
import { checkPipeline } from "./checks.js";
import { issuesToProblems } from "./issues.js";
import { type ModelContext, type ResolvedModel, resolveModel } from "./model.js";
import { isPlainObject, Origins, type Where } from "./origins.js";
import { readPromptsFile } from "./prompts.js";
import { type ParsedPipelineConfig, pathFields, type PipelineConfig, PipelineSchema } from "./schema.js";
import { objectShape, unwrap } from "./schema-walk.js";
import { MAX_ALIAS_COUNT, parseSource, type Path, type SourceDoc } from "./source.js";

export interface LoadOptions {
  /** `key.path=value` overrides (the CLI's `--set`); values are YAML scalars, checked by the schema. */
  overrides?: string[];
  /** Shortcuts for common overrides: sample.prompt, sample.seed, scheduler.steps, output.dir. */
  prompt?: string;
  seed?: number | string;
  steps?: number | string;
  out?: string;
  /** The run command's shortcuts: sample.prompts_file, sample.init_image, sample.strength, sample.latents. */
  promptsFile?: string;
  initImage?: string;
  strength?: number | string;
  latents?: string;
  /** Working directory for command-line paths and for the file names in messages (default: process.cwd()). */
  cwd?: string;
  /**
   * The text of the pipeline file, read instead of the file (an editor's unsaved buffer, a job sent
   * to a worker): problems are located in it under the file's name, and its relative paths resolve
   * from the file's folder as if it were saved there. Base pipelines it extends are read from disk.
   */
  text?: string;
}

export interface LoadedPipeline {
  /** The pipeline file, absolute. */
  file: string;
  name: string;
  config: PipelineConfig;
  model: ResolvedModel;
  /** The extends chain, absolute paths, this file first (what a watcher watches). */
  sources: string[];
  /** Where a config path was written, for later stages' errors (undefined: set on the command line or a default). */
  locate(path: Path): SourcePosition | undefined;
  /** The location fields of a Problem about a config path (a file position, or the command-line flag). */
  where(path: Path, mode?: "key" | "value"): Where;
}

export type ValidationResult = { ok: true; pipeline: LoadedPipeline } | { ok: false; problems: Problem[] };

export const DEFAULT_PIPELINE = "pipelines/txt2img.yaml";
const DEFAULT_STRENGTH = 0.8;

/** A path as shown in messages (kept here for the modules that import it from the config layer). */
export { displayPath };

/** Load, validate and resolve a pipeline; throws a UserError listing every problem found. */
export async function loadPipeline(file: string, opts: LoadOptions = {}): Promise<LoadedPipeline> {
  const cwd = opts.cwd ?? process.cwd();
  const abs = path.resolve(cwd, file);
  const display = (p: string) => displayPath(p, cwd);
  const { cfg, origins, sources } = loadConfig(abs, opts, cwd, display);
  const ctx: ModelContext = { origins, display };

  const resolved = resolveModel(cfg, ctx);
  if (resolved.problems.length || !resolved.model) throw new UserError(sortProblems(resolved.problems, sources, display));
  const model = resolved.model;

  const config = completeConfig(cfg, model, abs, cwd);
  const problems = checkPipeline(config, model, ctx, resolved.json);
  if (config.sample.prompts_file) {
    const prompts = readPromptsFile(config.sample.prompts_file, origins, display, problems);
    if (prompts) config.sample = { ...config.sample, prompt: prompts };
  }
  if (problems.length) throw new UserError(sortProblems(problems, sources, display));

  return {
    file: abs,
    name: config.name,
    config,
    model,
    sources,
    locate: (p) => origins.position(p),
    where: (p, mode = "value") => origins.where(p, mode),
  };
}

/** `loadPipeline` that returns problems instead of throwing them. */
export async function validate(file: string, opts: LoadOptions = {}): Promise<ValidationResult> {
  try {
    return { ok: true, pipeline: await loadPipeline(file, opts) };
  } catch (e) {
    if (isUserError(e)) return { ok: false, problems: e.problems };
    throw e;
  }
}

interface LoadedConfig {
  cfg: ParsedPipelineConfig;
  origins: Origins;
  sources: string[];
}

/** The config stage alone (file, extends, overrides, schema, paths), without the model. */
export function loadConfig(abs: string, opts: LoadOptions, cwd: string, display: (p: string) => string): LoadedConfig {
  const chain = readChain(abs, display, opts.text);
  const sources = chain.layers.map((l) => l.source.file).reverse();
  if (chain.problems.length) throw new UserError(sortProblems(chain.problems, sources, display));

  let raw: Record<string, unknown> = {};
  const origins = new Origins();
  for (const layer of chain.layers) {
    origins.addFileLayer(layer.source, raw, layer.value);
    raw = deepMerge(raw, layer.value) as Record<string, unknown>;
  }
  const cliProblems = applyCommandLine(raw, origins, opts);
  if (cliProblems.length) throw new UserError(cliProblems);

  const parsed = PipelineSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = issuesToProblems(PipelineSchema, raw, parsed.error.issues, (p, mode) => origins.where(p, mode));
    throw new UserError(sortProblems(problems, sources, display));
  }
  const cfg = parsed.data;
  resolvePaths(PipelineSchema, cfg, [], (p) => {
    const f = origins.fileOf(p);
    return f ? path.dirname(f) : cwd;
  });
  return { cfg, origins, sources };
}

/** Defaults that depend on the file name, the working directory or the model. */
function completeConfig(cfg: ParsedPipelineConfig, model: ResolvedModel, file: string, cwd: string): PipelineConfig {
  const name = cfg.name ?? (path.basename(file).replace(/\.ya?ml$/i, "").replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[^A-Za-z0-9]+/, "") || "pipeline");
  const outDir = cfg.output.dir ?? path.join(cwd, "out", name);
  const f = vaeScaleFactor(model.vae);
  const s = model.unet.sample_size;
  const [h, w] = s === null ? [512 / f, 512 / f] : Array.isArray(s) ? s : [s, s];
  const config: PipelineConfig = {
    ...cfg,
    name,
    sample: {
      ...cfg.sample,
      width: cfg.sample.width ?? w! * f,
      height: cfg.sample.height ?? h! * f,
      strength: cfg.sample.strength ?? DEFAULT_STRENGTH,
    },
    output: { ...cfg.output, dir: outDir },
  };
  if (config.train && config.train.checkpointing.dir === undefined) {
    config.train = { ...config.train, checkpointing: { ...config.train.checkpointing, dir: path.join(outDir, "checkpoints") } };
  }
  return config;
}

// ---------------------------------------------------------------------------------------------
// The extends chain

interface Layer {
  source: SourceDoc;
  value: Record<string, unknown>;
}

function readChain(top: string, display: (p: string) => string, topText?: string): { layers: Layer[]; problems: Problem[] } {
  const layers: Layer[] = [];
  const problems: Problem[] = [];
  const seen: string[] = [];
  let file = top;
  let namedBy: SourceDoc | undefined;
  for (;;) {
    if (seen.includes(file)) {
      const cycle = [...seen.slice(seen.indexOf(file)), file].map(display).join(" → ");
      problems.push({ message: `extends cycle: ${cycle}`, ...whereExtends(namedBy!), hint: "a pipeline cannot extend itself, directly or through its bases; remove one of these extends" });
      break;
    }
    let text: string;
    try {
      text = file === top && topText !== undefined ? topText : fs.readFileSync(file, "utf8");
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const why = code === "ENOENT" ? "no such file" : code === "EISDIR" ? "it is a folder" : (e as Error).message;
      if (namedBy) {
        problems.push({
          message: `cannot read the base pipeline "${display(file)}": ${why}`,
          ...whereExtends(namedBy),
          hint: "extends takes a path relative to the file that names it",
        });
      } else {
        problems.push({
          message: `cannot read the pipeline file: ${why}`,
          subject: display(file),
          hint: "give the path of a pipeline YAML file, e.g. pipelines/txt2img.yaml",
        });
      }
      break;
    }
    const parsed = parseSource(file, display(file), text);
    problems.push(...parsed.problems);
    if (parsed.problems.length) break;
    const value = parsed.value;
    if (value === null || value === undefined) {
      problems.push({
        ...parsed.source.problem({ start: 0, end: 0 }, "the pipeline file is empty"),
        hint: "a pipeline starts with `version: 1` and a `model:` section; see pipelines/txt2img.yaml",
      });
      break;
    }
    if (!isPlainObject(value)) {
      problems.push({
        ...parsed.source.problem(parsed.source.index.get("")!.value, "a pipeline file must be a mapping of sections (version, model, scheduler, ...)"),
        hint: "start with `version: 1` on its own line",
      });
      break;
    }
    layers.unshift({ source: parsed.source, value });
    seen.push(file);
    const ext = value.extends;
    if (typeof ext !== "string" || ext === "") break; // absent, or a type error the schema reports
    namedBy = parsed.source;
    file = path.resolve(path.dirname(file), ext);
  }
  return { layers, problems };
}

function whereExtends(source: SourceDoc): Where {
  const loc = source.index.get("extends");
  const at = source.position(loc?.value ?? { start: 0, end: 0 });
  return { at, snippet: source.snippet(at) };
}

/** Objects merge key by key; anything else (scalars, lists) is replaced by the extending value. */
export function deepMerge(base: unknown, over: unknown): unknown {
  if (!isPlainObject(base) || !isPlainObject(over)) return over;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(base)) setOwn(out, k, v);
  for (const [k, v] of Object.entries(over)) setOwn(out, k, Object.hasOwn(base, k) ? deepMerge(base[k], v) : v);
  return out;
}

// A YAML key "__proto__" must stay an ordinary (and then unknown, hence reported) key.
function setOwn(o: Record<string | number, unknown>, k: string | number, v: unknown): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

// ---------------------------------------------------------------------------------------------
// Command-line overrides

function parseYamlValue(text: string): { value?: unknown; error?: string } {
  const doc: Document.Parsed = parseDocument(text, { prettyErrors: false, uniqueKeys: true });
  const errs = [...doc.errors, ...doc.warnings];
  if (errs.length) return { error: errs[0]!.message.replace(/\s+/g, " ") };
  try {
    return { value: doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }) };
  } catch (e) {
    return { error: (e as Error).message };
  }
}

function applyCommandLine(raw: Record<string, unknown>, origins: Origins, opts: LoadOptions): Problem[] {
  const problems: Problem[] = [];
  // what each flag wrote, to refuse two flags that disagree (neither silently wins)
  const written: { path: Path; text: string; value: unknown }[] = [];
  for (const spec of opts.overrides ?? []) {
    const text = `--set ${spec}`;
    const eq = spec.indexOf("=");
    const keys = eq > 0 ? spec.slice(0, eq).split(".") : [];
    if (eq <= 0 || keys.some((k) => k === "")) {
      problems.push({ subject: text, message: "expected --set key.path=value", hint: "e.g. --set scheduler.steps=20 or --set sample.prompt='a red fox'" });
      continue;
    }
    const { value, error } = parseYamlValue(spec.slice(eq + 1));
    if (error !== undefined) {
      problems.push({ subject: text, message: `the value is not valid YAML: ${error}`, hint: "quote strings that contain YAML punctuation, e.g. --set 'sample.prompt=\"a: b\"'" });
      continue;
    }
    const p = setPath(raw, keys, value, text, problems);
    if (p) {
      origins.addCli(p, text);
      written.push({ path: p, text, value });
    }
  }
  const shortcut = (flag: string, keys: string[], v: unknown, typed: boolean) => {
    let value = v;
    if (typed && typeof v === "string") {
      const r = parseYamlValue(v);
      if (r.error !== undefined) {
        problems.push({ subject: `${flag} ${v}`, message: `not a valid value: ${r.error}` });
        return;
      }
      value = r.value;
    }
    const text = `${flag} ${typeof v === "string" && /\s/.test(v) ? JSON.stringify(v) : String(v)}`;
    const p = setPath(raw, keys, value, text, problems);
    if (p) {
      origins.addCli(p, text);
      written.push({ path: p, text, value });
    }
  };
  if (opts.prompt !== undefined) shortcut("--prompt", ["sample", "prompt"], opts.prompt, false);
  if (opts.seed !== undefined) shortcut("--seed", ["sample", "seed"], opts.seed, true);
  if (opts.steps !== undefined) shortcut("--steps", ["scheduler", "steps"], opts.steps, true);
  if (opts.out !== undefined) shortcut("--out", ["output", "dir"], opts.out, false);
  if (opts.promptsFile !== undefined) shortcut("--prompts-file", ["sample", "prompts_file"], opts.promptsFile, false);
  if (opts.initImage !== undefined) shortcut("--init-image", ["sample", "init_image"], opts.initImage, false);
  if (opts.strength !== undefined) shortcut("--strength", ["sample", "strength"], opts.strength, true);
  if (opts.latents !== undefined) shortcut("--latents", ["sample", "latents"], opts.latents, false);
  problems.push(...commandLineConflicts(written));
  return problems;
}

/** Keys that contradict each other wherever they are set (one replaces the other). */
const EXCLUSIVE: [string, string][] = [["sample.prompt", "sample.prompts_file"]];

/**
 * Two flags that set the same key to different values (or a key and a mapping around it), or keys
 * that exclude each other: the command line contradicts itself, so it is an error naming both flags.
 */
function commandLineConflicts(written: { path: Path; text: string; value: unknown }[]): Problem[] {
  const problems: Problem[] = [];
  const name = (p: Path) => p.join(".");
  const within = (a: Path, b: Path) => a.length <= b.length && a.every((k, i) => String(k) === String(b[i]));
  for (let j = 0; j < written.length; j++) {
    for (let i = 0; i < j; i++) {
      const a = written[i]!;
      const b = written[j]!;
      const same = name(a.path) === name(b.path);
      const overlap = within(a.path, b.path) || within(b.path, a.path);
      const under = (k: string, w: Path) => within(k.split("."), w);
      const exclusive = EXCLUSIVE.find(([x, y]) => (under(x, a.path) && under(y, b.path)) || (under(y, a.path) && under(x, b.path)));
      if (overlap && !(same && JSON.stringify(a.value) === JSON.stringify(b.value))) {
        const key = name(a.path.length >= b.path.length ? a.path : b.path);
        problems.push({ subject: `${a.text} and ${b.text}`, message: `both set ${key}`, hint: "give one of them (no flag silently wins over another)" });
      } else if (exclusive) {
        problems.push({ subject: `${a.text} and ${b.text}`, message: `${exclusive[0]} and ${exclusive[1]} exclude each other`, hint: "give one of them" });
      }
    }
  }
  return problems;
}

/** Set a value at a dotted path, creating mappings on the way; numeric keys index lists. */
function setPath(root: Record<string, unknown>, keys: string[], value: unknown, text: string, problems: Problem[]): Path | undefined {
  let node: unknown = root;
  const p: (string | number)[] = [];
  for (let i = 0; i < keys.length; i++) {
    const last = i === keys.length - 1;
    const key = keys[i]!;
    if (Array.isArray(node)) {
      const idx = /^\d+$/.test(key) ? Number(key) : NaN;
      if (!(idx >= 0 && idx <= node.length)) {
        problems.push({
          subject: text,
          message: `${p.join(".")} is a list; "${key}" is not an index into it (0 to ${node.length})`,
          hint: "address list items by number, e.g. sample.prompt.0=...",
        });
        return undefined;
      }
      p.push(idx);
      if (last) node[idx] = value;
      else {
        if (!isPlainObject(node[idx]) && !Array.isArray(node[idx])) node[idx] = {};
        node = node[idx];
      }
      continue;
    }
    const obj = node as Record<string, unknown>;
    p.push(key);
    if (last) setOwn(obj, key, value);
    else {
      const next = obj[key];
      if (next !== undefined && next !== null && typeof next !== "object") {
        problems.push({
          subject: text,
          message: `${p.join(".")} is ${JSON.stringify(next)}, not a mapping, so it has no key "${keys[i + 1]}"`,
          hint: `set ${p.join(".")} itself, e.g. --set ${p.join(".")}=<value>`,
        });
        return undefined;
      }
      if (next === undefined || next === null) setOwn(obj, key, {});
      node = obj[key];
    }
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// Paths and problem order

/** Make every path field absolute, relative to the directory `baseDir(path)` says wrote it. */
function resolvePaths(schema: z.ZodType, value: unknown, at: (string | number)[], baseDir: (p: Path) => string): void {
  const inner = unwrap(schema).schema;
  const shape = objectShape(inner);
  if (shape && isPlainObject(value)) {
    for (const [k, s] of Object.entries(shape)) {
      const v = value[k];
      if (v === undefined) continue;
      if (typeof v === "string" && pathFields.has(unwrap(s).schema)) value[k] = path.resolve(baseDir([...at, k]), v);
      else resolvePaths(s, v, [...at, k], baseDir);
    }
    return;
  }
  const d = (inner as unknown as { _zod: { def: { type: string; element?: z.ZodType } } })._zod.def;
  if (d.type === "array" && Array.isArray(value)) {
    value.forEach((v, i) => {
      if (typeof v === "string" && pathFields.has(unwrap(d.element!).schema)) value[i] = path.resolve(baseDir([...at, i]), v);
      else resolvePaths(d.element!, v, [...at, i], baseDir);
    });
  }
}

/** File order (this file, then its bases, then model files), then line and column; flags last. */
function sortProblems(problems: Problem[], sources: string[], display: (p: string) => string): Problem[] {
  const rank = new Map(sources.map((s, i) => [display(s), i]));
  const key = (p: Problem): [number, string, number, number] =>
    p.at ? [rank.get(p.at.file) ?? sources.length, p.at.file, p.at.line, p.at.col] : [Number.MAX_SAFE_INTEGER, "", 0, 0];
  const seen = new Set<string>();
  return problems
    .map((p, i) => ({ p, i, k: key(p) }))
    .sort((a, b) => a.k[0] - b.k[0] || a.k[1].localeCompare(b.k[1]) || a.k[2] - b.k[2] || a.k[3] - b.k[3] || a.i - b.i)
    .map((x) => x.p)
    .filter((p) => {
      const id = JSON.stringify([p.message, p.at, p.subject]);
      if (seen.has(id)) return false;
      seen.add(id);
      return true;
    });
}
