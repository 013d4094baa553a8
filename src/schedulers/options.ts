/**
 * Scheduler options: `defineScheduler`, which declares the options every scheduler has around a
 * class's own (its option schema, its names, its checks), and the resolution of a raw config (a
 * scheduler_config.json, possibly written for another class) plus user overrides into a validated,
 * fully defaulted config.
 *
 * Rules, following diffusers' `from_config`: private keys (`_class_name`, `_diffusers_version`) and the
 * keys listed in `_use_default_values` are dropped; keys that belong to other diffusers schedulers are
 * ignored when they come from a config file. What a user sets explicitly must be an option of the chosen
 * scheduler. Options that only newer diffusers versions have are accepted when their value reproduces
 * diffusers 0.24 and refused otherwise, naming the option and the scheduler.
 */
import { z } from "zod";

import { UserError, type Problem } from "../util/errors.js";

// ---------------------------------------------------------------------------------------------
// schema pieces

type Values = readonly [string, ...string[]];

/** A finite number, or ±Infinity (diffusers writes `-Infinity` for lambda_min_clipped). */
const extendedNumber = z.custom<number>((v) => typeof v === "number" && !Number.isNaN(v), {
  message: "expected a number (±Infinity allowed)",
});

/**
 * How a file or a YAML config may write an option: as its schema says, except an extended number
 * (±Infinity allowed, which JSON cannot hold): a number, or Python's -inf spelled out, which the config
 * layer turns back into -Infinity.
 */
export function optionAsWritten(schema: z.ZodType): z.ZodType {
  return schema === extendedNumber ? z.union([z.number(), z.enum(["-Infinity", "-inf", "-.inf"])]) : schema;
}

/** Timestep spacings (Table 2 of arXiv:2305.08891). */
const TIMESTEP_SPACINGS = ["leading", "trailing", "linspace"] as const;
type Spacing = (typeof TIMESTEP_SPACINGS)[number];

/** The beta schedules and prediction types of most schedulers (a class may allow others). */
const BETA_SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2"] as const;
const PREDICTION_TYPES = ["epsilon", "sample", "v_prediction"] as const;

/** diffusers' variance types (DDPMScheduler's; other schedulers act on learned / learned_range only). */
export const VARIANCE_TYPES = ["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"] as const;

/** The options every scheduler has, before its own: the training noise schedule and what the model predicts. */
function commonHead<B extends Values, P extends Values>(betaSchedules: B, predictionTypes: P, betaStart: number, betaEnd: number) {
  return {
    num_train_timesteps: z.int().min(2).describe("Number of diffusion steps the model was trained with.").default(1000),
    beta_start: z.number().gt(0).lt(1).default(betaStart),
    beta_end: z.number().gt(0).lt(1).default(betaEnd),
    beta_schedule: z.enum(betaSchedules).default("linear" as B[number]),
    trained_betas: z.array(z.number().gt(0).lte(1)).min(1).nullable().default(null),
    prediction_type: z.enum(predictionTypes).default("epsilon" as P[number]),
  };
}

/** The options every scheduler has, after its own: how the inference timesteps are spaced. */
function commonTail(spacing: Spacing) {
  return {
    timestep_spacing: z.enum(TIMESTEP_SPACINGS).default(spacing),
    steps_offset: z.int().min(0).default(0),
  };
}

export const thresholdingOptions = {
  thresholding: z.boolean().default(false),
  dynamic_thresholding_ratio: z.number().gt(0).lte(1).default(0.995),
  sample_max_value: z.number().min(1).default(1.0),
};

export const clipOptions = (clipDefault: boolean) => ({
  clip_sample: z.boolean().default(clipDefault),
  clip_sample_range: z.number().positive().default(1.0),
});

export const lambdaMinClipped = extendedNumber.default(-Infinity);

// ---------------------------------------------------------------------------------------------
// definitions

export interface SchedulerDefinition<C, N extends string = string, S extends string = string> {
  className: N;
  shortName: S;
  /** Every option's schema: the common ones, with the class's own between them. */
  shape: Readonly<z.ZodRawShape>;
  schema: z.ZodType<C, Record<string, unknown>>;
  /** Keys of the schema, in the order of `shape`. */
  keys: readonly string[];
  /** Options of this class in newer diffusers: the values that behave as diffusers 0.24 does. */
  later?: Record<string, readonly unknown[]>;
  /**
   * Options sdc has beyond diffusers 0.24's for this class (eta, final_sigmas_type, ...). A config file
   * written for another class does not set them, since diffusers 0.24 would not pass them to this class.
   */
  extensions?: readonly string[];
  /** Value rewrites diffusers applies at construction (e.g. DPM-Solver turns solver_type "bh2" into "midpoint"). */
  normalize?: (raw: Record<string, unknown>) => void;
  /** Extra advice per option, shown with a validation failure. */
  hints?: Record<string, string>;
  /** Checks across options, after validation: each returns problems (empty when fine). */
  check?: (c: C) => Problem[];
  /** The sampler's name in AUTOMATIC1111's web UI (PNG `parameters`), and that of its Karras-sigma variant where it has one. */
  uiName: string;
  uiKarrasName?: string;
}

