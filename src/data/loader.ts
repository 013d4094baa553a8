/**
 * The training order: epochs of batches drawn within buckets, from the seeded generator, and a
 * position that resumes it exactly.
 *
 * An epoch is planned in one go from the generator state at its start (`planEpoch`):
 *  1. every sample appears `repeats` times; for each appearance, in sample order, the random
 *     choices are drawn: flip (one uniform < 0.5, when random_flip), crop offsets (left, then top,
 *     each `below(range + 1)`, when center_crop is off), then the caption (captions.ts: the pick among
 *     several captions, one `below(n)`, then dropout and shuffle);
 *  2. the appearances are grouped by bucket (buckets in size order); with shuffling each group is
 *     permuted (randperm) and cut into batches of `batch` (a group's last batch may be smaller), and
 *     the batches of all groups are permuted once more (randperm), so consecutive batches come from
 *     different buckets in a random order. Without shuffling the order is sample order.
 * The plan holds everything but pixels: per item the file, resize, crop box, flip and caption, so
 * cache keys and tests need no decoding. A position is (epoch, batch index in the epoch, generator
 * state at the epoch's start): restoring it re-plans that epoch and skips to the batch, which gives
 * the same batches as a run that never stopped.
 */
import * as fs from "node:fs";
import { type Problem, UserError } from "../util/errors.js";
import type { CropBox, Size } from "./buckets.js";
import { centerCrop } from "./buckets.js";
import { drawCaption } from "./captions.js";
import type { Dataset, SkippedImage } from "./dataset.js";
import { mapLimit } from "./dataset.js";
import { DataRng, type RngState } from "./rng.js";
import { cropFlipNormalize, decodeImage } from "./transform.js";

export interface LoaderOptions {
  /** Samples per batch (train.batch). */
  batch: number;
  /** The run's seed (train.seed). */
  seed: number | bigint | string;
  /** Shuffle every epoch (default true). */
  shuffle?: boolean;
  /** Images decoded at once (default 4). */
  concurrency?: number;
}

/** Where a loader stands, as plain JSON: save it with a checkpoint and pass it back to resume. */
export interface LoaderPosition {
  version: 1;
  /** The dataset's fingerprint: a resume with other data or settings is refused. */
  dataset: string;
  seed: string;
  batch: number;
  shuffle: boolean;
  epoch: number;
  /** The next batch's index within the epoch. */
  step: number;
  /** The generator state at the start of `epoch`. */
  rng: RngState;
}

export interface PlannedItem {
  /** Index into Dataset.samples. */
  sample: number;
  file: string;
  /** Which of the sample's repeats this is (0-based). */
  repeat: number;
  resize: Size;
  crop: CropBox;
  flip: boolean;
  caption: string;
}

export interface PlannedBatch {
  epoch: number;
  /** Index of the batch within its epoch. */
  index: number;
  bucket: Size;
  items: PlannedItem[];
}

export interface Batch extends PlannedBatch {
  /** The images, [B, 3, H, W] in [-1, 1] (B: the items decoded; skipped ones are left out). */
  pixels: Float32Array;
  shape: [number, number, number, number];
  captions: string[];
  /** Items whose image could not be decoded (on_bad_image: skip); they are not in `items`. */
  skipped: SkippedImage[];
}

