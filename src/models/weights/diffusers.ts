/**
 * diffusers' folder layout: `model_index.json` naming the components, and per component a
 * `config.json` and its weights — `diffusion_pytorch_model[.fp16].safetensors` (unet, vae) or
 * `model[.fp16].safetensors` (transformers' text encoder), possibly sharded with a
 * `*.safetensors.index[.fp16].json` weight map. Weights become a `WeightSet` without reading any data.
 *
 * Pickle weights (`*.bin`) are refused with the command that converts them: sdc never unpickles.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { fail, UserError, type Problem } from "../../util/errors.js";
import { currentDiffusersVaeKey, TEXT_ENCODER_BUFFERS } from "./keymap.js";
import { CONVERT_HINT, SafetensorsFile } from "./safetensors.js";
import { WeightSet, type WeightRef } from "./weight-set.js";

export type DiffusersComponent = "unet" | "vae" | "text_encoder";

const WEIGHT_BASENAME: Record<DiffusersComponent, string> = {
  unet: "diffusion_pytorch_model",
  vae: "diffusion_pytorch_model",
  text_encoder: "model",
};

const PICKLE_NAMES: Record<DiffusersComponent, string[]> = {
  unet: ["diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin"],
  vae: ["diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin"],
  text_encoder: ["pytorch_model.bin", "pytorch_model.fp16.bin"],
};

export interface LoadOptions {
  /** Read the `*.fp16.safetensors` files (diffusers' `variant="fp16"`). */
  variant?: "fp16";
}

/** Parse a JSON file; a syntax error becomes a UserError at file:line:col. */
export function readJsonFile(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return fail(code === "ENOENT" ? "file not found" : `cannot read the file (${code ?? String(e)})`, { subject: file });
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    const msg = (e as Error).message;
    const pos = /at position (\d+)/.exec(msg);
    const lc = /line (\d+) column (\d+)/.exec(msg);
    let line = 1;
    let col = 1;
    if (lc) {
      line = Number(lc[1]);
      col = Number(lc[2]);
    } else if (pos) {
      const before = text.slice(0, Number(pos[1]));
      line = before.split("\n").length;
      col = before.length - before.lastIndexOf("\n");
    }
    return fail(`invalid JSON: ${msg}`, { at: { file, line, col }, hint: "fix the syntax (a trailing comma, a missing quote?)" });
  }
}

function readJsonObject(file: string): Record<string, unknown> {
  const v = readJsonFile(file);
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    fail("expected a JSON object", { at: { file, line: 1, col: 1 } });
  }
  return v as Record<string, unknown>;
}

/** `model_index.json` of a diffusers folder. */
/** A component's weight file name in a diffusers folder. */
export const COMPONENT_WEIGHT_FILE: Record<DiffusersComponent, string> = { unet: "diffusion_pytorch_model.safetensors", vae: "diffusion_pytorch_model.safetensors", text_encoder: "model.safetensors" };

/** A component's config.json as diffusers (U-Net, VAE) and transformers (CLIPTextModel) write it; clip_skip is a pipeline setting, not written. */
export function componentConfigJson(c: DiffusersComponent, config: object): string {
  let body: Record<string, unknown>;
  if (c === "unet") body = { _class_name: "UNet2DConditionModel", ...config };
  else if (c === "vae") body = { _class_name: "AutoencoderKL", ...config };
  else {
    const { clip_skip: _skip, ...text } = config as Record<string, unknown>;
    body = { architectures: ["CLIPTextModel"], model_type: "clip_text_model", ...text };
  }
  return `${JSON.stringify(body, null, 2)}\n`;
}

/** The model_index.json of a StableDiffusionPipeline folder sdc writes (initial weights, training exports). */
export function modelIndexJson(schedulerClass: string): string {
  const index = {
    _class_name: "StableDiffusionPipeline",
    _diffusers_version: "0.24.0",
    scheduler: ["diffusers", schedulerClass],
    text_encoder: ["transformers", "CLIPTextModel"],
    tokenizer: ["transformers", "CLIPTokenizer"],
    unet: ["diffusers", "UNet2DConditionModel"],
    vae: ["diffusers", "AutoencoderKL"],
  };
  return `${JSON.stringify(index, null, 2)}\n`;
}

export function readModelIndex(dir: string): Record<string, unknown> {
  const file = path.join(dir, "model_index.json");
  if (!fs.existsSync(file)) {
    fail("not a diffusers folder: model_index.json is missing", {
      subject: dir,
      hint: "point to the folder that holds model_index.json, unet/, vae/, text_encoder/ (or use a single .safetensors checkpoint)",
    });
  }
  return readJsonObject(file);
}

/** A component's `config.json`. */
export function readComponentConfig(dir: string, component: string): Record<string, unknown> {
  const file = path.join(dir, component, "config.json");
  if (!fs.existsSync(file)) {
    fail(`${component}/config.json is missing`, { subject: dir, hint: "the diffusers folder is incomplete; re-download it" });
  }
  return readJsonObject(file);
}

