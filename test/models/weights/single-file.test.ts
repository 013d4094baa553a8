import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { loadDiffusersComponent, readComponentConfig } from "../../../src/models/weights/diffusers.js";
import { SafetensorsFile, writeSafetensors } from "../../../src/models/weights/safetensors.js";
import { loadSingleFile, loadVaeFile, type SingleFileCheckpoint } from "../../../src/models/weights/single-file.js";
import { readWeightRaw, type WeightSet } from "../../../src/models/weights/weight-set.js";
import { MODEL_FIXTURES, tempDir } from "../../helpers/repo.js";
import { bytesEqual, problemsOf, readJson } from "./helpers.js";

const dir = tempDir("sdc-weights-");

/** Every diffusers key of the folder is in the single file's set, with the same shape, dtype and bytes. */
function expectSameWeights(single: WeightSet, folder: WeightSet): void {
  expect(single.keys().sort()).toEqual(folder.keys().sort());
  for (const k of folder.keys()) {
    const a = single.get(k);
    const b = folder.get(k);
    expect([k, a.shape, a.dtype]).toEqual([k, b.shape, b.dtype]);
    if (!bytesEqual(readWeightRaw(a), readWeightRaw(b))) throw new Error(`${k}: bytes differ (${a.sourceKey})`);
  }
}

/** The inferred config agrees with config.json on every key not listed as assumed. */
function expectInferred(inferred: Record<string, unknown>, assumed: string[], config: Record<string, unknown>): string[] {
  const checked = Object.keys(inferred).filter((k) => !assumed.includes(k));
  for (const k of checked) expect([k, inferred[k]]).toEqual([k, config[k]]);
  return checked;
}

