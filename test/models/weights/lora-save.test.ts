/**
 * LoRA files sdc writes: kohya keys and metadata as the UIs expect them, PEFT keys as diffusers
 * loads them, and both read back by sdc's own loader to the same weight deltas.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loraDelta, readLora } from "../../../src/models/weights/lora.js";
import { addnetHashes, saveLora, type LoraFactors } from "../../../src/models/weights/lora-save.js";
import { SafetensorsFile } from "../../../src/models/weights/safetensors.js";
import { randomFloats } from "../../helpers/ort.js";
import { tempDir } from "../../helpers/repo.js";

const dir = tempDir();
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const r = 4;
const factors: LoraFactors[] = [
  { component: "unet", module: "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", down: randomFloats(r * 8, 1), downShape: [r, 8], up: randomFloats(8 * r, 2), upShape: [8, r] },
  { component: "unet", module: "mid_block.attentions.0.proj_in", down: randomFloats(r * 8, 3), downShape: [r, 8, 1, 1], up: randomFloats(8 * r, 4), upShape: [8, r, 1, 1] },
  { component: "text_encoder", module: "text_model.encoder.layers.0.self_attn.q_proj", down: randomFloats(r * 12, 5), downShape: [r, 12], up: randomFloats(12 * r, 6), upShape: [12, r] },
];

/** alpha/rank · B·A, flattened like the target weight. */
function expected(f: LoraFactors, scale: number): Float64Array {
  const out = f.upShape[0]!;
  const inner = f.down.length / r;
  const d = new Float64Array(out * inner);
  for (let o = 0; o < out; o++) for (let i = 0; i < inner; i++) for (let k = 0; k < r; k++) d[o * inner + i]! += scale * f.up[o * r + k]! * f.down[k * inner + i]!;
  return d;
}

describe("saveLora", () => {
  it("kohya: lora_unet_/lora_te_ keys, alpha tensors, the metadata AUTOMATIC1111 needs, and hashes that match the file", () => {
    const file = path.join(dir, "kohya.safetensors");
    saveLora(file, factors, { format: "kohya", rank: r, alpha: 8, base: "sd2", title: "test" });
    const st = SafetensorsFile.open(file);
    expect([...st.tensors.keys()].sort()).toEqual(
      [
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
        "lora_unet_mid_block_attentions_0_proj_in",
      ].flatMap((k) => [`${k}.alpha`, `${k}.lora_down.weight`, `${k}.lora_up.weight`]),
    );
    expect(st.metadata).toMatchObject({
      ss_network_module: "networks.lora",
      ss_network_dim: "4",
      ss_network_alpha: "8",
      ss_base_model_version: "sd_v2",
      ss_v2: "True",
      "modelspec.architecture": "stable-diffusion-v2-512/lora",
    });
    // the model hash covers the tensor data only, so it can be checked on the final file
    expect(st.metadata.sshs_model_hash).toBe(addnetHashes(fs.readFileSync(file)).modelHash);
    expect(st.metadata.sshs_legacy_hash).toMatch(/^[0-9a-f]{8}$/);
    const sd1 = path.join(dir, "kohya-sd1.safetensors");
    saveLora(sd1, factors, { format: "kohya", rank: r, alpha: 8, base: "sd1" });
    expect(SafetensorsFile.open(sd1).metadata).toMatchObject({ ss_v2: "False", ss_base_model_version: "sd_v1", "modelspec.architecture": "stable-diffusion-v1/lora" });
  });

  for (const format of ["kohya", "peft"] as const) {
    it(`${format}: sdc's loader reads back the same deltas (alpha 8, rank 4 → scale 2)`, () => {
      const file = path.join(dir, `${format}-rt.safetensors`);
      saveLora(file, factors, { format, rank: r, alpha: 8, base: "sd1" });
      const entries = readLora(file);
      expect(entries.map((e) => `${e.component}:${e.module}`).sort()).toEqual(factors.map((f) => `${f.component}:${f.module}`).sort());
      for (const f of factors) {
        const e = entries.find((x) => x.module === f.module)!;
        expect(e.dialect).toBe(format);
        expect(e.rank).toBe(r);
        const got = loraDelta(e);
        const want = expected(f, 2);
        let err = 0;
        got.forEach((x, i) => (err = Math.max(err, Math.abs(x - want[i]!))));
        expect(err, f.module).toBeLessThan(1e-5);
      }
    });
  }
});
