/**
 * NaN or Infinity never reaches a PNG: a denoising loop whose latents stop being finite, and a VAE
 * decoder that returns non-finite pixels, stop the run with a located error, and no image is
 * written (decoded NaN used to become black pixels, exit 0).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { loadPipeline } from "../../src/config/load.js";
import { run } from "../../src/pipeline.js";
import { decodeImage } from "../../src/runtime/stages/decode-save.js";
import { isUserError } from "../../src/util/errors.js";
import { REPO, tempDir } from "../helpers/repo.js";

describe("non-finite values stop a run before anything is written", () => {
  it("a diverging schedule (DPM-Solver++ with Karras sigmas on the emoji model's cosine schedule) is refused, naming the step", async () => {
    const cwd = tempDir("sdc-nan-");
    const p = await loadPipeline(path.join(REPO, "pipelines", "txt2img.yaml"), { cwd, overrides: ["output.dir=out", "scheduler.use_karras_sigmas=true", "scheduler.type=dpm-solver++"] });
    const e = await run(p, { cwd, progress: false }).then(
      () => null,
      (x: unknown) => x,
    );
    expect(isUserError(e), String(e)).toBe(true);
    expect((e as Error).message).toMatch(/scheduler: the denoising diverged at step \d+ of 20 \(timestep \d+\): the latents hold NaN or Infinity, so no image is written/);
    expect(fs.existsSync(path.join(cwd, "out"))).toBe(false);
  });

  it("a VAE decoder that returns NaN is refused with the fp32 hint", async () => {
    const nan = { run: async () => ({ sample: { data: new Float32Array(3 * 8 * 8).fill(Number.NaN), dims: [1, 3, 8, 8] } }) };
    const e = await decodeImage(nan, new Float32Array(4 * 4), { images: 1, channels: 4, height: 2, width: 2 }, 0.18215).then(
      () => null,
      (x: unknown) => x,
    );
    expect(isUserError(e)).toBe(true);
    expect((e as Error).message).toMatch(/vae_decoder: the VAE decoder returned NaN or Infinity[\s\S]*runtime\.precision: fp32/);
  });
});
