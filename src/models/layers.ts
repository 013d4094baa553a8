/**
 * The building blocks diffusers' UNet2DConditionModel and AutoencoderKL are made of, written
 * against the IR builder and named exactly like their checkpoint keys (`resnets.0.conv1`,
 * `attentions.0.transformer_blocks.0.attn1.to_q`, ...), so loading weights is a lookup.
 * Shapes in comments: B batch, C channels, H×W spatial (symbolic), S tokens.
 */
import type { Builder } from "../ir/builder.js";
import type { Value } from "../ir/graph.js";
import { tokenMerging, type TomeBlock } from "./tome.js";

export function act(b: Builder, x: Value, fn: string): Value {
  switch (fn) {
    case "silu":
    case "swish":
      return b.silu(x);
    case "gelu":
      return b.gelu(x);
    case "quick_gelu":
      // x · sigmoid(1.702 x), as transformers' QuickGELUActivation
      return b.mul(x, b.sigmoid(b.mul(x, b.float(1.702))));
    case "relu":
      return b.op1("Relu", [x]);
    default:
      throw new Error(`activation ${fn} is not supported`);
  }
}

/** Sinusoidal timestep features as diffusers' get_timestep_embedding, t [B] → [B, dim]. */
export function timestepFeatures(b: Builder, t: Value, dim: number, flipSinToCos: boolean, freqShift: number): Value {
  const half = Math.floor(dim / 2);
  // exp(-ln(10000) · i / (half − shift)), each step rounded to float32 as torch computes it
  const freqs = new Float32Array(half);
  const f = Math.fround;
  const c = f(-Math.log(10000));
  for (let i = 0; i < half; i++) freqs[i] = f(Math.exp(f(f(c * i) / f(half - freqShift))));
  const args = b.mul(b.unsqueeze(t, [1]), b.float32(freqs, [1, half])); // [B, half], float32 as diffusers
  const sin = b.op1("Sin", [args]);
  const cos = b.op1("Cos", [args]);
  let emb = b.concat(flipSinToCos ? [cos, sin] : [sin, cos], 1);
  if (dim % 2 === 1) emb = b.op1("Pad", [emb, b.int64([0, 0, 0, 1])]);
  return emb;
}

export interface ResnetOpts {
  groups: number;
  groupsOut?: number;
  eps: number;
  act: string;
  /** time embedding width, or null for the VAE's resnets */
  tembChannels: number | null;
  outputScaleFactor?: number;
}

/** ResnetBlock2D (time_embedding_norm "default"): x [B, Cin, H, W] → [B, Cout, H, W]. */
export function resnetBlock(b: Builder, name: string, x: Value, temb: Value | null, cin: number, cout: number, o: ResnetOpts): Value {
  return b.scope(name, () => {
    let h = act(b, b.groupNorm(x, "norm1", cin, o.groups, o.eps), o.act);
    h = b.conv2d(h, "conv1", cin, cout, 3);
    if (temb && o.tembChannels !== null) {
      const t = b.linear(act(b, temb, o.act), "time_emb_proj", o.tembChannels, cout); // [B, Cout]
      h = b.add(h, b.unsqueeze(t, [2, 3]));
    }
    h = act(b, b.groupNorm(h, "norm2", cout, o.groupsOut ?? o.groups, o.eps), o.act);
    h = b.conv2d(h, "conv2", cout, cout, 3);
    const shortcut = cin !== cout ? b.conv2d(x, "conv_shortcut", cin, cout, 1) : x;
    let out = b.add(shortcut, h);
    if (o.outputScaleFactor !== undefined && o.outputScaleFactor !== 1) out = b.div(out, b.float(o.outputScaleFactor));
    return out;
  });
}

/** Downsample2D with a conv: stride 2; padding 0 means the VAE's asymmetric (0,1,0,1) pad. */
export function downsample(b: Builder, name: string, x: Value, ch: number, padding: number): Value {
  return b.scope(name, () => {
    const pads: [number, number, number, number] = padding === 0 ? [0, 0, 1, 1] : [padding, padding, padding, padding];
    return b.conv2d(x, "conv", ch, ch, 3, { stride: 2, pads });
  });
}

/**
 * Upsample2D: nearest ×2 (or, given `like`, to its spatial size — the U-Net's skip connection,
 * as diffusers' forward_upsample_size does for sizes that do not halve evenly), then 3×3 conv.
 */
export function upsample(b: Builder, name: string, x: Value, ch: number, like?: Value): Value {
  // exactly 2× (the VAE): one composite, which the CPU lowering computes at the low resolution
  return b.scope(name, () => (like ? b.conv2d(b.upsampleNearestTo(x, like), "conv", ch, ch, 3) : b.upsample2xConv(x, "conv", ch, ch)));
}

