/**
 * Token merging for Stable Diffusion (Bolya & Hoffman 2023, "Token Merging for Fast Stable
 * Diffusion", the tomesd package): before a transformer block's self-attention, `merged` of its
 * tokens are averaged into their most similar partners, attention runs on the rest, and its output is
 * copied back to every token that was merged (unmerge). Less attention work at high resolutions, a
 * slightly different image.
 *
 * The tokens of each block are split into `dst` tokens (one per sx × sy cell of the token grid,
 * chosen at random for each block and call) and `src` tokens (the rest). The split is the only
 * random part and depends on nothing but the grid: the runtime draws it from the run's seeded
 * generator (src/runtime/tome.ts) and feeds it as the inputs `tome_src_<ds>` / `tome_dst_<ds>`, one
 * row per transformer block at downsampling `ds`. Everything else (cosine similarities, the greedy
 * matching, the merge by mean, the unmerge) is in the graph, with the shapes fixed at compile time by
 * the latent size: merging changes token counts, so a ToMe U-Net is compiled for one image size.
 */
import type { Builder } from "../ir/builder.js";
import { sym } from "../ir/dims.js";
import type { Value } from "../ir/graph.js";
import { UserError } from "../util/errors.js";
import { perBlock, type UNet2DConditionConfig } from "./arch.js";

export interface TomeOptions {
  /** Fraction of a block's tokens merged away (tomesd's ratio). */
  ratio: number;
  /** Merge in blocks whose resolution is downsampled at most this much from the latents (1, 2, 4, 8). */
  maxDownsample: number;
  /** Stride of the dst grid along x and y (one dst token per sx × sy cell). */
  sx: number;
  sy: number;
}

/** One resolution the U-Net merges tokens at; every size is a token count. */
export interface TomeLevel {
  /** U-Net level (0: the latents' resolution). */
  level: number;
  /** tomesd's downsampling: ceil(sqrt(latent tokens / tokens)). */
  downsample: number;
  /** Token grid. */
  height: number;
  width: number;
  tokens: number;
  /** dst tokens: one per whole sx × sy cell. */
  dst: number;
  /** src tokens: the rest. */
  src: number;
  /** src tokens merged into dst ones: min(src, floor(tokens × ratio)). */
  merged: number;
  /** Transformer blocks at this level in the full U-Net, in the order they run (rows of its inputs). */
  blocks: { down: number; mid: number; up: number };
  /** Graph inputs: int64 [blocks, src] and [blocks, dst], token indices in increasing order. */
  srcInput: string;
  dstInput: string;
}

/** The levels of a U-Net (latents H × W) where ToMe merges tokens; levels that would merge none are left out. */
export function tomeLevels(c: UNet2DConditionConfig, latentH: number, latentW: number, o: TomeOptions): TomeLevel[] {
  const n = c.block_out_channels.length;
  const layers = perBlock(c.layers_per_block, n, "layers_per_block");
  const tLayers = perBlock(c.transformer_layers_per_block, n, "transformer_layers_per_block") as number[];
  const levels: TomeLevel[] = [];
  let h = latentH;
  let w = latentW;
  for (let k = 0; k < n; k++) {
    if (k > 0) {
      // a stride-2 3×3 convolution with padding 1 (the U-Net's downsampler)
      h = Math.ceil(h / 2);
      w = Math.ceil(w / 2);
    }
    const tokens = h * w;
    const blocks = {
      down: c.down_block_types[k] === "CrossAttnDownBlock2D" ? layers[k]! * tLayers[k]! : 0,
      mid: k === n - 1 ? tLayers[k]! : 0,
      up: c.up_block_types[n - 1 - k] === "CrossAttnUpBlock2D" ? (layers[k]! + 1) * tLayers[k]! : 0,
    };
    // tomesd finds the level from the token count alone
    const downsample = Math.ceil(Math.sqrt(Math.floor((latentH * latentW) / tokens)));
    if (blocks.down + blocks.mid + blocks.up === 0 || downsample > o.maxDownsample) continue;
    const gh = Math.ceil(latentH / downsample);
    const gw = Math.ceil(latentW / downsample);
    if (gh * gw !== tokens)
      throw new UserError({
        message: `sample.tome: at U-Net level ${k} the latents' ${latentH}×${latentW} become ${h}×${w} tokens, which tomesd's rule (downsampling ${downsample}) takes for ${gh}×${gw}`,
        subject: "sample.tome",
        hint: "choose an image size whose latents halve evenly (a multiple of 64 pixels), or a smaller sample.tome.max_downsample",
      });
    const dst = Math.floor(h / o.sy) * Math.floor(w / o.sx);
    const src = tokens - dst;
    const merged = Math.min(src, Math.floor(tokens * o.ratio));
    if (dst === 0 || merged <= 0) continue;
    levels.push({ level: k, downsample, height: h, width: w, tokens, dst, src, merged, blocks, srcInput: `tome_src_${downsample}`, dstInput: `tome_dst_${downsample}` });
  }
  return levels;
}

/** What one transformer block merges with: its level, and its rows of the level's inputs. */
export interface TomeBlock {
  level: TomeLevel;
  /** int64 [src] and [dst]. */
  src: Value;
  dst: Value;
}

