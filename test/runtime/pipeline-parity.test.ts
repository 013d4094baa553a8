/**
 * End to end against diffusers 0.24's StableDiffusionPipeline / StableDiffusionImg2ImgPipeline on
 * the fixture checkpoints (test/fixtures/pipelines, recorded by pipeline_ref.py): the same
 * prompt, negative prompt, guidance and initial latents (or the same CPU-generator seed) must give
 * the same image within 1/255 (max abs on the [0, 1] scale, before quantisation to 8 bits), for
 * every scheduler, and the latents after every loop iteration within 2e-5 of the reference's scale
 * (max |Δ| / max |ref| over every element of a step's latents; measured ≤ 6e-6).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadPipeline } from "../../src/config/load.js";
import { SafetensorsFile, writeSafetensors } from "../../src/models/weights/safetensors.js";
import { readPngText } from "../../src/image/image.js";
import { run } from "../../src/pipeline.js";
import { maxAbsDiff, maxErrOverMaxRef } from "../helpers/ort.js";
import { FIXTURES, tempDir } from "../helpers/repo.js";

interface RefCase {
  id: string;
  fixture: string;
  pipeline: string;
  scheduler: string;
  steps: number;
  prompt: string;
  negative_prompt: string | null;
  guidance_scale: number;
  guidance_rescale?: number;
  image_hw: [number, number];
  latents_seed?: number;
  generator_seed?: number;
  init_image?: string;
  strength?: number;
  tensors: string[];
}

const dirRef = path.join(FIXTURES, "pipelines");
const index = JSON.parse(fs.readFileSync(path.join(dirRef, "index.json"), "utf8")) as { cases: RefCase[] };
const ref = SafetensorsFile.open(path.join(dirRef, "reference.safetensors"));
const report: string[] = [];
afterAll(() => console.log(`pipeline parity (final image: max |Δ| on [0, 1]; latents: max |Δ| / max |ref| of the worst step):\n  ${report.join("\n  ")}`));

/** Image: max |Δ| on the [0, 1] scale. Latents, at each step: max |Δ| / max |ref|. */
const IMAGE_TOL = 1 / 255;
const LATENTS_TOL = 2e-5;

describe("txt2img and img2img equal diffusers", () => {
  it.each(index.cases.map((c) => [c.id, c] as const))("%s", async (_, c) => {
    const dir = tempDir("sdc-e2e-");
    const lines = [
      "version: 1",
      "name: e2e",
      `model:\n  from: ${JSON.stringify(path.join(FIXTURES, "models", c.fixture))}`,
      `scheduler:\n  type: ${c.scheduler}\n  steps: ${c.steps}`,
      `guidance:\n  scale: ${c.guidance_scale}\n  rescale: ${c.guidance_rescale ?? 0}${c.negative_prompt !== null ? `\n  negative_prompt: ${JSON.stringify(c.negative_prompt)}` : ""}`,
      `sample:\n  prompt: ${JSON.stringify(c.prompt)}\n  height: ${c.image_hw[0]}\n  width: ${c.image_hw[1]}\n  seed: ${c.generator_seed ?? 0}`,
      `runtime:\n  device: cpu`,
    ];
    if (c.latents_seed !== undefined) {
      const name = `${c.id}.latents_in`;
      const info = ref.tensors.get(name)!;
      writeSafetensors(path.join(dir, "latents.safetensors"), [{ name: "latents", dtype: "F32", shape: info.shape, data: ref.readRaw(name) }]);
      lines[5] += "\n  latents: latents.safetensors";
    }
    if (c.init_image) lines[5] += `\n  init_image: ${JSON.stringify(path.join(dirRef, c.init_image))}\n  strength: ${c.strength}`;
    fs.writeFileSync(path.join(dir, "p.yaml"), lines.join("\n") + "\n");
    const p = await loadPipeline(path.join(dir, "p.yaml"), { cwd: dir, out: path.join(dir, "out") });

    const latents: Float32Array[] = [];
    let decoded: Float32Array | null = null;
    const r = await run(p, {
      cwd: dir,
      progress: false,
      trace: (stage, data) => {
        if (stage === "latents") latents.push(data.slice());
        if (stage === "decoded") decoded = data.slice();
      },
    });
    expect(r.cancelled).toBe(false);
    expect(r.outputs).toHaveLength(1);

    // every recorded latent after each loop iteration
    let latErr = 0;
    const recorded = c.tensors.filter((t) => /\.latents\.\d+$/.test(t)).sort((a, b) => Number(a.split(".").pop()) - Number(b.split(".").pop()));
    expect(latents.length).toBe(recorded.length);
    recorded.forEach((t, i) => (latErr = Math.max(latErr, maxErrOverMaxRef(latents[i]!, ref.readFloat32(t))))); // NaN stays NaN

    // the final image: diffusers' output_type="np" is (decoded/2 + 0.5).clamp(0,1), channels last
    const img = ref.readFloat32(`${c.id}.image`);
    const [H, W] = c.image_hw;
    const ours = new Float32Array(H * W * 3);
    for (let ch = 0; ch < 3; ch++)
      for (let y = 0; y < H; y++)
        for (let x = 0; x < W; x++) ours[(y * W + x) * 3 + ch] = Math.min(1, Math.max(0, decoded![(ch * H + y) * W + x]! / 2 + 0.5));
    const imgErr = maxAbsDiff(ours, img);
    report.push(`${c.id}: image ${imgErr.toExponential(2)}, latents ${latErr.toExponential(2)}`);
    expect(imgErr).toBeLessThanOrEqual(IMAGE_TOL);
    expect(latErr).toBeLessThan(LATENTS_TOL);

    // the PNG carries the generation parameters
    const text = readPngText(r.outputs[0]!);
    expect(text.parameters).toContain(`Steps: ${c.steps}`);
    expect(text.parameters).toContain(`CFG scale: ${c.guidance_scale}`);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
