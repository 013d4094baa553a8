/**
 * diffusers' UNet2DConditionModel as an IR graph, for the configurations Stable Diffusion 1.x and
 * 2.x use: CrossAttnDownBlock2D / DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D /
 * CrossAttnUpBlock2D, conv or linear projections, per-block head counts, flip_sin_to_cos,
 * freq_shift. Inputs and outputs follow diffusers' ONNX export: `sample` [B, C, H, W] float,
 * `timestep` [B] float (a single timestep broadcasts), `encoder_hidden_states` [B, S, D] →
 * `out_sample` [B, C, H, W]; LCM checkpoints (`time_cond_proj_dim`) take `timestep_cond` [B, dim], the
 * guidance-scale embedding. H and W stay symbolic.
 */
import { Builder } from "../ir/builder.js";
import { sym, type Dim } from "../ir/dims.js";
import type { Value } from "../ir/graph.js";
import { UserError } from "../util/errors.js";
import { nonSd12UnetKeys, perBlock, SD12_UNET_VALUES, type UNet2DConditionConfig, unetHeads } from "./arch.js";
import { act, downsample, resnetBlock, timestepFeatures, transformer2d, upsample } from "./layers.js";
import { TomeInputs, type TomeLevel } from "./tome.js";

function refuse(key: string, what: string, hint = "use a Stable Diffusion 1.x/2.x U-Net configuration"): never {
  throw new UserError({ message: `unet.${key}: ${what} is not supported by sdc`, subject: "unet config", hint });
}

/** The per-block settings the graph is built from; features sdc does not build are refused with the key that asks for them. */
function supported(c: UNet2DConditionConfig) {
  for (const k of nonSd12UnetKeys(c))
    if (k !== "time_cond_proj_dim") refuse(k, JSON.stringify(c[k]), `Stable Diffusion 1.x/2.x U-Nets have ${k} ${JSON.stringify(SD12_UNET_VALUES[k])}`);
  const nBlocks = c.block_out_channels.length;
  if (c.down_block_types.length !== nBlocks || c.up_block_types.length !== nBlocks)
    throw new UserError({ message: `unet has ${nBlocks} block_out_channels but ${c.down_block_types.length} down and ${c.up_block_types.length} up block types`, subject: "unet config" });
  const crossDims = new Set(perBlock(c.cross_attention_dim, nBlocks, "cross_attention_dim"));
  if (crossDims.size > 1) refuse("cross_attention_dim", "a cross_attention_dim that differs between blocks");
  if (c.norm_num_groups === null) refuse("norm_num_groups", "null (no GroupNorm)");
  const tLayers = perBlock(c.transformer_layers_per_block, nBlocks, "transformer_layers_per_block").map((n) =>
    typeof n === "number" ? n : refuse("transformer_layers_per_block", "a per-layer list (an asymmetric U-Net)"),
  );
  return {
    nBlocks,
    layers: perBlock(c.layers_per_block, nBlocks, "layers_per_block"),
    tLayers,
    onlyCross: perBlock(c.only_cross_attention, nBlocks, "only_cross_attention"),
    // diffusers' naming quirk: attention_head_dim holds the number of heads unless num_attention_heads is set
    heads: unetHeads(c),
    crossDim: [...crossDims][0]!,
    groups: c.norm_num_groups,
  };
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
  /**
   * DeepCache (Ma et al. 2023): `full` also outputs the up path's hidden state where the shallow
   * part begins (DEEPCACHE_FEATURE); `shallow` builds only the shallow part (conv_in, the down path
   * up to `skips` skip features, the up resnets that consume them, conv_out) and takes that hidden
   * state as an input instead of computing the deep part.
   */
  deepcache?: { mode: "full" | "shallow"; cut: DeepCacheCut };
  /**
   * Token merging (ToMe) in the self-attention of these levels (from `tomeLevels`, for the static
   * `height` × `width` given): adds their `tome_src_<ds>`/`tome_dst_<ds>` inputs.
   */
  tome?: TomeLevel[];
}

