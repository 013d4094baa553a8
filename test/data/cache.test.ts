/** Cache keys: content (bytes) and transform decide the key; the file name does not. */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { TrainDataSection } from "../../src/config/schema.js";
import { fileSha256, itemLatentKey, latentCacheKey, type LatentKeyParts, textCacheKey } from "../../src/data/cache.js";
import { cacheRefusals } from "../../src/data/config.js";
import { openDataset } from "../../src/data/dataset.js";
import { DataLoader } from "../../src/data/loader.js";
import { sha256 } from "../../src/util/hash.js";
import { image, tempDir, writeFiles } from "./helpers.js";

const base: LatentKeyParts = {
  imageSha256: "ab".repeat(32),
  background: [255, 255, 255],
  resize: { width: 683, height: 512 },
  crop: { left: 85, top: 0, width: 512, height: 512 },
  flip: false,
};

describe("latent keys", () => {
  it("change with every transform parameter", () => {
    const keys = [
      base,
      { ...base, imageSha256: "cd".repeat(32) },
      { ...base, background: [0, 0, 0] as const },
      { ...base, resize: { width: 684, height: 512 } },
      { ...base, crop: { ...base.crop, left: 86 } },
      { ...base, crop: { ...base.crop, top: 1 } },
      { ...base, flip: true },
      { ...base, extra: { vae: "x" } },
    ].map(latentCacheKey);
    expect(new Set(keys).size).toBe(keys.length);
    for (const k of keys) expect(k).toMatch(/^[0-9a-f]{64}$/);
    expect(latentCacheKey({ ...base })).toBe(keys[0]);
  });

  it("a renamed copy of an image has the same keys; dataset items use the file's SHA-256", async () => {
    const dir = tempDir();
    const png = await image(8, 8);
    writeFiles(dir, { "a.png": png, "copy-of-a.png": png });
    expect(await fileSha256(path.join(dir, "a.png"))).toBe(sha256(png));
    const ds = await openDataset(TrainDataSection.parse({ dir, resolution: 8 }));
    const plan = new DataLoader(ds, { batch: 2, seed: 0, shuffle: false }).nextPlan();
    const [a, b] = await Promise.all(plan.items.map((i) => itemLatentKey(ds, i, { vae: "v1" })));
    expect(a).toBe(b);
    expect(a).toBe(latentCacheKey({ imageSha256: sha256(png), background: [255, 255, 255], resize: plan.items[0]!.resize, crop: plan.items[0]!.crop, flip: false, extra: { vae: "v1" } }));
    fs.rmSync(path.join(dir, "copy-of-a.png"));
  });

  it("text keys follow the caption text", () => {
    expect(textCacheKey("a cat")).toBe(textCacheKey("a cat"));
    expect(textCacheKey("a cat")).not.toBe(textCacheKey("a cat "));
    expect(textCacheKey("a cat", { clip_skip: 1 })).not.toBe(textCacheKey("a cat"));
  });
});

describe("refusals without a pipeline", () => {
  it("name the option", () => {
    const data = TrainDataSection.parse({ dir: "d", center_crop: false, cache_text_embeddings: true, caption: { shuffle: true } });
    const refused = cacheRefusals(data);
    expect(refused.map((p) => p.subject)).toEqual(["train.data.center_crop", "train.data.caption.shuffle"]);
    expect(refused[0]!.message).toMatch(/^random crops \(center_crop: false\) cannot be used with cached latents/);
    expect(refused[1]!.message).toMatch(/^train\.data\.caption\.shuffle: tag shuffling cannot be used with cached text embeddings/);
  });
});
