/**
 * plan.json: the contract between `sdc compile` and anything that runs a compiled pipeline (sdc's
 * runtime, or another ONNX runner). Versioned (`format`), validated with zod on read. It lists
 * every graph with its file, sha256, and typed inputs/outputs (symbolic dims by name, with the
 * divisibility each needs), plus what running the graphs needs that is not a graph: tokenizer,
 * scheduler and schedule, VAE scaling, the device and precision they were built for.
 *
 * It holds only what the graphs and the schedule depend on. Run settings (prompts, negative
 * prompts, guidance, image size, batch, seed, init image, latents file, output folder, threads)
 * are not in it: the runner gets them with each run, so changing them never rewrites a compiled
 * folder.
 */
import { z } from "zod";

export const PLAN_FORMAT = "sdc-plan/2";
/** The plan's file name inside a compiled folder. */
export const PLAN_FILE = "plan.json";

const Dim = z.union([z.number().int().nonnegative(), z.string()]);

/**
 * What a training graph's input or output is, so any runtime can drive the step: what to feed
 * (parameters and their optimizer state, the step counter, the learning rate, batch tensors,
 * random values drawn by the host) and what comes back (the loss, updated tensors).
 */
export const TENSOR_ROLES = [
  "batch",
  "random",
  "hyperparameter",
  "parameter",
  "optimizer_state",
  "ema",
  "grad_accumulator",
  "step",
  "learning_rate",
  "ema_decay",
  "loss",
  "grad_norm",
  "updated_parameter",
  "updated_optimizer_state",
  "updated_ema",
  "updated_grad_accumulator",
  "gradient",
] as const;
export type TensorRole = (typeof TENSOR_ROLES)[number];

export const TensorSpec = z.strictObject({
  name: z.string(),
  dtype: z.enum(["float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool"]),
  shape: z.array(Dim),
  /** Training graphs: what the tensor is (see TENSOR_ROLES). */
  role: z.enum(TENSOR_ROLES).optional(),
  /** Training graphs: the PyTorch state-dict name of the parameter a tensor belongs to (diffusers keys; PEFT lora_A/lora_B keys for LoRA). */
  stateDictName: z.string().optional(),
});