/** Name of the full U-Net's extra output and of the shallow U-Net's extra input. */
export const DEEPCACHE_FEATURE = "deepcache_feature";

/**
 * Where the shallow U-Net is cut from the deep part: the shallow part computes the first `skips`
 * skip features of the down path (conv_in's output is the first) and the up resnets that consume
 * them, the last `skips` resnets of the up path.
 */
export interface DeepCacheCut {
  skips: number;
  /** The cached feature's channels (what enters the first shallow up resnet before its skip is concatenated). */
  channels: number;
}

/** Skip features the down path makes: conv_in, one per down resnet layer, one per downsampler. */
export function skipCount(c: UNet2DConditionConfig): number {
  const { nBlocks, layers } = supported(c);
  return 1 + layers.reduce((a, n) => a + n, 0) + (nBlocks - 1);
}

/**
 * The DeepCache cut after resnet layer `layer` of down block `branch` (0-based; default its last
 * layer): the shallow U-Net runs down blocks 0..branch up to that layer and the matching up resnets.
 * `branch: 0` with every layer is the paper's D1/U1 split. Bad indices are UserErrors naming the key.
 */
export function deepCacheCut(c: UNet2DConditionConfig, branch: number, layer?: number): DeepCacheCut {
  const { nBlocks, layers } = supported(c);
  if (!Number.isInteger(branch) || branch < 0 || branch >= nBlocks)
    throw new UserError({ message: `sample.deepcache.branch ${branch} is not a down block of this U-Net`, subject: "sample.deepcache.branch", hint: `this U-Net has ${nBlocks} down blocks: use 0 to ${nBlocks - 1} (0: the shallowest, fastest)` });
  const last = layers[branch]! - 1;
  const l = layer ?? last;
  if (!Number.isInteger(l) || l < 0 || l > last)
    throw new UserError({ message: `sample.deepcache.layer ${l} is not a layer of down block ${branch}`, subject: "sample.deepcache.layer", hint: `down block ${branch} has ${last + 1} resnet layer${last ? "s" : ""}: use 0 to ${last}, or leave it out for all of them` });
  let skips = 1;
  for (let j = 0; j < branch; j++) skips += layers[j]! + 1;
  skips += l + 1;
  // the up resnet that consumes skip `skips - 1` is the first shallow one; its input is the cached feature
  const rch = [...c.block_out_channels].reverse();
  const total = skipCount(c);
  let r = 0;
  for (let i = 0; i < nBlocks; i++) {
    const n = layers[nBlocks - 1 - i]! + 1;
    for (let j = 0; j < n; j++, r++) if (total - 1 - r === skips - 1) return { skips, channels: j === 0 ? (i === 0 ? rch[0]! : rch[i - 1]!) : rch[i]! };
  }
  throw new Error("internal: DeepCache cut not found in the up path");
}