type Shape<B extends Values, P extends Values, O extends z.ZodRawShape> = ReturnType<typeof commonHead<B, P>> & O & ReturnType<typeof commonTail>;
type Output<B extends Values, P extends Values, O extends z.ZodRawShape> = z.output<z.ZodObject<Shape<B, P, O>>>;

/** The validated, fully defaulted options of a scheduler definition. */
export type OptionsOf<D> = D extends SchedulerDefinition<infer C, string, string> ? C : never;

/**
 * One scheduler's definition: its names, the options every scheduler has (with the values this class
 * allows for beta_schedule and prediction_type when they are not the usual ones, and its default
 * spacing) around `options`, its own. Every definition checks that trained_betas covers the training
 * timesteps.
 */
export function defineScheduler<
  const N extends string,
  const S extends string,
  O extends z.ZodRawShape = Record<never, never>,
  const B extends Values = typeof BETA_SCHEDULES,
  const P extends Values = typeof PREDICTION_TYPES,
>(spec: {
  className: N;
  shortName: S;
  betaSchedules?: B;
  predictionTypes?: P;
  timestepSpacing: Spacing;
  /** beta_start and beta_end defaults, where the class's are not diffusers' usual 0.0001 and 0.02. */
  betaRange?: readonly [number, number];
  /** The class's own options. */
  options?: O;
  later?: Record<string, readonly unknown[]>;
  extensions?: readonly string[];
  normalize?: (raw: Record<string, unknown>) => void;
  hints?: Record<string, string>;
  check?: (c: Output<B, P, O>) => Problem[];
  uiName: string;
  uiKarrasName?: string;
}): SchedulerDefinition<Output<B, P, O>, N, S> {
  const { className, check, betaSchedules = BETA_SCHEDULES, predictionTypes = PREDICTION_TYPES, timestepSpacing, betaRange = [0.0001, 0.02], options = {} as O, ...rest } = spec;
  const shape: z.ZodRawShape = { ...commonHead(betaSchedules, predictionTypes, ...betaRange), ...options, ...commonTail(timestepSpacing) };
  return {
    ...rest,
    className,
    shape,
    schema: z.object(shape) as unknown as z.ZodType<Output<B, P, O>, Record<string, unknown>>,
    keys: Object.keys(shape),
    check: (c) => [...checkTrainedBetas(className, c as TrainingSchedule), ...(check?.(c) ?? [])],
  };
}

// ---------------------------------------------------------------------------------------------
// resolution

/**
 * Every constructor option of every diffusers scheduler (v0.24 through v0.40): keys a config file may
 * carry for another class. Generated from diffusers' sources; only used to tell "belongs to another
 * scheduler, ignore" from "misspelt".
 */
const DIFFUSERS_SCHEDULER_KEYS = new Set([
  "algorithm_type", "alpha_cum_end", "alpha_cum_start", "base_image_seq_len", "base_shift", "beta_end", "beta_max",
  "beta_min", "beta_schedule", "beta_start", "block_length", "clip_denoised", "clip_sample", "clip_sample_range",
  "correct_steps", "corrector_k", "corrector_order", "corrector_selection", "corrector_selection_tau",
  "corrector_steps", "disable_corrector", "dynamic_thresholding_ratio", "editing_threshold", "entropy_bound", "eta",
  "euler_at_final", "final_sigmas_type", "flow_shift", "gamma", "gamma_cum_end", "gamma_cum_start",
  "interpolation_type", "invert_sigmas", "lambda_min_clipped", "lower_order_final", "mask_token_id",
  "masking_schedule", "max_image_seq_len", "max_shift", "minimal_topk", "noise_sampler_seed", "num_inference_steps",
  "num_train_timesteps", "num_vec_classes", "original_inference_steps", "predict_x0", "prediction_type",
  "predictor_order", "rescale_betas_zero_snr", "rho", "s", "s_churn", "s_max", "s_min", "s_noise", "sample_max_value",
  "sampling_eps", "scale_factors", "scaler", "scheduler_type", "seed", "set_alpha_to_one", "shift", "shift_terminal",
  "sigma_data", "sigma_max", "sigma_min", "sigma_schedule", "skip_prk_steps", "snr", "snr_shift_scale",
  "solver_order", "solver_p", "solver_type", "stage_range", "stages", "steps_offset", "stochastic_sampling", "t0",
  "t1", "t_max", "t_min", "tau_func", "threshold", "thresholding", "time_shift_type", "timestep_scaling",
  "timestep_spacing", "timestep_type", "trained_betas", "transform", "upscale_mode", "use_beta_sigmas",
  "use_dynamic_shifting", "use_exponential_sigmas", "use_flow_sigmas", "use_karras_sigmas", "use_lu_lambdas",
  "variance_type", "x",
]);