export const GraphSpec = z.strictObject({
  /** ONNX file, relative to the compiled folder. */
  file: z.string(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  /** External data files the model references (relative to the model's folder). */
  externalData: z.array(z.string()),
  /** Content hash of what the graph was built from (architecture, weights identity, options): equal hash, equal graph. */
  buildHash: z.string(),
  inputs: z.array(TensorSpec),
  outputs: z.array(TensorSpec),
  /** Symbolic dimensions that must be a multiple of a number (e.g. height of the U-Net latents). */
  requirements: z.array(z.strictObject({ dim: z.string(), multipleOf: z.number().int().positive() })),
  parameters: z.number().int().nonnegative(),
  nodes: z.number().int().nonnegative(),
  /** Bytes referenced in the source checkpoint (not copied) and written by the compiler. */
  bytesLinked: z.number().int().nonnegative(),
  bytesWritten: z.number().int().nonnegative(),
  precision: z.enum(["fp32", "fp16"]),
  notes: z.array(z.string()),
});

export const TRAIN_GRAPH_NAMES = ["train_step", "train_eval", "train_accumulate", "train_unet", "train_text_encoder"] as const;
export type TrainGraphName = (typeof TRAIN_GRAPH_NAMES)[number];

/**
 * A training pipeline's graphs and what they bake in. `train_step` runs one optimizer step:
 * forward, gradients, clipping, the update and the EMA; `train_eval` gives the loss alone;
 * `train_accumulate` (with gradient accumulation) adds a micro-batch's gradients to accumulators;
 * `train_unet` is the sampling U-Net with the trained tensors as inputs (validation images).
 * Inputs and outputs carry their role and state-dict name. Everything else about a run (data,
 * batch, length, seed, learning rate and its schedule, checkpoints, validation) is the trainer's.
 */
export const TrainingSpec = z.strictObject({
  target: z.enum(["unet", "lora", "vae"]),
  /** The model component whose weights are trained (or that a LoRA adapts). */
  component: z.enum(["unet", "vae"]),
  graphs: z.strictObject({
    train_step: GraphSpec,
    train_eval: GraphSpec,
    train_accumulate: GraphSpec.optional(),
    /** The U-Net with the trained tensors as inputs, for sampling validation images with the weights in training (U-Net and LoRA targets). */
    train_unet: GraphSpec.optional(),
    /** The text encoder with its trained tensors as inputs, for encoding validation prompts (train_text_encoder). */
    train_text_encoder: GraphSpec.optional(),
  }),
  microBatches: z.number().int().positive(),
  numTrainTimesteps: z.number().int().positive(),
  predictionType: z.enum(["epsilon", "v_prediction", "sample"]),
  optimizer: z.union([
    z.strictObject({ type: z.literal("adamw"), betas: z.tuple([z.number(), z.number()]), eps: z.number(), weightDecay: z.number() }),
    z.strictObject({ type: z.literal("sgd"), momentum: z.number(), weightDecay: z.number() }),
  ]),
  maxGradNorm: z.number().nullable(),
  ema: z.boolean(),
  lora: z
    .strictObject({
      rank: z.number().int().positive(),
      alpha: z.number(),
      targets: z.array(z.string()),
      /** With textEncoder: the text encoder's targets (its LoRA tensors are named `text_model.…`). */
      textEncoderTargets: z.array(z.string()).optional(),
      dropout: z.number().min(0).lt(1),
    })
    .nullable(),
  captionDropout: z.boolean(),
  gradientCheckpointing: z.boolean(),
  /** The text encoder is trained with the U-Net: the step takes token ids, and its parameters are named `text_model.…` as in text_encoder/model.safetensors. */
  textEncoder: z.boolean().default(false),
});
export type TrainingSpecT = z.infer<typeof TrainingSpec>;

export const DeepCacheSpec = z.strictObject({
  /** The down block, and its resnet layer, after which the shallow part is cut. */
  branch: z.number().int().nonnegative(),
  layer: z.number().int().nonnegative().nullable(),
  /** Skip features the shallow part computes (conv_in's output is the first). */
  skips: z.number().int().positive(),
  /** Name of the full U-Net's extra output and of the shallow U-Net's extra input. */
  feature: z.string(),
  shallow: GraphSpec,
});
export type DeepCacheSpecT = z.infer<typeof DeepCacheSpec>;

export const TomeSpec = z.strictObject({
  /** Fraction of a block's tokens merged away; dst grid strides. */
  ratio: z.number(),
  maxDownsample: z.number().int().positive(),
  sx: z.number().int().positive(),
  sy: z.number().int().positive(),
  /** The latent size the U-Net was compiled for (merging fixes the token counts). */
  latentHeight: z.number().int().positive(),
  latentWidth: z.number().int().positive(),
  /** Each level that merges: its token grid and counts, its transformer blocks (rows of its inputs) in run order, and its inputs. */
  levels: z.array(
    z.strictObject({
      level: z.number().int().nonnegative(),
      downsample: z.number().int().positive(),
      height: z.number().int().positive(),
      width: z.number().int().positive(),
      tokens: z.number().int().positive(),
      dst: z.number().int().positive(),
      src: z.number().int().positive(),
      merged: z.number().int().positive(),
      blocks: z.strictObject({ down: z.number().int().nonnegative(), mid: z.number().int().nonnegative(), up: z.number().int().nonnegative() }),
      srcInput: z.string(),
      dstInput: z.string(),
    }),
  ),
});
export type TomeSpecT = z.infer<typeof TomeSpec>;

export const PlanSchema = z.strictObject({
  format: z.literal(PLAN_FORMAT),
  name: z.string(),
  sdcVersion: z.string(),
  /** Hash of everything the graphs depend on; a different hash means recompile. */
  compileHash: z.string(),
  /** Hash of everything this plan was made from (graphs, scheduler, device; not run settings): a different hash means re-plan. */
  pipelineHash: z.string(),
  /** Files whose changes make this plan stale (pipeline, its extends chain, model configs and weights, LoRAs). */
  sources: z.array(z.strictObject({ path: z.string(), size: z.number(), mtimeMs: z.number() })),
  model: z.strictObject({
    kind: z.enum(["diffusers", "single-file", "inline"]),
    name: z.string(),
    /** sha256 prefix identifying the weights (the popular UIs' "model hash" form). */
    hash: z.string(),
  }),
  graphs: z.strictObject({
    text_encoder: GraphSpec,
    unet: GraphSpec,
    vae_decoder: GraphSpec,
    vae_encoder: GraphSpec,
  }),
  tokenizer: z.strictObject({
    dir: z.string(),
    modelMaxLength: z.number().int().positive(),
    padToken: z.string(),
  }),
  scheduler: z.strictObject({
    type: z.string(),
    className: z.string(),
    steps: z.number().int().positive(),
    config: z.record(z.string(), z.unknown()),
  }),
  vae: z.strictObject({
    scalingFactor: z.number(),
    /** pixels per latent along each axis */
    scaleFactor: z.number().int().positive(),
    latentChannels: z.number().int().positive(),
  }),
  runtime: z.strictObject({
    device: z.enum(["auto", "cuda", "cpu"]),
    precision: z.enum(["fp32", "fp16"]),
  }),
  /** Pipelines with a train section: the training graphs. */
  training: TrainingSpec.optional(),
  /**
   * DeepCache (sample.deepcache): `graphs.unet` then has a second output, `feature`, the up path's
   * hidden state where the shallow part begins; `shallow` is the U-Net's shallow part, with the same
   * inputs plus `feature`, giving the same out_sample as the full U-Net when fed the feature of the same
   * call. When to run which is a run setting.
   */
  deepcache: DeepCacheSpec.optional(),
  /**
   * Token merging (sample.tome): `graphs.unet` (and the shallow DeepCache U-Net) merge tokens in the
   * self-attention of these levels and take each level's src/dst token split as int64 inputs
   * [blocks, src] and [blocks, dst], drawn for every call by the runtime.
   */
  tome: TomeSpec.optional(),
});

export type Plan = z.infer<typeof PlanSchema>;
export type GraphName = keyof Plan["graphs"];
export type GraphSpecT = z.infer<typeof GraphSpec>;
export const GRAPH_NAMES: GraphName[] = ["text_encoder", "unet", "vae_decoder", "vae_encoder"];

/** JSON has no ±Infinity/NaN (diffusers writes them anyway): store them as strings in the plan. */
export function encodeNonFinite(o: Readonly<Record<string, unknown>>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, typeof v === "number" && !Number.isFinite(v) ? String(v) : v]));
}

export function decodeNonFinite(o: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const special: Record<string, number> = { Infinity: Infinity, "-Infinity": -Infinity, NaN: NaN };
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, typeof v === "string" && v in special ? special[v] : v]));
}

/**
 * Image sides the compiled graphs accept, in pixels: a multiple of this (the VAE factor, times any
 * divisibility a graph states for its latent sizes).
 */
export function imageSideMultiple(plan: Pick<Plan, "vae" | "graphs">): number {
  let need = plan.vae.scaleFactor;
  for (const g of Object.values(plan.graphs)) for (const r of g.requirements) need = Math.max(need, r.multipleOf * plan.vae.scaleFactor);
  return need;
}

export const PLAN_SCHEMA_FILE = "schemas/plan.schema.json";

/** The JSON Schema of plan.json, for other tools that read compiled folders. */
export function planJsonSchemaText(): string {
  const schema = z.toJSONSchema(PlanSchema, { target: "draft-7" }) as Record<string, unknown>;
  return `${JSON.stringify({ ...schema, title: "sdc plan (plan.json)" }, null, 2)}\n`;
}
