/**
 * A procedural, seeded dataset: coloured shapes on coloured backgrounds, with captions such as
 * "red circle on blue background" in a few phrasings. The same options and seed give the same
 * shapes, placements and captions (pixels can differ in the last anti-aliasing step where a
 * platform's Math.sin/cos differs): for tests, examples and small from-scratch runs.
 *
 * Each image draws (from the torch-compatible generator, in this order): shape, shape colour,
 * background colour (never the shape's), size (a radius of 25–40% of the shorter side), centre
 * (the whole shape inside the image), rotation, and caption phrasing. Edges are anti-aliased by
 * supersampling. Written as PNG, with `metadata.jsonl` (imagefolder: file_name, text, and the
 * shape, colour and background columns) or same-named `.txt` caption files (kohya).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { DataRng } from "./rng.js";

export const SHAPES = ["circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "ring"] as const;
export type ShapeName = (typeof SHAPES)[number];

export const COLOURS: Record<string, readonly [number, number, number]> = {
  red: [220, 40, 40],
  green: [40, 170, 70],
  blue: [40, 80, 220],
  yellow: [240, 210, 40],
  orange: [245, 140, 30],
  purple: [140, 60, 180],
  white: [245, 245, 245],
  black: [20, 20, 20],
};

const CAPTIONS = [
  (c: string, s: string, b: string) => `${c} ${s} on ${b} background`,
  (c: string, s: string, b: string) => `${article(c)} ${c} ${s} on ${article(b)} ${b} background`,
  (c: string, s: string, b: string) => `${c} ${s}, ${b} background`,
  (c: string, s: string, b: string) => `a picture of ${article(c)} ${c} ${s} on ${b}`,
];

function article(word: string): string {
  return /^[aeiou]/.test(word) ? "an" : "a";
}

export interface ShapesOptions {
  /** Output folder (created). */
  dir: string;
  /** Number of images. */
  count: number;
  /** Image width and height in pixels (default 64); `width`/`height` override one side. */
  size?: number;
  width?: number;
  height?: number;
  seed?: number | bigint;
  /** imagefolder: metadata.jsonl (default); kohya: a .txt caption next to each image. */
  layout?: "imagefolder" | "kohya";
  /** Shapes to draw from (default all). */
  shapes?: readonly ShapeName[];
}

export interface ShapeRecord {
  file_name: string;
  text: string;
  shape: ShapeName;
  colour: string;
  background: string;
}

/** Write the dataset; returns one record per image (what metadata.jsonl holds). */
export async function makeShapes(opts: ShapesOptions): Promise<ShapeRecord[]> {
  const width = opts.width ?? opts.size ?? 64;
  const height = opts.height ?? opts.size ?? 64;
  if (!Number.isInteger(opts.count) || opts.count < 0) throw new RangeError(`count must be a non-negative integer, got ${opts.count}`);
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 8 || height < 8) throw new RangeError(`image sides must be integers of at least 8, got ${width}x${height}`);
  const shapes = opts.shapes ?? SHAPES;
  if (shapes.length === 0 || shapes.some((s) => !SHAPES.includes(s))) throw new RangeError(`shapes must be some of ${SHAPES.join(", ")}`);
  const colours = Object.keys(COLOURS);
  const rng = new DataRng(opts.seed ?? 0);
  fs.mkdirSync(opts.dir, { recursive: true });
  const digits = Math.max(5, String(Math.max(0, opts.count - 1)).length);
  const records: ShapeRecord[] = [];
  for (let i = 0; i < opts.count; i++) {
    const shape = shapes[rng.below(shapes.length)]!;
    const ci = rng.below(colours.length);
    let bi = rng.below(colours.length - 1);
    if (bi >= ci) bi++;
    const short = Math.min(width, height);
    const radius = short * (0.25 + 0.15 * rng.uniform());
    const cx = radius + rng.uniform() * (width - 2 * radius);
    const cy = radius + rng.uniform() * (height - 2 * radius);
    const angle = rng.uniform() * 2 * Math.PI;
    const phrase = CAPTIONS[rng.below(CAPTIONS.length)]!;
    const colour = colours[ci]!;
    const background = colours[bi]!;
    const rgb = render(width, height, shape, { cx, cy, radius, angle }, COLOURS[colour]!, COLOURS[background]!);
    const name = `${String(i).padStart(digits, "0")}.png`;
    const png = await sharp(rgb, { raw: { width, height, channels: 3 } }).png().toBuffer();
    fs.writeFileSync(path.join(opts.dir, name), png);
    const rec: ShapeRecord = { file_name: name, text: phrase(colour, shape, background), shape, colour, background };
    if (opts.layout === "kohya") fs.writeFileSync(path.join(opts.dir, name.replace(/\.png$/, ".txt")), `${rec.text}\n`);
    records.push(rec);
  }
  if (opts.layout !== "kohya") fs.writeFileSync(path.join(opts.dir, "metadata.jsonl"), records.map((r) => `${JSON.stringify(r)}\n`).join(""));
  return records;
}

