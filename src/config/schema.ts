/**
 * The pipeline config language: one zod schema, the single source of truth.
 *
 * Types come from it (`z.infer`), the editor's JSON Schema comes from it (`schemas/pipeline.schema.json`),
 * and so do the words of every error: allowed keys, enum values and ranges are read from these
 * definitions, never typed again elsewhere. Objects are strict, so an unknown key anywhere is an
 * error with a did-you-mean. Section defaults are applied here; defaults that depend on the model
 * (image size, scheduler options) are applied when the model is resolved (see model.ts).
 * Top-level section names are a contract; keys inside them may grow.
 */
import { z } from "zod";
import { autoencoderKLFields, clipTextFields, unet2DConditionFields } from "../models/arch.js";
import { optionAsWritten, type SchedulerDefinition } from "../schedulers/options.js";
import {
  SCHEDULER_CLASS_NAMES,
  SCHEDULER_DEFINITIONS,
  SCHEDULER_SHORT_NAMES,
  type SchedulerOptionKey,
  type SchedulerOptionValue,
} from "../schedulers/registry.js";
import { descriptionOf, enumValues, numberBounds, unwrap } from "./schema-walk.js";

/** Fields that hold a filesystem path, resolved relative to the YAML file that names them. */
export const pathFields = z.registry<{ path: "file" | "dir" | "any" }>();

function pathString(kind: "file" | "dir" | "any", description: string) {
  const s = z.string().min(1).describe(description);
  pathFields.add(s, { path: kind });
  return s;
}

const posInt = z.int().min(1);
const textOrList = z.union([z.string(), z.array(z.string()).min(1)]);

// ---------------------------------------------------------------------------------------------
// Schedulers: names and options come from the scheduler registry

export {
  SCHEDULER_CLASS_NAMES,
  SCHEDULER_TYPES,
  schedulerClassName,
  type SchedulerClassName,
  type SchedulerShortName,
} from "../schedulers/registry.js";
const SCHEDULER_TYPE_NAMES = [...SCHEDULER_SHORT_NAMES, ...SCHEDULER_CLASS_NAMES] as [string, ...string[]];

/** One option's field: what any scheduler that has it accepts (enum values joined, the widest number bounds). */
function joinOption(key: string, owners: readonly SchedulerDefinition<unknown>[]): z.ZodType {
  const parts = owners.map((d) => unwrap(d.shape[key] as z.ZodType));
  const bare = parts.map((p) => optionAsWritten(p.schema));
  const json = bare.map((b) => JSON.stringify(z.toJSONSchema(b, { unrepresentable: "any" })));
  let field: z.ZodType;
  if (bare.every((b) => enumValues(b))) field = z.enum([...new Set(bare.flatMap((b) => enumValues(b)!.map(String)))] as [string, ...string[]]);
  else if (json.every((j) => j === json[0])) field = bare[0]!;
  else if (bare.every((b) => numberBounds(b))) field = widestNumber(bare.map((b) => numberBounds(b)!));
  else throw new Error(`internal: schedulers declare option ${key} in ways that cannot be joined; declare it once in schedulers/options.ts`);
  const hint = owners.length === 1 ? owners[0]!.hints?.[key] : undefined;
  if (hint && !descriptionOf(field)) field = field.describe(hint);
  return parts.some((p) => p.nullable) ? field.nullable() : field;
}

function widestNumber(bounds: NonNullable<ReturnType<typeof numberBounds>>[]): z.ZodType {
  let n: z.ZodNumber = bounds.every((b) => b.int) ? z.int() : z.number();
  const mins = bounds.map((b) => b.min);
  const maxs = bounds.map((b) => b.max);
  if (mins.every((m) => m)) {
    const lo = Math.min(...mins.map((m) => m!.value));
    n = mins.some((m) => m!.value === lo && m!.inclusive) ? n.min(lo) : n.gt(lo);
  }
  if (maxs.every((m) => m)) {
    const hi = Math.max(...maxs.map((m) => m!.value));
    n = maxs.some((m) => m!.value === hi && m!.inclusive) ? n.max(hi) : n.lt(hi);
  }
  return n;
}

/**
 * Every option of the schedulers sdc implements (the union of their options, each as the schedulers
 * that have it accept it), for the config file and the YAML before the scheduler class is known. The
 * chosen scheduler checks its own options again when it is created.
 */
