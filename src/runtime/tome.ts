/**
 * Token merging's random part (plan.tome, src/models/tome.ts): for every U-Net call, each merging
 * transformer block gets its own split of the token grid into dst tokens (one per sx × sy cell) and
 * src tokens (the rest), fed as the inputs `tome_src_<ds>` / `tome_dst_<ds>`.
 *
 * As tomesd: the dst token of each whole cell is drawn with torch.randint(sx·sy) from a generator (a
 * TorchGenerator of its own, seeded with the run's seed, so the latents' noise is what it is without
 * ToMe), block after block in the order the U-Net runs them (down, mid, up); rows and columns beyond
 * the whole cells are src tokens. With `random` off, or a batch of odd size (a guided batch is
 * [negative; positive], so both halves share a split; tomesd turns randomness off otherwise), every
 * cell's dst is its top-left token and nothing is drawn.
 */
import type { Plan, TomeSpecT } from "../plan/schema.js";
import { UserError } from "../util/errors.js";
import type { Feed } from "./graphs.js";
import type { LatentShape } from "./stages/initial-latents.js";
import { TorchGenerator } from "./rng.js";

export interface TomeSettings {
  /** Draw each cell's dst token (false: the top-left one). */
  random: boolean;
}

type Level = TomeSpecT["levels"][number];

/**
 * The split of an h × w token grid given each whole cell's choice (`choice[i·wsx + j]` in
 * [0, sx·sy), row-major within the cell; null: all 0): dst and src token indices, each increasing.
 */
export function tomeSplit(h: number, w: number, sx: number, sy: number, choice: ArrayLike<number> | null): { dst: Int32Array; src: Int32Array } {
  const hsy = Math.floor(h / sy);
  const wsx = Math.floor(w / sx);
  const isDst = new Uint8Array(h * w);
  for (let i = 0; i < hsy; i++)
    for (let j = 0; j < wsx; j++) {
      const c = choice ? choice[i * wsx + j]! : 0;
      if (!(Number.isInteger(c) && c >= 0 && c < sx * sy)) throw new Error(`internal: ToMe cell choice ${c} outside [0, ${sx * sy})`);
      isDst[(i * sy + Math.floor(c / sx)) * w + j * sx + (c % sx)] = 1;
    }
  const dst = new Int32Array(hsy * wsx);
  const src = new Int32Array(h * w - dst.length);
  let d = 0;
  let s = 0;
  for (let t = 0; t < h * w; t++) {
    if (isDst[t]) dst[d++] = t;
    else src[s++] = t;
  }
  return { dst, src };
}

/** The run's ToMe settings against the plan: the U-Net must be compiled with ToMe for this latent size. */
export function checkTome(plan: Plan, settings: TomeSettings | null, shape: Pick<LatentShape, "height" | "width">, pixels: number): void {
  const t = plan.tome;
  if (settings && !t)
    throw new UserError({
      message: "sample.tome is set but this compiled folder's U-Net does not merge tokens",
      subject: "sample.tome",
      hint: "compile the pipeline with sample.tome in it (`sdc run` on the pipeline file does), or leave sample.tome out",
    });
  if (t && (t.latentHeight !== shape.height || t.latentWidth !== shape.width))
    throw new UserError({
      message: `this compiled U-Net merges tokens (sample.tome) for ${t.latentWidth * pixels}×${t.latentHeight * pixels} images, not ${shape.width * pixels}×${shape.height * pixels}`,
      subject: "sample.width",
      hint: "token merging fixes the image size at compile time: run the pipeline file with the size you want (it recompiles the U-Net), or leave sample.tome out",
    });
}

/**
 * The ToMe inputs of each U-Net call, drawn as tomesd draws them. `next(batch)` gives one call's feeds
 * (every level's [blocks, src] and [blocks, dst] tables).
 */
export function tomeFeeds(t: TomeSpecT, seed: number, settings: TomeSettings): { next(batch: number): Record<string, Feed> } {
  const generator = new TorchGenerator(seed);
  // the blocks in the order the U-Net runs them: every level's down blocks, the mid block, then the up blocks from the deepest level
  const byLevel = [...t.levels].sort((a, b) => a.level - b.level);
  const order: { level: Level; row: number }[] = [];
  const rows = (l: Level, first: number, n: number) => {
    for (let r = 0; r < n; r++) order.push({ level: l, row: first + r });
  };
  for (const l of byLevel) rows(l, 0, l.blocks.down);
  for (const l of byLevel) rows(l, l.blocks.down, l.blocks.mid);
  for (const l of [...byLevel].reverse()) rows(l, l.blocks.down + l.blocks.mid, l.blocks.up);
  return {
    next(batch) {
      const random = settings.random && batch % 2 === 0;
      const tables = new Map(byLevel.map((l) => {
        const n = l.blocks.down + l.blocks.mid + l.blocks.up;
        return [l, { src: new Int32Array(n * l.src), dst: new Int32Array(n * l.dst) }] as const;
      }));
      for (const { level: l, row } of order) {
        const cells = Math.floor(l.height / t.sy) * Math.floor(l.width / t.sx);
        const split = tomeSplit(l.height, l.width, t.sx, t.sy, random ? generator.randint(0, t.sx * t.sy, cells) : null);
        const tab = tables.get(l)!;
        tab.src.set(split.src, row * l.src);
        tab.dst.set(split.dst, row * l.dst);
      }
      const feeds: Record<string, Feed> = {};
      for (const [l, tab] of tables) {
        const n = l.blocks.down + l.blocks.mid + l.blocks.up;
        feeds[l.srcInput] = { data: tab.src, dims: [n, l.src] };
        feeds[l.dstInput] = { data: tab.dst, dims: [n, l.dst] };
      }
      return feeds;
    },
  };
}
