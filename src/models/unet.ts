/**
 * diffusers' UNet2DConditionModel as an IR graph, for the configurations Stable Diffusion 1.x and
 * 2.x use: CrossAttnDownBlock2D / DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D /
 * CrossAttnUpBlock2D, conv or linear projections, per-block head counts, flip_sin_to_cos,
 * freq_shift. Inputs and outputs follow diffusers' ONNX export: `sample` [B, C, H, W] float,
 * `timestep` [B] float (a single timestep broadcasts), `encoder_hidden_states` [B, S, D] →
 * `out_sample` [B, C, H, W]. H and W stay symbolic.
 */
import { Builder } from "../ir/builder.js";
import { sym, type Dim } from "../ir/dims.js";
import type { Value } from "../ir/graph.js";
import { UserError } from "../util/errors.js";
import { act, downsample, resnetBlock, timestepFeatures, transformer2d, upsample } from "./layers.js";

/** The keys of diffusers' unet/config.json that the graph depends on. */
export interface UNetArch {
  in_channels: number;
  out_channels: number;
  center_input_sample?: boolean;
  flip_sin_to_cos: boolean;
  freq_shift: number;
  down_block_types: string[];
  mid_block_type?: string | null;
  up_block_types: string[];
  only_cross_attention?: boolean | boolean[];
  block_out_channels: number[];
  layers_per_block: number | number[];
  downsample_padding?: number;
  mid_block_scale_factor?: number;
  act_fn: string;
  norm_num_groups: number;
  norm_eps: number;
  cross_attention_dim: number | number[];
  transformer_layers_per_block?: number | number[];
  attention_head_dim: number | number[];
  num_attention_heads?: number | number[] | null;
  use_linear_projection?: boolean;
  upcast_attention?: boolean;
  resnet_time_scale_shift?: string;
  time_embedding_type?: string;
  time_embedding_dim?: number | null;
  conv_in_kernel?: number;
  conv_out_kernel?: number;
  class_embed_type?: string | null;
  num_class_embeds?: number | null;
  addition_embed_type?: string | null;
  encoder_hid_dim?: number | null;
  dual_cross_attention?: boolean;
  time_cond_proj_dim?: number | null;
  [key: string]: unknown;
}

function perBlock<T>(v: T | T[], n: number, key: string): T[] {
  if (Array.isArray(v)) {
    if (v.length !== n) throw new UserError({ message: `unet.${key} has ${v.length} entries for ${n} blocks`, subject: "unet config", hint: `give one value or ${n}` });
    return v;
  }
  return Array(n).fill(v);
}

/** Features sdc does not build, refused with the key that asks for them. */
function refuseUnsupported(c: UNetArch): void {
  const refuse = (key: string, why: string) => {
    throw new UserError({ message: `unet.${key}: ${why} is not supported by sdc`, subject: "unet config", hint: "use a Stable Diffusion 1.x/2.x U-Net configuration" });
  };
  if (c.class_embed_type || c.num_class_embeds) refuse("num_class_embeds", "class conditioning (class_embed_type/num_class_embeds)");
  if (c.addition_embed_type) refuse("addition_embed_type", `addition embedding "${c.addition_embed_type}" (SDXL-style)`);
  if (c.encoder_hid_dim) refuse("encoder_hid_dim", "an encoder_hid_proj");
  if (c.dual_cross_attention) refuse("dual_cross_attention", "dual cross-attention");
  if (c.time_cond_proj_dim) refuse("time_cond_proj_dim", "a time condition projection");
  if ((c.resnet_time_scale_shift ?? "default") !== "default") refuse("resnet_time_scale_shift", `resnet_time_scale_shift "${c.resnet_time_scale_shift}"`);
  if ((c.time_embedding_type ?? "positional") !== "positional") refuse("time_embedding_type", `time_embedding_type "${c.time_embedding_type}"`);
  if ((c.mid_block_type ?? "UNetMidBlock2DCrossAttn") !== "UNetMidBlock2DCrossAttn") refuse("mid_block_type", `mid block "${c.mid_block_type}"`);
  for (const t of c.down_block_types) if (t !== "CrossAttnDownBlock2D" && t !== "DownBlock2D") refuse("down_block_types", `block type "${t}"`);
  for (const t of c.up_block_types) if (t !== "CrossAttnUpBlock2D" && t !== "UpBlock2D") refuse("up_block_types", `block type "${t}"`);
  if (Array.isArray(c.cross_attention_dim)) refuse("cross_attention_dim", "a per-block cross_attention_dim");
  // keys of later U-Nets whose non-default values change the computation
  const defaults: Record<string, unknown> = {
    time_embedding_act_fn: null,
    timestep_post_act: null,
    resnet_skip_time_act: false,
    resnet_out_scale_factor: 1,
    cross_attention_norm: null,
    attention_type: "default",
    mid_block_only_cross_attention: null,
    reverse_transformer_layers_per_block: null,
    class_embeddings_concat: false,
  };
  for (const [k, d] of Object.entries(defaults)) {
    const v = c[k];
    if (v !== undefined && v !== d && !(d === null && v === undefined)) refuse(k, `${k}: ${JSON.stringify(v)}`);
  }
}

