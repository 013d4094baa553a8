/**
 * Tiled VAE decoding and encoding, as diffusers' AutoencoderKL.tiled_decode / tiled_encode (v0.24)
 * do: the input is cut into overlapping square tiles (the last row and column may be smaller), each
 * runs through the graph on its own, so memory is bounded by one tile's activations whatever the
 * image size; each output tile is blended linearly into the one above and the one to its left over
 * `overlap` of a tile, then cropped, and the crops are laid side by side.
 *
 * Sizes follow diffusers exactly. With `tile` pixels, f pixels per latent and overlap o:
 * latent tile t = ⌊tile / f⌋; decoding steps ⌊t·(1 − o)⌋ latents and blends ⌊tile·o⌋ pixels;
 * encoding steps ⌊tile·(1 − o)⌋ pixels and blends ⌊t·o⌋ latents; each tile keeps (out tile −
 * blend) of its output. Only sizes for which one step of input is exactly one kept crop of output
 * are accepted (diffusers would otherwise return an image of another size).
 */
import { UserError } from "../../util/errors.js";
import type { FloatTensor } from "../graphs.js";

export interface VaeTiling {
  /** Tile side in pixels (diffusers' tile_sample_min_size: the VAE's sample_size). */
  tile: number;
  /** Overlap of neighbouring tiles, a fraction of a tile (diffusers' tile_overlap_factor, 0.25). */
  overlap: number;
}

/** The tile geometry of one direction: input tile side, step, blend width and kept crop, in input / output units. */
interface Geometry {
  inTile: number;
  step: number;
  blend: number;
  keep: number;
  /** Output pixels per input pixel (f for decoding, 1/f for encoding). */
  scale: number;
}

const where = "sample.vae_tiling";

/** The geometry of `t` for the decoder (latents in) or the encoder (pixels in) of a VAE with factor f; refuses sizes diffusers would get wrong. */
export function tilingGeometry(t: VaeTiling, f: number, dir: "decode" | "encode"): Geometry {
  if (!(Number.isInteger(t.tile) && t.tile >= f && t.tile % f === 0))
    throw new UserError({ message: `tile ${t.tile} is not a positive multiple of the VAE's ${f} pixels per latent`, subject: `${where}.tile`, hint: `use a multiple of ${f}, e.g. 512` });
  if (!(t.overlap >= 0 && t.overlap < 1)) throw new UserError({ message: `overlap ${t.overlap} is not in [0, 1)`, subject: `${where}.overlap`, hint: "use 0.25, diffusers' value" });
  const latentTile = Math.trunc(t.tile / f);
  const g: Geometry =
    dir === "decode"
      ? { inTile: latentTile, step: Math.trunc(latentTile * (1 - t.overlap)), blend: Math.trunc(t.tile * t.overlap), keep: 0, scale: f }
      : { inTile: t.tile, step: Math.trunc(t.tile * (1 - t.overlap)), blend: Math.trunc(latentTile * t.overlap), keep: 0, scale: 1 / f };
  g.keep = Math.round(g.inTile * g.scale) - g.blend;
  if (g.step < 1 || g.step * g.scale !== g.keep)
    throw new UserError({
      message: `tile ${t.tile} with overlap ${t.overlap} does not tile evenly: a step of ${g.step} ${dir === "decode" ? "latents" : "pixels"} is not the ${g.keep} ${dir === "decode" ? "pixels" : "latents"} each tile keeps`,
      subject: where,
      hint: `use overlap 0.25 with a tile that is a multiple of ${4 * f} pixels (e.g. 512), or overlap 0.5 with a multiple of ${2 * f}`,
    });
  return g;
}

/** Whether an input of this size is tiled at all (diffusers: when either side exceeds the input tile). */
export function needsTiling(height: number, width: number, g: Pick<Geometry, "inTile">): boolean {
  return height > g.inTile || width > g.inTile;
}

/**
 * Run `graph` over `x` [B, C, H, W] tile by tile and blend: the output is what the graph would give
 * for the whole input, up to the seams (diffusers' blend). Rows are processed in order and only the
 * previous row's tiles are kept, so memory holds two rows of output tiles and the result.
 */
