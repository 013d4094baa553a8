/**
 * examples/emoji-lcm.yaml runs on a fresh clone (the shipped emoji model, LCMScheduler, 4 steps), and
 * LCM's between-step noise comes from the run's seeded generator: the same seed gives the same bytes,
 * another seed another image, and the PNG names the sampler. (Its image quality on this model, which
 * is not LCM-distilled, is measured by `npm run bench -- lcm`, not asserted here.)
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { loadPipeline } from "../../src/config/load.js";
import { readPngText } from "../../src/image/image.js";
import { run } from "../../src/pipeline.js";
import { REPO, tempDir } from "../helpers/repo.js";

async function draw(overrides: string[]): Promise<string[]> {
  const cwd = tempDir("sdc-emoji-lcm-");
  const p = await loadPipeline(path.join(REPO, "examples", "emoji-lcm.yaml"), { cwd, overrides: ["output.dir=out", "output.grid=false", "sample.batch=1", "sample.prompt=a red heart", ...overrides] });
  const r = await run(p, { cwd, progress: false });
  return r.outputs.filter((f) => f.endsWith(".png"));
}

describe("examples/emoji-lcm.yaml", () => {
  it("draws 4-step LCM images, reproducibly from the seed", async () => {
    const [a] = await draw([]);
    const [b] = await draw([]);
    const [c] = await draw(["sample.seed=8"]);
    expect(fs.readFileSync(a!).equals(fs.readFileSync(b!))).toBe(true);
    expect(fs.readFileSync(a!).equals(fs.readFileSync(c!))).toBe(false);
    expect(readPngText(a!).parameters).toMatch(/Steps: 4, Sampler: LCM, CFG scale: 1, Seed: 7/);
  });
});