export interface UNetGraphOptions {
  /** Names of the symbolic dimensions of `sample`. */
  batch?: Dim;
  height?: Dim;
  width?: Dim;
  /** Token count of encoder_hidden_states (77 for CLIP). */
  sequence?: Dim;
  /** Values to use instead of graph inputs (a training step computes `sample` in the graph); no graph output is declared then. */
  inputs?: { sample: Value; timestep: Value; encoderHiddenStates: Value };
}

export function buildUNet(b: Builder, c: UNetArch, o: UNetGraphOptions = {}): Value {
  refuseUnsupported(c);
  const nBlocks = c.block_out_channels.length;
  if (c.down_block_types.length !== nBlocks || c.up_block_types.length !== nBlocks)
    throw new UserError({ message: `unet has ${nBlocks} block_out_channels but ${c.down_block_types.length} down and ${c.up_block_types.length} up block types`, subject: "unet config" });
  const ch = c.block_out_channels;
  const layers = perBlock(c.layers_per_block, nBlocks, "layers_per_block");
  const tLayers = perBlock(c.transformer_layers_per_block ?? 1, nBlocks, "transformer_layers_per_block");
  const onlyCross = perBlock(c.only_cross_attention ?? false, nBlocks, "only_cross_attention");
  // diffusers' naming quirk: attention_head_dim holds the number of heads unless num_attention_heads is set
  const heads = perBlock(c.num_attention_heads ?? c.attention_head_dim, nBlocks, "attention_head_dim");
  const crossDim = c.cross_attention_dim as number;
  const groups = c.norm_num_groups;
  const eps = c.norm_eps;
  const timeDim = c.time_embedding_dim ?? ch[0]! * 4;
  const resnet = { groups, eps, act: c.act_fn, tembChannels: timeDim };
  const tx = (i: number, cin: number) => ({
    heads: heads[i]!,
    dimHead: Math.floor(cin / heads[i]!),
    crossDim,
    groups,
    layers: tLayers[i]!,
    useLinearProjection: !!c.use_linear_projection,
    onlyCrossAttention: !!onlyCross[i],
  });

  const batch = o.batch ?? sym("batch");
  const sample = o.inputs?.sample ?? b.input("sample", b.floatType, [batch, c.in_channels, o.height ?? sym("height"), o.width ?? sym("width")]);
  const timestep = o.inputs?.timestep ?? b.input("timestep", b.floatType, [batch]);
  const ctx = o.inputs?.encoderHiddenStates ?? b.input("encoder_hidden_states", b.floatType, [batch, o.sequence ?? 77, crossDim]);

  // 1. time: sinusoidal features → TimestepEmbedding (linear, act, linear)
  const t = b.op1("Expand", [b.cast(timestep, "float32"), b.slice(b.op1("Shape", [sample]), [0], [0], [1])]);
  let temb = b.cast(timestepFeatures(b, t, ch[0]!, c.flip_sin_to_cos, c.freq_shift), b.floatType);
  temb = b.scope("time_embedding", () => b.linear(act(b, b.linear(temb, "linear_1", ch[0]!, timeDim), c.act_fn), "linear_2", timeDim, timeDim));

  // 2. pre-process
  let x = sample;
  if (c.center_input_sample) x = b.sub(b.mul(x, b.float(2)), b.float(1));
  const kin = c.conv_in_kernel ?? 3;
  x = b.conv2d(x, "conv_in", c.in_channels, ch[0]!, kin);

  // 3. down: every resnet/attention output and downsample is kept for the skip connections
  const skips: { v: Value; ch: number }[] = [{ v: x, ch: ch[0]! }];
  let cin = ch[0]!;
  for (let i = 0; i < nBlocks; i++) {
    const cout = ch[i]!;
    const cross = c.down_block_types[i] === "CrossAttnDownBlock2D";
    x = b.scope(`down_blocks.${i}`, () => {
      let h = x;
      for (let j = 0; j < layers[i]!; j++) {
        h = resnetBlock(b, `resnets.${j}`, h, temb, j === 0 ? cin : cout, cout, resnet);
        if (cross) h = transformer2d(b, `attentions.${j}`, h, ctx, cout, tx(i, cout));
        skips.push({ v: h, ch: cout });
      }
      if (i < nBlocks - 1) {
        h = downsample(b, "downsamplers.0", h, cout, c.downsample_padding ?? 1);
        skips.push({ v: h, ch: cout });
      }
      return h;
    });
    cin = cout;
  }

  // 4. mid: resnet, (attention, resnet)×1
  const last = ch[nBlocks - 1]!;
  x = b.scope("mid_block", () => {
    const mid = { ...resnet, outputScaleFactor: c.mid_block_scale_factor ?? 1 };
    let h = resnetBlock(b, "resnets.0", x, temb, last, last, mid);
    h = transformer2d(b, "attentions.0", h, ctx, last, { ...tx(nBlocks - 1, last), onlyCrossAttention: false });
    return resnetBlock(b, "resnets.1", h, temb, last, last, mid);
  });

  // 5. up: concatenate the matching skip before each resnet
  const rch = [...ch].reverse();
  const rlayers = [...layers].reverse();
  const rheadsIdx = (i: number) => nBlocks - 1 - i;
  let prev = last;
  for (let i = 0; i < nBlocks; i++) {
    const cout = rch[i]!;
    const cinBlock = rch[Math.min(i + 1, nBlocks - 1)]!;
    const cross = c.up_block_types[i] === "CrossAttnUpBlock2D";
    const n = rlayers[i]! + 1;
    x = b.scope(`up_blocks.${i}`, () => {
      let h = x;
      for (let j = 0; j < n; j++) {
        const skip = skips.pop()!;
        const skipCh = j === n - 1 ? cinBlock : cout;
        if (skip.ch !== skipCh) throw new Error(`internal: skip channels ${skip.ch} vs ${skipCh}`);
        const resIn = j === 0 ? prev : cout;
        h = b.concat([h, skip.v], 1);
        h = resnetBlock(b, `resnets.${j}`, h, temb, resIn + skipCh, cout, resnet);
        if (cross) h = transformer2d(b, `attentions.${j}`, h, ctx, cout, tx(rheadsIdx(i), cout));
      }
      // to the size of the skip the next block concatenates first (any latent size works)
      if (i < nBlocks - 1) h = upsample(b, "upsamplers.0", h, cout, skips[skips.length - 1]!.v);
      return h;
    });
    prev = cout;
  }

  // 6. post-process
  x = act(b, b.groupNorm(x, "conv_norm_out", ch[0]!, groups, eps), c.act_fn);
  x = b.conv2d(x, "conv_out", ch[0]!, c.out_channels, c.conv_out_kernel ?? 3);
  if (!o.inputs) b.output("out_sample", x);
  return x;
}
