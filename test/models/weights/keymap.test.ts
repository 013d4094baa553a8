import * as path from "node:path";
import { describe, expect, it } from "vitest";
import {
  applyRules,
  currentDiffusersVaeKey,
  kohyaName,
  openClipIgnoredReason,
  openClipToDiffusers,
  parseLoraKey,
  SD_UNET_LAYOUT,
  sd1TextToDiffusers,
  unetLayoutFromConfig,
  unetRules,
  unflattenKohya,
  vaeRules,
} from "../../../src/models/weights/keymap.js";
import { loadDiffusersComponent, readComponentConfig } from "../../../src/models/weights/diffusers.js";
import { moduleNames } from "../../../src/models/weights/lora.js";
import { MODEL_FIXTURES } from "../../helpers/repo.js";
import { readJson } from "./helpers.js";

describe("U-Net LDM <-> diffusers rules", () => {
  const rules = unetRules(SD_UNET_LAYOUT);
  // Pairs as diffusers v0.24's convert_diffusers_to_original_stable_diffusion.py writes them for SD 1.5
  const pairs: [string, string][] = [
    ["time_embed.0.weight", "time_embedding.linear_1.weight"],
    ["input_blocks.0.0.bias", "conv_in.bias"],
    ["input_blocks.1.0.in_layers.2.weight", "down_blocks.0.resnets.0.conv1.weight"],
    ["input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight", "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight"],
    ["input_blocks.3.0.op.weight", "down_blocks.0.downsamplers.0.conv.weight"],
    ["input_blocks.4.0.skip_connection.weight", "down_blocks.1.resnets.0.conv_shortcut.weight"],
    ["input_blocks.11.0.emb_layers.1.bias", "down_blocks.3.resnets.1.time_emb_proj.bias"],
    ["middle_block.1.proj_out.weight", "mid_block.attentions.0.proj_out.weight"],
    ["middle_block.2.out_layers.3.weight", "mid_block.resnets.1.conv2.weight"],
    ["output_blocks.2.1.conv.weight", "up_blocks.0.upsamplers.0.conv.weight"],
    ["output_blocks.5.2.conv.bias", "up_blocks.1.upsamplers.0.conv.bias"],
    ["output_blocks.8.1.norm.weight", "up_blocks.2.attentions.2.norm.weight"],
    ["output_blocks.11.1.transformer_blocks.0.ff.net.0.proj.weight", "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.0.proj.weight"],
    ["out.0.weight", "conv_norm_out.weight"],
    ["out.2.bias", "conv_out.bias"],
  ];
  it.each(pairs)("%s <-> %s", (ldm, diffusers) => {
    expect(applyRules(ldm, rules, "diffusers")).toBe(diffusers);
    expect(applyRules(diffusers, rules, "ldm")).toBe(ldm);
  });

  it("maps every key of SD 1.5 and SD 2.1 (both namings from diffusers' converter) one to one", () => {
    for (const name of ["sd15", "sd21"]) {
      const keys = readJson(path.join(MODEL_FIXTURES, `${name}.keys.json`));
      for (const [comp, r] of [["unet", rules], ["vae", vaeRules({ levels: 4, layersPerBlock: 2 })]] as const) {
        const prefix = comp === "unet" ? "model.diffusion_model." : "first_stage_model.";
        const ldm = Object.keys(keys.components[comp].ldm).map((k) => k.slice(prefix.length));
        const mapped = ldm.map((k) => applyRules(k, r, "diffusers"));
        expect(mapped.sort()).toEqual(Object.keys(keys.components[comp].diffusers).sort());
        const back = Object.keys(keys.components[comp].diffusers).map((k) => applyRules(k, r, "ldm"));
        expect(back.sort()).toEqual(ldm.sort());
      }
    }
  });

  it("refuses keys of the other dialect instead of passing them through", () => {
    expect(applyRules("input_blocks.1.0.conv1.weight", rules, "diffusers")).toBeNull();
    expect(applyRules("encoder.mid.attn_1.to_q.weight", vaeRules({ levels: 2, layersPerBlock: 1 }), "diffusers")).toBeNull();
    expect(applyRules("label_emb.0.0.weight", rules, "diffusers")).toBeNull();
  });

  it("derives the layout from a diffusers config", () => {
    const cfg = readComponentConfig(path.join(MODEL_FIXTURES, "tiny-x"), "unet") as any;
    expect(unetLayoutFromConfig(cfg)).toEqual({ levels: 2, layersPerBlock: 2, downAttention: [false, true], upAttention: [true, false] });
  });
});

