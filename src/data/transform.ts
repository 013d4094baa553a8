/**
 * Image decoding and the training transforms, through sharp (PNG, JPEG, WebP and what else libvips
 * reads).
 *
 * A training image is: decoded, turned upright by its EXIF orientation, composited on the
 * background colour when it has an alpha channel, converted to 8-bit sRGB; resized with sharp's
 * lanczos3 (sharp reduces large downscales by box filtering first, as it always does; JPEG
 * shrink-on-load is off so the result does not depend on the file format); then cropped to the
 * bucket, mirrored when the sample is flipped, and normalised: x / 255 then 2x − 1 in float32 (as
 * diffusers' VaeImageProcessor), laid out [3, H, W]. Crop, flip and normalisation happen here in
 * JavaScript, on exact pixel values, in that order (as torchvision's Resize → Crop → Flip).
 */
import sharp from "sharp";
import type { RgbImage } from "../image/image.js";
import type { CropBox, Size } from "./buckets.js";

export type Rgb = readonly [number, number, number];

export interface ImageInfo extends Size {
  /** The EXIF orientation (1 when absent); 5-8 swap width and height. */
  orientation: number;
  format: string;
}

/** Size (after EXIF orientation) and format from the file header; throws sharp's error on unreadable input. */
export async function readImageInfo(input: string | Buffer): Promise<ImageInfo> {
  const m = await sharp(input).metadata();
  if (!m.width || !m.height) throw new Error("the file holds no image size");
  const orientation = m.orientation ?? 1;
  const swap = orientation >= 5 && orientation <= 8;
  return { width: swap ? m.height : m.width, height: swap ? m.width : m.height, orientation, format: m.format ?? "unknown" };
}

/** `#rrggbb` → [r, g, b]. */
export function parseColour(hex: string): Rgb {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  if (!m) throw new RangeError(`not a #rrggbb colour: ${hex}`);
  return [parseInt(m[1]!, 16), parseInt(m[2]!, 16), parseInt(m[3]!, 16)];
}

export interface DecodeOptions {
  /** Colour transparent pixels are composited on (default white). */
  background?: Rgb;
  /** Resize to this size (default: keep the decoded size). */
  resize?: Size;
}

/** Decode to upright 8-bit RGB (alpha composited on the background), optionally resized. */
export async function decodeImage(input: string | Buffer, opts: DecodeOptions = {}): Promise<RgbImage> {
  const [r, g, b] = opts.background ?? [255, 255, 255];
  let s = sharp(input, { failOn: "warning" }).rotate().flatten({ background: { r, g, b } }).toColourspace("srgb");
  if (opts.resize) s = s.resize(opts.resize.width, opts.resize.height, { fit: "fill", kernel: "lanczos3", fastShrinkOnLoad: false });
  const { data, info } = await s.removeAlpha().raw({ depth: "uchar" }).toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new Error(`expected 3 colour channels after conversion, got ${info.channels}`);
  return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
}

/** Cut `crop` out of an RGB image, mirror it when `flip`, and normalise to [-1, 1] as [3, H, W]. */
export function cropFlipNormalize(image: RgbImage, crop: CropBox, flip: boolean, out?: Float32Array): Float32Array {
  const { left, top, width: w, height: h } = crop;
  if (left < 0 || top < 0 || left + w > image.width || top + h > image.height || w <= 0 || h <= 0)
    throw new RangeError(`crop ${w}x${h} at (${left}, ${top}) does not fit in a ${image.width}x${image.height} image`);
  const plane = w * h;
  const dst = out ?? new Float32Array(3 * plane);
  if (dst.length < 3 * plane) throw new RangeError(`output holds ${dst.length} values, needs ${3 * plane}`);
  const src = image.data;
  const fr = Math.fround;
  for (let y = 0; y < h; y++) {
    const row = ((top + y) * image.width + left) * 3;
    for (let x = 0; x < w; x++) {
      const sx = flip ? w - 1 - x : x;
      const p = row + sx * 3;
      const o = y * w + x;
      dst[o] = fr(2 * fr(src[p]! / 255) - 1);
      dst[plane + o] = fr(2 * fr(src[p + 1]! / 255) - 1);
      dst[2 * plane + o] = fr(2 * fr(src[p + 2]! / 255) - 1);
    }
  }
  return dst;
}

export interface TransformParams {
  background: Rgb;
  /** The size the upright image is resized to (equal to its own size: no resampling). */
  resize: Size;
  crop: CropBox;
  flip: boolean;
}

/** The whole transform of one sample: decode, resize, crop, flip, normalise; [3, crop.height, crop.width]. */
export async function transformImage(input: string | Buffer, params: TransformParams, out?: Float32Array): Promise<Float32Array> {
  const info = await readImageInfo(input);
  const same = info.width === params.resize.width && info.height === params.resize.height;
  const img = await decodeImage(input, { background: params.background, ...(same ? {} : { resize: params.resize }) });
  return cropFlipNormalize(img, params.crop, params.flip, out);
}
