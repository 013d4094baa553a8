/**
 * LCM checkpoints: a U-Net with `time_cond_proj_dim` (the guidance-scale embedding of
 * LCM_Dreamshaper_v7 and its kind), against diffusers 0.24 (fixtures from test/fixtures/gen/lcm_unet.py:
 * tiny-sd1's U-Net with a random time_embedding.cond_proj).
 *  - the embedding (LatentConsistencyModelPipeline.get_guidance_scale_embedding), odd sizes included;
 *  - the compiled U-Net on random inputs, with the embedding as its `timestep_cond` input, within 1e-5
 *    of the output's magnitude;
 *  - `sdc run` with such a U-Net runs LatentConsistencyModelPipeline's loop: the guidance scale goes into
 *    the embedding (no negative batch), LCMScheduler steps with the run's seeded generator; the latents
 *    after every step within 2e-5 of the reference's magnitude (the pipeline tests' tolerance);
 *  - training such a U-Net is refused at the key.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { compile } from "../../src/compiler/compile.js";
import { loadPipeline } from "../../src/config/load.js";
import { SafetensorsFile } from "../../src/models/weights/safetensors.js";
import { run } from "../../src/pipeline.js";
import { guidanceScaleEmbedding } from "../../src/runtime/guidance.js";
import { maxAbsDiff, maxErrOverMaxRef } from "../helpers/ort.js";
import { refTensor, session } from "../helpers/pipeline.js";
import { MODEL_FIXTURES, tempDir } from "../helpers/repo.js";

const ref = SafetensorsFile.open(path.join(MODEL_FIXTURES, "tiny-lcm-unet.reference.safetensors"));

/** A copy of tiny-sd1 whose U-Net is the LCM fixture's. */
function lcmModel(): { dir: string; model: string } {
  const dir = tempDir("sdc-lcm-unet-");
  const model = path.join(dir, "tiny-lcm");
  fs.cpSync(path.join(MODEL_FIXTURES, "tiny-sd1"), model, { recursive: true });
  fs.rmSync(path.join(model, "unet"), { recursive: true });
  fs.cpSync(path.join(MODEL_FIXTURES, "tiny-lcm-unet"), path.join(model, "unet"), { recursive: true });
  return { dir, model };
}

function pipelineYaml(model: string, extra = ""): string {
  return [
    "version: 1",
    "name: lcm",
    `model:\n  from: ${JSON.stringify(model)}`,
    "scheduler:\n  type: lcm\n  steps: 4",
    "guidance:\n  scale: 8.5",
    `sample:\n  prompt: "a photograph of an astronaut riding a horse"\n  width: 16\n  height: 16\n  seed: 1234`,
    "runtime:\n  device: cpu",
    extra,
  ].join("\n");
}

describe("the guidance-scale embedding", () => {
  it("is diffusers' get_guidance_scale_embedding (w = scale − 1), odd sizes zero-padded", () => {
    for (const name of [...ref.tensors.keys()].filter((k) => k.startsWith("embedding."))) {
      const [, w, dim] = /^embedding\.([\d.]+)\.(\d+)$/.exec(name)!.map(Number) as [number, number, number];
      const want = ref.readFloat32(name);
      const got = guidanceScaleEmbedding(w + 1, dim, 2);
      expect(got.length).toBe(2 * dim);
      expect(Array.from(got.subarray(dim))).toEqual(Array.from(got.subarray(0, dim))); // one row per image
      // sin and cos of arguments up to 1000·w, where one float32 ulp of the argument (torch's exp rounds
      // differently now and then) moves them by up to ~1e-4 (measured: 1.0e-4 at w = 1.25, dim 256)
      expect([name, maxAbsDiff(got.subarray(0, dim), want)]).toSatisfy(([, e]) => (e as number) < 5e-4);
      if (dim % 2) expect(got[dim - 1]).toBe(0);
    }
    // at w = 0 every sin is 0 and every cos 1, exactly
    expect(Array.from(guidanceScaleEmbedding(1, 4, 1))).toEqual([0, 0, 1, 1]);
  });
});