const schedulerOptionFields = (() => {
  const keys = [...new Set(SCHEDULER_DEFINITIONS.flatMap((d) => d.keys))];
  return Object.fromEntries(keys.map((k) => [k, joinOption(k, SCHEDULER_DEFINITIONS.filter((d) => d.keys.includes(k)))]));
})() as { [K in SchedulerOptionKey]: z.ZodType<SchedulerOptionValue<K>> };

const optionalFields = <T extends Record<string, z.ZodType>>(fields: T) =>
  Object.fromEntries(Object.entries(fields).map(([k, s]) => [k, s.optional()])) as { [K in keyof T]: z.ZodOptional<T[K]> };

/** A model folder's scheduler_config.json: known options type-checked, other keys kept. */
export const SchedulerConfigFileSchema = z.looseObject({
  _class_name: z.string().optional(),
  ...optionalFields(schedulerOptionFields),
});

const SchedulerSection = z
  .strictObject({
    type: z
      .enum(SCHEDULER_TYPE_NAMES)
      .optional()
      .describe("Sampler: a short name or a diffusers class name. Default: the model folder's scheduler."),
    steps: posInt.max(10000).default(50).describe("Number of inference steps (num_inference_steps)."),
    ...optionalFields(schedulerOptionFields),
  })
  .describe("The noise scheduler. Unset options default to the model folder's scheduler_config.json.");

// ---------------------------------------------------------------------------------------------
// Model

/** A YAML override of a component's config.json: the same keys, no defaults (the folder's values stand). */
function overrideSection<T extends Record<string, z.ZodType>>(fields: T) {
  const shape = Object.fromEntries(
    Object.entries(fields).map(([k, s]) => [k, (s instanceof z.ZodDefault ? (s.unwrap() as z.ZodType) : s).optional()]),
  ) as { [K in keyof T]: z.ZodOptional<T[K] extends z.ZodDefault<infer I> ? I : T[K]> };
  return z.strictObject(shape);
}

const LoraEntry = z.strictObject({
  file: pathString("file", "A LoRA weights file (.safetensors), relative to this YAML file."),
  scale: z.number().min(-10).max(10).default(1).describe("Strength of the LoRA (1: as trained)."),
});

const ModelSection = z
  .strictObject({
    from: pathString(
      "any",
      "Where the weights come from: a diffusers folder or a single .safetensors checkpoint, relative to this file. Absent: an inline architecture (training from scratch).",
    ).optional(),
    variant: z
      .string()
      .regex(/^[A-Za-z0-9_-]+$/, { error: "a variant is a plain word such as fp16" })
      .optional()
      .describe("Weights variant of a diffusers folder, e.g. fp16 (reads *.fp16.safetensors)."),
    unet: overrideSection(unet2DConditionFields).optional().describe("UNet2DConditionModel config keys (as in unet/config.json)."),
    vae: overrideSection(autoencoderKLFields).optional().describe("AutoencoderKL config keys (as in vae/config.json)."),
    text_encoder: overrideSection(clipTextFields)
      .extend({
        clip_skip: z
          .int()
          .min(0)
          .optional()
          .describe("Layers to skip at the end of the text encoder (diffusers' clip_skip; 0: use the last layer)."),
      })
      .optional()
      .describe("CLIPTextConfig keys (as in text_encoder/config.json), plus clip_skip."),
    lora: z.array(LoraEntry).default([]).describe("LoRA weights applied on top of the model."),
  })
  .describe("The model: where its weights come from, and architecture overrides.");

// ---------------------------------------------------------------------------------------------
// Sampling, guidance, output, runtime

const GuidanceSection = z.strictObject({
  scale: z.number().min(0).default(7.5).describe("Classifier-free guidance scale (1: no guidance)."),
  negative_prompt: textOrList.default("").describe("Negative prompt (one, or one per prompt)."),
  rescale: z.number().min(0).max(1).default(0).describe("Guidance rescale φ (Lin et al. 2023, 'Common Diffusion Noise Schedules...')."),
});

const imageSide = z.int().min(8).max(8192);