/** The batches of one epoch, drawn from `rng` (which is advanced). */
export function planEpoch(ds: Dataset, rng: DataRng, opts: { batch: number; shuffle?: boolean; epoch?: number }): PlannedBatch[] {
  const { spec } = ds;
  const shuffle = opts.shuffle ?? true;
  const byBucket: PlannedItem[][] = ds.buckets.map(() => []);
  for (const s of ds.samples) {
    const bucket = ds.buckets[s.bucket]!;
    const caption = spec.subsets[s.subset]!.caption;
    for (let r = 0; r < s.repeats; r++) {
      const flip = spec.randomFlip ? rng.uniform() < 0.5 : false;
      const crop: CropBox = spec.centerCrop
        ? centerCrop(s.resize, bucket)
        : { left: rng.below(s.resize.width - bucket.width + 1), top: rng.below(s.resize.height - bucket.height + 1), width: bucket.width, height: bucket.height };
      byBucket[s.bucket]!.push({ sample: s.id, file: s.file, repeat: r, resize: s.resize, crop, flip, caption: drawCaption(s.captions ?? s.caption, caption, rng) });
    }
  }
  const batches: { bucket: Size; items: PlannedItem[] }[] = [];
  byBucket.forEach((items, b) => {
    const ordered = shuffle ? rng.shuffle(items) : items;
    for (let i = 0; i < ordered.length; i += opts.batch) batches.push({ bucket: ds.buckets[b]!, items: ordered.slice(i, i + opts.batch) });
  });
  const order = shuffle ? rng.randperm(batches.length) : batches.map((_, i) => i);
  return order.map((k, index) => ({ epoch: opts.epoch ?? 0, index, ...batches[k]! }));
}

/** Batches per epoch (the same every epoch): per bucket, ceil(appearances / batch). */
export function batchesPerEpoch(ds: Dataset, batch: number): number {
  const counts = ds.buckets.map(() => 0);
  for (const s of ds.samples) counts[s.bucket]! += s.repeats;
  return counts.reduce((n, c) => n + Math.ceil(c / batch), 0);
}

export class DataLoader {
  readonly batchesPerEpoch: number;
  private readonly seed: string;
  private readonly shuffle: boolean;
  private epoch: number;
  private step: number;
  private start: RngState;
  private rng: DataRng | undefined;
  private plan: PlannedBatch[] | undefined;

  constructor(
    readonly dataset: Dataset,
    private readonly opts: LoaderOptions,
    from?: LoaderPosition,
  ) {
    if (!Number.isInteger(opts.batch) || opts.batch < 1) throw new RangeError(`batch must be a positive integer, got ${opts.batch}`);
    this.seed = new DataRng(opts.seed).state().seed;
    this.shuffle = opts.shuffle ?? true;
    this.batchesPerEpoch = batchesPerEpoch(dataset, opts.batch);
    this.epoch = 0;
    this.step = 0;
    this.start = { seed: this.seed, draws: 0 };
    if (from) {
      checkPosition(from, { dataset: dataset.fingerprint, seed: this.seed, batch: opts.batch, shuffle: this.shuffle }, this.batchesPerEpoch);
      this.epoch = from.epoch;
      this.step = from.step;
      this.start = { ...from.rng };
    }
  }

  /** Where the next batch comes from; a fresh loader given this position continues identically. */
  position(): LoaderPosition {
    return { version: 1, dataset: this.dataset.fingerprint, seed: this.seed, batch: this.opts.batch, shuffle: this.shuffle, epoch: this.epoch, step: this.step, rng: { ...this.start } };
  }

  /** The next batch's plan (no decoding); the loader moves past it. */
  nextPlan(): PlannedBatch {
    if (!this.plan) {
      this.rng = DataRng.restore(this.start);
      this.plan = planEpoch(this.dataset, this.rng, { batch: this.opts.batch, shuffle: this.shuffle, epoch: this.epoch });
    }
    const b = this.plan[this.step]!;
    this.step++;
    if (this.step >= this.plan.length) {
      this.epoch++;
      this.step = 0;
      this.start = this.rng!.state();
      this.plan = undefined;
    }
    return b;
  }

  /** The next batch, decoded. */
  async next(): Promise<Batch> {
    return loadBatch(this.dataset, this.nextPlan(), this.opts.concurrency);
  }

  /** Batches without end (epoch after epoch). */
  async *[Symbol.asyncIterator](): AsyncGenerator<Batch> {
    for (;;) yield await this.next();
  }
}

