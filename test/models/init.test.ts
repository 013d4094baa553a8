/**
 * Seeded initial weights for training from scratch: PyTorch's module initialisation (uniform
 * ±1/√fan_in for Conv2d/Linear, norms 1 and 0, embeddings N(0, 0.02²)), the same bytes for the same
 * seed, and a diffusers folder sdc itself loads; a from-scratch VAE trains from it.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { loadPipeline } from "../../src/config/load.js";
import { initialWeights, writeInitialModel } from "../../src/models/init.js";
import { AutoencoderKLConfigSchema, CLIPTextConfigSchema } from "../../src/models/arch.js";
import { trainPipeline } from "../../src/train-pipeline.js";
import { sha256File } from "../../src/util/hash.js";
import { REPO, tempDir } from "../helpers/repo.js";

const vae = AutoencoderKLConfigSchema.parse({ block_out_channels: [8, 16], down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D"], up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D"], norm_num_groups: 4, layers_per_block: 1 });

describe("initial weights", () => {
  it("follow PyTorch's initialisation per kind of tensor", () => {
    const w = new Map(initialWeights("vae", vae, 1).map((t) => [t.key, t]));
    const conv = w.get("encoder.conv_in.weight")!;
    const bound = 1 / Math.sqrt(3 * 3 * 3);
    expect(conv.shape).toEqual([8, 3, 3, 3]);
    expect(Math.max(...conv.data.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...conv.data.map(Math.abs))).toBeGreaterThan(0.8 * bound);
    expect(Math.max(...w.get("encoder.conv_in.bias")!.data.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect([...w.get("encoder.down_blocks.0.resnets.0.norm1.weight")!.data].every((x) => x === 1)).toBe(true);
    expect([...w.get("encoder.down_blocks.0.resnets.0.norm1.bias")!.data].every((x) => x === 0)).toBe(true);
    const clip = CLIPTextConfigSchema.parse({ hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: 1000, max_position_embeddings: 77 });
    const emb = initialWeights("text_encoder", clip, 1).find((t) => t.key.endsWith("token_embedding.weight"))!;
    const sd = Math.sqrt(emb.data.reduce((a, x) => a + x * x, 0) / emb.data.length);
    expect(sd).toBeGreaterThan(0.018);
    expect(sd).toBeLessThan(0.022);
  });

  it("a from-scratch pipeline: the same seed writes the same folder, sdc loads it, and a VAE trains from it", async () => {
    const dir = tempDir("sdc-scratch-");
    const file = path.join(dir, "p.yaml");
    const yaml = fs.readFileSync(path.join(REPO, "examples", "from-scratch.yaml"), "utf8").replace("dir: data/shapes", `dir: ${JSON.stringify(path.join(REPO, "examples", "data", "shapes"))}`).replace(/^# yaml-language-server.*$/m, "");
    const opts = { cwd: dir, overrides: ["train.target=vae", "train.batch=4", "output.dir=out"] };
    fs.writeFileSync(file, yaml.replace(/^  epochs: \d+$/m, "  steps: 3"));
    const r = await trainPipeline(await loadPipeline(file, opts), { cwd: dir, threads: 2, loadOptions: opts });
    expect(r.exported.map((f) => path.relative(dir, f))).toEqual([
      "out/vae/diffusion_pytorch_model.safetensors",
      "out/unet/diffusion_pytorch_model.safetensors",
      "out/text_encoder/model.safetensors",
      "out/model_index.json",
    ]);
    expect(r.losses).toHaveLength(3);
    // the init folder: written once, deterministic, and a model sdc loads
    const init = path.join(dir, "out", "init");
    const again = path.join(dir, "again");
    const m = (await loadPipeline(file, { ...opts, overrides: [...opts.overrides, `model.from=${init}`] })).model;
    writeInitialModel(again, m, 0);
    for (const f of ["unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"])
      expect(sha256File(path.join(again, f)), f).toBe(sha256File(path.join(init, f)));
  });
});