const show = (v: unknown): string => (typeof v === "string" ? JSON.stringify(v) : JSON.stringify(v) ?? String(v));

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length]![b.length]!;
}

function suggest(key: string, keys: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of keys) {
    const dist = editDistance(key, k);
    if (dist < bestD) [best, bestD] = [k, dist];
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(key.length / 4)) ? best : undefined;
}

function sameValue(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Validate and default a scheduler config.
 * - `config`: from a scheduler_config.json (may be written for another class: its foreign keys are ignored);
 * - `overrides`: what the user set explicitly (every key must be an option of this class).
 * Overrides win. Any failure is one UserError listing every problem.
 */
export function resolveOptions<C>(
  def: SchedulerDefinition<C>,
  config: Record<string, unknown> = {},
  overrides: Record<string, unknown> = {},
): C {
  const problems: Problem[] = [];
  const subject = (key: string) => `scheduler ${def.className}: option "${key}"`;
  const raw: Record<string, unknown> = {};
  const usedDefaults = new Set(Array.isArray(config._use_default_values) ? (config._use_default_values as string[]) : []);
  const foreignFile = typeof config._class_name === "string" && config._class_name !== def.className;

  const take = (key: string, value: unknown, fromUser: boolean): void => {
    if (key.startsWith("_")) return;
    if (def.keys.includes(key)) {
      if (value === undefined || (!fromUser && foreignFile && def.extensions?.includes(key))) return;
      raw[key] = value;
      return;
    }
    const neutral = def.later?.[key];
    if (neutral) {
      if (!neutral.some((v) => sameValue(v, value)))
        problems.push({
          subject: subject(key),
          message: `${show(value)} is not supported: diffusers 0.24 has no such option for ${def.className}, and sdc implements only ${neutral.map(show).join(" or ")}`,
          hint: `remove "${key}" or set it to ${show(neutral[0])}`,
        });
      return;
    }
    if (!fromUser && DIFFUSERS_SCHEDULER_KEYS.has(key)) return; // another scheduler's option: ignored, as diffusers does
    const near = suggest(key, def.keys);
    problems.push({
      subject: subject(key),
      message: DIFFUSERS_SCHEDULER_KEYS.has(key)
        ? `${def.className} has no option "${key}" (other diffusers schedulers do)`
        : `${def.className} has no option "${key}"`,
      hint: near && near !== key ? `did you mean "${near}"?` : `${def.className} options: ${def.keys.join(", ")}`,
    });
  };
  for (const [k, v] of Object.entries(config)) if (!usedDefaults.has(k)) take(k, v, false);
  for (const [k, v] of Object.entries(overrides)) take(k, v, true);
  if (problems.length) throw new UserError(problems);

  def.normalize?.(raw);
  const parsed = def.schema.safeParse(raw);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const key = issue.path.map(String).join(".");
      const top = String(issue.path[0] ?? "");
      const got = issue.path.reduce<unknown>((o, p) => (o as Record<PropertyKey, unknown> | undefined)?.[p as PropertyKey], raw);
      let message: string;
      if (issue.code === "invalid_value") message = `expected one of ${issue.values.map(show).join(", ")}, got ${show(got)}`;
      else if (issue.code === "invalid_type") message = `expected ${issue.expected}, got ${show(got)}`;
      else if (issue.code === "too_small" || issue.code === "too_big") message = `${issue.message.replace(/^Too (small|big): /, "")}, got ${show(got)}`;
      else message = `${issue.message}, got ${show(got)}`;
      problems.push({ subject: subject(key), message, ...(def.hints?.[top] ? { hint: def.hints[top] } : {}) });
    }
    throw new UserError(problems);
  }
  const c = parsed.data;
  const more = def.check?.(c) ?? [];
  if (more.length) throw new UserError(more);
  return c;
}

/** A problem about one option of one scheduler (for the cross-option checks). */
export function optionProblem(className: string, key: string, message: string, hint?: string): Problem {
  return { subject: `scheduler ${className}: option "${key}"`, message, ...(hint ? { hint } : {}) };
}

interface TrainingSchedule {
  trained_betas: readonly number[] | null;
  num_train_timesteps: number;
}

/** trained_betas, when given, must cover every training timestep. */
function checkTrainedBetas(className: string, c: TrainingSchedule): Problem[] {
  if (c.trained_betas && c.trained_betas.length !== c.num_train_timesteps)
    return [
      optionProblem(
        className,
        "trained_betas",
        `has ${c.trained_betas.length} values but num_train_timesteps is ${c.num_train_timesteps}`,
        "give one beta per training timestep, or set num_train_timesteps to its length",
      ),
    ];
  return [];
}
