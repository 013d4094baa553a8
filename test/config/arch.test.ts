/**
 * Architecture configs and module names against the reference libraries: the schemas' defaults
 * must be diffusers v0.24's / transformers v4.30's constructor defaults, and the module enumeration
 * must equal `named_modules()` of the real models (fixtures written by
 * test/fixtures/gen/config_models.py).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { missingTargets, textEncoderModules, unetModules } from "../../src/config/modules.js";
import {
  autoencoderKLFields,
  AutoencoderKLConfigSchema,
  clipTextFields,
  CLIPTextConfigSchema,
  nonSd12UnetKeys,
  perBlock,
  SD15,
  unet2DConditionFields,
  UNet2DConditionConfigSchema,
  unetDownFactor,
  unetHeads,
  vaeScaleFactor,
} from "../../src/models/arch.js";
import { CONFIG_FIXTURES } from "./helpers.js";

const readJson = (rel: string) => JSON.parse(fs.readFileSync(path.join(CONFIG_FIXTURES, rel), "utf8"));
const defaults = readJson("arch_defaults.json") as Record<"unet" | "vae" | "text_encoder", Record<string, unknown>>;
const modules = readJson("modules.json") as Record<string, { config: Record<string, unknown>; modules: Record<string, string> }>;

describe("architecture schemas", () => {
  const cases = [
    ["unet", unet2DConditionFields, UNet2DConditionConfigSchema],
    ["vae", autoencoderKLFields, AutoencoderKLConfigSchema],
    ["text_encoder", clipTextFields, CLIPTextConfigSchema],
  ] as const;
  for (const [name, fields, schema] of cases) {
    it(`${name}: same keys and defaults as the reference constructor`, () => {
      expect(Object.keys(fields).sort()).toEqual(Object.keys(defaults[name]).sort());
      expect(schema.parse({})).toEqual(defaults[name]);
    });
  }

  it("parse the reference libraries' own config.json files, keeping their extra keys", () => {
    const unet = UNet2DConditionConfigSchema.parse(readJson("models/tiny-sd/unet/config.json"));
    expect(unet._class_name).toBe("UNet2DConditionModel");
    expect(unet.block_out_channels).toEqual([32, 64]);
    const te = CLIPTextConfigSchema.parse(readJson("models/tiny-sd/text_encoder/config.json"));
    expect(te.model_type).toBe("clip_text_model");
    expect(te.hidden_size).toBe(32);
    expect(AutoencoderKLConfigSchema.parse(readJson("models/tiny-sd/vae/config.json")).latent_channels).toBe(4);
  });

  it("SD 1.5 preset is a valid, consistent architecture", () => {
    const unet = UNet2DConditionConfigSchema.parse(SD15.unet);
    const vae = AutoencoderKLConfigSchema.parse(SD15.vae);
    const te = CLIPTextConfigSchema.parse(SD15.text_encoder);
    expect(unet.cross_attention_dim).toBe(te.hidden_size);
    expect(vaeScaleFactor(vae) * (unet.sample_size as number)).toBe(512);
    expect(unetDownFactor(unet)).toBe(8);
    expect(unetHeads(unet)).toEqual([8, 8, 8, 8]);
  });

  it("lists the U-Net keys that make a model other than SD 1.x/2.x", () => {
    expect(nonSd12UnetKeys(UNet2DConditionConfigSchema.parse(SD15.unet))).toEqual([]);
    const sdxlish = UNet2DConditionConfigSchema.parse({ ...SD15.unet, addition_embed_type: "text_time", resnet_time_scale_shift: "scale_shift", mid_block_type: null });
    expect(nonSd12UnetKeys(sdxlish)).toEqual(["addition_embed_type", "resnet_time_scale_shift", "mid_block_type"]);
  });

  it("expands per-block settings", () => {
    expect(perBlock(2, 3, "layers_per_block")).toEqual([2, 2, 2]);
    expect(perBlock([1, 2], 2, "layers_per_block")).toEqual([1, 2]);
    // as in diffusers, a list needs one entry per block
    expect(() => perBlock([1, 2], 3, "layers_per_block")).toThrow(/unet.layers_per_block has 2 entries for 3 blocks/);
    const u = UNet2DConditionConfigSchema.parse({ attention_head_dim: [2, 4], num_attention_heads: null, down_block_types: ["DownBlock2D", "DownBlock2D"] });
    expect(unetHeads(u)).toEqual([2, 4]);
    expect(unetHeads({ ...u, num_attention_heads: 3 })).toEqual([3, 3]);
  });
});

describe("module names", () => {
  for (const key of ["tiny_unet", "sd2ish_unet"]) {
    it(`${key}: equal diffusers' named_modules()`, () => {
      const ref = modules[key]!;
      const ours = unetModules(UNet2DConditionConfigSchema.parse(ref.config));
      expect(Object.fromEntries([...ours].sort())).toEqual(Object.fromEntries(Object.entries(ref.modules).sort()));
    });
  }
  it("text encoder: equal transformers' named_modules()", () => {
    const ref = modules.tiny_text_encoder!;
    const ours = textEncoderModules(CLIPTextConfigSchema.parse(ref.config));
    expect(Object.fromEntries([...ours].sort())).toEqual(Object.fromEntries(Object.entries(ref.modules).sort()));
  });
});

describe("LoRA target check", () => {
  const model = {
    unet: UNet2DConditionConfigSchema.parse(modules.tiny_unet!.config),
    textEncoder: CLIPTextConfigSchema.parse(modules.tiny_text_encoder!.config),
  };
  it("accepts suffixes and full names, with or without the component prefix", () => {
    const ok = ["to_q", "to_out.0", "attn2.to_k", "ff.net.0.proj", "down_blocks.0.attentions.0.proj_in", "unet.conv_in", "time_emb_proj"];
    expect(missingTargets(ok, model)).toEqual([]);
    expect(missingTargets(["q_proj", "text_encoder.text_model.encoder.layers.1.mlp.fc2"], model, ["text_encoder"])).toEqual([]);
  });
  it("reports missing names with the closest existing one", () => {
    expect(missingTargets(["to_qq", "down_blocks.1.attentions.0.proj_in", "q_proj", "zzz"], model)).toEqual([
      { target: "to_qq", suggestion: "to_q" },
      // down block 1 is a DownBlock2D: no attentions
      { target: "down_blocks.1.attentions.0.proj_in", suggestion: "down_blocks.0.attentions.0.proj_in" },
      { target: "q_proj", foundIn: "text_encoder" }, // a text-encoder name, but only the U-Net was asked
      { target: "zzz" },
    ]);
  });
  it("refuses layers a LoRA cannot attach to", () => {
    expect(missingTargets(["norm", "conv_norm_out"], model)).toEqual([
      { target: "norm", notLoraable: ["GroupNorm"] },
      { target: "conv_norm_out", notLoraable: ["GroupNorm"] },
    ]);
  });
});
