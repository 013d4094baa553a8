/**
 * Architecture configs, as the reference libraries write them in a model folder's `config.json`.
 *
 * Key names and defaults are those of diffusers v0.24 (`UNet2DConditionModel`, `AutoencoderKL`) and
 * transformers v4.30 (`CLIPTextConfig`), so a diffusers folder parses here unchanged and a key means
 * what it means there. The objects are loose: keys sdc does not know (`_class_name`,
 * `_diffusers_version`, transformers' generic `PretrainedConfig` keys) are kept, not rejected, because
 * real config files carry many of them. Block types are enums of the blocks sdc can build, so an
 * unsupported model fails here, located in its config.json, rather than deep in the compiler; the
 * U-Net keys of later models that SD 1.x/2.x leave at one value are listed in `SD12_UNET_VALUES`.
 * The `*Fields` shapes are reused by the pipeline schema, where the same keys override a folder's
 * config from YAML (there without defaults, and strict). The model builders take the parsed configs.
 */
import { z } from "zod";
import { UserError } from "../util/errors.js";
import { PRESETS } from "./presets.js";

const posInt = z.int().min(1);
const intOrList = z.union([posInt, z.array(posInt).min(1)]);

export const UNET_DOWN_BLOCK_TYPES = ["CrossAttnDownBlock2D", "DownBlock2D"] as const;
export const UNET_UP_BLOCK_TYPES = ["CrossAttnUpBlock2D", "UpBlock2D"] as const;
export const UNET_MID_BLOCK_TYPES = ["UNetMidBlock2DCrossAttn"] as const;
export const VAE_DOWN_BLOCK_TYPES = ["DownEncoderBlock2D"] as const;
export const VAE_UP_BLOCK_TYPES = ["UpDecoderBlock2D"] as const;
/** diffusers' `ACTIVATION_FUNCTIONS` (models/activations.py). */
export const ACT_FNS = ["silu", "swish", "mish", "gelu", "relu"] as const;
/** The CLIP activations sdc builds: SD1 uses quick_gelu, SD2 (OpenCLIP) gelu. */
export const CLIP_HIDDEN_ACTS = ["quick_gelu", "gelu"] as const;