export async function runTiled(graph: (tile: FloatTensor) => Promise<FloatTensor>, x: FloatTensor, g: Geometry): Promise<FloatTensor> {
  const [B, C, H, W] = x.dims as [number, number, number, number];
  const outH = Math.round(H * g.scale);
  const outW = Math.round(W * g.scale);
  let out: Float32Array | null = null;
  let outC = 0;
  let above: FloatTensor[] = [];
  for (let i = 0, ti = 0; i < H; i += g.step, ti++) {
    const row: FloatTensor[] = [];
    for (let j = 0, tj = 0; j < W; j += g.step, tj++) {
      const tile = await graph(crop(x, i, j, Math.min(g.inTile, H - i), Math.min(g.inTile, W - j)));
      if (ti > 0) blendV(above[tj]!, tile, g.blend);
      if (tj > 0) blendH(row[tj - 1]!, tile, g.blend);
      row.push(tile);
      const [tb, tc, th, tw] = tile.dims as [number, number, number, number];
      if (!out) {
        outC = tc;
        out = new Float32Array(B * outC * outH * outW);
      }
      if (tb !== B || tc !== outC) throw new Error(`tile output ${tile.dims.join("×")} does not match the first tile's batch ${B} and ${outC} channels`);
      // keep the tile's top-left keep × keep, placed at its place in the output
      const y0 = ti * g.keep;
      const x0 = tj * g.keep;
      const kh = Math.min(g.keep, th, outH - y0);
      const kw = Math.min(g.keep, tw, outW - x0);
      for (let b = 0; b < B; b++)
        for (let c = 0; c < tc; c++)
          for (let y = 0; y < kh; y++) {
            const src = ((b * tc + c) * th + y) * tw;
            out.set(tile.data.subarray(src, src + kw), ((b * outC + c) * outH + y0 + y) * outW + x0);
          }
    }
    above = row;
  }
  return { data: out!, dims: [B, outC, outH, outW] };
}

/** x[:, :, y0:y0+h, x0:x0+w] */
function crop(x: FloatTensor, y0: number, x0: number, h: number, w: number): FloatTensor {
  const [B, C, H, W] = x.dims as [number, number, number, number];
  const data = new Float32Array(B * C * h * w);
  for (let bc = 0; bc < B * C; bc++)
    for (let y = 0; y < h; y++) {
      const src = (bc * H + y0 + y) * W + x0;
      data.set(x.data.subarray(src, src + w), (bc * h + y) * w);
    }
  return { data, dims: [B, C, h, w] };
}

const f32 = Math.fround;

/** diffusers' blend_v: b's first rows fade in from a's last rows, in place (float32 arithmetic as torch's). */
function blendV(a: FloatTensor, b: FloatTensor, extent: number): void {
  const [B, C, ah, w] = a.dims as [number, number, number, number];
  const bh = b.dims[2]!;
  const e = Math.min(ah, bh, extent);
  for (let y = 0; y < e; y++) {
    const wa = f32(1 - y / e);
    const wb = f32(y / e);
    for (let bc = 0; bc < B * C; bc++) {
      const ra = (bc * ah + ah - e + y) * w;
      const rb = (bc * bh + y) * w;
      for (let x = 0; x < w; x++) b.data[rb + x] = f32(f32(a.data[ra + x]! * wa) + f32(b.data[rb + x]! * wb));
    }
  }
}

/** diffusers' blend_h: b's first columns fade in from a's last columns, in place. */
function blendH(a: FloatTensor, b: FloatTensor, extent: number): void {
  const [B, C, h, aw] = a.dims as [number, number, number, number];
  const bw = b.dims[3]!;
  const e = Math.min(aw, bw, extent);
  for (let x = 0; x < e; x++) {
    const wa = f32(1 - x / e);
    const wb = f32(x / e);
    for (let bc = 0; bc < B * C; bc++)
      for (let y = 0; y < h; y++) {
        const ia = (bc * h + y) * aw + aw - e + x;
        const ib = (bc * h + y) * bw + x;
        b.data[ib] = f32(f32(a.data[ia]! * wa) + f32(b.data[ib]! * wb));
      }
  }
}