/** The WeightSet of one component of a diffusers folder. */
export function loadDiffusersComponent(dir: string, component: DiffusersComponent, opts: LoadOptions = {}): WeightSet {
  const cdir = path.join(dir, component);
  if (!fs.existsSync(cdir) || !fs.statSync(cdir).isDirectory()) {
    fail(`the diffusers folder has no ${component}/ folder`, { subject: dir, hint: "check the model path" });
  }
  const base = WEIGHT_BASENAME[component];
  const v = opts.variant ? `.${opts.variant}` : "";
  const single = path.join(cdir, `${base}${v}.safetensors`);
  // diffusers and transformers name variant indexes differently; accept both spellings
  const indexes = [`${base}.safetensors.index${v}.json`, `${base}${v}.safetensors.index.json`].map((f) => path.join(cdir, f));
  const ignored = new Map<string, string>();

  let refs: WeightRef[];
  let files: string[];
  if (fs.existsSync(single)) {
    files = [single];
    refs = refsOf(SafetensorsFile.open(single));
  } else {
    const index = indexes.find((f) => fs.existsSync(f));
    if (!index) missingWeights(cdir, component, base, opts.variant);
    ({ refs, files } = loadSharded(cdir, index));
  }
  if (component === "vae") refs = refs.map((r) => ({ ...r, key: currentDiffusersVaeKey(r.key) }));
  if (component === "text_encoder") {
    refs = refs.filter((r) => {
      const why = TEXT_ENCODER_BUFFERS[r.key];
      if (why) ignored.set(r.sourceKey, why);
      return !why;
    });
  }
  return new WeightSet(component, refs, files, ignored);
}

function refsOf(st: SafetensorsFile, only?: Set<string>): WeightRef[] {
  const out: WeightRef[] = [];
  for (const t of st.tensors.values()) {
    if (only && !only.has(t.name)) continue;
    out.push({ key: t.name, file: st.path, sourceKey: t.name, dtype: t.dtype, shape: t.shape, offset: t.offset, byteLength: t.byteLength });
  }
  return out;
}

function loadSharded(cdir: string, index: string): { refs: WeightRef[]; files: string[] } {
  const json = readJsonObject(index);
  const map = json.weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map)) {
    fail("weight_map is missing or not an object", { at: { file: index, line: 1, col: 1 } });
  }
  const byShard = new Map<string, Set<string>>();
  for (const [key, shard] of Object.entries(map as Record<string, unknown>)) {
    if (typeof shard !== "string" || shard !== path.basename(shard) || !shard.endsWith(".safetensors")) {
      fail(`weight_map maps ${key} to ${JSON.stringify(shard)}, not a .safetensors file name in the same folder`, {
        subject: index,
      });
    }
    let s = byShard.get(shard);
    if (!s) byShard.set(shard, (s = new Set()));
    s.add(key);
  }
  const refs: WeightRef[] = [];
  const files: string[] = [];
  const problems: Problem[] = [];
  for (const [shard, keys] of byShard) {
    const file = path.join(cdir, shard);
    if (!fs.existsSync(file)) {
      problems.push({ message: `shard listed in the index is missing`, subject: file, hint: `re-download ${shard}` });
      continue;
    }
    const st = SafetensorsFile.open(file);
    files.push(file);
    for (const k of keys) {
      if (!st.tensors.has(k)) {
        problems.push({ message: `the index places this tensor in ${shard}, which does not contain it`, subject: `${index}: ${k}` });
      }
    }
    refs.push(...refsOf(st, keys));
  }
  if (problems.length) throw new UserError(problems);
  return { refs, files };
}

function missingWeights(cdir: string, component: DiffusersComponent, base: string, variant?: string): never {
  const present = fs.readdirSync(cdir).sort();
  const pickle = present.find((f) => PICKLE_NAMES[component].includes(f) || f.endsWith(".bin") || f.endsWith(".ckpt"));
  const want = `${base}${variant ? `.${variant}` : ""}.safetensors`;
  if (pickle && !present.some((f) => f.endsWith(".safetensors"))) {
    fail(`only pickle weights (${pickle}) found; sdc needs ${want}`, { subject: cdir, hint: CONVERT_HINT });
  }
  const other = present.filter((f) => f.endsWith(".safetensors"));
  if (other.length) {
    const hint = variant
      ? `this folder has no ${variant} variant; drop the variant option to use ${other.join(", ")}`
      : `only variant files exist (${other.join(", ")}); set the variant option (e.g. fp16)`;
    fail(`${want} not found`, { subject: cdir, hint });
  }
  fail(`${want} not found (the folder holds: ${present.join(", ") || "nothing"})`, {
    subject: cdir,
    hint: "re-download the model or check the path",
  });
}