export function buildUNet(b: Builder, c: UNet2DConditionConfig, o: UNetGraphOptions = {}): Value {
  const { nBlocks, layers, tLayers, onlyCross, heads, crossDim, groups } = supported(c);
  const ch = c.block_out_channels;
  const eps = c.norm_eps;
  const timeDim = c.time_embedding_dim ?? ch[0]! * 4;
  const resnet = { groups, eps, act: c.act_fn, tembChannels: timeDim };
  const tx = (i: number, cin: number) => ({
    heads: heads[i]!,
    dimHead: Math.floor(cin / heads[i]!),
    crossDim,
    groups,
    layers: tLayers[i]!,
    useLinearProjection: c.use_linear_projection,
    onlyCrossAttention: onlyCross[i]!,
  });

  const dc = o.deepcache;
  const shallow = dc?.mode === "shallow";
  const totalSkips = skipCount(c);
  const batch = o.batch ?? sym("batch");
  const sample = o.inputs?.sample ?? b.input("sample", b.floatType, [batch, c.in_channels, o.height ?? sym("height"), o.width ?? sym("width")]);
  const timestep = o.inputs?.timestep ?? b.input("timestep", b.floatType, [batch]);
  const ctx = o.inputs?.encoderHiddenStates ?? b.input("encoder_hidden_states", b.floatType, [batch, o.sequence ?? 77, crossDim]);

  // LCM checkpoints (time_cond_proj_dim): a guidance-scale embedding [B, time_cond_proj_dim] is added to
  // the timestep features through time_embedding.cond_proj (a linear map without bias) — sampling only
  const condDim = c.time_cond_proj_dim;
  if (condDim !== null && o.inputs)
    refuse("time_cond_proj_dim", `${condDim} (a guidance-embedded LCM U-Net) in a training graph`, "sdc samples LCM U-Nets but does not train them; train the base model, or an LCM-LoRA on it");
  const timestepCond = condDim === null ? null : b.input("timestep_cond", b.floatType, [batch, condDim]);

  // 1. time: sinusoidal features (+ cond_proj(timestep_cond)) → TimestepEmbedding (linear, act, linear)
  const t = b.op1("Expand", [b.cast(timestep, "float32"), b.slice(b.op1("Shape", [sample]), [0], [0], [1])]);
  let temb = b.cast(timestepFeatures(b, t, ch[0]!, c.flip_sin_to_cos, c.freq_shift), b.floatType);
  temb = b.scope("time_embedding", () => {
    const h = timestepCond ? b.add(temb, b.linear(timestepCond, "cond_proj", condDim!, ch[0]!, false)) : temb;
    return b.linear(act(b, b.linear(h, "linear_1", ch[0]!, timeDim), c.act_fn), "linear_2", timeDim, timeDim);
  });

  if (o.tome && (typeof o.height !== "number" || typeof o.width !== "number")) throw new Error("internal: a ToMe U-Net needs a static latent size");
  const tome = o.tome?.length ? new TomeInputs(b, o.tome) : null;
  // a transformer block's row among its level's ToMe blocks: down blocks, then mid, then up
  const crossDown = (k: number) => c.down_block_types[k] === "CrossAttnDownBlock2D";
  const downRows = (k: number) => (crossDown(k) ? layers[k]! * tLayers[k]! : 0);
  const merging = (level: number, first: number) => {
    let row = first;
    return tome ? () => tome.block(level, row++) : undefined;
  };

  // 2. pre-process
  let x = sample;
  if (c.center_input_sample) x = b.sub(b.mul(x, b.float(2)), b.float(1));
  x = b.conv2d(x, "conv_in", c.in_channels, ch[0]!, c.conv_in_kernel);

  // 3. down: every resnet/attention output and downsample is kept for the skip connections
  //    (the shallow DeepCache U-Net stops once it has the skips its up resnets consume)
  const skips: { v: Value; ch: number }[] = [{ v: x, ch: ch[0]! }];
  const enough = () => shallow && skips.length >= dc!.cut.skips;
  let cin = ch[0]!;
  for (let i = 0; i < nBlocks && !enough(); i++) {
    const cout = ch[i]!;
    const cross = c.down_block_types[i] === "CrossAttnDownBlock2D";
    x = b.scope(`down_blocks.${i}`, () => {
      let h = x;
      for (let j = 0; j < layers[i]! && !enough(); j++) {
        h = resnetBlock(b, `resnets.${j}`, h, temb, j === 0 ? cin : cout, cout, resnet);
        if (cross) h = transformer2d(b, `attentions.${j}`, h, ctx, cout, tx(i, cout), merging(i, j * tLayers[i]!));
        skips.push({ v: h, ch: cout });
      }
      if (i < nBlocks - 1 && !enough()) {
        h = downsample(b, "downsamplers.0", h, cout, c.downsample_padding);
        skips.push({ v: h, ch: cout });
      }
      return h;
    });
    cin = cout;
  }

  // 4. mid: resnet, (attention, resnet)×1 (not in the shallow U-Net: its output is part of the cached feature)
  const last = ch[nBlocks - 1]!;
  if (!shallow)
    x = b.scope("mid_block", () => {
      const mid = { ...resnet, outputScaleFactor: c.mid_block_scale_factor };
      let h = resnetBlock(b, "resnets.0", x, temb, last, last, mid);
      h = transformer2d(b, "attentions.0", h, ctx, last, { ...tx(nBlocks - 1, last), onlyCrossAttention: false }, merging(nBlocks - 1, downRows(nBlocks - 1)));
      return resnetBlock(b, "resnets.1", h, temb, last, last, mid);
    });

  // 5. up: concatenate the matching skip before each resnet
  const rch = [...ch].reverse();
  const rlayers = [...layers].reverse();
  const rheadsIdx = (i: number) => nBlocks - 1 - i;
  let prev = last;
  // up resnet r consumes skip totalSkips−1−r; with DeepCache, the resnet that consumes skip
  // cut.skips−1 starts the shallow part, and the hidden state entering it is the cached feature
  let r = 0;
  const shallowPart = (r: number) => !dc || totalSkips - 1 - r < dc.cut.skips;
  for (let i = 0; i < nBlocks; i++) {
    const cout = rch[i]!;
    const cinBlock = rch[Math.min(i + 1, nBlocks - 1)]!;
    const cross = c.up_block_types[i] === "CrossAttnUpBlock2D";
    const n = rlayers[i]! + 1;
    x = b.scope(`up_blocks.${i}`, () => {
      let h = x;
      for (let j = 0; j < n; j++, r++) {
        const skipCh = j === n - 1 ? cinBlock : cout;
        const resIn = j === 0 ? prev : cout;
        if (!shallowPart(r)) {
          // deep part: the shallow U-Net has neither this resnet nor its skip
          if (shallow) continue;
        } else if (dc && totalSkips - 1 - r === dc.cut.skips - 1) {
          if (resIn !== dc.cut.channels) throw new Error(`internal: DeepCache feature channels ${resIn} vs ${dc.cut.channels}`);
          // x: [B, resIn, h, w], h and w those of the skip it is concatenated with
          if (shallow) h = b.input(DEEPCACHE_FEATURE, b.floatType, [batch, resIn, ...skips[skips.length - 1]!.v.shape.slice(2)]);
          else if (!o.inputs) b.output(DEEPCACHE_FEATURE, h);
        }
        const skip = skips.pop()!;
        if (skip.ch !== skipCh) throw new Error(`internal: skip channels ${skip.ch} vs ${skipCh}`);
        h = b.concat([h, skip.v], 1);
        h = resnetBlock(b, `resnets.${j}`, h, temb, resIn + skipCh, cout, resnet);
        if (cross) {
          const k = nBlocks - 1 - i;
          const first = downRows(k) + (k === nBlocks - 1 ? tLayers[k]! : 0) + j * tLayers[k]!;
          h = transformer2d(b, `attentions.${j}`, h, ctx, cout, tx(rheadsIdx(i), cout), merging(k, first));
        }
      }
      // to the size of the skip the next block concatenates first (any latent size works)
      if (i < nBlocks - 1 && (!shallow || shallowPart(r - 1))) h = upsample(b, "upsamplers.0", h, cout, skips[skips.length - 1]!.v);
      return h;
    });
    prev = cout;
  }

  // 6. post-process
  x = act(b, b.groupNorm(x, "conv_norm_out", ch[0]!, groups, eps), c.act_fn);
  x = b.conv2d(x, "conv_out", ch[0]!, c.out_channels, c.conv_out_kernel);
  if (!o.inputs) {
    // out_sample first: runners that take the first output (diffusers' ONNX pipeline) get the prediction
    b.graph.outputs.unshift({ name: "out_sample", value: x });
  }
  return x;
}
