/**
 * The committed model and pipeline references are what other parts' parity tests consume: check that
 * every case names tensors that exist, with the shapes its parameters imply, and values that are not
 * degenerate (a reference of zeros would let a broken graph pass).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { readComponentConfig } from "../../../src/models/weights/diffusers.js";
import { SafetensorsFile } from "../../../src/models/weights/safetensors.js";
import { MODEL_FIXTURES, REPO } from "../../helpers/repo.js";
import { bytesEqual, readJson } from "./helpers.js";

function stats(st: SafetensorsFile, key: string): { std: number; finite: boolean } {
  const v = st.readFloat32(key);
  let s = 0;
  let s2 = 0;
  let finite = true;
  for (const x of v) {
    if (!Number.isFinite(x)) finite = false;
    s += x;
    s2 += x * x;
  }
  return { std: Math.sqrt(Math.max(0, s2 / v.length - (s / v.length) ** 2)), finite };
}

describe.each(["tiny-sd1", "tiny-sd2", "tiny-x"])("%s reference outputs", (name) => {
  const ref = readJson(path.join(MODEL_FIXTURES, `${name}.reference.json`));
  const st = SafetensorsFile.open(path.join(MODEL_FIXTURES, ref.tensors));
  const unet = readComponentConfig(path.join(MODEL_FIXTURES, name), "unet") as any;
  const vae = readComponentConfig(path.join(MODEL_FIXTURES, name), "vae") as any;
  const text = readComponentConfig(path.join(MODEL_FIXTURES, name), "text_encoder") as any;
  const shape = (k: string) => st.info(k).shape;

  it("covers the three models, batch 1 and 2, int and float timesteps, square and non-square", () => {
    const models = ref.cases.map((c: any) => c.model);
    expect(new Set(models)).toEqual(new Set(["text_encoder", "unet", "vae_encoder", "vae_decoder"]));
    const u = ref.cases.filter((c: any) => c.model === "unet");
    expect(new Set(u.map((c: any) => c.batch))).toEqual(new Set([1, 2]));
    expect(new Set(u.map((c: any) => c.timestep_dtype))).toEqual(new Set(["int64", "float32"]));
    expect(u.some((c: any) => c.latent_hw[0] !== c.latent_hw[1])).toBe(true);
  });

  it("every case's tensors exist with consistent shapes and non-degenerate values", () => {
    for (const c of ref.cases) {
      const keys = [...Object.values<string | string[]>(c.inputs), ...Object.values<string | string[]>(c.outputs)].flat();
      for (const k of keys) expect(st.tensors.has(k)).toBe(true);
      for (const k of Object.values<string | string[]>(c.outputs).flat()) {
        const s = stats(st, k);
        expect([k, s.finite, s.std > 1e-3]).toEqual([k, true, true]);
      }
      if (c.model === "text_encoder") {
        const b = c.prompts.length;
        expect(shape(c.inputs.input_ids)).toEqual([b, 77]);
        const raw = st.readRaw(c.inputs.input_ids);
        const ids = new BigInt64Array(raw.buffer, raw.byteOffset, raw.byteLength / 8);
        expect([...ids].map(Number)).toEqual(c.input_ids.flat());
        expect(shape(c.outputs.last_hidden_state)).toEqual([b, 77, text.hidden_size]);
        expect(shape(c.outputs.pooler_output)).toEqual([b, text.hidden_size]);
        expect(c.outputs.hidden_states).toHaveLength(text.num_hidden_layers + 1);
      } else if (c.model === "unet") {
        const [h, w] = c.latent_hw;
        expect(shape(c.inputs.sample)).toEqual([c.batch, unet.in_channels, h, w]);
        expect(shape(c.inputs.encoder_hidden_states)).toEqual([c.batch, 77, unet.cross_attention_dim]);
        expect([...st.readFloat32(c.inputs.timestep)]).toEqual(c.timesteps.length === c.batch ? c.timesteps : Array(c.batch).fill(c.timesteps[0]));
        expect(shape(c.outputs.out_sample)).toEqual([c.batch, unet.out_channels, h, w]);
      } else if (c.model === "vae_encoder") {
        const f = 2 ** (vae.block_out_channels.length - 1);
        const [h, w] = c.image_hw;
        expect(shape(c.inputs.sample)).toEqual([c.batch, 3, h, w]);
        expect(shape(c.outputs.moments)).toEqual([c.batch, 2 * vae.latent_channels, h / f, w / f]);
        expect(shape(c.outputs.mean)).toEqual([c.batch, vae.latent_channels, h / f, w / f]);
      } else {
        const f = 2 ** (vae.block_out_channels.length - 1);
        const [h, w] = c.latent_hw;
        expect(shape(c.inputs.latent_sample)).toEqual([c.batch, vae.latent_channels, h, w]);
        expect(shape(c.outputs.sample)).toEqual([c.batch, 3, h * f, w * f]);
      }
    }
  });
});

describe("pipeline references", () => {
  const index = readJson(path.join(REPO, "test", "fixtures", "pipelines", "index.json"));
  const st = SafetensorsFile.open(path.join(REPO, "test", "fixtures", "pipelines", index.tensors));

  it("cover the seven schedulers on both fixtures, ancestral, rescale, guidance 1 and img2img", () => {
    const ids = index.cases.map((c: any) => c.id);
    for (const fx of ["tiny-sd1", "tiny-sd2"]) {
      for (const s of ["DDIMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "HeunDiscreteScheduler", "UniPCMultistepScheduler"]) {
        expect(ids).toContain(`${fx}.${s}`);
      }
    }
    expect(ids).toEqual(expect.arrayContaining(["tiny-sd1.ancestral", "tiny-sd2.rescale0.7", "tiny-sd1.guidance1", "tiny-sd1.img2img.DDIMScheduler", "tiny-sd1.img2img.EulerDiscreteScheduler"]));
    expect(fs.existsSync(path.join(REPO, "test", "fixtures", "pipelines", "init-16x16.png"))).toBe(true);
  });

  it("every case lists tensors that exist: one latent per loop iteration and an image of the stated size", () => {
    for (const c of index.cases) {
      for (const k of c.tensors) expect(st.tensors.has(k)).toBe(true);
      expect(c.loop_timesteps).toHaveLength(c.steps_recorded);
      for (let i = 0; i < c.steps_recorded; i++) expect(st.tensors.has(`${c.id}.latents.${i}`)).toBe(true);
      expect(st.info(`${c.id}.image`).shape).toEqual([1, ...c.image_hw, 3]);
      const s = stats(st, `${c.id}.image`);
      expect([c.id, s.finite, s.std > 1e-3]).toEqual([c.id, true, true]);
      expect(st.tensors.has(`${c.id}.negative_prompt_embeds`)).toBe(c.guidance_scale > 1);
    }
  });
});

describe("models/tiny-sd, the default model", () => {
  it("is tiny-sd1 (fp32 files only), byte for byte", () => {
    const dst = path.join(REPO, "models", "tiny-sd");
    const walk = (d: string): string[] =>
      fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(d, e.name)).map((f) => path.join(e.name, f)) : [e.name]));
    const files = walk(dst).filter((f) => f !== "README.md").sort();
    expect(files).toEqual(walk(path.join(MODEL_FIXTURES, "tiny-sd1")).filter((f) => !f.includes(".fp16.")).sort());
    for (const f of files) expect([f, bytesEqual(fs.readFileSync(path.join(dst, f)), fs.readFileSync(path.join(MODEL_FIXTURES, "tiny-sd1", f)))]).toEqual([f, true]);
  });
});