const SampleSection = z.strictObject({
  prompt: textOrList.default("").describe("The prompt, or a list of prompts."),
  prompts_file: pathString("file", "A UTF-8 text file of prompts, one per line (blank lines and lines starting with '#' are skipped); used instead of sample.prompt.").optional(),
  width: imageSide.optional().describe("Image width in pixels. Default: the model's sample size."),
  height: imageSide.optional().describe("Image height in pixels. Default: the model's sample size."),
  batch: posInt.max(64).default(1).describe("Images per prompt."),
  seed: z.int().min(0).default(0).describe("Seed of the (PyTorch-compatible) CPU generator."),
  init_image: pathString("file", "Initial image for img2img, relative to this file.").optional(),
  strength: z.number().gt(0).lte(1).optional().describe("img2img strength (default 0.8): how much of the init image is replaced."),
  latents: pathString("file", "A .safetensors file with the initial latents (tensor 'latents').").optional(),
  deepcache: z
    .strictObject({
      interval: posInt
        .max(1000)
        .default(3)
        .describe("Run the full U-Net every N-th U-Net call and the shallow one (reusing the last full call's deep features) in between; 1: always the full U-Net."),
      full_steps: z
        .array(z.int().min(0))
        .min(1)
        .optional()
        .describe("A non-uniform schedule instead of interval: the U-Net calls (0-based, must include 0) that run the full U-Net."),
      branch: z
        .int()
        .min(0)
        .default(0)
        .describe("The down block where the shallow U-Net is cut from the deep part (0: the shallowest and fastest). Compiled: changing it rebuilds the U-Net."),
      layer: z
        .int()
        .min(0)
        .optional()
        .describe("Cut after this resnet layer of the branch block instead of after all of them (a shallower cut). Compiled."),
    })
    .optional()
    .describe("DeepCache (Ma et al. 2023): reuse the U-Net's deep features across steps; faster, slightly different images. Absent: off."),
  tome: z
    .strictObject({
      ratio: z
        .number()
        .gt(0)
        .lt(1)
        .default(0.5)
        .describe("Fraction of the tokens merged away in each merging block (tomesd's ratio; at most 1 − 1/(sx·sy) take effect). Compiled."),
      max_downsample: z
        .union([z.literal(1), z.literal(2), z.literal(4), z.literal(8)])
        .default(1)
        .describe("Merge in blocks downsampled at most this much from the latents: 1 only the highest resolution, 8 every block. Compiled."),
      sx: posInt.max(8).default(2).describe("Width of the cells that each hold one dst token (the tokens others merge into). Compiled."),
      sy: posInt.max(8).default(2).describe("Height of those cells. Compiled."),
      random: z
        .boolean()
        .default(true)
        .describe("Choose each cell's dst token at random (from the run's seed) for every block and step, as tomesd does; false: always the top-left one. A run setting; batches of odd size always use the top-left one."),
    })
    .optional()
    .describe("Token merging (ToMe for SD, Bolya & Hoffman 2023) in the U-Net's self-attention: faster at high resolutions, slightly different images. The U-Net is compiled for the image size. Absent: off."),
  vae_tiling: z
    .strictObject({
      enabled: z.boolean().default(true).describe("Tile the VAE (false: whole images, as without this section)."),
      tile: z.int().min(8).max(8192).optional().describe("Tile side in pixels. Default: the VAE's sample_size (512 for SD 1.x, 768 for SD 2.x)."),
      overlap: z.number().min(0).lt(1).default(0.25).describe("Overlap of neighbouring tiles, a fraction of a tile (diffusers' tile_overlap_factor)."),
    })
    .optional()
    .describe(
      "Decode (and for img2img encode) images larger than a tile in overlapping tiles blended at the seams, as diffusers' AutoencoderKL.enable_tiling(): the VAE's memory stays that of one tile whatever the image size, at the cost of faint seams. Absent: off.",
    ),
});

const OutputSection = z.strictObject({
  dir: pathString("dir", "Output folder, relative to this file. Default: out/<name> in the working directory.").optional(),
  format: z.enum(["png"]).default("png").describe("Image file format; sdc writes PNG."),
  grid: z.boolean().default(false).describe("Also save all images of a run as one grid image."),
});

const RuntimeSection = z.strictObject({
  device: z.enum(["auto", "cuda", "cpu"]).default("auto").describe("auto: CUDA when available, else CPU."),
  precision: z.enum(["auto", "fp32", "fp16"]).default("auto").describe("auto: fp16 on CUDA, fp32 on CPU."),
  threads: z.int().min(0).max(1024).default(0).describe("CPU threads (0: all cores)."),
});

