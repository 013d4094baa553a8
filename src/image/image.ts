/**
 * Images in and out of the pipeline: VAE tensors <-> 8-bit RGB exactly as diffusers'
 * VaeImageProcessor converts them, init images for img2img, PNG files carrying the generation
 * parameters in the text chunk the popular UIs read, and contact-sheet grids.
 *
 * Decoding and resizing go through sharp (PNG, JPEG, WebP, ...). PNG pixels are encoded by sharp
 * (native zlib, filtering); the text chunks are written and read here, because the choice between
 * tEXt (Latin-1) and iTXt (UTF-8) has to follow Pillow's, which AUTOMATIC1111 and the tools reading
 * its files use: fast-png writes tEXt only and rejects non-Latin-1 prompts.
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as zlib from "node:zlib";
import sharp, { type OutputInfo, type Sharp } from "sharp";
import { SCHEDULER_DEFINITIONS } from "../schedulers/registry.js";
import { fail } from "../util/errors.js";
import { writeFileAtomic } from "../util/fs.js";

/** 8-bit RGB pixels, row-major, 3 bytes per pixel. */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

/** How an init image is fitted to the requested size when its own size differs. */
export type ResizeMode = "crop" | "fill" | "stretch";

export interface LoadImageOptions {
  /** Target size; default: the image's size rounded down to a multiple of `multipleOf`. */
  width?: number;
  height?: number;
  /**
   * crop: scale to cover the target and cut the overflow evenly (centre crop);
   * fill: scale to fit inside and extend the short side by repeating the edge pixels;
   * stretch: scale each axis independently (what diffusers does). Default: stretch.
   */
  resize?: ResizeMode;
  /** Latent factor the default size is rounded down to (default 8). */
  multipleOf?: number;
}

// ------------------------------------------------------------------------------------------------
// Tensors <-> pixels

/**
 * VAE output [B, 3, H, W] in [-1, 1] to RGB images, as VaeImageProcessor.postprocess(output_type="pil"):
 * `(x / 2 + 0.5).clamp(0, 1)` in float32, then `(x * 255).round()` (half to even) to uint8.
 */
export function tensorToImages(data: Float32Array, shape: readonly [number, number, number, number]): Uint8Array[] {
  const [B, C, H, W] = shape;
  if (C !== 3) fail(`image tensor must have 3 channels, got shape [${shape.join(", ")}]`, { subject: "vae_decoder output" });
  if (data.length !== B * C * H * W)
    fail(`image tensor has ${data.length} values, shape [${shape.join(", ")}] needs ${B * C * H * W}`, { subject: "vae_decoder output" });
  const fr = Math.fround;
  const plane = H * W;
  const out: Uint8Array[] = [];
  for (let b = 0; b < B; b++) {
    const img = new Uint8Array(plane * 3);
    for (let c = 0; c < 3; c++) {
      const src = (b * 3 + c) * plane;
      for (let p = 0; p < plane; p++) {
        let v = fr(fr(data[src + p]! / 2) + 0.5);
        v = v < 0 ? 0 : v > 1 ? 1 : v; // NaN stays NaN and becomes 0 below
        img[p * 3 + c] = roundHalfEven(fr(v * 255)) || 0;
      }
    }
    out.push(img);
  }
  return out;
}

/**
 * RGB images (all the same size) to [B, 3, H, W] in [-1, 1], as VaeImageProcessor.preprocess does
 * for PIL images: `x / 255` in float32, then `2 * x - 1`.
 */
export function imageToTensor(images: RgbImage | RgbImage[]): { data: Float32Array; shape: [number, number, number, number] } {
  const list = Array.isArray(images) ? images : [images];
  if (list.length === 0) fail("no images to convert", { subject: "init image" });
  const { width: W, height: H } = list[0]!;
  const plane = W * H;
  const data = new Float32Array(list.length * 3 * plane);
  list.forEach((img, b) => {
    if (img.width !== W || img.height !== H)
      fail(`init images must share one size: ${W}x${H} and ${img.width}x${img.height}`, { subject: "init image" });
    checkRgb(img);
    for (let c = 0; c < 3; c++) {
      const dst = (b * 3 + c) * plane;
      for (let p = 0; p < plane; p++) data[dst + p] = Math.fround(2 * Math.fround(img.data[p * 3 + c]! / 255) - 1);
    }
  });
  return { data, shape: [list.length, 3, H, W] };
}

function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

function checkRgb(img: RgbImage): void {
  if (!Number.isInteger(img.width) || !Number.isInteger(img.height) || img.width <= 0 || img.height <= 0)
    fail(`image size must be positive integers, got ${img.width}x${img.height}`, { subject: "image" });
  if (img.data.length !== img.width * img.height * 3)
    fail(`RGB image of ${img.width}x${img.height} needs ${img.width * img.height * 3} bytes, got ${img.data.length}`, { subject: "image" });
}