describe("an LCM U-Net (time_cond_proj_dim)", () => {
  it("compiles with a timestep_cond input and computes diffusers' output (< 1e-5 of its magnitude)", async () => {
    const { dir, model } = lcmModel();
    fs.writeFileSync(path.join(dir, "p.yaml"), pipelineYaml(model));
    const p = await loadPipeline(path.join(dir, "p.yaml"), { cwd: dir });
    const r = await compile(p, { outDir: path.join(dir, "compiled") });
    expect(r.plan.graphs.unet.inputs.find((i) => i.name === "timestep_cond")?.shape).toEqual(["batch", 16]);
    const s = await session(r.dir, "unet");
    try {
      for (const c of ["b2_t999_t500", "b1_t259"]) {
        const feeds = Object.fromEntries(["sample", "timestep", "encoder_hidden_states", "timestep_cond"].map((n) => [n, refTensor(ref, `unet.${c}.${n}`)])) as Record<string, ort.Tensor>;
        const out = (await s.run(feeds)).out_sample!.data as Float32Array;
        expect([c, maxErrOverMaxRef(out, ref.readFloat32(`unet.${c}.out_sample`))]).toSatisfy(([, e]) => (e as number) < 1e-5);
      }
    } finally {
      await s.release();
    }
  });

  it("sdc run is LatentConsistencyModelPipeline: the latents after every step equal diffusers' (< 2e-5)", async () => {
    const { dir, model } = lcmModel();
    fs.writeFileSync(path.join(dir, "p.yaml"), pipelineYaml(model));
    const p = await loadPipeline(path.join(dir, "p.yaml"), { cwd: dir, out: path.join(dir, "out") });
    const latents: Float32Array[] = [];
    let embeds: Float32Array | undefined;
    const r = await run(p, {
      cwd: dir,
      progress: false,
      trace: (stage, data) => {
        if (stage === "latents") latents.push(data.slice());
        if (stage === "prompt_embeds") embeds = data.slice();
        if (stage === "negative_prompt_embeds") throw new Error("an LCM U-Net runs no negative batch");
      },
    });
    expect(r.outputs).toHaveLength(1);
    expect(embeds!.length).toBe(77 * 32); // one prompt, no negative half
    expect(latents).toHaveLength(4);
    let worst = 0;
    latents.forEach((l, i) => (worst = Math.max(worst, maxErrOverMaxRef(l, ref.readFloat32(`pipeline.latents.${i}`)))));
    console.log(`LCM U-Net pipeline: latents max |Δ| / max |ref| ${worst.toExponential(2)} over 4 steps`);
    expect(worst).toBeLessThan(2e-5);
  });

  it("keeps the model's scheduler config as it is: LatentConsistencyModelPipeline makes no StableDiffusionPipeline fix-ups", async () => {
    const { dir, model } = lcmModel();
    const file = path.join(model, "scheduler", "scheduler_config.json");
    fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(fs.readFileSync(file, "utf8")), _class_name: "LCMScheduler", clip_sample: true, steps_offset: 0 }));
    fs.writeFileSync(path.join(dir, "p.yaml"), pipelineYaml(model).replace("  type: lcm\n", ""));
    const r = await compile(await loadPipeline(path.join(dir, "p.yaml"), { cwd: dir }), { outDir: path.join(dir, "compiled") });
    const written = JSON.parse(fs.readFileSync(path.join(r.dir, "scheduler", "scheduler_config.json"), "utf8")) as Record<string, unknown>;
    expect([written._class_name, written.clip_sample, written.steps_offset]).toEqual(["LCMScheduler", true, 0]);
  });

  it("is refused for training, at the key", async () => {
    const { dir, model } = lcmModel();
    fs.writeFileSync(path.join(dir, "p.yaml"), pipelineYaml(model, "train:\n  target: unet\n  data:\n    dir: .\n"));
    await expect(loadPipeline(path.join(dir, "p.yaml"), { cwd: dir })).rejects.toThrow(/unet\.time_cond_proj_dim is 16: a guidance-embedded LCM U-Net, which sdc samples but does not train/);
  });
});