// ---------------------------------------------------------------------------------------------
// Training (schema only; the training issues implement it)

/** Caption handling (src/data/captions.ts applies it: dropout, then tag shuffle, then prefix/suffix). */
const captionFields = {
  prefix: z.string().describe("Text put before every caption, as written (include the separator, e.g. 'sks dog, ')."),
  suffix: z.string().describe("Text put after every caption, as written (include the separator, e.g. ', best quality')."),
  dropout: z.number().min(0).max(1).describe("Probability that a drawn sample's caption becomes the empty caption."),
  shuffle: z.boolean().describe("Shuffle the caption's comma-separated tags each time the sample is drawn."),
  keep_tokens: z.int().min(0).max(1000).describe("With shuffle: the first N tags keep their place."),
};

/** Where a subset's images and captions come from; in a subset each key falls back to the data-level one. */
const subsetSourceFields = {
  layout: z
    .enum(["auto", "imagefolder", "kohya"])
    .describe("imagefolder: a metadata.jsonl/metadata.csv names the images (Hugging Face); kohya: images with same-named caption files, N_name repeat folders; auto: imagefolder when a metadata file exists."),
  metadata: z
    .string()
    .min(1)
    .describe("imagefolder: the metadata file inside the folder (.jsonl or .csv). Default: metadata.jsonl or metadata.csv, whichever exists."),
  image_column: z.string().min(1).describe("imagefolder: the column holding image paths, relative to the metadata file."),
  caption_column: z.string().min(1).describe("imagefolder: the column holding captions (in metadata.jsonl a string, or a list of strings of which each draw picks one)."),
  caption_extension: z
    .string()
    .regex(/^\.[^/\\]+$/, { error: "a caption extension is a file suffix such as .txt" })
    .describe("kohya: the extension of caption files next to the images."),
  repeats: posInt.max(10000).describe("Times each image appears per epoch. Default: N of an N_name kohya folder, else 1."),
  class_token: z.string().describe("kohya: the caption of images without a caption file. Default: the name part of an N_name folder."),
};

const SubsetSection = z.strictObject({
  dir: z.string().min(1).describe("A folder inside data.dir ('.' for data.dir itself)."),
  ...optionalFields(subsetSourceFields),
  caption: z.strictObject(optionalFields(captionFields)).optional().describe("Caption handling of this subset (unset keys: data.caption's)."),
});

const BucketSection = z.strictObject({
  enabled: z.boolean().default(false).describe("Aspect-ratio bucketing; off: every image is cropped to resolution x resolution."),
  step: z.int().min(8).max(1024).multipleOf(8).default(64).describe("Bucket sides are multiples of this many pixels."),
  min_side: z.int().min(8).max(8192).default(256).describe("Smallest bucket side in pixels."),
  max_side: z.int().min(8).max(8192).default(1024).describe("Largest bucket side in pixels."),
  no_upscale: z.boolean().default(false).describe("An image smaller than its bucket gets a bucket of its own size (rounded down to the step) instead of being enlarged."),
});