// ------------------------------------------------------------------------------------------------
// Loading

/**
 * Read an image file as RGB: EXIF orientation applied and alpha dropped (like diffusers' load_image:
 * exif_transpose, convert("RGB")), then fitted to the requested size. An image already of the
 * requested size is not resampled, so its pixels arrive unchanged. Resampling is sharp's lanczos3,
 * close to but not bit-identical with Pillow's LANCZOS.
 */
export async function loadImage(file: string, opts: LoadImageOptions = {}): Promise<RgbImage> {
  if (!fs.existsSync(file)) fail("init image not found", { subject: file, hint: "check the path (relative paths are resolved from the working directory)" });
  let decoded: { data: Buffer; info: OutputInfo };
  try {
    decoded = await sharp(file).rotate().removeAlpha().toColourspace("srgb").raw({ depth: "uchar" }).toBuffer({ resolveWithObject: true });
  } catch (e) {
    return fail(`cannot read image: ${(e as Error).message}`, {
      subject: file,
      hint: "use a PNG, JPEG or WebP file (other formats libvips reads work too)",
    });
  }
  const image: RgbImage = { width: decoded.info.width, height: decoded.info.height, data: new Uint8Array(decoded.data.buffer, decoded.data.byteOffset, decoded.data.length) };
  if (decoded.info.channels !== 3) fail(`expected 3 colour channels after conversion, got ${decoded.info.channels}`, { subject: file });

  const multiple = opts.multipleOf ?? 8;
  const width = opts.width ?? image.width - (image.width % multiple);
  const height = opts.height ?? image.height - (image.height % multiple);
  for (const [name, v] of [
    ["width", width],
    ["height", height],
  ] as const) {
    if (!Number.isInteger(v) || v <= 0)
      fail(`${name} must be a positive integer, got ${v}`, {
        subject: file,
        hint: v === 0 ? `the image is smaller than ${multiple} pixels; use a larger image` : `give a ${name} divisible by ${multiple}`,
      });
  }
  return resizeImage(image, width, height, opts.resize ?? "stretch");
}

/** Fit an RGB image to width x height (unchanged when it already has that size). */
export async function resizeImage(image: RgbImage, width: number, height: number, mode: ResizeMode): Promise<RgbImage> {
  checkRgb(image);
  if (image.width === width && image.height === height) return image;
  const raw = { raw: { width: image.width, height: image.height, channels: 3 as const } };
  const toRgb = async (s: Sharp): Promise<RgbImage> => {
    const { data, info } = await s.raw().toBuffer({ resolveWithObject: true });
    return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
  };
  if (mode === "stretch") return toRgb(sharp(image.data, raw).resize(width, height, { fit: "fill", kernel: "lanczos3" }));
  if (mode === "crop") return toRgb(sharp(image.data, raw).resize(width, height, { fit: "cover", position: "centre", kernel: "lanczos3" }));
  // fill: fit inside, then extend the short side with copies of its edge pixels, split evenly
  const scale = Math.min(width / image.width, height / image.height);
  const w = Math.min(width, Math.max(1, Math.round(image.width * scale)));
  const h = Math.min(height, Math.max(1, Math.round(image.height * scale)));
  const inner = await toRgb(sharp(image.data, raw).resize(w, h, { fit: "fill", kernel: "lanczos3" }));
  const left = Math.floor((width - w) / 2);
  const top = Math.floor((height - h) / 2);
  return toRgb(
    sharp(inner.data, { raw: { width: w, height: h, channels: 3 } }).extend({ left, right: width - w - left, top, bottom: height - h - top, extendWith: "copy" }),
  );
}

// ------------------------------------------------------------------------------------------------
// PNG with text

/** Encode RGB pixels as PNG with text chunks (tEXt when Latin-1 can hold it, else iTXt UTF-8, as Pillow). */
export async function encodePng(rgb: Uint8Array, width: number, height: number, text: Record<string, string> = {}): Promise<Uint8Array> {
  checkRgb({ width, height, data: rgb });
  const png = await sharp(rgb, { raw: { width, height, channels: 3 } }).png().toBuffer();
  const ihdrEnd = 8 + 12 + png.readUInt32BE(8);
  const chunks = Object.entries(text).map(([k, v]) => textChunk(k, v));
  return Buffer.concat([png.subarray(0, ihdrEnd), ...chunks, png.subarray(ihdrEnd)]);
}

/** Write a PNG atomically (temporary file, then rename). */
export async function savePng(file: string, rgb: Uint8Array, width: number, height: number, text: Record<string, string> = {}): Promise<void> {
  writeFileAtomic(file, await encodePng(rgb, width, height, text));
}