/** `UNet2DConditionModel.__init__` arguments with their v0.24 defaults. */
export const unet2DConditionFields = {
  sample_size: z.union([posInt, z.tuple([posInt, posInt])]).nullable().default(null),
  in_channels: posInt.default(4),
  out_channels: posInt.default(4),
  center_input_sample: z.boolean().default(false),
  flip_sin_to_cos: z.boolean().default(true),
  freq_shift: z.number().default(0),
  down_block_types: z
    .array(z.enum(UNET_DOWN_BLOCK_TYPES))
    .min(1)
    .default(["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]),
  mid_block_type: z.enum(UNET_MID_BLOCK_TYPES).nullable().default("UNetMidBlock2DCrossAttn"),
  up_block_types: z
    .array(z.enum(UNET_UP_BLOCK_TYPES))
    .min(1)
    .default(["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]),
  only_cross_attention: z.union([z.boolean(), z.array(z.boolean())]).default(false),
  block_out_channels: z.array(posInt).min(1).default([320, 640, 1280, 1280]),
  layers_per_block: intOrList.default(2),
  downsample_padding: z.int().min(0).default(1),
  mid_block_scale_factor: z.number().default(1),
  dropout: z.number().min(0).max(1).default(0),
  act_fn: z.enum(ACT_FNS).default("silu"),
  norm_num_groups: posInt.nullable().default(32),
  norm_eps: z.number().gt(0).default(1e-5),
  cross_attention_dim: intOrList.default(1280),
  transformer_layers_per_block: z.union([posInt, z.array(z.union([posInt, z.array(posInt)]))]).default(1),
  reverse_transformer_layers_per_block: z.array(z.array(posInt)).nullable().default(null),
  encoder_hid_dim: posInt.nullable().default(null),
  encoder_hid_dim_type: z.string().nullable().default(null),
  attention_head_dim: intOrList.default(8),
  num_attention_heads: intOrList.nullable().default(null),
  dual_cross_attention: z.boolean().default(false),
  use_linear_projection: z.boolean().default(false),
  class_embed_type: z.string().nullable().default(null),
  addition_embed_type: z.string().nullable().default(null),
  addition_time_embed_dim: posInt.nullable().default(null),
  num_class_embeds: posInt.nullable().default(null),
  upcast_attention: z.boolean().default(false),
  resnet_time_scale_shift: z.enum(["default", "scale_shift"]).default("default"),
  resnet_skip_time_act: z.boolean().default(false),
  resnet_out_scale_factor: z.number().default(1),
  time_embedding_type: z.enum(["positional", "fourier"]).default("positional"),
  time_embedding_dim: posInt.nullable().default(null),
  time_embedding_act_fn: z.string().nullable().default(null),
  timestep_post_act: z.string().nullable().default(null),
  time_cond_proj_dim: posInt.nullable().default(null),
  conv_in_kernel: posInt.default(3),
  conv_out_kernel: posInt.default(3),
  projection_class_embeddings_input_dim: posInt.nullable().default(null),
  attention_type: z.string().default("default"),
  class_embeddings_concat: z.boolean().default(false),
  mid_block_only_cross_attention: z.boolean().nullable().default(null),
  cross_attention_norm: z.string().nullable().default(null),
  addition_embed_type_num_heads: posInt.default(64),
};

/** `AutoencoderKL.__init__` arguments with their v0.24 defaults. */
export const autoencoderKLFields = {
  in_channels: posInt.default(3),
  out_channels: posInt.default(3),
  down_block_types: z.array(z.enum(VAE_DOWN_BLOCK_TYPES)).min(1).default(["DownEncoderBlock2D"]),
  up_block_types: z.array(z.enum(VAE_UP_BLOCK_TYPES)).min(1).default(["UpDecoderBlock2D"]),
  block_out_channels: z.array(posInt).min(1).default([64]),
  layers_per_block: posInt.default(1),
  act_fn: z.enum(ACT_FNS).default("silu"),
  latent_channels: posInt.default(4),
  norm_num_groups: posInt.default(32),
  sample_size: z.union([posInt, z.tuple([posInt, posInt])]).default(32),
  scaling_factor: z.number().gt(0).default(0.18215),
  force_upcast: z.boolean().default(true),
};

/** `CLIPTextConfig.__init__` arguments with their v4.30 defaults (those of openai/clip-vit-base-patch32). */
export const clipTextFields = {
  vocab_size: posInt.default(49408),
  hidden_size: posInt.default(512),
  intermediate_size: posInt.default(2048),
  projection_dim: posInt.default(512),
  num_hidden_layers: posInt.default(12),
  num_attention_heads: posInt.default(8),
  max_position_embeddings: posInt.default(77),
  hidden_act: z.enum(CLIP_HIDDEN_ACTS).default("quick_gelu"),
  layer_norm_eps: z.number().gt(0).default(1e-5),
  attention_dropout: z.number().min(0).max(1).default(0),
  initializer_range: z.number().default(0.02),
  initializer_factor: z.number().default(1),
  pad_token_id: z.int().min(0).nullable().default(1),
  bos_token_id: z.int().min(0).nullable().default(0),
  eos_token_id: z.int().min(0).nullable().default(2),
};

export const UNet2DConditionConfigSchema = z.looseObject(unet2DConditionFields);
export const AutoencoderKLConfigSchema = z.looseObject(autoencoderKLFields);
export const CLIPTextConfigSchema = z.looseObject(clipTextFields);

export type UNet2DConditionConfig = z.output<typeof UNet2DConditionConfigSchema>;
export type AutoencoderKLConfig = z.output<typeof AutoencoderKLConfigSchema>;
export type CLIPTextConfig = z.output<typeof CLIPTextConfigSchema>;
/** A config.json as written (keys may be missing: the schemas' defaults fill them). */
export type UNet2DConditionConfigInput = z.input<typeof UNet2DConditionConfigSchema>;
export type AutoencoderKLConfigInput = z.input<typeof AutoencoderKLConfigSchema>;
export type CLIPTextConfigInput = z.input<typeof CLIPTextConfigSchema>;

/**
 * The U-Net keys of later models (SDXL, LCM, unCLIP, upscalers, ...) that Stable Diffusion 1.x/2.x
 * leave at one value, with that value: sdc builds only U-Nets that have all of them. (The block types
 * sdc builds are the enums above.)
 */
export const SD12_UNET_VALUES = {
  addition_embed_type: null,
  class_embed_type: null,
  num_class_embeds: null,
  encoder_hid_dim: null,
  encoder_hid_dim_type: null,
  time_cond_proj_dim: null,
  dual_cross_attention: false,
  time_embedding_type: "positional",
  resnet_time_scale_shift: "default",
  mid_block_type: "UNetMidBlock2DCrossAttn",
  time_embedding_act_fn: null,
  timestep_post_act: null,
  resnet_skip_time_act: false,
  resnet_out_scale_factor: 1,
  cross_attention_norm: null,
  attention_type: "default",
  mid_block_only_cross_attention: null,
  reverse_transformer_layers_per_block: null,
  class_embeddings_concat: false,
} as const;

/** The keys of SD12_UNET_VALUES where this U-Net has another value. */
export function nonSd12UnetKeys(unet: UNet2DConditionConfig): (keyof typeof SD12_UNET_VALUES)[] {
  return (Object.keys(SD12_UNET_VALUES) as (keyof typeof SD12_UNET_VALUES)[]).filter((k) => JSON.stringify(unet[k]) !== JSON.stringify(SD12_UNET_VALUES[k]));
}

/** Spatial factor between image pixels and VAE latents: 2^(number of VAE down blocks − 1). */
export function vaeScaleFactor(vae: Pick<AutoencoderKLConfig, "block_out_channels">): number {
  return 2 ** (vae.block_out_channels.length - 1);
}

/** Spatial factor of the U-Net's downsamplers: every down block but the last halves the latent. */
export function unetDownFactor(unet: Pick<UNet2DConditionConfig, "down_block_types">): number {
  return 2 ** (unet.down_block_types.length - 1);
}

/**
 * A per-block setting of the U-Net (`key`), which diffusers accepts as one value or a list, expanded
 * to one value per block. As in diffusers, a list must have one entry per block.
 */
export function perBlock<T>(value: T | readonly T[], blocks: number, key: string): T[] {
  if (!Array.isArray(value)) return Array.from({ length: blocks }, () => value as T);
  if (value.length !== blocks)
    throw new UserError({ message: `unet.${key} has ${value.length} entries for ${blocks} blocks`, subject: "unet config", hint: `give one value or ${blocks}` });
  return [...(value as readonly T[])];
}

/**
 * Heads per U-Net block. diffusers' `attention_head_dim` has always meant the number of heads for
 * SD1/SD2 checkpoints (see the comment in unet_2d_condition.py); `num_attention_heads` wins when set.
 */
export function unetHeads(unet: UNet2DConditionConfig): number[] {
  const key = unet.num_attention_heads !== null ? "num_attention_heads" : "attention_head_dim";
  return perBlock(unet[key]!, unet.down_block_types.length, key);
}

/** Stable Diffusion 1.5's component configs (runwayml/stable-diffusion-v1-5) under diffusers' folder names. */
export const SD15 = {
  unet: PRESETS["sd1.5"].unet,
  vae: PRESETS["sd1.5"].vae,
  text_encoder: PRESETS["sd1.5"].textEncoder,
  scheduler: PRESETS["sd1.5"].scheduler,
};
