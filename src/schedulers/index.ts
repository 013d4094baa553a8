/**
 * Schedulers as the rest of sdc uses them: the registry's lookup by name (registry.ts), plus the
 * pieces of the diffusers pipelines that belong with schedulers: img2img's timestep slicing, the
 * Stable Diffusion pipelines' config fix-ups, and reading/writing scheduler_config.json.
 */
import { UserError } from "../util/errors.js";
import { createScheduler } from "./registry.js";
import type { Scheduler } from "./types.js";

export type { NoiseSource, Scheduler, StepOutput } from "./types.js";
export {
  createScheduler,
  SCHEDULER_CLASS_NAMES,
  SCHEDULER_SHORT_NAMES,
  schedulerDefinition,
} from "./registry.js";

type Options = Record<string, unknown>;

/**
 * diffusers' StableDiffusionPipeline and StableDiffusionImg2ImgPipeline (v0.24) rewrite an "outdated"
 * scheduler config when constructed: steps_offset becomes 1 and clip_sample becomes false. sdc does the
 * same to values a model inherits (its scheduler_config.json, the class defaults), never to the keys in
 * `given` (what the pipeline file or --set wrote: the user's word wins). Returns the scheduler the
 * pipeline would really use (the same object when nothing changes) and each change made.
 */
export function withStableDiffusionPipelineFixups(s: Scheduler, given: Iterable<string> = []): Scheduler {
  return stableDiffusionPipelineFixups(s, given).scheduler;
}

export interface Fixup {
  key: string;
  from: unknown;
  to: unknown;
}

export function stableDiffusionPipelineFixups(s: Scheduler, given: Iterable<string> = []): { scheduler: Scheduler; fixups: Fixup[] } {
  const c = s.config;
  const keep = new Set(given);
  const fixups: Fixup[] = [];
  if ("steps_offset" in c && c.steps_offset !== 1 && !keep.has("steps_offset")) fixups.push({ key: "steps_offset", from: c.steps_offset, to: 1 });
  if ("clip_sample" in c && c.clip_sample === true && !keep.has("clip_sample")) fixups.push({ key: "clip_sample", from: true, to: false });
  if (!fixups.length) return { scheduler: s, fixups };
  return { scheduler: createScheduler(s.className, { ...c }, Object.fromEntries(fixups.map((f) => [f.key, f.to]))), fixups };
}

export interface Img2ImgTimesteps {
  /** The timesteps to denoise through (a tail of the scheduler's). */
  timesteps: Float64Array;
  /** The timestep the init latents are noised to: timesteps[0]. */
  startTimestep: number;
  /** Denoising steps that remain (diffusers' returned num_inference_steps). */
  numInferenceSteps: number;
  /** Steps skipped at the start (t_start). */
  tStart: number;
}

/**
 * StableDiffusionImg2ImgPipeline.get_timesteps (v0.24): calls `s.setTimesteps(numInferenceSteps)` and keeps
 * the last ⌊numInferenceSteps·strength⌋ steps (× the scheduler's order). The init latents are then noised
 * with `s.addNoise(latents, noise, startTimestep)` and stepped through `timesteps`.
 */
export function img2imgTimesteps(s: Scheduler, numInferenceSteps: number, strength: number): Img2ImgTimesteps {
  if (!(strength >= 0 && strength <= 1))
    throw new UserError({ subject: "strength", message: `must be between 0 and 1, got ${strength}`, hint: "0.3–0.8 is typical for img2img" });
  s.setTimesteps(numInferenceSteps);
  const initTimestep = Math.min(Math.trunc(numInferenceSteps * strength), numInferenceSteps);
  const tStart = Math.max(numInferenceSteps - initTimestep, 0);
  const timesteps = s.timesteps.slice(tStart * s.order);
  if (timesteps.length === 0)
    throw new UserError({
      subject: "strength",
      message: `strength ${strength} with ${numInferenceSteps} steps leaves no denoising step (⌊${numInferenceSteps}·${strength}⌋ = 0)`,
      hint: `raise strength to at least ${Math.ceil((1 / numInferenceSteps) * 1000) / 1000} or use more steps`,
    });
  return { timesteps, startTimestep: timesteps[0]!, numInferenceSteps: numInferenceSteps - tStart, tStart };
}

// ---------------------------------------------------------------------------------------------
// scheduler_config.json: Python's json module writes NaN / Infinity / -Infinity, which JSON.parse rejects

/** scheduler_config.json text as diffusers writes it (sorted keys, Python's number tokens), with this scheduler's class. */
export function schedulerConfigJson(s: Scheduler, diffusersVersion = "0.24.0"): string {
  const obj: Options = { _class_name: s.className, _diffusers_version: diffusersVersion };
  for (const k of Object.keys(s.config).sort()) obj[k] = s.config[k];
  const marks = new Map<string, string>();
  const text = JSON.stringify(
    obj,
    (_k, v: unknown) => {
      if (typeof v === "number" && !Number.isFinite(v)) {
        const token = Number.isNaN(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity";
        const mark = `\u0000${token}\u0000`;
        marks.set(JSON.stringify(mark), token);
        return mark;
      }
      return v;
    },
    2,
  );
  let out = text;
  for (const [quoted, token] of marks) out = out.split(quoted).join(token);
  return out + "\n";
}

const NAN_MARK = "\uE000";

/** Parse scheduler_config.json (Python-flavoured JSON); syntax errors are UserErrors at file:line:col. */
export function parseSchedulerConfigJson(text: string, file: string): Options {
  // Python's non-finite tokens become same-length stand-ins (so error positions stay right): ±Infinity
  // as overflowing number literals, NaN as a one-character private-use string the reviver turns back
  let out = "";
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (inString) {
      out += ch;
      if (ch === "\\") out += text[++i] ?? "";
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') inString = true;
    const m = /^(-Infinity|Infinity|NaN)/.exec(text.slice(i, i + 9));
    if (m) {
      out += m[1] === "NaN" ? `"${NAN_MARK}"` : m[1] === "Infinity" ? "9e999999" : "-9e999999";
      i += m[1]!.length - 1;
      continue;
    }
    out += ch;
  }
  let value: unknown;
  try {
    value = JSON.parse(out, (_k, v: unknown) => (v === NAN_MARK ? NaN : v));
  } catch (e) {
    const msg = (e as Error).message;
    const pos = /position (\d+)/.exec(msg);
    let line = 1;
    let col = 1;
    if (pos) {
      const upto = text.slice(0, Number(pos[1]));
      line = upto.split("\n").length;
      col = upto.length - upto.lastIndexOf("\n");
    }
    throw new UserError({
      message: `invalid JSON: ${msg.replace(/ in JSON at position \d+.*$/, "")}`,
      at: { file, line, col },
      hint: "scheduler_config.json must be a JSON object of scheduler options",
    });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw new UserError({ message: "expected a JSON object of scheduler options", at: { file, line: 1, col: 1 } });
  return value as Options;
}
