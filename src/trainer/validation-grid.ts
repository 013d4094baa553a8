/**
 * The picture a validation step leaves: the sample images in one grid (src/image's makeGrid), a
 * header naming the step, and under each image its prompt and seed in the bitmap font of
 * ./font.ts. The PNG carries the prompts and seeds twice: in the `parameters` text the popular UIs
 * show (AUTOMATIC1111 format: the distinct prompts one per line, then the sampling settings, the
 * training step and the seeds in grid order) and, exactly, as JSON in an `sdc validation` text.
 */
import { formatParameters, makeGrid, savePng, type RgbImage } from "../image/image.js";
import { fail } from "../util/errors.js";
import { Canvas, type Rgb } from "./canvas.js";
import { LINE_HEIGHT, textWidth, wrapText } from "./font.js";

export interface ValidationSample {
  image: RgbImage;
  prompt: string;
  negativePrompt?: string;
  seed: number | bigint | string;
}

export interface ValidationGridOptions {
  /** The optimizer step the samples were made at. */
  step: number;
  /** Sampling settings, for the `parameters` text. */
  steps: number;
  /** UI sampler name (src/image's samplerName). */
  sampler: string;
  cfgScale: number;
  modelName?: string;
  /** Columns (default: as square as possible, as makeGrid). */
  cols?: number;
  /** Header and prompt captions in the picture (default true); the text chunks are written either way. */
  captions?: boolean;
  /** Header text (default "step N"). */
  title?: string;
}

/** The text key of the exact JSON record: {step, samples: [{prompt, negative_prompt, seed}]}. */
export const VALIDATION_TEXT_KEY = "sdc validation";

const INK: Rgb = [30, 30, 30];
const PAPER: Rgb = [255, 255, 255];
const MUTED: Rgb = [110, 110, 110];

/** The grid picture (see the module comment). */
export function renderValidationGrid(samples: readonly ValidationSample[], opts: ValidationGridOptions): RgbImage {
  if (samples.length === 0) fail("no validation images for a grid", { subject: `validation step ${opts.step}` });
  if (opts.captions === false) return makeGrid(samples.map((s) => s.image), opts.cols);
  const w = samples[0]!.image.width;
  const scale = w >= 384 ? 2 : 1;
  const pad = 4 * scale;
  const lineH = (LINE_HEIGHT + 2) * scale;
  const captionH = pad + 3 * lineH + pad;
  // each image with its caption below, then the grid of those
  const cells = samples.map((s) => {
    if (s.image.width !== w) fail(`validation images must share one size: ${w} and ${s.image.width} wide`, { subject: `validation step ${opts.step}` });
    const cell = new Canvas(w, s.image.height + captionH, PAPER);
    cell.data.set(s.image.data, 0);
    const y0 = s.image.height + pad;
    const lines = wrapText(s.prompt, w - 2 * pad, scale, 2);
    lines.forEach((l, i) => cell.text(l, pad, y0 + i * lineH, INK, { scale }));
    cell.text(`seed ${String(s.seed)}`, pad, y0 + 2 * lineH, MUTED, { scale });
    // a hairline closing the caption, so it reads as belonging to the image above it
    cell.fillRect(0, cell.height - 1, w, 1, [210, 210, 210]);
    return cell;
  });
  const grid = makeGrid(cells, opts.cols);
  const headerH = 2 * pad + lineH;
  const out = new Canvas(grid.width, grid.height + headerH, PAPER);
  out.data.set(grid.data, grid.width * headerH * 3);
  const title = opts.title ?? `step ${opts.step}`;
  out.text(title, Math.max(pad, (grid.width - textWidth(title, scale)) / 2), pad + scale, INK, { scale });
  return out;
}

/** The PNG text chunks of a validation grid. */
export function validationGridText(samples: readonly ValidationSample[], opts: ValidationGridOptions, size: { width: number; height: number }): Record<string, string> {
  const prompts = [...new Set(samples.map((s) => s.prompt))];
  const negatives = [...new Set(samples.map((s) => s.negativePrompt ?? ""))];
  const first = samples[0]!;
  const parameters = formatParameters({
    prompt: prompts.join("\n"),
    negativePrompt: negatives.length === 1 ? negatives[0] : undefined,
    steps: opts.steps,
    sampler: opts.sampler,
    cfgScale: opts.cfgScale,
    seed: first.seed,
    width: first.image.width,
    height: first.image.height,
    modelName: opts.modelName,
    extra: {
      "Training step": opts.step,
      Seeds: samples.map((s) => String(s.seed)).join(" "),
      Grid: `${size.width}x${size.height}`,
    },
  });
  const record = {
    step: opts.step,
    samples: samples.map((s) => ({ prompt: s.prompt, negative_prompt: s.negativePrompt ?? "", seed: typeof s.seed === "bigint" ? s.seed.toString() : s.seed })),
  };
  return { parameters, [VALIDATION_TEXT_KEY]: JSON.stringify(record) };
}

/** Render and write the grid PNG atomically, with its text chunks. */
export async function saveValidationGrid(file: string, samples: readonly ValidationSample[], opts: ValidationGridOptions): Promise<RgbImage> {
  const grid = renderValidationGrid(samples, opts);
  await savePng(file, grid.data, grid.width, grid.height, validationGridText(samples, opts, grid));
  return grid;
}
