/**
 * Parity of the compiled graphs with diffusers/transformers: each fixture checkpoint
 * (test/fixtures/models, random weights, references recorded with diffusers 0.24 and
 * transformers 4.30 in float32) is compiled by sdc and run with onnxruntime; every output must
 * match within 1e-5 of the reference's scale (max |sdc − ref| / max |ref| over every element;
 * measured ≤ 5e-6), for batch 1 and 2, integer and float timesteps, square and non-square inputs,
 * and inputs of small variance.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import { afterAll, describe, expect, it } from "vitest";
import { f16ToF32, f32ToF16 } from "../../src/util/half.js";
import { SafetensorsFile } from "../../src/models/weights/safetensors.js";
import { maxErrOverMaxRef } from "../helpers/ort.js";
import { compileFixture, refTensor, session } from "../helpers/pipeline.js";
import { MODEL_FIXTURES } from "../helpers/repo.js";
import * as R from "../helpers/ref.js";

/**
 * max |Δ| / max |ref| allowed. Measured: ≤ 3e-6 on random inputs, ≤ 5e-6 on the quiet ones; a
 * GroupNorm epsilon of 1e-5 for 1e-6 gives 5e-5 to 5e-4 on the quiet inputs (see `quiet` below).
 */
const TOL = 1e-5;
const errors: string[] = [];
afterAll(() => console.log(`parity (max |Δ| / max |ref| per output):\n  ${errors.join("\n  ")}`));

interface Case {
  case: string;
  model: "text_encoder" | "unet" | "vae_encoder" | "vae_decoder";
  inputs: Record<string, string>;
  outputs: Record<string, string | string[]>;
}

/**
 * Inputs of small variance (quiet_inputs.py): a U-Net sample of 1e-2 · randn, VAE latents of
 * 1e-1 · randn, a nearly flat grey image. A GroupNorm's epsilon shows there: with eps 1e-5 instead
 * of 1e-6 (in the VAE, or in front of the U-Net's transformer blocks) diffusers' own outputs move by
 * 5e-5 to 5e-4 (recorded per case in the JSON), where on the random inputs above the transformer
 * blocks' one moves them by ≈ 3e-6, which float32 noise hides.
 */
const quiet = {
  json: JSON.parse(fs.readFileSync(path.join(MODEL_FIXTURES, "quiet-inputs.reference.json"), "utf8")) as { cases: (Case & { fixture: string })[] },
  ref: SafetensorsFile.open(path.join(MODEL_FIXTURES, "quiet-inputs.reference.safetensors")),
};

describe.each(["tiny-sd1", "tiny-sd2", "tiny-x"])("%s", (fixture) => {
  const refJson = JSON.parse(fs.readFileSync(path.join(MODEL_FIXTURES, `${fixture}.reference.json`), "utf8")) as { cases: Case[] };
  const ref = SafetensorsFile.open(path.join(MODEL_FIXTURES, `${fixture}.reference.safetensors`));
  const compiled = compileFixture(fixture);
  const cases = [...refJson.cases.map((c) => ({ c, ref })), ...quiet.json.cases.filter((c) => c.fixture === fixture).map((c) => ({ c, ref: quiet.ref }))];

  it.each(cases.map(({ c, ref }) => [`${c.model} ${c.case}`, c, ref] as const))("%s", async (_, c, ref) => {
    const { r } = await compiled;
    const s = await session(r.dir, c.model);
    const feeds = Object.fromEntries(
      Object.entries(c.inputs).map(([name, t]) => [name, refTensor(ref, t, name === "input_ids" ? "int32" : "float32")]),
    );
    const out = await s.run(feeds);
    const check = (got: string, want: string) => {
      const e = maxErrOverMaxRef(out[got]!.data as Float32Array, ref.readFloat32(want));
      errors.push(`${fixture} ${c.model} ${c.case} ${got}: ${e.toExponential(2)}`);
      expect(e, `${got} vs ${want}`).toBeLessThan(TOL);
    };
    if (c.model === "text_encoder") {
      check("last_hidden_state", c.outputs.last_hidden_state as string);
      check("pooler_output", c.outputs.pooler_output as string);
    } else if (c.model === "unet") check("out_sample", c.outputs.out_sample as string);
    else if (c.model === "vae_decoder") check("sample", c.outputs.sample as string);
    else {
      check("latent_sample", c.outputs.mean as string);
      check("latent_parameters", c.outputs.moments as string);
    }
    await s.release();
  });

  it("clip_skip 1 gives final_layer_norm(penultimate hidden state), as diffusers' pipelines", async () => {
    const { r } = await compileFixture(fixture, "  text_encoder:\n    clip_skip: 1\n");
    const c = refJson.cases.find((x) => x.model === "text_encoder" && x.case === "b2")!;
    const s = await session(r.dir, "text_encoder");
    const out = await s.run({ input_ids: refTensor(ref, c.inputs.input_ids!, "int32") });
    const hs = c.outputs.hidden_states as string[];
    const pen = ref.readFloat32(hs[hs.length - 2]!);
    const te = SafetensorsFile.open(path.join(MODEL_FIXTURES, fixture, "text_encoder", "model.safetensors"));
    const d = te.tensors.get("text_model.final_layer_norm.weight")!.shape[0]!;
    const want = R.layerNorm(R.arr(pen, [pen.length / d, d]), R.arr(te.readFloat32("text_model.final_layer_norm.weight"), [d]), R.arr(te.readFloat32("text_model.final_layer_norm.bias"), [d]), 1e-5);
    const e = maxErrOverMaxRef(out.last_hidden_state!.data as Float32Array, want.data);
    errors.push(`${fixture} text_encoder clip_skip=1: ${e.toExponential(2)}`);
    expect(e).toBeLessThan(TOL);
    await s.release();
  });
});

