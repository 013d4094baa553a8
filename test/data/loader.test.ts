/** The order: seeded epochs within buckets, and exact resume from a serialised position. */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { TrainDataSection } from "../../src/config/schema.js";
import { DataLoader, type LoaderPosition, planEpoch, type PlannedBatch } from "../../src/data/loader.js";
import { type Dataset, openDataset } from "../../src/data/dataset.js";
import { relativeDisplay } from "../../src/data/problems.js";
import { DataRng } from "../../src/data/rng.js";
import { isUserError, renderProblems } from "../../src/util/errors.js";
import { image, jsonl, tempDir, writeFiles } from "./helpers.js";

const SIZES: [number, number][] = [
  [64, 64],
  [96, 48],
  [48, 96],
  [80, 64],
  [128, 40],
  [70, 70],
  [64, 100],
];

/** A folder of images of several shapes: two kohya repeat folders with tagged captions. */
async function makeFolder(): Promise<string> {
  const dir = tempDir();
  const files: Record<string, Uint8Array | string> = {};
  for (const [i, [w, h]] of SIZES.entries()) {
    const folder = i % 2 ? "2_thing" : "1_other";
    files[`${folder}/img${i}.png`] = await image(w, h, (x, y) => [(x * 7 + i * 30) % 256, (y * 5) % 256, (x + y) % 256]);
    if (i !== 3) files[`${folder}/img${i}.txt`] = `tag${i}, red, round, small, bright`;
  }
  writeFiles(dir, files);
  return dir;
}

const RICH = {
  resolution: 64,
  center_crop: false,
  cache_latents: false,
  random_flip: true,
  buckets: { enabled: true, step: 16, min_side: 32, max_side: 128 },
  caption: { shuffle: true, keep_tokens: 1, dropout: 0.2, prefix: "p: " },
};

async function open(dir: string, extra: object = RICH): Promise<Dataset> {
  return openDataset(TrainDataSection.parse({ dir, ...extra }), { display: relativeDisplay(dir) });
}

type Tuple = [number, number, string, string, boolean, string];
const tuples = (ds: Dataset, b: PlannedBatch): Tuple[] =>
  b.items.map((i) => [b.epoch, b.index, ds.samples[i.sample]!.rel, `${i.crop.left},${i.crop.top},${i.crop.width}x${i.crop.height}`, i.flip, i.caption]);

describe("epochs", () => {
  it("each appearance once per epoch, batches within one bucket, a constant number of batches", async () => {
    const ds = await open(await makeFolder());
    expect(ds.buckets.length).toBeGreaterThan(2);
    const loader = new DataLoader(ds, { batch: 2, seed: 1 });
    for (let epoch = 0; epoch < 3; epoch++) {
      const seen = new Map<string, number>();
      for (let k = 0; k < loader.batchesPerEpoch; k++) {
        const b = loader.nextPlan();
        expect([b.epoch, b.index]).toEqual([epoch, k]);
        expect(b.items.length).toBeGreaterThan(0);
        expect(b.items.length).toBeLessThanOrEqual(2);
        for (const item of b.items) {
          const s = ds.samples[item.sample]!;
          expect(ds.buckets[s.bucket]).toEqual(b.bucket);
          expect(item.crop.width).toBe(b.bucket.width);
          expect(item.crop.left + item.crop.width).toBeLessThanOrEqual(item.resize.width);
          expect(item.crop.top + item.crop.height).toBeLessThanOrEqual(item.resize.height);
          const id = `${item.sample}/${item.repeat}`;
          seen.set(id, (seen.get(id) ?? 0) + 1);
        }
      }
      expect(seen.size).toBe(ds.summary.samplesPerEpoch);
      expect([...seen.values()].every((n) => n === 1)).toBe(true);
    }
  });

  it("the seed decides the order; without shuffling the order is sample order", async () => {
    const ds = await open(await makeFolder());
    const first = (seed: number) => tuples(ds, new DataLoader(ds, { batch: 2, seed }).nextPlan());
    expect(first(1)).toEqual(first(1));
    const orders = new Set([1, 2, 3, 4, 5].map((s) => JSON.stringify(planEpoch(ds, new DataRng(s), { batch: 2 }).map((b) => b.items.map((i) => i.sample)))));
    expect(orders.size).toBeGreaterThan(1);
    const plain = planEpoch(ds, new DataRng(0), { batch: 100, shuffle: false });
    for (const b of plain) expect(b.items.map((i) => i.sample)).toEqual([...b.items.map((i) => i.sample)].sort((x, y) => x - y));
  });

  it("random crops and flips vary between epochs; centre crops do not", async () => {
    const dir = await makeFolder();
    const crops = (ds: Dataset) => {
      const loader = new DataLoader(ds, { batch: 1, seed: 3, shuffle: false });
      const per = new Map<string, Set<string>>();
      for (let k = 0; k < loader.batchesPerEpoch * 6; k++) {
        const i = loader.nextPlan().items[0]!;
        const key = `${i.sample}`;
        if (!per.has(key)) per.set(key, new Set());
        per.get(key)!.add(`${i.crop.left},${i.crop.top},${i.flip}`);
      }
      return [...per.values()].map((s) => s.size);
    };
    expect(Math.max(...crops(await open(dir)))).toBeGreaterThan(1);
    expect(crops(await open(dir, { ...RICH, center_crop: true, random_flip: false }))).toEqual(SIZES.map(() => 1));
  });
});