/**
 * The graph inputs of the ToMe levels; `block(level, row)` hands a transformer block its row. Rows
 * number a level's blocks in the order diffusers runs them (down, mid, up), so the full and the shallow
 * DeepCache U-Net read the same rows.
 */
export class TomeInputs {
  private readonly tables = new Map<number, { level: TomeLevel; src: Value; dst: Value }>();

  constructor(
    private readonly b: Builder,
    levels: TomeLevel[],
  ) {
    for (const l of levels) {
      const rows = sym(`tome_blocks_${l.downsample}`);
      this.tables.set(l.level, { level: l, src: b.input(l.srcInput, "int64", [rows, l.src]), dst: b.input(l.dstInput, "int64", [rows, l.dst]) });
    }
  }

  /** Block `row` of U-Net level `level`: null when that level does not merge. */
  block(level: number, row: number): TomeBlock | null {
    const t = this.tables.get(level);
    if (!t) return null;
    const { down, mid, up } = t.level.blocks;
    if (row >= down + mid + up) throw new Error(`internal: ToMe block ${row} at level ${level}, which has ${down + mid + up}`);
    const b = this.b;
    return { level: t.level, src: b.gather(t.src, b.int64(row), 0), dst: b.gather(t.dst, b.int64(row), 0) };
  }
}

/** Merge and unmerge for one block: `x` [B, N, C] is the block's input, the similarity metric. */
export function tokenMerging(b: Builder, x: Value, t: TomeBlock): { merge(v: Value): Value; unmerge(v: Value): Value } {
  const { tokens: N, src: na, merged: r } = t.level;
  const C = x.shape[2];
  if (x.shape[1] !== N || typeof C !== "number") throw new Error(`internal: ToMe at ${N} tokens on ${b.describe(x)}`);
  const idx = (v: Value) => b.unsqueeze(v, [2]);
  // [B, n] indices → [B, n, C], as gather/scatter along the tokens take them
  const wide = (v: Value) => b.op1("Expand", [idx(v), b.concat([b.op1("Shape", [v]), b.int64([C])], 0)]);
  const batchGather = (data: Value, at: Value) => b.op1("GatherND", [data, idx(at)], { batch_dims: 1 });

  // cosine similarity of each src token to each dst token; each src token's best dst
  const m = b.div(x, b.op1("Sqrt", [b.op1("ReduceSum", [b.mul(x, x), b.int64([-1])], { keepdims: 1 })]));
  const scores = b.matmul(b.gather(m, t.src, 1), b.transpose(b.gather(m, t.dst, 1), [0, 2, 1])); // [B, src, dst]
  const [best, bestDst] = b.op("TopK", [scores, b.int64([1])], { axis: -1, largest: 1, sorted: 1 }); // [B, src, 1]
  // the `merged` src tokens most similar to their best dst merge into it, the rest stay
  const order = b.op("TopK", [b.op1("Squeeze", [best!, b.int64([2])]), b.int64([na])], { axis: -1, largest: 1, sorted: 1 })[1]!; // [B, src]
  const srcMerged = b.slice(order, [1], [0], [r]); // [B, r]
  const srcKept = b.slice(order, [1], [r], [na]); // [B, src − r]
  const into = batchGather(b.op1("Squeeze", [bestDst!, b.int64([2])]), srcMerged); // [B, r]: the dst each merges into
  const intoWide = wide(into);
  // tokens per dst after merging (itself included), for the mean
  const ones = (shape: Value) => b.op1("Expand", [b.float(1), shape]);
  const dstShape = b.concat([b.slice(b.op1("Shape", [x]), [0], [0], [1]), b.int64([t.level.dst])], 0);
  const count = b.op1("ScatterElements", [ones(dstShape), into, ones(b.op1("Shape", [into]))], { axis: 1, reduction: "add" }); // [B, dst]

  return {
    merge: (v) =>
      b.scope("tome_merge", () => {
        const src = b.gather(v, t.src, 1);
        const dst = b.gather(v, t.dst, 1);
        const sum = b.op1("ScatterElements", [dst, intoWide, batchGather(src, srcMerged)], { axis: 1, reduction: "add" });
        return b.concat([batchGather(src, srcKept), b.div(sum, b.unsqueeze(count, [2]))], 1); // [B, N − r, C]
      }),
    unmerge: (y) =>
      b.scope("tome_unmerge", () => {
        const k = na - r;
        const kept = b.slice(y, [1], [0], [k]);
        const dst = b.slice(y, [1], [k], [N - r]);
        // every token's value and where it goes: dst tokens, kept src tokens, merged src tokens (their dst's value)
        const all = b.concat([dst, kept, batchGather(dst, into)], 1); // [B, N, C]
        const dstPos = b.op1("Expand", [b.unsqueeze(t.dst, [0]), dstShape]);
        const pos = b.concat([dstPos, b.gather(t.src, srcKept, 0), b.gather(t.src, srcMerged, 0)], 1); // [B, N]
        return b.op1("ScatterElements", [all, wide(pos), all], { axis: 1 });
      }),
  };
}