/** train.data: the training images (src/data reads them). */
export const TrainDataSection = z.strictObject({
  dir: pathString("dir", "Folder of training images, relative to this file."),
  layout: subsetSourceFields.layout.default("auto"),
  metadata: subsetSourceFields.metadata.optional(),
  image_column: subsetSourceFields.image_column.default("file_name"),
  caption_column: subsetSourceFields.caption_column.default("text"),
  caption_extension: subsetSourceFields.caption_extension.default(".txt"),
  repeats: subsetSourceFields.repeats.optional(),
  class_token: subsetSourceFields.class_token.optional(),
  caption: z
    .strictObject({
      prefix: captionFields.prefix.default(""),
      suffix: captionFields.suffix.default(""),
      dropout: captionFields.dropout.default(0),
      shuffle: captionFields.shuffle.default(false),
      keep_tokens: captionFields.keep_tokens.default(0),
    })
    .prefault({})
    .describe("Caption handling (subsets can override each key)."),
  subsets: z
    .array(SubsetSection)
    .min(1)
    .optional()
    .describe("Several folders inside data.dir, each with its own layout, repeats and captions; absent: data.dir is the one subset."),
  resolution: z.int().min(8).max(8192).default(512).describe("Training image size (with buckets: the side of a square of the same area)."),
  center_crop: z.boolean().default(true).describe("Crop the middle of the resized image; false: a random crop each time."),
  random_flip: z.boolean().default(false).describe("Mirror images horizontally with probability 0.5."),
  buckets: BucketSection.prefault({}).describe("Aspect-ratio buckets: images are grouped by shape and batches drawn within a group."),
  background: z
    .string()
    .regex(/^#[0-9a-fA-F]{6}$/, { error: "a colour is written #rrggbb, e.g. #ffffff for white" })
    .default("#ffffff")
    .describe("Colour transparent images are composited on."),
  on_bad_image: z.enum(["skip", "error"]).default("skip").describe("An unreadable image: skip it (and count it in the summary), or stop."),
  cache_latents: z.boolean().default(true).describe("Encode images once and reuse the latents every epoch."),
  cache_text_embeddings: z.boolean().default(false).describe("Encode captions once and reuse the embeddings every epoch."),
});

const TrainSection = z
  .strictObject({
    target: z.enum(["unet", "lora", "vae", "text_encoder"]).describe("What is trained."),
    data: TrainDataSection,
    lora: z
      .strictObject({
        rank: posInt.max(1024).default(4),
        alpha: z.number().gt(0).optional().describe("LoRA alpha (default: the rank, i.e. scale 1)."),
        target_modules: z
          .array(z.string().min(1))
          .min(1)
          .default(["to_q", "to_k", "to_v", "to_out.0"])
          .describe("U-Net module names (or name suffixes) that get LoRA layers, as in diffusers/PEFT."),
        text_encoder_target_modules: z
          .array(z.string().min(1))
          .min(1)
          .default(["q_proj", "k_proj", "v_proj", "out_proj"])
          .describe("With train_text_encoder: the text encoder's modules that get LoRA layers (diffusers' default)."),
        dropout: z.number().min(0).lt(1).default(0),
      })
      .prefault({}),
    objective: z
      .strictObject({
        prediction_type: z.enum(["epsilon", "v_prediction", "sample"]).optional().describe("Default: the scheduler's."),
        loss: z.enum(["mse", "l1", "huber"]).default("mse").describe("Per-element loss of the prediction (the VAE's reconstruction loss too)."),
        huber_c: z.number().gt(0).default(0.1).describe("Huber's c: 2c·(√(d² + c²) − c)."),
        snr_gamma: z.number().gt(0).optional().describe("Min-SNR weighting γ (Hang et al. 2023); absent: plain loss."),
        noise_offset: z.number().min(0).max(1).default(0),
        input_perturbation: z.number().min(0).max(1).default(0).describe("Perturb only the noisy input by γ·ξ; the target keeps the noise (Ning et al. 2023)."),
        cfg_dropout: z.number().min(0).max(1).default(0).describe("Probability of dropping the caption (classifier-free guidance training)."),
        kl_weight: z.number().min(0).default(1e-6).describe("VAE training: weight β of the KL term."),
      })
      .prefault({}),
    optimizer: z
      .strictObject({
        type: z.enum(["adamw", "sgd"]).default("adamw"),
        lr: z.number().gt(0).default(1e-4),
        betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([0.9, 0.999]),
        eps: z.number().gt(0).default(1e-8),
        weight_decay: z.number().min(0).default(1e-2),
        momentum: z.number().min(0).lt(1).default(0).describe("SGD momentum."),
        max_grad_norm: z.number().gt(0).nullable().default(1).describe("Gradient clipping by global norm (null: off)."),
      })
      .prefault({}),
    lr_schedule: z
      .strictObject({
        type: z.enum(["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"]).default("constant"),
        warmup_steps: z.int().min(0).default(0),
        num_cycles: z.number().gt(0).optional().describe("cosine: waves (default 0.5, down to 0 once); cosine_with_restarts: restarts (default 1)."),
        power: z.number().gt(0).default(1).describe("polynomial: the decay's power."),
        lr_end: z.number().min(0).default(1e-7).describe("polynomial: the final learning rate."),
      })
      .prefault({}),
    ema: z
      .strictObject({
        enabled: z.boolean().default(false).describe("Keep an exponential moving average of the trained weights (diffusers' EMAModel)."),
        max_decay: z.number().gt(0).lt(1).default(0.9999),
      })
      .prefault({}),
    export: z
      .strictObject({
        single_file: z.boolean().default(false).describe("Full fine-tunes: also write <output>/<name>.safetensors, a single-file checkpoint in the original (LDM) naming the UIs load (SD 1.x text encoders)."),
        dtype: z.enum(["fp16", "fp32"]).default("fp16").describe("Precision of the single-file checkpoint."),
      })
      .prefault({}),
    train_text_encoder: z
      .boolean()
      .default(false)
      .describe("target unet: train the text encoder with the U-Net, one optimizer over both (diffusers' and kohya's --train_text_encoder); captions are encoded inside the step."),
    gradient_checkpointing: z.boolean().default(false).describe("Recompute each resnet and attention block's activations in the backward pass: less memory, about 15% more time."),
    batch: posInt.max(4096).default(1),
    gradient_accumulation: posInt.default(1),
    steps: posInt.optional().describe("Optimizer steps (give steps or epochs)."),
    epochs: posInt.optional().describe("Passes over the data (give steps or epochs)."),
    seed: z.int().min(0).default(0),
    checkpointing: z
      .strictObject({
        every: posInt.default(500).describe("Save a checkpoint every N optimizer steps."),
        dir: pathString("dir", "Checkpoint folder. Default: <output.dir>/checkpoints.").optional(),
        keep: z.int().min(0).default(3).describe("Checkpoints kept (0: all)."),
      })
      .prefault({}),
    validation: z
      .strictObject({
        prompts: z
          .array(
            z.union([
              z.string(),
              z.strictObject({
                prompt: z.string(),
                negative_prompt: z.string().optional(),
                seed: z.int().min(0).optional(),
                guidance: z.number().min(0).max(50).optional(),
                steps: posInt.max(1000).optional(),
                width: posInt.max(8192).optional(),
                height: posInt.max(8192).optional(),
              }),
            ]),
          )
          .default([])
          .describe("Prompts of the validation images: text, or { prompt, negative_prompt, seed, guidance, steps, width, height }."),
        every: posInt.default(500).describe("Validation images every N optimizer steps (and at step 0 and at the end)."),
        steps: posInt.max(1000).default(25).describe("Inference steps of validation images."),
        guidance: z.number().min(0).max(50).default(7.5),
        negative_prompt: z.string().default(""),
        seed: z.int().min(0).optional().describe("Default: train.seed."),
        holdout_dir: pathString("dir", "A folder of held-out images in the layout of train.data (same options): the validation loss over it, with fixed noise, at every validation.").optional(),
      })
      .prefault({}),
  })
  .describe("Training (fine-tuning, LoRA, or from scratch).");

// ---------------------------------------------------------------------------------------------

export const PipelineSchema = z
  .strictObject({
    $schema: z.string().optional().describe("JSON Schema of this file, for editors."),
    version: z.literal(1).describe("Config language version; this sdc reads version 1."),
    name: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, { error: "a name is letters, digits, '.', '_' or '-' (it names the output folders)" })
      .optional()
      .describe("Pipeline name (default: the file name); names compiled/<name> and out/<name>."),
    extends: pathString("file", "A base pipeline this one extends (deep-merged; this file wins).").optional(),
    model: ModelSection,
    scheduler: SchedulerSection.prefault({}),
    guidance: GuidanceSection.prefault({}),
    sample: SampleSection.prefault({}),
    train: TrainSection.optional(),
    output: OutputSection.prefault({}),
    runtime: RuntimeSection.prefault({}),
  })
  .describe("An sdc pipeline.");

/** The config as written (what editors complete). */
export type PipelineConfigInput = z.input<typeof PipelineSchema>;
/** The config after schema defaults, before model-dependent defaults. */
export type ParsedPipelineConfig = z.output<typeof PipelineSchema>;
type Parsed = ParsedPipelineConfig;

/** The fully defaulted config: paths absolute, image size and output folder filled in. */
export type PipelineConfig = Omit<Parsed, "name" | "sample" | "output"> & {
  name: string;
  sample: Parsed["sample"] & { width: number; height: number; strength: number };
  output: Parsed["output"] & { dir: string };
};

export type TrainConfig = NonNullable<Parsed["train"]>;
/** train.data after schema defaults (data.dir absolute once loaded). */
export type TrainDataConfig = z.output<typeof TrainDataSection>;
