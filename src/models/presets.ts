/**
 * The published architectures of Stable Diffusion 1.5 and 2.1 (their diffusers config.json
 * values, parsed like any config.json before a model builder takes them): used where a checkpoint
 * does not say (single files), for shape-only builds, and by the real-size tests.
 */
import type { AutoencoderKLConfigInput, CLIPTextConfigInput, UNet2DConditionConfigInput } from "./arch.js";

const SD15_UNET: UNet2DConditionConfigInput = {
  in_channels: 4,
  out_channels: 4,
  center_input_sample: false,
  flip_sin_to_cos: true,
  freq_shift: 0,
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  mid_block_type: "UNetMidBlock2DCrossAttn",
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  only_cross_attention: false,
  block_out_channels: [320, 640, 1280, 1280],
  layers_per_block: 2,
  downsample_padding: 1,
  mid_block_scale_factor: 1,
  act_fn: "silu",
  norm_num_groups: 32,
  norm_eps: 1e-5,
  cross_attention_dim: 768,
  attention_head_dim: 8,
  use_linear_projection: false,
  upcast_attention: false,
  sample_size: 64,
};

const SD_VAE: AutoencoderKLConfigInput = {
  in_channels: 3,
  out_channels: 3,
  down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
  block_out_channels: [128, 256, 512, 512],
  layers_per_block: 2,
  act_fn: "silu",
  latent_channels: 4,
  norm_num_groups: 32,
  sample_size: 512,
  scaling_factor: 0.18215,
};

const SD15_TEXT: CLIPTextConfigInput = {
  vocab_size: 49408,
  hidden_size: 768,
  intermediate_size: 3072,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  max_position_embeddings: 77,
  hidden_act: "quick_gelu",
  layer_norm_eps: 1e-5,
  projection_dim: 768,
};

interface Preset {
  unet: UNet2DConditionConfigInput;
  vae: AutoencoderKLConfigInput;
  textEncoder: CLIPTextConfigInput;
  scheduler: Record<string, unknown>;
}

export const PRESETS: Record<"sd1.5" | "sd2.1", Preset> = {
  "sd1.5": {
    unet: SD15_UNET,
    vae: SD_VAE,
    textEncoder: SD15_TEXT,
    scheduler: { _class_name: "PNDMScheduler", beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear", num_train_timesteps: 1000, set_alpha_to_one: false, skip_prk_steps: true, steps_offset: 1, clip_sample: false },
  },
  "sd2.1": {
    unet: { ...SD15_UNET, attention_head_dim: [5, 10, 20, 20], cross_attention_dim: 1024, use_linear_projection: true, upcast_attention: true, sample_size: 96 },
    vae: { ...SD_VAE, sample_size: 768 },
    textEncoder: { ...SD15_TEXT, hidden_size: 1024, intermediate_size: 4096, num_hidden_layers: 23, num_attention_heads: 16, hidden_act: "gelu", projection_dim: 512 },
    scheduler: { _class_name: "DDIMScheduler", beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear", num_train_timesteps: 1000, set_alpha_to_one: false, skip_prk_steps: true, steps_offset: 1, clip_sample: false, prediction_type: "v_prediction" },
  },
};