/** Text chunks (tEXt, zTXt, iTXt) of a PNG file or buffer; a later chunk with the same key wins. */
export function readPngText(fileOrBytes: string | Uint8Array): Record<string, string> {
  const where = typeof fileOrBytes === "string" ? fileOrBytes : "PNG data";
  let buf: Buffer;
  if (typeof fileOrBytes === "string") {
    try {
      buf = fs.readFileSync(fileOrBytes);
    } catch (e) {
      return fail((e as NodeJS.ErrnoException).code === "ENOENT" ? "file not found" : `cannot read file: ${(e as Error).message}`, { subject: where });
    }
  } else buf = Buffer.from(fileOrBytes.buffer, fileOrBytes.byteOffset, fileOrBytes.length);
  if (buf.length < 8 || !buf.subarray(0, 8).equals(PNG_SIGNATURE)) fail("not a PNG file (bad signature)", { subject: where });
  const out: Record<string, string> = {};
  let off = 8;
  while (off + 12 <= buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString("latin1", off + 4, off + 8);
    if (off + 12 + len > buf.length) fail(`truncated ${type} chunk at byte ${off}`, { subject: where });
    const body = buf.subarray(off + 8, off + 8 + len);
    if (crc32(buf.subarray(off + 4, off + 8 + len)) !== buf.readUInt32BE(off + 8 + len))
      fail(`${type} chunk at byte ${off} has a bad CRC (the file is damaged)`, { subject: where });
    const nul = body.indexOf(0);
    if (type === "tEXt" && nul > 0) out[body.toString("latin1", 0, nul)] = body.toString("latin1", nul + 1);
    else if (type === "zTXt" && nul > 0) out[body.toString("latin1", 0, nul)] = inflate(body.subarray(nul + 2), where).toString("latin1");
    else if (type === "iTXt" && nul > 0) {
      const compressed = body[nul + 1] === 1;
      const langEnd = body.indexOf(0, nul + 3);
      const transEnd = body.indexOf(0, langEnd + 1);
      if (langEnd < 0 || transEnd < 0) fail(`malformed iTXt chunk at byte ${off}`, { subject: where });
      const raw = body.subarray(transEnd + 1);
      out[body.toString("latin1", 0, nul)] = (compressed ? inflate(raw, where) : raw).toString("utf8");
    }
    if (type === "IEND") break;
    off += 12 + len;
  }
  return out;
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

function textChunk(key: string, value: string): Buffer {
  if (!/^[\x20-\x7e\xa1-\xff]{1,79}$/.test(key) || key.startsWith(" ") || key.endsWith(" ") || key.includes("  "))
    fail(`PNG text key ${JSON.stringify(key)} must be 1-79 Latin-1 characters without leading, trailing or double spaces`, { subject: "PNG metadata" });
  const latin1 = /^[\x00-\xff]*$/.test(value);
  const body = latin1
    ? Buffer.concat([Buffer.from(key, "latin1"), Buffer.from([0]), Buffer.from(value, "latin1")])
    : Buffer.concat([Buffer.from(key, "latin1"), Buffer.from([0, 0, 0, 0, 0]), Buffer.from(value, "utf8")]);
  return chunk(latin1 ? "tEXt" : "iTXt", body);
}

function chunk(type: string, body: Buffer): Buffer {
  const out = Buffer.alloc(12 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.write(type, 4, "latin1");
  body.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + body.length)), 8 + body.length);
  return out;
}

