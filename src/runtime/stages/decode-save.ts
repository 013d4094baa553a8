/**
 * Stage 4, decode and save: each image's latents through the VAE decoder (one at a time: bounded
 * memory), to 8-bit RGB as diffusers' VaeImageProcessor does, written as PNG with its generation
 * parameters in the AUTOMATIC1111 form, named `[runNNN-]NNNNN-<seed>.png` with the next free number
 * of the output folder (never overwriting), plus a grid of the run's images when asked.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { UserError } from "../../util/errors.js";
import { formatParameters, makeGrid, type RgbImage, samplerName, savePng, tensorToImages } from "../../image/image.js";
import type { Plan } from "../../plan/schema.js";
import { schedulerDefinition } from "../../schedulers/index.js";
import type { FloatTensor, GraphRunner } from "../graphs.js";
import type { RunSettings } from "../settings.js";
import type { LatentShape } from "./initial-latents.js";
import { needsTiling, runTiled, tilingGeometry, type VaeTiling } from "./vae-tiling.js";

/** Decoding in tiles: the tiling and the VAE's pixels per latent. */
export interface DecodeTiling extends VaeTiling {
  scaleFactor: number;
}

/**
 * One image's latents [1, C, h, w] (unscaled) → the decoder's output [1, 3, H, W] in [-1, 1] and its
 * RGB pixels; with `tiling`, latents larger than a tile are decoded tile by tile (see vae-tiling.ts).
 */
export async function decodeImage(vaeDecoder: GraphRunner, latents: Float32Array, shape: LatentShape, scalingFactor: number, tiling: DecodeTiling | null = null): Promise<{ decoded: Float32Array; image: RgbImage }> {
  const inv = 1 / scalingFactor;
  const z: FloatTensor = { data: Float32Array.from(latents, (x) => Math.fround(x * inv)), dims: [1, shape.channels, shape.height, shape.width] };
  const decode = async (t: FloatTensor) => (await vaeDecoder.run({ latent_sample: t })).sample!;
  const g = tiling ? tilingGeometry(tiling, tiling.scaleFactor, "decode") : null;
  const out = g && needsTiling(shape.height, shape.width, g) ? await runTiled(decode, z, g) : await decode(z);
  const [, , H, W] = out.dims as [number, number, number, number];
  for (let i = 0; i < out.data.length; i++)
    if (!Number.isFinite(out.data[i]!))
      throw new UserError({
        message: "the VAE decoder returned NaN or Infinity for this image, so it is not written",
        subject: "vae_decoder",
        hint: "on CUDA with fp16 the SD 1.x VAE can overflow: set runtime.precision: fp32 (or use an fp16-fixed VAE)",
      });
  const rgb = tensorToImages(out.data, [1, 3, H, W])[0]!;
  return { decoded: out.data, image: { width: W, height: H, data: rgb } };
}

export interface DecodeAndSaveOptions {
  shape: LatentShape;
  scalingFactor: number;
  /** Output folder (created when missing). */
  dir: string;
  /** In the file names. */
  seed: number;
  /** watch --run numbers its runs: files get a `runNNN-` prefix. */
  runIndex?: number;
  /** Also save a grid of all images (when there is more than one); its `parameters` are every image's, in order, a blank line apart. */
  grid: boolean;
  /** The `parameters` text of image i (see `imageParameters`). */
  parameters: (index: number) => string;
  /** Decode in tiles (bounded memory for large images); null or absent: the whole image at once. */
  tiling?: DecodeTiling | null;
  /** Sees each image's decoder output [1, 3, H, W] (tests, debugging). */
  onDecoded?: (index: number, decoded: Float32Array) => void;
}

