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

export const TensorSpec = z.strictObject({
  name: z.string(),
  dtype: z.enum(["float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool"]),
  shape: z.array(Dim),
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
