/**
 * Content keys for the trainer's latent and text-embedding caches.
 *
 * A latent is a function of the image's bytes and of every transform parameter that changes the
 * pixels the VAE sees: background colour, resize size and kernel, crop box and flip (plus what the
 * trainer adds in `extra`: the VAE's hash, its precision). The key is the SHA-256 of all of these
 * in canonical JSON; it does not name the file, so a renamed or copied image keeps its entries.
 * Which option combinations a cache would make wrong is `cacheRefusals` (config.ts).
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import { canonicalJson, sha256 } from "../util/hash.js";
import type { CropBox, Size } from "./buckets.js";
import type { Dataset } from "./dataset.js";
import type { PlannedItem } from "./loader.js";
import type { Rgb } from "./transform.js";

/** Bumped when the transforms change in a way that changes pixels: old entries stop matching. */
export const CACHE_KEY_VERSION = 1;

export interface LatentKeyParts {
  /** SHA-256 (hex) of the image file's bytes. */
  imageSha256: string;
  background: Rgb;
  resize: Size;
  crop: CropBox;
  flip: boolean;
  /** What else the latent depends on (the VAE, its precision, ...), as JSON-like data. */
  extra?: unknown;
}

/** The cache key of one transformed image's latent (64 hex digits). */
export function latentCacheKey(parts: LatentKeyParts): string {
  return sha256(
    canonicalJson({
      v: CACHE_KEY_VERSION,
      kind: "latent",
      image: parts.imageSha256,
      background: [...parts.background],
      resize: { width: parts.resize.width, height: parts.resize.height, kernel: "lanczos3" },
      crop: { left: parts.crop.left, top: parts.crop.top, width: parts.crop.width, height: parts.crop.height },
      flip: parts.flip,
      extra: parts.extra ?? null,
    }),
  );
}

/** The cache key of a caption's text embedding (`extra`: the text encoder, clip_skip, ...). */
export function textCacheKey(caption: string, extra?: unknown): string {
  return sha256(canonicalJson({ v: CACHE_KEY_VERSION, kind: "text", caption, extra: extra ?? null }));
}

/** SHA-256 (hex) of a file's bytes. */
export async function fileSha256(file: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of fs.createReadStream(file)) h.update(chunk as Buffer);
  return h.digest("hex");
}

const digests = new WeakMap<Dataset, Map<number, Promise<string>>>();

/** The image digest of a dataset sample, read once per dataset. */
export function sampleSha256(ds: Dataset, sample: number): Promise<string> {
  let m = digests.get(ds);
  if (!m) digests.set(ds, (m = new Map()));
  let p = m.get(sample);
  if (!p) {
    const memo = m;
    p = fileSha256(ds.samples[sample]!.file);
    p.catch(() => memo.delete(sample));
    memo.set(sample, p);
  }
  return p;
}

/** The latent cache key of a planned item. */
export async function itemLatentKey(ds: Dataset, item: PlannedItem, extra?: unknown): Promise<string> {
  return latentCacheKey({ imageSha256: await sampleSha256(ds, item.sample), background: ds.spec.background, resize: item.resize, crop: item.crop, flip: item.flip, extra });
}