describe.each([
  { name: "tiny-sd1", variant: "fp16" as const, family: "sd1" },
  { name: "tiny-sd2", variant: undefined, family: "sd2" },
])("$name.ldm.safetensors (made by diffusers' conversion script)", ({ name, variant, family }) => {
  const folder = path.join(MODEL_FIXTURES, name);
  const ck: SingleFileCheckpoint = loadSingleFile(path.join(MODEL_FIXTURES, `${name}.ldm.safetensors`));
  const opts = variant ? { variant } : {};

  it("holds exactly the diffusers folder's weights, byte for byte, with diffusers' shapes", () => {
    expectSameWeights(ck.unet, loadDiffusersComponent(folder, "unet", opts));
    expectSameWeights(ck.vae, loadDiffusersComponent(folder, "vae", opts));
    expectSameWeights(ck.textEncoder, loadDiffusersComponent(folder, "text_encoder", opts));
  });

  it("records the VAE's 1x1-conv attention weights with their linear shape", () => {
    const r = ck.vae.get("decoder.mid_block.attentions.0.to_q.weight");
    expect(r.sourceKey).toBe("first_stage_model.decoder.mid.attn_1.q.weight");
    const c = r.shape[0]!;
    expect([r.shape, r.sourceShape]).toEqual([[c, c], [c, c, 1, 1]]);
  });

  it("infers the configs: equal to config.json on every key read from the weights", () => {
    expect(ck.inferred.family).toBe(family);
    const u = expectInferred(ck.inferred.unet, ck.inferred.assumed.unet, readComponentConfig(folder, "unet"));
    expect(u).toEqual(expect.arrayContaining(["in_channels", "block_out_channels", "layers_per_block", "down_block_types", "up_block_types", "cross_attention_dim", "use_linear_projection", "transformer_layers_per_block", "flip_sin_to_cos", "freq_shift"]));
    expectInferred(ck.inferred.vae, ck.inferred.assumed.vae, readComponentConfig(folder, "vae"));
    const t = expectInferred(ck.inferred.textEncoder, ck.inferred.assumed.textEncoder, readComponentConfig(folder, "text_encoder"));
    expect(t).toEqual(["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "max_position_embeddings"]);
    // the family facts the weights cannot show
    expect(ck.inferred.textEncoder.hidden_act).toBe(family === "sd1" ? "quick_gelu" : "gelu");
    expect(ck.inferred.tokenizer.pad_token).toBe(family === "sd1" ? "<|endoftext|>" : "!");
    expect(ck.inferred.scheduler.prediction_type).toBe("epsilon");
    expect(ck.inferred.assumed.scheduler).toContain("prediction_type");
    // the file carries LatentDiffusion's betas: the schedule is checked, not assumed
    expect(ck.inferred.assumed.scheduler).not.toContain("beta_start");
    expect(ck.inferred.notes).toContain("the file's betas match the scaled_linear 0.00085..0.012 schedule.");
  });

  it("lists what it leaves out, with reasons", () => {
    expect([...ck.ignored.keys()].sort()).toEqual(["alphas_cumprod", "alphas_cumprod_prev", "betas"]);
    const textIgnored = [...ck.textEncoder.ignored.keys()].sort();
    if (family === "sd1") {
      expect(textIgnored).toEqual(["cond_stage_model.transformer.text_model.embeddings.position_ids"]);
    } else {
      // OpenCLIP's last resblock (SD 2.x uses the penultimate layer's output) and the contrastive head
      expect(textIgnored.filter((k) => !k.includes(".resblocks.2."))).toEqual(["cond_stage_model.model.logit_scale", "cond_stage_model.model.text_projection"]);
      expect(textIgnored.filter((k) => k.includes(".resblocks.2."))).toHaveLength(12);
      expect(ck.textEncoder.ignored.get("cond_stage_model.model.transformer.resblocks.2.ln_1.weight")).toMatch(/penultimate/);
    }
  });
});

describe("OpenCLIP's fused in_proj_weight", () => {
  it("becomes q/k/v views: consecutive thirds of the same bytes, no copy", () => {
    const ck = loadSingleFile(path.join(MODEL_FIXTURES, "tiny-sd2.ldm.safetensors"));
    const st = SafetensorsFile.open(path.join(MODEL_FIXTURES, "tiny-sd2.ldm.safetensors"));
    const fused = st.info("cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight");
    const refs = ["q", "k", "v"].map((p) => ck.textEncoder.get(`text_model.encoder.layers.1.self_attn.${p}_proj.weight`));
    refs.forEach((r, i) => {
      expect(r.sourceKey).toBe(fused.name);
      expect(r.sourceShape).toEqual(fused.shape);
      expect(r.shape).toEqual([fused.shape[0]! / 3, fused.shape[1]]);
      expect(r.offset).toBe(fused.offset + (i * fused.byteLength) / 3);
    });
    const whole = st.readRaw(fused.name);
    expect(bytesEqual(Buffer.concat(refs.map(readWeightRaw)), whole)).toBe(true);
  });
});

describe("real-size SD 1.5 and SD 2.1 checkpoints (names and shapes from diffusers' converter, sparse files)", () => {
  /** A sparse F16 file with the real key names and shapes: the header is real, the data all zeros. */
  function sparseCheckpoint(name: string): { file: string; keys: any } {
    const keys = readJson(path.join(MODEL_FIXTURES, `${name}.keys.json`));
    const header: Record<string, unknown> = {};
    let off = 0;
    for (const comp of ["unet", "vae", "text_encoder"]) {
      for (const [k, shape] of Object.entries<number[]>(keys.components[comp].ldm)) {
        const len = shape.reduce((a, b) => a * b, 1) * 2;
        header[k] = { dtype: "F16", shape, data_offsets: [off, off + len] };
        off += len;
      }
    }
    const json = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    const file = path.join(dir, `${name}.safetensors`);
    fs.writeFileSync(file, Buffer.concat([len, json]));
    fs.truncateSync(file, 8 + json.length + off);
    return { file, keys };
  }

  const expected = {
    sd15: {
      unet: { in_channels: 4, out_channels: 4, block_out_channels: [320, 640, 1280, 1280], layers_per_block: 2, cross_attention_dim: 768, use_linear_projection: false, attention_head_dim: 8, upcast_attention: false },
      text: { hidden_size: 768, intermediate_size: 3072, num_hidden_layers: 12, num_attention_heads: 12, hidden_act: "quick_gelu" },
    },
    sd21: {
      unet: { in_channels: 4, out_channels: 4, block_out_channels: [320, 640, 1280, 1280], layers_per_block: 2, cross_attention_dim: 1024, use_linear_projection: true, attention_head_dim: [5, 10, 20, 20], upcast_attention: true },
      text: { hidden_size: 1024, intermediate_size: 4096, num_hidden_layers: 23, num_attention_heads: 16, hidden_act: "gelu" },
    },
  } as const;

  for (const name of ["sd15", "sd21"] as const) {
    it(`${name}: every diffusers key with diffusers' shape, and the real configs`, () => {
      const { file, keys } = sparseCheckpoint(name);
      const ck = loadSingleFile(file);
      for (const [comp, ws] of [["unet", ck.unet], ["vae", ck.vae], ["text_encoder", ck.textEncoder]] as const) {
        const want = Object.fromEntries(
          Object.entries<number[]>(keys.components[comp].diffusers).filter(([k]) => k !== "text_model.embeddings.position_ids"),
        );
        expect(Object.fromEntries(ws.entries().map((r) => [r.key, r.shape]))).toEqual(want);
        const params = ws.entries().reduce((s, r) => s + r.shape.reduce((a, b) => a * b, 1), 0);
        expect(params).toBe(keys.components[comp].parameters);
      }
      expect(ck.unet.entries().reduce((s, r) => s + r.byteLength / 2, 0)).toBe(name === "sd15" ? 859_520_964 : 865_910_724);
      expect(ck.inferred.unet).toMatchObject({
        ...expected[name].unet,
        down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        transformer_layers_per_block: 1,
      });
      expect(ck.inferred.textEncoder).toMatchObject({ vocab_size: 49408, max_position_embeddings: 77, ...expected[name].text });
      expect(ck.inferred.vae).toMatchObject({ block_out_channels: [128, 256, 512, 512], layers_per_block: 2, latent_channels: 4 });
      expect(ck.inferred.assumed.scheduler).toContain("beta_start"); // no betas buffer in this file
    });
  }
});

describe("files sdc refuses, each with a clear message", () => {
  const base = SafetensorsFile.open(path.join(MODEL_FIXTURES, "tiny-sd1.ldm.safetensors"));
  /** A copy of tiny-sd1.ldm with tensors dropped and added. */
  function variant(name: string, drop: (k: string) => boolean, add: Record<string, number[]> = {}): string {
    const file = path.join(dir, name);
    writeSafetensors(file, [
      ...[...base.tensors.values()].filter((t) => !drop(t.name)).map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, data: () => base.readRaw(t.name) })),
      ...Object.entries(add).map(([k, shape]) => ({ name: k, dtype: "F16" as const, shape, data: new Uint8Array(shape.reduce((a, b) => a * b, 1) * 2) })),
    ]);
    return file;
  }

  it("pickle checkpoints, by extension", () => {
    for (const ext of [".ckpt", ".pt", ".pth", ".bin"]) {
      const [p] = problemsOf(() => loadSingleFile(path.join(dir, `model${ext}`)));
      expect(p!.message).toBe(`${ext} checkpoints are Python pickles; sdc reads only .safetensors`);
      expect(p!.hint).toContain("torch.load");
    }
  });

  it("a folder, a LoRA, an SDXL file", () => {
    expect(problemsOf(() => loadSingleFile(path.join(MODEL_FIXTURES, "tiny-sd1")))[0]!.message).toBe("is a folder; a single-file checkpoint is one .safetensors file");
    const [lora] = problemsOf(() => loadSingleFile(path.join(MODEL_FIXTURES, "lora", "tiny-sd1.kohya.safetensors")));
    expect(lora!.message).toBe("has no U-Net (no model.diffusion_model.* tensors), so it is not a full SD checkpoint");
    expect(lora!.hint).toBe("this file is a LoRA: load it as a LoRA on top of a base model");
    const sdxl = variant("sdxl.safetensors", () => false, { "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": [4] });
    expect(problemsOf(() => loadSingleFile(sdxl))[0]!.message).toMatch(/SDXL/);
  });

  it("missing VAE or text encoder", () => {
    expect(problemsOf(() => loadSingleFile(variant("novae.safetensors", (k) => k.startsWith("first_stage_model."))))[0]!.message).toBe(
      "has no VAE (first_stage_model.* tensors)",
    );
    expect(problemsOf(() => loadSingleFile(variant("note.safetensors", (k) => k.startsWith("cond_stage_model."))))[0]!.message).toBe(
      "has no text encoder (cond_stage_model.transformer.* for SD 1.x or cond_stage_model.model.* for SD 2.x)",
    );
  });

  it("an unknown tensor inside the U-Net, a class-conditioned U-Net, a broken block layout", () => {
    const extra = variant("extra.safetensors", () => false, { "model.diffusion_model.input_blocks.1.2.weight": [2] });
    const [p] = problemsOf(() => loadSingleFile(extra));
    expect(p).toMatchObject({ message: "unexpected tensor in the unet part of the checkpoint", subject: `${extra}: model.diffusion_model.input_blocks.1.2.weight` });
    const cls = variant("label.safetensors", () => false, { "model.diffusion_model.label_emb.0.0.weight": [2] });
    expect(problemsOf(() => loadSingleFile(cls))[0]!.message).toMatch(/^the U-Net is class-conditioned \(label_emb/);
    const holes = variant("holes.safetensors", (k) => k.startsWith("model.diffusion_model.input_blocks.2."));
    expect(problemsOf(() => loadSingleFile(holes))[0]!.message).toBe("input_blocks are not numbered 0..2");
  });

  it("a weight with a wrong shape is named when the model asks for it", () => {
    const ck = loadSingleFile(path.join(MODEL_FIXTURES, "tiny-sd1.ldm.safetensors"));
    const [p] = problemsOf(() => ck.unet.get("down_blocks.0.attentions.0.proj_in.weight", [16, 16]));
    expect(p!.message).toBe("has shape [16, 16, 1, 1], but the model expects [16, 16]");
    expect(p!.hint).toContain("(model.diffusion_model.input_blocks.1.1.proj_in.weight)");
  });
});

