/**
 * The runtime's preview hook (what `sdc serve --preview-every` shows): every N denoising steps, the
 * first image's latents of that step through the run's VAE decoder. Checked against the traced
 * latents of the same run decoded by a separately opened decoder session, and shown to change
 * nothing of the result.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import type { RgbImage } from "../../src/image/image.js";
import { readPlan } from "../../src/plan/read.js";
import { runSettings } from "../../src/pipeline.js";
import { openPlanGraphs } from "../../src/runtime/graphs.js";
import { runPlan } from "../../src/runtime/run.js";
import { decodeImage } from "../../src/runtime/stages/index.js";
import { compileFixture } from "../helpers/pipeline.js";

describe("run previews", () => {
  it("decode the first image's latents of every Nth step (not the last), and leave the result as it is", async () => {
    const { p, r, dir } = await compileFixture("tiny-sd1", "scheduler:\n  type: euler-ancestral\n  steps: 5\nsample:\n  prompt: [a cat, a dog]\n  seed: 3\n  width: 16\n  height: 16\nguidance:\n  scale: 4\nruntime:\n  device: cpu\n  threads: 1\n");
    const settings = { ...runSettings(p), outputDir: path.join(dir, "with") };
    const latents = new Map<number, Float32Array>();
    const previews: { step: number; total: number; image: RgbImage }[] = [];
    const withPreviews = await runPlan(r.dir, settings, {
      progress: false,
      trace: (stage, data, step) => void (stage === "latents" && latents.set(step! + 1, data.slice())),
      preview: { every: 2, onImage: (step, total, image) => void previews.push({ step, total, image }) },
    });
    expect(previews.map((x) => [x.step, x.total])).toEqual([
      [2, 5],
      [4, 5],
    ]);

    // the same latents through a decoder session of our own: the same pixels
    const plan = readPlan(r.dir);
    const opened = await openPlanGraphs(r.dir, plan, { threads: 1 });
    try {
      const side = 16 / plan.vae.scaleFactor;
      const per = plan.vae.latentChannels * side * side;
      for (const pv of previews) {
        const z = latents.get(pv.step)!;
        expect(z.length).toBe(2 * per); // two images in the batch: the preview shows the first
        const { image } = await decodeImage(opened.graphs.vae_decoder, z.slice(0, per), { images: 1, channels: plan.vae.latentChannels, height: side, width: side }, plan.vae.scalingFactor);
        expect([pv.image.width, pv.image.height]).toEqual([16, 16]);
        expect(Buffer.from(pv.image.data).equals(Buffer.from(image.data))).toBe(true);
      }
      // the second preview is not the first: they follow the denoising
      expect(Buffer.from(previews[0]!.image.data).equals(Buffer.from(previews[1]!.image.data))).toBe(false);
    } finally {
      await opened.release();
    }

    // without previews: the very same files (an ancestral sampler: any extra draw from the generator would show)
    const without = await runPlan(r.dir, { ...settings, outputDir: path.join(dir, "without") }, { progress: false });
    expect(withPreviews.outputs.map((f) => path.basename(f))).toEqual(without.outputs.map((f) => path.basename(f)));
    for (const [i, f] of withPreviews.outputs.entries()) expect(fs.readFileSync(f).equals(fs.readFileSync(without.outputs[i]!))).toBe(true);
  });

  it("refuses a preview interval that is not a whole number ≥ 1", async () => {
    const { p, r, dir } = await compileFixture("tiny-sd1", "scheduler:\n  steps: 2\nsample:\n  width: 16\n  height: 16\nruntime:\n  device: cpu\n");
    await expect(runPlan(r.dir, { ...runSettings(p), outputDir: dir }, { progress: false, preview: { every: 0, onImage: () => {} } })).rejects.toThrow(/preview every 0 steps: expected a whole number ≥ 1/);
  });
});
