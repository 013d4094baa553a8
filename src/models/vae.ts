/**
 * diffusers' AutoencoderKL as two IR graphs, in the layout of diffusers' ONNX export:
 * `vae_encoder`: `sample` [B, 3, H, W] in [-1, 1] → `latent_sample` [B, C, H/f, W/f] (the
 * posterior's mean: its mode) and `latent_parameters` [B, 2C, H/f, W/f] (mean and log-variance,
 * the form Optimum exports, from which a runner draws a sample with its own generator);
 * `vae_decoder`: `latent_sample` [B, C, h, w] → `sample` [B, 3, h·f, w·f].
 * `scaling_factor` is not applied here: the plan applies it, visibly.
 */
import type { Builder } from "../ir/builder.js";
import { sym, type Dim } from "../ir/dims.js";
import type { Value } from "../ir/graph.js";
import { UserError } from "../util/errors.js";
import type { AutoencoderKLConfig } from "./arch.js";
import { act, downsample, resnetBlock, upsample } from "./layers.js";

const EPS = 1e-6;

function checkArch(c: AutoencoderKLConfig): void {
  const n = c.block_out_channels.length;
  if (c.down_block_types.length !== n || c.up_block_types.length !== n)
    throw new UserError({ message: `vae has ${n} block_out_channels but ${c.down_block_types.length} down and ${c.up_block_types.length} up block types`, subject: "vae config" });
}

/** UNetMidBlock2D of the VAE: resnet, single-head self-attention over H×W, resnet. */
function midBlock(b: Builder, x: Value, ch: number, c: AutoencoderKLConfig): Value {
  return b.scope("mid_block", () => {
    const r = { groups: c.norm_num_groups, eps: EPS, act: c.act_fn, tembChannels: null };
    let h = resnetBlock(b, "resnets.0", x, null, ch, ch, r);
    // mid_block_add_attention: a key of later diffusers (true before it existed)
    if (c.mid_block_add_attention ?? true) {
      h = b.scope("attentions.0", () => {
        // Attention with group_norm, one head of width C, biases everywhere, residual connection
        const normed = b.groupNorm(h, "group_norm", ch, c.norm_num_groups, EPS);
        const seq = b.transpose(b.reshape(normed, [0, 0, -1]), [0, 2, 1]); // [B, HW, C]
        const q = b.linear(seq, "to_q", ch, ch);
        const k = b.linear(seq, "to_k", ch, ch);
        const v = b.linear(seq, "to_v", ch, ch);
        const o = b.linear(b.attention(q, k, v, 1, 1 / Math.sqrt(ch)), "to_out.0", ch, ch);
        return b.add(b.reshapeLike(b.transpose(o, [0, 2, 1]), h), h);
      });
    }
    return resnetBlock(b, "resnets.1", h, null, ch, ch, r);
  });
}

export interface VaeGraphOptions {
  batch?: Dim;
  height?: Dim;
  width?: Dim;
  /** A value to use instead of the graph input (training computes it in the graph); no graph output is declared then. */
  input?: Value;
}

export function buildVaeEncoder(b: Builder, c: AutoencoderKLConfig, o: VaeGraphOptions = {}): { mean: Value; parameters: Value } {
  checkArch(c);
  const ch = c.block_out_channels;
  const n = ch.length;
  const sample = o.input ?? b.input("sample", b.floatType, [o.batch ?? sym("batch"), c.in_channels, o.height ?? sym("height"), o.width ?? sym("width")]);
  const moments = b.scope("encoder", () => {
    let x = b.conv2d(sample, "conv_in", c.in_channels, ch[0]!, 3);
    let cin = ch[0]!;
    for (let i = 0; i < n; i++) {
      const cout = ch[i]!;
      x = b.scope(`down_blocks.${i}`, () => {
        let h = x;
        for (let j = 0; j < c.layers_per_block; j++)
          h = resnetBlock(b, `resnets.${j}`, h, null, j === 0 ? cin : cout, cout, { groups: c.norm_num_groups, eps: EPS, act: c.act_fn, tembChannels: null });
        if (i < n - 1) h = downsample(b, "downsamplers.0", h, cout, 0);
        return h;
      });
      cin = cout;
    }
    x = midBlock(b, x, ch[n - 1]!, c);
    x = act(b, b.groupNorm(x, "conv_norm_out", ch[n - 1]!, c.norm_num_groups, EPS), c.act_fn);
    return b.conv2d(x, "conv_out", ch[n - 1]!, 2 * c.latent_channels, 3);
  });
  const parameters = b.conv2d(moments, "quant_conv", 2 * c.latent_channels, 2 * c.latent_channels, 1);
  const mean = b.slice(parameters, [1], [0], [c.latent_channels]);
  if (!o.input) {
    b.output("latent_sample", mean);
    b.output("latent_parameters", parameters);
  }
  return { mean, parameters };
}

export function buildVaeDecoder(b: Builder, c: AutoencoderKLConfig, o: VaeGraphOptions = {}): Value {
  checkArch(c);
  const ch = c.block_out_channels;
  const n = ch.length;
  const z = o.input ?? b.input("latent_sample", b.floatType, [o.batch ?? sym("batch"), c.latent_channels, o.height ?? sym("height"), o.width ?? sym("width")]);
  const post = b.conv2d(z, "post_quant_conv", c.latent_channels, c.latent_channels, 1);
  const out = b.scope("decoder", () => {
    let x = b.conv2d(post, "conv_in", c.latent_channels, ch[n - 1]!, 3);
    x = midBlock(b, x, ch[n - 1]!, c);
    const rch = [...ch].reverse();
    let prev = rch[0]!;
    for (let i = 0; i < n; i++) {
      const cout = rch[i]!;
      x = b.scope(`up_blocks.${i}`, () => {
        let h = x;
        for (let j = 0; j <= c.layers_per_block; j++)
          h = resnetBlock(b, `resnets.${j}`, h, null, j === 0 ? prev : cout, cout, { groups: c.norm_num_groups, eps: EPS, act: c.act_fn, tembChannels: null });
        if (i < n - 1) h = upsample(b, "upsamplers.0", h, cout);
        return h;
      });
      prev = cout;
    }
    x = act(b, b.groupNorm(x, "conv_norm_out", ch[0]!, c.norm_num_groups, EPS), c.act_fn);
    return b.conv2d(x, "conv_out", ch[0]!, c.out_channels, 3);
  });
  if (!o.input) b.output("sample", out);
  return out;
}