describe("a VAE file on its own", () => {
  const ldm = SafetensorsFile.open(path.join(MODEL_FIXTURES, "tiny-sd2.ldm.safetensors"));
  const folderVae = loadDiffusersComponent(path.join(MODEL_FIXTURES, "tiny-sd2"), "vae");
  function extract(name: string, rename: (k: string) => string | null): string {
    const file = path.join(dir, name);
    const entries = [...ldm.tensors.values()].flatMap((t) => {
      const k = rename(t.name);
      return k === null ? [] : [{ name: k, dtype: t.dtype, shape: t.shape, data: () => ldm.readRaw(t.name) }];
    });
    writeSafetensors(file, entries);
    return file;
  }

  it("in LDM naming, with or without first_stage_model., like the UIs' fine-tuned VAEs", () => {
    const withPrefix = extract("vae-prefixed.safetensors", (k) => (k.startsWith("first_stage_model.") ? k : null));
    const bare = extract("vae-bare.safetensors", (k) => (k.startsWith("first_stage_model.") ? k.slice("first_stage_model.".length) : null));
    for (const f of [withPrefix, bare]) {
      const v = loadVaeFile(f);
      expect(v.naming).toBe("ldm");
      expectSameWeights(v.vae, folderVae);
      expectInferred(v.inferred, v.assumed, readComponentConfig(path.join(MODEL_FIXTURES, "tiny-sd2"), "vae"));
    }
  });

  it("in diffusers naming, including the pre-0.15 attention names", () => {
    const folder = SafetensorsFile.open(path.join(MODEL_FIXTURES, "tiny-sd2", "vae", "diffusion_pytorch_model.safetensors"));
    const legacy = { to_q: "query", to_k: "key", to_v: "value", "to_out.0": "proj_attn" } as Record<string, string>;
    const file = path.join(dir, "vae-diffusers-legacy.safetensors");
    writeSafetensors(
      file,
      [...folder.tensors.values()].map((t) => ({
        name: t.name.replace(/attentions\.0\.(to_q|to_k|to_v|to_out\.0)\./, (_, p: string) => `attentions.0.${legacy[p]}.`),
        dtype: t.dtype,
        shape: t.shape,
        data: () => folder.readRaw(t.name),
      })),
    );
    const v = loadVaeFile(file);
    expect(v.naming).toBe("diffusers");
    expect(v.vae.get("encoder.mid_block.attentions.0.to_q.weight").sourceKey).toBe("encoder.mid_block.attentions.0.query.weight");
    expectSameWeights(v.vae, folderVae);
  });

  it("refuses a file without VAE tensors", () => {
    expect(problemsOf(() => loadVaeFile(path.join(MODEL_FIXTURES, "lora", "tiny-sd1.peft.safetensors")))[0]!.message).toBe(
      "has no VAE encoder tensors (encoder.down.N... or encoder.down_blocks.N...)",
    );
  });
});