describe("resume", () => {
  it("stop anywhere, serialise, restore in a fresh loader: the same (file, crop box, flip, caption) sequence as one run", async () => {
    const dir = await makeFolder();
    const ds = await open(dir);
    const batch = 3;
    const straight = new DataLoader(ds, { batch, seed: 42 });
    const total = Math.floor(2.5 * straight.batchesPerEpoch);
    const all: Tuple[][] = [];
    for (let k = 0; k < total; k++) all.push(tuples(ds, straight.nextPlan()));
    expect(all.at(-1)![0]![0]).toBe(2); // it reached the third epoch

    const stops = [0, 1, straight.batchesPerEpoch - 1, straight.batchesPerEpoch, straight.batchesPerEpoch + 2, total - 1];
    for (const stop of stops) {
      const first = new DataLoader(ds, { batch, seed: 42 });
      const got: Tuple[][] = [];
      for (let k = 0; k < stop; k++) got.push(tuples(ds, first.nextPlan()));
      const saved = JSON.stringify(first.position());
      expect(saved.length).toBeLessThan(300); // a small object
      const fresh = await open(dir);
      const resumed = new DataLoader(fresh, { batch, seed: 42 }, JSON.parse(saved) as LoaderPosition);
      for (let k = stop; k < total; k++) got.push(tuples(fresh, resumed.nextPlan()));
      expect(got, `stopped after ${stop} batches`).toEqual(all);
    }
  });

  it("the position is plain JSON: epoch, batch within the epoch, generator state", async () => {
    const ds = await open(await makeFolder());
    const loader = new DataLoader(ds, { batch: 3, seed: 42 });
    expect(loader.position()).toEqual({ version: 1, dataset: ds.fingerprint, seed: "42", batch: 3, shuffle: true, epoch: 0, step: 0, rng: { seed: "42", draws: 0 } });
    for (let k = 0; k < loader.batchesPerEpoch; k++) loader.nextPlan();
    const p = loader.position();
    expect([p.epoch, p.step]).toEqual([1, 0]);
    expect(p.rng.draws).toBeGreaterThan(0);
  });

  it("decoded batches match too", async () => {
    const dir = await makeFolder();
    const a = new DataLoader(await open(dir), { batch: 2, seed: 9 });
    await a.next();
    const saved = JSON.parse(JSON.stringify(a.position())) as LoaderPosition;
    const want = await a.next();
    const b = new DataLoader(await open(dir), { batch: 2, seed: 9 }, saved);
    const got = await b.next();
    expect(got.shape).toEqual(want.shape);
    expect(got.shape).toEqual([want.items.length, 3, want.bucket.height, want.bucket.width]);
    expect(got.captions).toEqual(want.captions);
    expect(Buffer.from(got.pixels.buffer).equals(Buffer.from(want.pixels.buffer))).toBe(true);
    for (const v of got.pixels) expect(v >= -1 && v <= 1).toBe(true);
  });

  it("refuses a position from other data or settings", async () => {
    const dir = await makeFolder();
    const ds = await open(dir);
    const p = new DataLoader(ds, { batch: 3, seed: 42 }).position();
    const problems = (fn: () => unknown) => {
      try {
        fn();
        return "ok";
      } catch (e) {
        if (isUserError(e)) return renderProblems(e.problems);
        throw e;
      }
    };
    expect(problems(() => new DataLoader(ds, { batch: 4, seed: 7 }, p))).toMatchInlineSnapshot(`
      "data loader position: the position was saved with seed 42, the loader has seed 7
        hint: resume with the settings the run started with, or start a new run

      data loader position: the position was saved with batch 3, the loader has batch 4
        hint: resume with the settings the run started with, or start a new run"
    `);
    fs.writeFileSync(path.join(dir, "1_other", "img0.txt"), "a changed caption");
    const changed = await open(dir);
    expect(problems(() => new DataLoader(changed, { batch: 3, seed: 42 }, p)).replace(/[0-9a-f]{16}/g, "<hash>")).toMatchInlineSnapshot(`
      "data loader position: the training data changed since the position was saved (dataset <hash>, now <hash>)
        hint: resume with the same images, captions and train.data settings, or start a new run"
    `);
    expect(problems(() => new DataLoader(ds, { batch: 3, seed: 42 }, { ...p, step: 10_000 }))).toMatchInlineSnapshot(`
      "data loader position: the position (epoch 0, batch 10000) is not in the data (5 batches per epoch)
        hint: resume with the settings the run started with, or start a new run"
    `);
    expect(problems(() => new DataLoader(ds, { batch: 3, seed: 42 }, { not: "a position" } as unknown as LoaderPosition))).toMatchInlineSnapshot(`
      "data loader position: the saved data loader position is not one sdc wrote (version 1)
        hint: the checkpoint's loader state is damaged; start a new run"
    `);
  });
});

