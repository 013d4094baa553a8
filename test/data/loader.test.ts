/** The order: seeded epochs within buckets, and exact resume from a serialised position. */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { TrainDataSection } from "../../src/config/schema.js";
import { captionsVary } from "../../src/data/captions.js";
import { DataLoader, type LoaderPosition, planEpoch, type PlannedBatch } from "../../src/data/loader.js";
import { type Dataset, openDataset } from "../../src/data/dataset.js";
import { relativeDisplay } from "../../src/data/problems.js";
import { DataRng } from "../../src/data/rng.js";
import { isUserError, renderProblems } from "../../src/util/errors.js";
import { sha256 } from "../../src/util/hash.js";
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

describe("a caption column holding lists", () => {
  /** An imagefolder with one image per entry of `captions` (sizes from SIZES), the entries as its "text" column. */
  async function captionFolder(captions: (string | string[])[]): Promise<string> {
    const dir = tempDir();
    const files: Record<string, Uint8Array | string> = { "metadata.jsonl": jsonl(captions.map((text, i) => ({ file_name: `img${i}.png`, text }))) };
    for (const [i] of captions.entries()) files[`img${i}.png`] = await image(SIZES[i]![0], SIZES[i]![1], (x, y) => [(x * 3 + i * 40) % 256, (y * 9) % 256, 7]);
    writeFiles(dir, files);
    return dir;
  }
  const LISTS: (string | string[])[] = [["a red circle", "a circle, red", "red round shape"], ["only one"], "a plain string", ["x", "y"]];
  const STRINGS = ["red, circle, small", "blue square", "green, triangle, large, bright", "a cat", "b", "c, d", "e"];
  const PLAIN = { resolution: 64, buckets: { enabled: true, step: 16, min_side: 32, max_side: 128 } };
  /** The caption of each appearance, by sample, over `epochs` epochs of batch 1. */
  const drawn = (ds: Dataset, seed: number, epochs: number) => {
    const loader = new DataLoader(ds, { batch: 1, seed });
    const out = ds.samples.map((): string[] => []);
    for (let k = 0; k < epochs * loader.batchesPerEpoch; k++) for (const i of loader.nextPlan().items) out[i.sample]!.push(i.caption);
    return out;
  };

  it("each draw picks one of the row's captions with the seeded generator: the same seed, the same sequence; every caption appears", async () => {
    const ds = await open(await captionFolder(LISTS), PLAIN);
    expect(ds.samples.map((s) => [s.caption, s.captions])).toEqual([
      ["a red circle", ["a red circle", "a circle, red", "red round shape"]],
      ["only one", ["only one"]],
      ["a plain string", undefined],
      ["x", ["x", "y"]],
    ]);
    const a = drawn(ds, 5, 60);
    expect(drawn(ds, 5, 60)).toEqual(a);
    expect(drawn(ds, 6, 60)).not.toEqual(a);
    expect(a.map((c) => [...new Set(c)].sort())).toEqual([["a circle, red", "a red circle", "red round shape"], ["only one"], ["a plain string"], ["x", "y"]]);
    // roughly uniform: each of 3 captions in 60 draws (expected 20, sd ≈ 3.7)
    for (const c of ["a red circle", "a circle, red", "red round shape"]) expect(Math.abs(a[0]!.filter((x) => x === c).length - 20)).toBeLessThan(15);
  });

  it("the pick is one below(n) draw before dropout, shuffle and prefix, and only for rows with several captions", async () => {
    const withLists = await open(await captionFolder(LISTS));
    const firsts = await open(await captionFolder(LISTS.map((c) => (typeof c === "string" ? c : c[0]!))));
    const ra = new DataRng(7);
    const rb = new DataRng(7);
    planEpoch(withLists, ra, { batch: 2 });
    planEpoch(firsts, rb, { batch: 2 });
    expect(ra.state().draws - rb.state().draws).toBe(2); // rows 0 and 3; the one-item list draws nothing
    // what a draw of row 0 is, step by step, with RICH's options (flip, crop, pick, dropout, shuffle)
    const rng = new DataRng(11);
    const plan = planEpoch(withLists, new DataRng(11), { batch: 1, shuffle: false });
    const s = withLists.samples[0]!;
    const bucket = withLists.buckets[s.bucket]!;
    rng.uniform(); // flip
    rng.below(s.resize.width - bucket.width + 1); // crop left
    rng.below(s.resize.height - bucket.height + 1); // crop top
    const picked = s.captions![rng.below(3)]!;
    const dropped = rng.uniform() < 0.2;
    const tags = picked.split(",").map((t) => t.trim());
    const want = dropped ? "" : `p: ${[...tags.slice(0, 1), ...rng.shuffle(tags.slice(1))].join(", ")}`;
    expect(plan.flatMap((b) => b.items).find((i) => i.sample === 0)!.caption).toBe(want);
  });

  it("a one-item list plans exactly as the string", async () => {
    const strings = await open(await captionFolder(STRINGS));
    const lists = await open(await captionFolder(STRINGS.map((c) => [c])));
    const run = (ds: Dataset) => {
      const loader = new DataLoader(ds, { batch: 2, seed: 3 });
      const out = Array.from({ length: 3 * loader.batchesPerEpoch }, () => tuples(ds, loader.nextPlan()));
      return { out, draws: loader.position().rng.draws };
    };
    expect(run(lists)).toEqual(run(strings));
  });

  it("a string column draws exactly as before lists were read (pinned)", async () => {
    const ds = await open(await captionFolder(STRINGS));
    const loader = new DataLoader(ds, { batch: 2, seed: 42 });
    const all = Array.from({ length: 3 * loader.batchesPerEpoch }, () => tuples(ds, loader.nextPlan()));
    expect(all.slice(0, 3).map((b) => b.map((t) => t.join(" | ")))).toMatchInlineSnapshot(`
      [
        [
          "0 | 0 | img1.png | 2,0,80x48 | false | p: blue square",
        ],
        [
          "0 | 1 | img3.png | 4,0,64x64 | true | p: a cat",
          "0 | 1 | img5.png | 0,0,64x64 | false | p: c, d",
        ],
        [
          "0 | 2 | img4.png | 1,0,96x32 | false | p: b",
        ],
      ]
    `);
    expect({ draws: loader.position().rng.draws, sha256: sha256(JSON.stringify(all)), fingerprint: ds.fingerprint }).toMatchInlineSnapshot(`
      {
        "draws": 112,
        "fingerprint": "8ff9bf2169a1e206",
        "sha256": "fa8798a4fc8ab39146f5e8b83099696bbb69db5e5913b19c2043010768a75ad2",
      }
    `);
  });

  it("resume: a restored loader draws the same captions as one run", async () => {
    const dir = await captionFolder(LISTS);
    const ds = await open(dir);
    const straight = new DataLoader(ds, { batch: 1, seed: 8 });
    const total = 3 * straight.batchesPerEpoch;
    const all = Array.from({ length: total }, () => tuples(ds, straight.nextPlan()));
    for (const stop of [1, straight.batchesPerEpoch + 1, total - 1]) {
      const first = new DataLoader(ds, { batch: 1, seed: 8 });
      const got = Array.from({ length: stop }, () => tuples(ds, first.nextPlan()));
      const fresh = await open(dir);
      const resumed = new DataLoader(fresh, { batch: 1, seed: 8 }, JSON.parse(JSON.stringify(first.position())) as LoaderPosition);
      for (let k = stop; k < total; k++) got.push(tuples(fresh, resumed.nextPlan()));
      expect(got, `stopped after ${stop} batches`).toEqual(all);
    }
  });

  it("the fingerprint follows the list: another caption or another order is other data", async () => {
    const fp = async (captions: (string | string[])[]) => (await open(await captionFolder(captions), PLAIN)).fingerprint;
    const base = await fp(LISTS);
    expect(await fp(LISTS)).toBe(base);
    expect(await fp([["a red circle", "a circle, red"], ...LISTS.slice(1)])).not.toBe(base);
    expect(await fp([["a circle, red", "a red circle", "red round shape"], ...LISTS.slice(1)])).not.toBe(base);
    expect(await fp(["a red circle", ...LISTS.slice(1)])).not.toBe(base);
  });

  it("captionsVary: true when a sample has several captions", async () => {
    const lists = await open(await captionFolder(LISTS), PLAIN);
    const strings = await open(await captionFolder(STRINGS.map((c) => [c])), PLAIN);
    expect(captionsVary(lists.spec.subsets[0]!.caption, lists.samples)).toBe(true);
    expect(captionsVary(strings.spec.subsets[0]!.caption, strings.samples)).toBe(false);
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