interface Placement {
  cx: number;
  cy: number;
  radius: number;
  angle: number;
}

function polygon(n: number, inner?: number): [number, number][] {
  const pts: [number, number][] = [];
  const k = inner === undefined ? n : 2 * n;
  for (let i = 0; i < k; i++) {
    const a = -Math.PI / 2 + (i * 2 * Math.PI) / k;
    const r = inner !== undefined && i % 2 === 1 ? inner : 1;
    pts.push([r * Math.cos(a), r * Math.sin(a)]);
  }
  return pts;
}

const POLYGONS: Partial<Record<ShapeName, [number, number][]>> = {
  triangle: polygon(3),
  star: polygon(5, 0.45),
  hexagon: polygon(6),
};

function insidePolygon(x: number, y: number, pts: [number, number][]): boolean {
  let inside = false;
  for (let i = 0, j = pts.length - 1; i < pts.length; j = i++) {
    const [xi, yi] = pts[i]!;
    const [xj, yj] = pts[j]!;
    if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

/** Whether a point in shape coordinates (unit radius, unrotated) is inside the shape. */
function inside(shape: ShapeName, x: number, y: number): boolean {
  switch (shape) {
    case "circle":
      return x * x + y * y <= 1;
    case "ring": {
      const r2 = x * x + y * y;
      return r2 <= 1 && r2 >= 0.36;
    }
    case "square":
      return Math.abs(x) <= 0.75 && Math.abs(y) <= 0.75;
    case "diamond":
      return Math.abs(x) + Math.abs(y) <= 1;
    case "cross":
      return (Math.abs(x) <= 0.3 && Math.abs(y) <= 0.95) || (Math.abs(y) <= 0.3 && Math.abs(x) <= 0.95);
    default:
      return insidePolygon(x, y, POLYGONS[shape]!);
  }
}

function render(width: number, height: number, shape: ShapeName, p: Placement, fg: readonly number[], bg: readonly number[]): Uint8Array {
  const out = new Uint8Array(width * height * 3);
  const ss = Math.max(width, height) <= 128 ? 4 : 2;
  const cos = Math.cos(p.angle);
  const sin = Math.sin(p.angle);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let hits = 0;
      // only pixels near the shape need the samples
      const dx0 = x + 0.5 - p.cx;
      const dy0 = y + 0.5 - p.cy;
      if (dx0 * dx0 + dy0 * dy0 <= (p.radius + 1.5) * (p.radius + 1.5)) {
        for (let sy = 0; sy < ss; sy++) {
          for (let sx = 0; sx < ss; sx++) {
            const dx = (x + (sx + 0.5) / ss - p.cx) / p.radius;
            const dy = (y + (sy + 0.5) / ss - p.cy) / p.radius;
            if (inside(shape, cos * dx + sin * dy, -sin * dx + cos * dy)) hits++;
          }
        }
      }
      const a = hits / (ss * ss);
      const o = (y * width + x) * 3;
      for (let c = 0; c < 3; c++) out[o + c] = Math.round(fg[c]! * a + bg[c]! * (1 - a));
    }
  }
  return out;
}