function checkPosition(p: LoaderPosition, want: { dataset: string; seed: string; batch: number; shuffle: boolean }, perEpoch: number): void {
  const problems: Problem[] = [];
  const subject = "data loader position";
  const restart = "resume with the settings the run started with, or start a new run";
  if (!p || typeof p !== "object" || p.version !== 1 || !p.rng || typeof p.rng.seed !== "string" || !Number.isSafeInteger(p.rng.draws) || p.rng.draws < 0) {
    throw new UserError({ message: "the saved data loader position is not one sdc wrote (version 1)", subject, hint: "the checkpoint's loader state is damaged; start a new run" });
  }
  if (p.dataset !== want.dataset)
    problems.push({ message: `the training data changed since the position was saved (dataset ${p.dataset}, now ${want.dataset})`, subject, hint: "resume with the same images, captions and train.data settings, or start a new run" });
  if (p.seed !== want.seed) problems.push({ message: `the position was saved with seed ${p.seed}, the loader has seed ${want.seed}`, subject, hint: restart });
  if (p.batch !== want.batch) problems.push({ message: `the position was saved with batch ${p.batch}, the loader has batch ${want.batch}`, subject, hint: restart });
  if (p.shuffle !== want.shuffle) problems.push({ message: `the position was saved with shuffle ${p.shuffle}, the loader has shuffle ${want.shuffle}`, subject, hint: restart });
  if (!Number.isSafeInteger(p.epoch) || p.epoch < 0 || !Number.isSafeInteger(p.step) || p.step < 0 || p.step >= perEpoch)
    problems.push({ message: `the position (epoch ${p.epoch}, batch ${p.step}) is not in the data (${perEpoch} batches per epoch)`, subject, hint: restart });
  if (problems.length) throw new UserError(problems);
}

/** Decode a planned batch: each image resized, cropped, flipped and normalised into one [B, 3, H, W] array. */
export async function loadBatch(ds: Dataset, plan: PlannedBatch, concurrency = 4): Promise<Batch> {
  const { width: W, height: H } = plan.bucket;
  const per = 3 * W * H;
  const pixels = new Float32Array(plan.items.length * per);
  const results = await mapLimit(plan.items, concurrency, async (item, i) => {
    const sample = ds.samples[item.sample]!;
    try {
      const bytes = await fs.promises.readFile(item.file);
      const same = sample.size.width === item.resize.width && sample.size.height === item.resize.height;
      const img = await decodeImage(bytes, { background: ds.spec.background, ...(same ? {} : { resize: item.resize }) });
      if (img.width !== item.resize.width || img.height !== item.resize.height) throw new Error(`the image is ${img.width}x${img.height} now, ${sample.size.width}x${sample.size.height} when the dataset was opened`);
      cropFlipNormalize(img, item.crop, item.flip, pixels.subarray(i * per, (i + 1) * per));
      return undefined;
    } catch (e) {
      return (e as Error).message.split("\n")[0]!.trim();
    }
  });
  const items: PlannedItem[] = [];
  const skipped: SkippedImage[] = [];
  let out = 0;
  results.forEach((reason, i) => {
    const item = plan.items[i]!;
    if (reason === undefined) {
      if (out !== i) pixels.copyWithin(out * per, i * per, (i + 1) * per);
      items.push(item);
      out++;
      return;
    }
    const file = ds.samples[item.sample]!.display;
    if (ds.spec.onBadImage === "error")
      throw new UserError({ message: `cannot read the image: ${reason}`, subject: file, hint: "replace or remove the file, or set on_bad_image: skip to leave unreadable images out" });
    skipped.push({ file, reason });
    if (!ds.summary.skipped.some((s) => s.file === file)) ds.summary.skipped.push({ file, reason });
  });
  return {
    ...plan,
    items,
    pixels: out === plan.items.length ? pixels : pixels.slice(0, out * per),
    shape: [out, 3, H, W],
    captions: items.map((i) => i.caption),
    skipped,
  };
}
