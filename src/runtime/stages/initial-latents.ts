/**
 * Stage 2, initial latents: seeded noise from the PyTorch-compatible CPU generator, a latents file,
 * or (img2img) the init image through the VAE encoder, sampled from its posterior, scaled, and
 * noised to the schedule's first timestep, as StableDiffusionImg2ImgPipeline.prepare_latents
 * (v0.24) does. Noise is scaled by the scheduler's init_noise_sigma; the generator is left where
 * diffusers leaves its own, so the denoising loop's noise draws follow.
 */
import { imageToTensor, loadImage } from "../../image/image.js";
import { SafetensorsFile } from "../../models/weights/safetensors.js";
import { UserError } from "../../util/errors.js";
import type { GraphRunner } from "../graphs.js";
import type { TorchGenerator } from "../rng.js";
import type { Schedule } from "./schedule.js";
import { needsTiling, runTiled, tilingGeometry, type VaeTiling } from "./vae-tiling.js";

/** Latents of a run: [images, channels, height, width], height and width in latent pixels. */
export interface LatentShape {
  images: number;
  channels: number;
  height: number;
  width: number;
}

export type LatentSource =
  | { kind: "noise" }
  /** A .safetensors file with a tensor named "latents" (or a single tensor) of the run's shape, before init_noise_sigma. */
  | { kind: "file"; file: string }
  /** img2img: an image file, resized to width × height pixels and encoded by the VAE encoder. */
  | { kind: "image"; file: string; vaeEncoder: GraphRunner; scalingFactor: number; width: number; height: number; tiling?: (VaeTiling & { scaleFactor: number }) | null };

export interface InitialLatentsOptions {
  shape: LatentShape;
  schedule: Schedule;
  generator: TorchGenerator;
}

export async function initialLatents(source: LatentSource, o: InitialLatentsOptions): Promise<Float32Array> {
  const { images, channels, height, width } = o.shape;
  if (source.kind === "image") {
    if (o.schedule.startTimestep === null) throw new Error("img2img needs a schedule prepared with a strength");
    return img2imgLatents(source, o.shape, o.schedule, o.generator);
  }
  const init = source.kind === "file" ? readLatents(source.file, [images, channels, height, width]) : o.generator.randn(images * channels * height * width);
  const sigma = o.schedule.scheduler.initNoiseSigma;
  return Float32Array.from(init, (x) => Math.fround(x * sigma));
}

/** A latents file, checked against the run's shape. */
export function readLatents(file: string, shape: number[]): Float32Array {
  const st = SafetensorsFile.open(file);
  const name = st.tensors.has("latents") ? "latents" : st.tensors.size === 1 ? [...st.tensors.keys()][0]! : null;
  if (!name) throw new UserError({ message: `has ${st.tensors.size} tensors and none is named "latents"`, subject: file, hint: "store the initial latents as a tensor named latents" });
  const info = st.tensors.get(name)!;
  const want = shape.join("×");
  if (info.shape.join("×") !== want)
    throw new UserError({ message: `tensor ${name} has shape ${info.shape.join("×")}, the run needs ${want} ([images, latent channels, height/f, width/f])`, subject: file, hint: "match sample.batch × prompts, and width/height divided by the VAE factor" });
  return st.readFloat32(name);
}

/**
 * Encode the image, draw from the posterior with the generator, scale, repeat over the images,
 * then noise to the first timestep with a second draw.
 */
async function img2imgLatents(source: Extract<LatentSource, { kind: "image" }>, shape: LatentShape, schedule: Schedule, gen: TorchGenerator): Promise<Float32Array> {
  const image = await loadImage(source.file, { width: source.width, height: source.height, resize: "stretch" });
  const x = imageToTensor(image);
  const encode = async (t: { data: Float32Array; dims: readonly number[] }) => (await source.vaeEncoder.run({ sample: t })).latent_parameters!;
  const g = source.tiling ? tilingGeometry(source.tiling, source.tiling.scaleFactor, "encode") : null;
  const whole = { data: x.data, dims: x.shape };
  // tiled as diffusers' tiled_encode: the moments (mean, logvar) are blended, then sampled
  const params = (g && needsTiling(source.height, source.width, g) ? await runTiled(encode, whole, g) : await encode(whole)).data;
  const per = params.length / 2; // [1, 2C, h, w]: mean then logvar
  const eps = gen.randn(per);
  const f = Math.fround;
  const one = new Float32Array(per);
  for (let i = 0; i < per; i++) {
    const logvar = Math.min(Math.max(params[per + i]!, -30), 20);
    const std = f(Math.exp(f(0.5 * logvar)));
    one[i] = f(f(params[i]! + f(std * eps[i]!)) * source.scalingFactor);
  }
  const init = new Float32Array(shape.images * per);
  for (let b = 0; b < shape.images; b++) init.set(one, b * per);
  const noise = gen.randn(shape.images * per);
  return schedule.scheduler.addNoise(init, noise, schedule.startTimestep!);
}