/**
 * fp16 graphs (runtime.precision: fp16, meant for CUDA; run here on the CPU provider): weights
 * converted at write time, float16 activations. Against the float32 references the error is
 * float16's: < 1e-2 relative.
 */
describe("fp16 graphs", () => {
  const refJson = JSON.parse(fs.readFileSync(path.join(MODEL_FIXTURES, "tiny-sd1.reference.json"), "utf8")) as { cases: Case[] };
  const ref = SafetensorsFile.open(path.join(MODEL_FIXTURES, "tiny-sd1.reference.safetensors"));
  it("tiny-sd1 text encoder, U-Net and VAE decoder within 1e-2 of float32 diffusers", async () => {
    const { r } = await compileFixture("tiny-sd1", "runtime:\n  device: cpu\n  precision: fp16\n");
    expect(r.plan.graphs.unet.inputs.find((i) => i.name === "sample")!.dtype).toBe("float16");
    for (const model of ["text_encoder", "unet", "vae_decoder"] as const) {
      const c = refJson.cases.find((x) => x.model === model)!;
      const s = await session(r.dir, model);
      const feeds = Object.fromEntries(
        Object.entries(c.inputs).map(([name, t]) => {
          const x = refTensor(ref, t, name === "input_ids" ? "int32" : "float32");
          return [name, x.type === "float32" ? new ort.Tensor("float16", f32ToF16(x.data as Float32Array), x.dims) : x];
        }),
      );
      const out = await s.run(feeds);
      const name = model === "text_encoder" ? "last_hidden_state" : model === "unet" ? "out_sample" : "sample";
      const want = c.outputs[name === "last_hidden_state" ? "last_hidden_state" : name === "out_sample" ? "out_sample" : "sample"] as string;
      const got = f16ToF32(new Uint8Array((out[name]!.data as Uint16Array).buffer));
      const e = maxErrOverMaxRef(got, ref.readFloat32(want));
      errors.push(`tiny-sd1 fp16 ${model}: ${e.toExponential(2)}`);
      expect(e).toBeLessThan(1e-2);
      await s.release();
    }
  });
});

/**
 * Latent sizes that do not halve evenly through the U-Net's down blocks (tiny-sd1 at 7×9, tiny-x
 * at 5×7 and 9×6): the down convs round up and each upsampler resizes to its skip connection's
 * size, as diffusers does. Same tolerance.
 */
describe("U-Net at odd latent sizes", () => {
  const json = JSON.parse(fs.readFileSync(path.join(MODEL_FIXTURES, "odd-latents.reference.json"), "utf8")) as { cases: { case: string; fixture: string }[] };
  const ref = SafetensorsFile.open(path.join(MODEL_FIXTURES, "odd-latents.reference.safetensors"));
  it.each(json.cases.map((c) => [c.case, c] as const))("%s", async (name, c) => {
    const { r } = await compileFixture(c.fixture);
    const s = await session(r.dir, "unet");
    const out = await s.run({
      sample: refTensor(ref, `${name}.sample`),
      timestep: refTensor(ref, `${name}.timestep`),
      encoder_hidden_states: refTensor(ref, `${name}.encoder_hidden_states`),
    });
    const e = maxErrOverMaxRef(out.out_sample!.data as Float32Array, ref.readFloat32(`${name}.out_sample`));
    errors.push(`${name} unet (odd size): ${e.toExponential(2)}`);
    expect(e).toBeLessThan(TOL);
    await s.release();
  });
});
