/**
 * The trainer's dataset layer: folders of images and captions → batches of normalised pixels and
 * captions, in a seeded order that a checkpoint can resume exactly.
 *
 * What the trainer calls:
 *
 *   const problems = checkDataConfig(train.data, pipeline.where);  // option combinations, caches
 *   const ds = await openDataset(train.data, { where: pipeline.where, display });
 *   formatSummary(ds);                                               // images, buckets, skipped
 *   const loader = new DataLoader(ds, { batch: train.batch, seed: train.seed }, saved?.position);
 *   const batch = await loader.next();   // pixels [B, 3, H, W] in [-1, 1], captions, plan items
 *   checkpoint.position = loader.position();                         // plain JSON
 *   await itemLatentKey(ds, batch.items[0], { vae: hash });          // latent cache key
 *
 * Layouts (config.ts, dataset.ts), per subset of `train.data.subsets` (or data.dir alone):
 *  - imagefolder (Hugging Face): metadata.jsonl or metadata.csv next to the images, an image column
 *    (default file_name, paths relative to the metadata file) and a caption column (default text);
 *    in metadata.jsonl the caption may be a list of strings, one picked each time the image is drawn;
 *  - kohya: images with same-named caption files (.txt; the first line is the caption), and
 *    `N_name` repeat folders: `10_sks dog/` repeats its images 10 times per epoch and gives "sks dog"
 *    as the caption of images without a caption file. Other sub-folders are ignored (and listed in
 *    the summary);
 *  - auto: imagefolder when the folder holds a metadata file, else kohya.
 * Only files inside data.dir are read: a metadata path with '..' or an absolute path, and a
 * symbolic link resolving outside, are refused with their location.
 *
 * Images (transform.ts): sharp decodes, applies the EXIF orientation, composites transparency on
 * `background`, resizes (lanczos3) so that the image covers its bucket, then the bucket is cropped
 * out (centre, or random), optionally mirrored, and normalised to [-1, 1] as [3, H, W].
 *
 * Buckets (buckets.ts): sides are multiples of `step` between min_side and max_side with area at most
 * resolution²; an image goes to the bucket with the closest aspect ratio (|ln(w/h) − ln(W/H)|, ties
 * to the larger, then wider bucket); `no_upscale` gives an image smaller than its bucket a bucket of
 * its own size rounded down to the step. Batches are drawn within one bucket.
 *
 * Captions (captions.ts): the pick among a sample's captions (a list in metadata.jsonl: one
 * `below(n)` draw, only for rows with several), dropout (→ ""), shuffle of comma-separated tags
 * keeping the first keep_tokens in place, then prefix and suffix as written.
 *
 * Order (loader.ts): one torch-compatible generator (rng.ts) seeded with train.seed draws every
 * choice; an epoch is planned from the generator state at its start; the loader's position is
 * { epoch, step, rng: { seed, draws } } plus the dataset fingerprint and batch size that guard it.
 *
 * Caches (cache.ts): `latentCacheKey` hashes the image bytes with the transform (background,
 * resize, crop box, flip); `cacheRefusals` refuses cached latents with random crops and cached text
 * embeddings with caption dropout or shuffling; openDataset refuses cached text embeddings with a
 * metadata row that holds several captions (`captionsVary` says whether captions vary per draw).
 *
 * Test data (shapes.ts): `makeShapes({ dir, count, size, seed })` writes coloured shapes with
 * captions ("red circle on blue background"); from a shell, after `npm run build`:
 *
 *   node scripts/make-shapes.mjs data/shapes --count 500 --size 64 --seed 0
 *   node -e 'import("./dist/data/shapes.js").then((m) => m.makeShapes({ dir: "data/shapes", count: 500 }))'
 */
export { assignBucket, bucketSizes, type BucketOptions, centerCrop, type CropBox, resizeToCover, type Size } from "./buckets.js";
export { CACHE_KEY_VERSION, fileSha256, itemLatentKey, latentCacheKey, type LatentKeyParts, sampleSha256, textCacheKey } from "./cache.js";
export { type CaptionOptions, captionsVary, drawCaption, pickCaption, splitTags } from "./captions.js";
export { cacheRefusals, checkDataConfig, DATA_PATH, type DatasetSpec, datasetSpec, type Layout, type SubsetSpec } from "./config.js";
export {
  type CaptionSource,
  type Dataset,
  type DatasetSummary,
  formatSummary,
  IMAGE_EXTENSIONS,
  openDataset,
  type OpenDatasetOptions,
  type Sample,
  type SkippedImage,
} from "./dataset.js";
export { type Batch, batchesPerEpoch, DataLoader, loadBatch, type LoaderOptions, type LoaderPosition, planEpoch, type PlannedBatch, type PlannedItem } from "./loader.js";
export { parseMetadata } from "./metadata.js";
export { relativeDisplay, type WhereFn } from "./problems.js";
export { DataRng, type RngState } from "./rng.js";
export { makeShapes, type ShapeName, type ShapeRecord, SHAPES, type ShapesOptions } from "./shapes.js";
export { cropFlipNormalize, decodeImage, parseColour, readImageInfo, transformImage, type TransformParams } from "./transform.js";