function inflate(data: Uint8Array, where: string): Buffer {
  try {
    return zlib.inflateSync(data);
  } catch (e) {
    return fail(`compressed PNG text chunk cannot be inflated: ${(e as Error).message}`, { subject: where });
  }
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// ------------------------------------------------------------------------------------------------
// Grid

/**
 * Paste same-size images into rows of `cols` (default: as square as possible, like AUTOMATIC1111's
 * grid), left to right and top to bottom; empty cells are black.
 */
export function makeGrid(images: RgbImage[], cols?: number): RgbImage {
  if (images.length === 0) fail("no images for a grid", { subject: "grid" });
  const { width: w, height: h } = images[0]!;
  for (const img of images) {
    checkRgb(img);
    if (img.width !== w || img.height !== h) fail(`grid images must share one size: ${w}x${h} and ${img.width}x${img.height}`, { subject: "grid" });
  }
  const n = images.length;
  const c = cols ?? Math.ceil(n / Math.min(n, Math.max(1, Math.round(Math.sqrt(n)))));
  if (!Number.isInteger(c) || c < 1) fail(`grid columns must be a positive integer, got ${cols}`, { subject: "grid" });
  const rows = Math.ceil(n / c);
  const W = c * w;
  const out = new Uint8Array(W * rows * h * 3);
  images.forEach((img, i) => {
    const x0 = (i % c) * w;
    const y0 = Math.floor(i / c) * h;
    for (let y = 0; y < h; y++) out.set(img.data.subarray(y * w * 3, (y + 1) * w * 3), ((y0 + y) * W + x0) * 3);
  });
  return { width: W, height: rows * h, data: out };
}

// ------------------------------------------------------------------------------------------------
// Generation parameters ("parameters" text, AUTOMATIC1111 format)

export interface GenerationParameters {
  prompt: string;
  negativePrompt?: string;
  steps: number;
  /** UI sampler name, e.g. from `samplerName("euler-ancestral")`: "Euler a". */
  sampler: string;
  cfgScale: number;
  seed: number | bigint | string;
  width: number;
  height: number;
  /** First 10 hex digits of the checkpoint's SHA-256 (AUTOMATIC1111's "AutoV2" hash). */
  modelHash?: string;
  modelName?: string;
  /** img2img strength. */
  denoisingStrength?: number;
  /** More "Key: value" pairs, written after the standard ones in this order. */
  extra?: Record<string, string | number>;
}

export interface ParsedParameters {
  prompt: string;
  negativePrompt: string;
  /** Every "Key: value" of the last line, unquoted; "Size" is also split into Size-1 / Size-2. */
  params: Record<string, string>;
}

/** The UI's sampler name for an sdc scheduler name (unknown names pass through unchanged). */
export function samplerName(scheduler: string, opts: { karras?: boolean } = {}): string {
  const d = SCHEDULER_DEFINITIONS.find((x) => x.shortName === scheduler);
  return (opts.karras && d?.uiKarrasName) || d?.uiName || scheduler;
}

/**
 * The `parameters` text: the prompt, a "Negative prompt:" line when there is one, then
 * "Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 1, Size: 512x512, Model hash: ..., Model: ...".
 * Values holding ',', ':' or a newline are JSON-quoted, as the UI does.
 */
export function formatParameters(p: GenerationParameters): string {
  const pairs: [string, string | number | bigint | undefined][] = [
    ["Steps", p.steps],
    ["Sampler", p.sampler],
    ["CFG scale", p.cfgScale],
    ["Seed", p.seed],
    ["Size", `${p.width}x${p.height}`],
    ["Model hash", p.modelHash],
    ["Model", p.modelName],
    ["Denoising strength", p.denoisingStrength],
    ...Object.entries(p.extra ?? {}),
  ];
  const line = pairs
    .filter(([, v]) => v !== undefined && v !== "")
    .map(([k, v]) => `${k}: ${quote(String(v))}`)
    .join(", ");
  const negative = p.negativePrompt ? `\nNegative prompt: ${p.negativePrompt}` : "";
  return `${p.prompt}${negative}\n${line}`.trim();
}

function quote(v: string): string {
  return /[,:\n]/.test(v) ? JSON.stringify(v) : v;
}

const PARAM_RE = /\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)/g;

/** Read a `parameters` text back (the UI's reading rules: the last line holds the settings). */
export function parseParameters(text: string): ParsedParameters {
  const lines = text.trim().split("\n");
  let last = lines.pop() ?? "";
  if ([...last.matchAll(PARAM_RE)].length < 3) {
    lines.push(last);
    last = "";
  }
  let prompt = "";
  let negativePrompt = "";
  let inNegative = false;
  for (let line of lines) {
    line = line.trim();
    if (line.startsWith("Negative prompt:")) {
      inNegative = true;
      line = line.slice(16).trim();
    }
    if (inNegative) negativePrompt += (negativePrompt === "" ? "" : "\n") + line;
    else prompt += (prompt === "" ? "" : "\n") + line;
  }
  const params: Record<string, string> = {};
  for (const m of last.matchAll(PARAM_RE)) {
    let v = m[2]!;
    if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) {
      try {
        v = JSON.parse(v) as string;
      } catch {
        // left quoted: the UI does the same when its unquote fails
      }
    }
    params[m[1]!] = v;
    const size = /^(\d+)x(\d+)$/.exec(v);
    if (size) {
      params[`${m[1]}-1`] = size[1]!;
      params[`${m[1]}-2`] = size[2]!;
    }
  }
  return { prompt, negativePrompt, params };
}

/** AUTOMATIC1111's "AutoV2" model hash: the first 10 hex digits of the file's SHA-256. */
export async function modelHash(file: string): Promise<string> {
  const h = createHash("sha256");
  try {
    for await (const chunk of fs.createReadStream(file)) h.update(chunk as Buffer);
  } catch (e) {
    return fail(`cannot read model file: ${(e as Error).message}`, { subject: file });
  }
  return h.digest("hex").slice(0, 10);
}