/** Decode every image of `latents` [images, C, h, w] and write them; returns the files written (images, then the grid). */
export async function decodeAndSave(vaeDecoder: GraphRunner, latents: Float32Array, o: DecodeAndSaveOptions): Promise<string[]> {
  const { images: count, channels, height, width } = o.shape;
  const per = channels * height * width;
  const prefix = o.runIndex !== undefined ? `run${String(o.runIndex).padStart(3, "0")}-` : "";
  const first = nextImageIndex(o.dir);
  const outputs: string[] = [];
  const images: RgbImage[] = [];
  const params: string[] = [];
  for (let i = 0; i < count; i++) {
    const { decoded, image } = await decodeImage(vaeDecoder, latents.subarray(i * per, (i + 1) * per), o.shape, o.scalingFactor, o.tiling ?? null);
    o.onDecoded?.(i, decoded);
    const file = path.join(o.dir, `${prefix}${String(first + i).padStart(5, "0")}-${o.seed}.png`);
    params.push(o.parameters(i));
    await savePng(file, image.data, image.width, image.height, { parameters: params[i]! });
    outputs.push(file);
    images.push(image);
  }
  if (o.grid && images.length > 1) {
    const g = makeGrid(images);
    const file = path.join(o.dir, `${prefix}grid-${String(first).padStart(5, "0")}.png`);
    await savePng(file, g.data, g.width, g.height, { parameters: params.join("\n\n") });
    outputs.push(file);
  }
  return outputs;
}

/** The next free image number in an output folder (files are never overwritten). */
export function nextImageIndex(dir: string): number {
  if (!fs.existsSync(dir)) return 0;
  let n = 0;
  for (const f of fs.readdirSync(dir)) {
    const m = /^(?:run\d+-)?(\d{5})-/.exec(f);
    if (m) n = Math.max(n, Number(m[1]) + 1);
  }
  return n;
}

/** "DeepCache: interval 3, branch 0" (or "full steps 0 1 5 …", "layer 1"), for a run that used it. */
function deepCacheParameter(plan: Plan, s: RunSettings): Record<string, string> {
  const d = s.deepcache;
  if (!d || !plan.deepcache) return {};
  const when = d.fullSteps ? `full steps ${d.fullSteps.join(" ")}` : `interval ${d.interval}`;
  return { DeepCache: `${when}, branch ${plan.deepcache.branch}${plan.deepcache.layer !== null ? `, layer ${plan.deepcache.layer}` : ""}` };
}

/** AUTOMATIC1111's "Token merging ratio", and sdc's other ToMe settings, for a run whose U-Net merges tokens. */
function tomeParameters(plan: Plan, s: RunSettings): Record<string, string | number> {
  const t = plan.tome;
  if (!t) return {};
  const random = s.tome?.random ?? true;
  return { "Token merging ratio": t.ratio, ToMe: `max_downsample ${t.maxDownsample}, cells ${t.sx}x${t.sy}, ${random ? "random" : "top-left"} dst` };
}

/** The `parameters` text (AUTOMATIC1111's form) of image `index` of a run of `plan` with settings `s`. */
export function imageParameters(plan: Plan, s: RunSettings, index: number, o: { steps?: number } = {}): string {
  const total = s.prompts.length * s.batch;
  const p = Math.floor(index / s.batch);
  const cfg = s.guidanceScale > 1;
  return formatParameters({
    prompt: s.prompts[p]!,
    negativePrompt: cfg ? s.negativePrompts[s.negativePrompts.length === 1 ? 0 : p] : undefined,
    steps: o.steps ?? plan.scheduler.steps,
    sampler: samplerName(schedulerDefinition(plan.scheduler.className).shortName, { karras: plan.scheduler.config.use_karras_sigmas === true }),
    cfgScale: s.guidanceScale,
    seed: s.latents ? "from latents file" : s.seed,
    width: s.width,
    height: s.height,
    modelHash: plan.model.hash,
    modelName: plan.model.name,
    denoisingStrength: s.initImage !== null ? s.strength : undefined,
    extra: { ...(total > 1 ? { "Batch size": total, "Batch pos": index } : {}), ...(s.guidanceRescale > 0 ? { "CFG rescale": s.guidanceRescale } : {}), ...deepCacheParameter(plan, s), ...tomeParameters(plan, s), Generator: "sdc (PyTorch CPU)" },
  });
}
