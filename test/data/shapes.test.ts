/** The procedural shapes dataset: seeded, captioned, readable by both layouts. */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { TrainDataSection } from "../../src/config/schema.js";
import { openDataset } from "../../src/data/dataset.js";
import { DataLoader } from "../../src/data/loader.js";
import { makeShapes, SHAPES } from "../../src/data/shapes.js";
import { decodeImage } from "../../src/data/transform.js";
import { tempDir } from "./helpers.js";

describe("makeShapes", () => {
  it("writes PNGs and metadata.jsonl; the same seed gives the same dataset", async () => {
    const a = tempDir();
    const b = tempDir();
    const ra = await makeShapes({ dir: a, count: 12, size: 32, seed: 5 });
    const rb = await makeShapes({ dir: b, count: 12, size: 32, seed: 5 });
    expect(ra).toEqual(rb);
    for (const r of ra) expect(fs.readFileSync(path.join(a, r.file_name)).equals(fs.readFileSync(path.join(b, r.file_name)))).toBe(true);
    expect(fs.readFileSync(path.join(a, "metadata.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))).toEqual(ra);
    const other = await makeShapes({ dir: tempDir(), count: 12, size: 32, seed: 6 });
    expect(other.map((r) => r.text)).not.toEqual(ra.map((r) => r.text));
  });

  it("captions name the shape, its colour and the background, in several phrasings", async () => {
    const recs = await makeShapes({ dir: tempDir(), count: 60, size: 16, seed: 1 });
    for (const r of recs) {
      expect(SHAPES).toContain(r.shape);
      expect(r.colour).not.toBe(r.background);
      expect(r.text).toContain(`${r.colour} ${r.shape}`);
      expect(r.text).toContain(r.background);
    }
    const phrasings = new Set(recs.map((r) => r.text.replace(r.colour, "C").replace(r.shape, "S").replace(r.background, "B").replace(/\ban?\b/g, "a")));
    for (const p of phrasings) expect(["C S on B background", "a C S on a B background", "C S, B background", "a picture of a C S on B"]).toContain(p);
    expect(phrasings.size).toBeGreaterThanOrEqual(3);
    expect(recs[0]!.text).toMatchInlineSnapshot(`"a yellow hexagon on a purple background"`);
  });

  it("draws the shape in its colour on the background colour", async () => {
    const dir = tempDir();
    const [r] = await makeShapes({ dir, count: 1, width: 48, height: 32, seed: 2, shapes: ["square"] });
    const img = await decodeImage(path.join(dir, r!.file_name));
    expect([img.width, img.height]).toEqual([48, 32]);
    const colours = new Map<string, number>();
    for (let i = 0; i < img.data.length; i += 3) {
      const k = `${img.data[i]},${img.data[i + 1]},${img.data[i + 2]}`;
      colours.set(k, (colours.get(k) ?? 0) + 1);
    }
    const top = [...colours.entries()].sort((x, y) => y[1] - x[1]).slice(0, 2).map(([k]) => k);
    const { COLOURS } = await import("../../src/data/shapes.js");
    expect(top.sort()).toEqual([COLOURS[r!.colour]!.join(","), COLOURS[r!.background]!.join(",")].sort());
  });

  it("kohya layout: .txt captions; both layouts open as datasets and load", async () => {
    const k = tempDir();
    const recs = await makeShapes({ dir: k, count: 4, size: 16, seed: 3, layout: "kohya" });
    expect(fs.existsSync(path.join(k, "metadata.jsonl"))).toBe(false);
    const ds = await openDataset(TrainDataSection.parse({ dir: k, resolution: 16 }));
    expect(ds.samples.map((s) => s.caption)).toEqual(recs.map((r) => r.text));
    const h = tempDir();
    await makeShapes({ dir: h, count: 4, size: 16, seed: 3 });
    const hs = await openDataset(TrainDataSection.parse({ dir: h, resolution: 16 }));
    expect(hs.summary.subsets[0]!.layout).toBe("imagefolder");
    const batch = await new DataLoader(hs, { batch: 4, seed: 0 }).next();
    expect(batch.shape).toEqual([4, 3, 16, 16]);
  });
});