describe("text encoder and legacy names", () => {
  it("SD1 single files from old transformers lack the text_model level", () => {
    expect(sd1TextToDiffusers("embeddings.token_embedding.weight")).toBe("text_model.embeddings.token_embedding.weight");
    expect(sd1TextToDiffusers("text_model.final_layer_norm.bias")).toBe("text_model.final_layer_norm.bias");
  });

  it("OpenCLIP names", () => {
    expect(openClipToDiffusers("transformer.resblocks.3.mlp.c_fc.weight")).toEqual([{ key: "text_model.encoder.layers.3.mlp.fc1.weight" }]);
    expect(openClipToDiffusers("transformer.resblocks.0.attn.in_proj_bias")?.map((t) => [t.key, t.part?.index])).toEqual([
      ["text_model.encoder.layers.0.self_attn.q_proj.bias", 0],
      ["text_model.encoder.layers.0.self_attn.k_proj.bias", 1],
      ["text_model.encoder.layers.0.self_attn.v_proj.bias", 2],
    ]);
    expect(openClipToDiffusers("transformer.resblocks.0.attn.in_proj")).toBeNull();
    expect(openClipIgnoredReason("transformer.resblocks.23.ln_1.weight", 23)).toMatch(/penultimate/);
    expect(openClipIgnoredReason("transformer.resblocks.22.ln_1.weight", 23)).toBeNull();
  });

  it("diffusers' pre-0.15 VAE attention names", () => {
    expect(currentDiffusersVaeKey("decoder.mid_block.attentions.0.proj_attn.bias")).toBe("decoder.mid_block.attentions.0.to_out.0.bias");
    expect(currentDiffusersVaeKey("encoder.mid_block.attentions.0.query.weight")).toBe("encoder.mid_block.attentions.0.to_q.weight");
    expect(currentDiffusersVaeKey("encoder.mid_block.attentions.0.group_norm.weight")).toBe("encoder.mid_block.attentions.0.group_norm.weight");
  });
});

describe("kohya names", () => {
  it("unflattening restores every module name of the fixtures and of SD 1.5 / SD 2.1", () => {
    const modules: [string, "unet" | "text_encoder", string[]][] = [];
    for (const f of ["tiny-sd1", "tiny-sd2", "tiny-x"]) {
      modules.push([f, "unet", moduleNames(loadDiffusersComponent(path.join(MODEL_FIXTURES, f), "unet"))]);
      modules.push([f, "text_encoder", moduleNames(loadDiffusersComponent(path.join(MODEL_FIXTURES, f), "text_encoder"))]);
    }
    for (const name of ["sd15", "sd21"]) {
      const keys = readJson(path.join(MODEL_FIXTURES, `${name}.keys.json`));
      const strip = (ks: string[]) => ks.filter((k) => k.endsWith(".weight")).map((k) => k.slice(0, -7));
      modules.push([name, "unet", strip(Object.keys(keys.components.unet.diffusers))]);
      modules.push([name, "text_encoder", strip(Object.keys(keys.components.text_encoder.diffusers))]);
    }
    let n = 0;
    for (const [, comp, mods] of modules) {
      for (const m of mods) {
        const flat = kohyaName(comp, m).replace(/^lora_(unet|te)_/, "");
        expect(unflattenKohya(flat)).toBe(m);
        n++;
      }
    }
    expect(n).toBeGreaterThan(1000);
  });

  it("LDM-named kohya keys resolve through the U-Net layout", () => {
    const k = "lora_unet_output_blocks_5_2_conv.lora_down.weight";
    expect(parseLoraKey(k)).toEqual({ component: "unet", module: "up_blocks.1.upsamplers.0.conv", part: "down", dialect: "kohya-ldm" });
    const layout = { levels: 2, layersPerBlock: 1, downAttention: [true, false], upAttention: [false, true] };
    expect(parseLoraKey("lora_unet_output_blocks_3_1_proj_in.alpha", { unetLayout: layout })).toEqual({
      component: "unet",
      module: "up_blocks.1.attentions.1.proj_in",
      part: "alpha",
      dialect: "kohya-ldm",
    });
    expect(parseLoraKey("lora_unet_input_blocks_1_0_in_layers_2.lora_up.weight", { unetLayout: layout })?.module).toBe("down_blocks.0.resnets.0.conv1");
  });
});

describe("parseLoraKey dialects", () => {
  const cases: [string, object | null][] = [
    ["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", { component: "text_encoder", module: "text_model.encoder.layers.0.self_attn.q_proj", part: "up", dialect: "kohya" }],
    ["unet.mid_block.attentions.0.proj_in.lora_A.weight", { component: "unet", module: "mid_block.attentions.0.proj_in", part: "down", dialect: "peft" }],
    ["text_encoder.text_model.encoder.layers.1.mlp.fc2.lora_B.weight", { component: "text_encoder", module: "text_model.encoder.layers.1.mlp.fc2", part: "up", dialect: "peft" }],
    ["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.lora_A.weight", { component: "unet", module: "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0", part: "down", dialect: "peft" }],
    ["unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v.lora.up.weight", { component: "unet", module: "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v", part: "up", dialect: "diffusers" }],
    ["text_encoder.text_model.encoder.layers.0.self_attn.k_proj.lora_linear_layer.down.weight", { component: "text_encoder", module: "text_model.encoder.layers.0.self_attn.k_proj", part: "down", dialect: "diffusers" }],
    ["mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight", { component: "unet", module: "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0", part: "down", dialect: "attn-procs" }],
    ["text_encoder.text_model.encoder.layers.0.self_attn.to_out_lora.up.weight", { component: "text_encoder", module: "text_model.encoder.layers.0.self_attn.out_proj", part: "up", dialect: "attn-procs" }],
    ["unet.down_blocks.0.resnets.0.conv1.alpha", { component: "unet", module: "down_blocks.0.resnets.0.conv1", part: "alpha", dialect: "diffusers" }],
    ["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", null],
    ["down_blocks.0.resnets.0.conv1.hada_w1_a", null],
    ["base_model.model.up_blocks.1.attentions.0.proj_out.lora_B.weight", { component: "unet", module: "up_blocks.1.attentions.0.proj_out", part: "up", dialect: "peft" }],
    ["some.random.weight", null],
  ];
  it.each(cases)("%s", (key, want) => {
    expect(parseLoraKey(key)).toEqual(want);
  });
});
