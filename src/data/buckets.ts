/**
 * Aspect-ratio buckets, and the resize and crop that fit an image to its bucket.
 *
 * Bucket sizes (`bucketSizes`), as kohya's make_bucket_resolutions: for every width w from min_side
 * to max_side in steps of `step`, the tallest height h that is a multiple of `step`, at most
 * max_side and keeps w·h <= resolution²; (w, h) is a bucket when h >= min_side, and so is (h, w).
 * Without bucketing there is one bucket, resolution × resolution.
 *
 * Assignment rule (`assignBucket`): an image of width W and height H (after its EXIF orientation)
 * goes to the bucket whose aspect ratio is closest to W/H, measured as |ln(w/h) − ln(W/H)| so that
 * a wide image and its tall mirror image are equally far from their buckets; on a tie the larger
 * bucket (area), then the wider one, wins. With `no_upscale`, an image that would have to be
 * enlarged to cover that bucket (W < w or H < h) gets a bucket of its own instead: W and H rounded
 * down to the step (and at most max_side); an image with a side under one step fits no bucket and
 * is skipped (counted in the summary).
 *
 * Fitting (`resizeToCover`, then a crop): the image is scaled by max(w/W, h/H), the smallest scale
 * at which it covers the bucket (without bucketing: its shorter side becomes `resolution`), each side
 * rounded to whole pixels; the crop then cuts the bucket out of it, from the middle (as
 * torchvision's center_crop: offsets round((size − crop) / 2), halves to even) or at a random offset.
 */

export interface Size {
  width: number;
  height: number;
}

/** A crop rectangle in the resized image's pixels. */
export interface CropBox {
  left: number;
  top: number;
  width: number;
  height: number;
}

export interface BucketOptions {
  resolution: number;
  enabled: boolean;
  step: number;
  minSide: number;
  maxSide: number;
  noUpscale: boolean;
}

/** The predefined buckets, sorted by width then height. */
export function bucketSizes(opts: BucketOptions): Size[] {
  if (!opts.enabled) return [{ width: opts.resolution, height: opts.resolution }];
  const area = opts.resolution * opts.resolution;
  const seen = new Set<string>();
  const out: Size[] = [];
  const add = (width: number, height: number) => {
    const k = `${width}x${height}`;
    if (seen.has(k)) return;
    seen.add(k);
    out.push({ width, height });
  };
  for (let w = opts.minSide; w <= opts.maxSide; w += opts.step) {
    const h = Math.min(opts.maxSide, Math.floor(area / w / opts.step) * opts.step);
    if (h < opts.minSide) continue;
    add(w, h);
    add(h, w);
  }
  return out.sort((a, b) => a.width - b.width || a.height - b.height);
}

/** The bucket of an image (see the module head), or undefined when it is too small for any. */
export function assignBucket(image: Size, buckets: readonly Size[], opts: BucketOptions): Size | undefined {
  if (buckets.length === 0) return undefined;
  const ar = Math.log(image.width / image.height);
  let best = buckets[0]!;
  let bestErr = Infinity;
  for (const b of buckets) {
    const err = Math.abs(Math.log(b.width / b.height) - ar);
    const better =
      err < bestErr - 1e-12 ||
      (Math.abs(err - bestErr) <= 1e-12 && (b.width * b.height > best.width * best.height || (b.width * b.height === best.width * best.height && b.width > best.width)));
    if (better) {
      best = b;
      bestErr = Math.min(err, bestErr);
    }
  }
  if (opts.noUpscale && (image.width < best.width || image.height < best.height)) {
    const width = Math.min(opts.maxSide, image.width - (image.width % opts.step));
    const height = Math.min(opts.maxSide, image.height - (image.height % opts.step));
    if (width < opts.step || height < opts.step) return undefined;
    return { width, height };
  }
  return best;
}

/** The size an image is resized to before its bucket is cropped out of it. */
export function resizeToCover(image: Size, bucket: Size): Size {
  const scale = Math.max(bucket.width / image.width, bucket.height / image.height);
  return {
    width: Math.max(bucket.width, Math.round(image.width * scale)),
    height: Math.max(bucket.height, Math.round(image.height * scale)),
  };
}

/** The middle crop, as torchvision's center_crop. */
export function centerCrop(resized: Size, bucket: Size): CropBox {
  return {
    left: roundHalfEven((resized.width - bucket.width) / 2),
    top: roundHalfEven((resized.height - bucket.height) / 2),
    width: bucket.width,
    height: bucket.height,
  };
}

function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d !== 0.5) return Math.round(x);
  return f % 2 === 0 ? f : f + 1;
}

export function sizeKey(s: Size): string {
  return `${s.width}x${s.height}`;
}