describe("images that fail to decode after opening", () => {
  async function truncated(): Promise<string> {
    const dir = tempDir();
    const good = await image(64, 64);
    writeFiles(dir, { "metadata.jsonl": jsonl([{ file_name: "a.png", text: "a" }, { file_name: "b.png", text: "b" }]), "a.png": good, "b.png": good.subarray(0, good.length - 30) });
    return dir;
  }

  it("are skipped, counted, and left out of the batch", async () => {
    const ds = await open(await truncated(), { resolution: 64 });
    expect(ds.samples).toHaveLength(2); // the header reads fine
    const b = await new DataLoader(ds, { batch: 2, seed: 0, shuffle: false }).next();
    expect(b.items.map((i) => ds.samples[i.sample]!.rel)).toEqual(["a.png"]);
    expect(b.shape).toEqual([1, 3, 64, 64]);
    expect(b.pixels.length).toBe(3 * 64 * 64);
    expect(b.skipped.map((s) => s.file)).toEqual(["b.png"]);
    expect(ds.summary.skipped.map((s) => s.file)).toEqual(["b.png"]);
  });

  it("fail with on_bad_image: error", async () => {
    const ds = await open(await truncated(), { resolution: 64, on_bad_image: "error" });
    await expect(new DataLoader(ds, { batch: 2, seed: 0, shuffle: false }).next()).rejects.toThrow(/^b\.png: cannot read the image/);
  });
});

describe("generator", () => {
  it("restoring (seed, draws) continues the same stream", () => {
    const a = new DataRng(123);
    a.randperm(10);
    a.uniform();
    a.below(7);
    const b = DataRng.restore(JSON.parse(JSON.stringify(a.state())));
    expect(a.state()).toEqual({ seed: "123", draws: 11 });
    expect([a.uniform(), a.below(1000), a.randperm(5)]).toEqual([b.uniform(), b.below(1000), b.randperm(5)]);
  });

  it("randperm is a permutation; n - 1 draws", () => {
    const g = new DataRng(0);
    const p = g.randperm(100);
    expect([...p].sort((x, y) => x - y)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect(g.state().draws).toBe(99);
    expect(g.randperm(0)).toEqual([]);
    expect(g.randperm(1)).toEqual([0]);
  });
});