export interface AttnOpts {
  heads: number;
  dimHead: number;
  /** width of the key/value source (cross attention); null for self attention */
  crossDim: number | null;
  bias?: boolean;
  outBias?: boolean;
}

/** diffusers' Attention (AttnProcessor): x [B, S, D], context [B, L, Dc] → [B, S, D]. */
export function attention(b: Builder, name: string, x: Value, context: Value | null, dim: number, o: AttnOpts): Value {
  return b.scope(name, () => {
    const inner = o.heads * o.dimHead;
    const src = context ?? x;
    const srcDim = o.crossDim ?? dim;
    const q = b.linear(x, "to_q", dim, inner, o.bias ?? false);
    const k = b.linear(src, "to_k", srcDim, inner, o.bias ?? false);
    const v = b.linear(src, "to_v", srcDim, inner, o.bias ?? false);
    const a = b.attention(q, k, v, o.heads, 1 / Math.sqrt(o.dimHead));
    return b.linear(a, "to_out.0", inner, dim, o.outBias ?? true);
  });
}

/** FeedForward with GEGLU (diffusers' default for SD): D → 2·4D → (a · gelu(g)) → D. */
function feedForward(b: Builder, name: string, x: Value, dim: number, mult = 4): Value {
  return b.scope(name, () => {
    const inner = dim * mult;
    const [hidden, gate] = b.split(b.linear(x, "net.0.proj", dim, inner * 2), 2, -1);
    return b.linear(b.mul(hidden!, b.gelu(gate!)), "net.2", inner, dim);
  });
}

export interface TransformerOpts {
  heads: number;
  dimHead: number;
  crossDim: number;
  groups: number;
  layers: number;
  useLinearProjection: boolean;
  onlyCrossAttention: boolean;
  doubleSelfAttention?: boolean;
}

/** BasicTransformerBlock: self-attention, cross-attention, GEGLU feed-forward, pre-LayerNorm. */
function basicTransformerBlock(b: Builder, name: string, x: Value, ctx: Value, dim: number, o: TransformerOpts, tome: TomeBlock | null): Value {
  return b.scope(name, () => {
    const eps = 1e-5;
    let h = x;
    // token merging (tomesd's default: self-attention only), matched on the block's input
    const tm = tome ? tokenMerging(b, h, tome) : null;
    let n1 = b.layerNorm(h, "norm1", dim, eps);
    if (tm) n1 = tm.merge(n1);
    let a1 = attention(b, "attn1", n1, o.onlyCrossAttention ? ctx : null, dim, { heads: o.heads, dimHead: o.dimHead, crossDim: o.onlyCrossAttention ? o.crossDim : null });
    if (tm) a1 = tm.unmerge(a1);
    h = b.add(a1, h);
    const n2 = b.layerNorm(h, "norm2", dim, eps);
    h = b.add(attention(b, "attn2", n2, ctx, dim, { heads: o.heads, dimHead: o.dimHead, crossDim: o.crossDim }), h);
    const n3 = b.layerNorm(h, "norm3", dim, eps);
    return b.add(feedForward(b, "ff", n3, dim), h);
  });
}

/** Transformer2DModel (continuous input): x [B, C, H, W], ctx [B, L, Dc] → [B, C, H, W]. */
export function transformer2d(b: Builder, name: string, x: Value, ctx: Value, cin: number, o: TransformerOpts, tome?: () => TomeBlock | null): Value {
  return b.scope(name, () => {
    const inner = o.heads * o.dimHead;
    const normed = b.groupNorm(x, "norm", cin, o.groups, 1e-6);
    let h: Value;
    if (!o.useLinearProjection) {
      const p = b.conv2d(normed, "proj_in", cin, inner, 1);
      h = b.transpose(b.reshape(p, [0, 0, -1]), [0, 2, 1]); // [B, HW, inner]
    } else {
      h = b.linear(b.transpose(b.reshape(normed, [0, 0, -1]), [0, 2, 1]), "proj_in", cin, inner);
    }
    for (let i = 0; i < o.layers; i++) h = basicTransformerBlock(b, `transformer_blocks.${i}`, h, ctx, inner, o, tome?.() ?? null);
    let out: Value;
    if (!o.useLinearProjection) {
      const back = b.reshapeFrom(b.transpose(h, [0, 2, 1]), [0, inner, [x, 2], [x, 3]]); // [B, inner, H, W]
      out = b.conv2d(back, "proj_out", inner, cin, 1);
    } else {
      out = b.reshapeFrom(b.transpose(b.linear(h, "proj_out", inner, cin), [0, 2, 1]), [0, cin, [x, 2], [x, 3]]);
    }
    return b.add(out, x);
  });
}
