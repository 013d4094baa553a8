/**
 * Single-file checkpoints as the popular UIs share them: one .safetensors file holding the U-Net, VAE
 * and text encoder in the original LDM/CompVis naming. The architecture is not written anywhere in
 * the file, so it is inferred from the tensor names and shapes (levels, layers per block, channels,
 * attention placement, linear or conv projections, text encoder family and size). What the weights
 * cannot tell (head counts, group norm groups, v-prediction, VAE scaling) comes from the SD family's
 * defaults and is listed in `inferred.assumed`, so the caller can say so or let the user override it.
 *
 * No tensor is read or copied: every weight is a (file, offset, length) view, including the q/k/v
 * thirds of OpenCLIP's fused `in_proj_weight`, which are contiguous row ranges.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { fail, UserError, type Problem } from "../../util/errors.js";
import { PRESETS } from "../presets.js";
import {
  applyRules,
  currentDiffusersVaeKey,
  isVaeAttentionLinear,
  LDM_PREFIXES,
  LDM_SCHEDULE_BUFFERS,
  openClipIgnoredReason,
  openClipToDiffusers,
  sd1TextToDiffusers,
  TEXT_ENCODER_BUFFERS,
  unetRules,
  vaeRules,
  type PrefixRule,
  type UnetLayout,
  type VaeLayout,
} from "./keymap.js";
import { CONVERT_HINT, SafetensorsFile, shapeStr, type TensorInfo } from "./safetensors.js";
import { WeightSet, type WeightRef } from "./weight-set.js";

export type SdFamily = "sd1" | "sd2";

export interface InferredConfigs {
  family: SdFamily;
  /** diffusers UNet2DConditionModel config keys. */
  unet: Record<string, unknown>;
  /** diffusers AutoencoderKL config keys. */
  vae: Record<string, unknown>;
  /** transformers CLIPTextConfig keys. */
  textEncoder: Record<string, unknown>;
  /** diffusers scheduler_config.json keys. */
  scheduler: Record<string, unknown>;
  /** What a tokenizer folder would say (a single file has none). */
  tokenizer: { pad_token: string; model_max_length: number };
  /** Keys above whose values are family defaults, not read from the weights. */
  assumed: { unet: string[]; vae: string[]; textEncoder: string[]; scheduler: string[] };
  /** Human-readable reasons for the assumptions. */
  notes: string[];
}

export interface SingleFileCheckpoint {
  unet: WeightSet;
  vae: WeightSet;
  textEncoder: WeightSet;
  inferred: InferredConfigs;
  /** Tensors of the file outside the three components (schedule buffers, EMA copies), with the reason. */
  ignored: ReadonlyMap<string, string>;
}

const PICKLE_EXT = [".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"];

/** Load a single-file SD 1.x/2.x checkpoint (.safetensors, LDM naming). */
export function loadSingleFile(file: string): SingleFileCheckpoint {
  const ext = path.extname(file).toLowerCase();
  if (PICKLE_EXT.includes(ext)) {
    fail(`${ext} checkpoints are Python pickles; sdc reads only .safetensors`, { subject: file, hint: CONVERT_HINT });
  }
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) {
    fail("is a folder; a single-file checkpoint is one .safetensors file", {
      subject: file,
      hint: "for a diffusers folder (model_index.json, unet/, vae/, ...) use it as a diffusers model",
    });
  }
  const st = SafetensorsFile.open(file);
  const names = [...st.tensors.keys()];
  const P = LDM_PREFIXES;
  const has = (prefix: string) => names.some((n) => n.startsWith(prefix));

  if (has(P.sdxl)) {
    fail("looks like an SDXL checkpoint (conditioner.embedders.*); sdc supports Stable Diffusion 1.x and 2.x", { subject: file });
  }
  if (!has(P.unet)) {
    const lora = names.some((n) => n.startsWith("lora_") || /\.lora_[AB]\.|\.lora\.(up|down)\./.test(n));
    fail(`has no U-Net (no ${P.unet}* tensors), so it is not a full SD checkpoint`, {
      subject: file,
      hint: lora ? "this file is a LoRA: load it as a LoRA on top of a base model" : "a VAE-only or text-encoder-only file cannot be compiled on its own",
    });
  }
  const sd2 = has(P.openClip);
  if (!sd2 && !has(P.sd1Text)) {
    fail(`has no text encoder (${P.sd1Text}* for SD 1.x or ${P.openClip}* for SD 2.x)`, { subject: file });
  }
  if (!has(P.vae)) fail(`has no VAE (${P.vae}* tensors)`, { subject: file });

  const family: SdFamily = sd2 ? "sd2" : "sd1";
  const ignored = new Map<string, string>();
  const groups = { unet: [] as TensorInfo[], vae: [] as TensorInfo[], text: [] as TensorInfo[] };
  for (const t of st.tensors.values()) {
    if (t.name.startsWith(P.unet)) groups.unet.push(t);
    else if (t.name.startsWith(P.vae)) groups.vae.push(t);
    else if (t.name.startsWith(sd2 ? P.openClip : P.sd1Text)) groups.text.push(t);
    else if (t.name.startsWith(P.ema)) {
      ignored.set(t.name, "EMA copy of the U-Net; like diffusers' converter by default, sdc uses model.diffusion_model.*");
    } else if (LDM_SCHEDULE_BUFFERS.has(t.name)) {
      ignored.set(t.name, "LatentDiffusion's noise-schedule buffer (used only to check the scheduler config)");
    } else ignored.set(t.name, "not part of the U-Net, VAE or text encoder");
  }

  const unetLayout = inferUnetLayout(file, groups.unet.map((t) => t.name.slice(P.unet.length)));
  const unet = mapGroup(file, "unet", groups.unet, P.unet, unetRules(unetLayout), () => null);
  const vaeLayout = inferVaeLayout(file, groups.vae.map((t) => t.name.slice(P.vae.length)));
  const vae = mapGroup(file, "vae", groups.vae, P.vae, vaeRules(vaeLayout), (key, t) =>
    isVaeAttentionLinear(key) && t.shape.length === 4 ? t.shape.slice(0, 2) : null,
  );
  const text = sd2 ? mapOpenClip(file, groups.text) : mapSd1Text(file, groups.text);

  const inferred = inferConfigs(file, family, unetLayout, unet, vaeLayout, vae, text, st);
  return {
    unet: new WeightSet("unet", unet.refs, [file], unet.ignored),
    vae: new WeightSet("vae", vae.refs, [file], vae.ignored),
    textEncoder: new WeightSet("text_encoder", text.refs, [file], text.ignored),
    inferred,
    ignored,
  };
}

interface Mapped {
  refs: WeightRef[];
  byKey: Map<string, WeightRef>;
  ignored: Map<string, string>;
}

function tooMany(problems: Problem[]): Problem[] {
  if (problems.length <= 12) return problems;
  return [...problems.slice(0, 12), { message: `... and ${problems.length - 12} more` }];
}

function mapGroup(
  file: string,
  component: string,
  tensors: TensorInfo[],
  prefix: string,
  rules: PrefixRule[],
  reshape: (key: string, t: TensorInfo) => number[] | null,
): Mapped {
  const refs: WeightRef[] = [];
  const byKey = new Map<string, WeightRef>();
  const problems: Problem[] = [];
  for (const t of tensors) {
    const key = applyRules(t.name.slice(prefix.length), rules, "diffusers");
    if (key === null) {
      problems.push({ message: `unexpected tensor in the ${component} part of the checkpoint`, subject: `${file}: ${t.name}` });
      continue;
    }
    const shape = reshape(key, t);
    const ref: WeightRef = {
      key,
      file,
      sourceKey: t.name,
      dtype: t.dtype,
      shape: shape ?? t.shape,
      offset: t.offset,
      byteLength: t.byteLength,
      ...(shape ? { sourceShape: t.shape } : {}),
    };
    refs.push(ref);
    byKey.set(key, ref);
  }
  if (problems.length) {
    throw new UserError(
      tooMany(problems).map((p, i) =>
        i === 0 ? { ...p, hint: "sdc knows the SD 1.x/2.x layouts (no class-conditioned, SDXL or ControlNet U-Nets)" } : p,
      ),
    );
  }
  return { refs, byKey, ignored: new Map() };
}

function mapSd1Text(file: string, tensors: TensorInfo[]): Mapped {
  const refs: WeightRef[] = [];
  const byKey = new Map<string, WeightRef>();
  const ignored = new Map<string, string>();
  for (const t of tensors) {
    const key = sd1TextToDiffusers(t.name.slice(LDM_PREFIXES.sd1Text.length));
    const why = TEXT_ENCODER_BUFFERS[key];
    if (why) {
      ignored.set(t.name, why);
      continue;
    }
    const ref: WeightRef = { key, file, sourceKey: t.name, dtype: t.dtype, shape: t.shape, offset: t.offset, byteLength: t.byteLength };
    refs.push(ref);
    byKey.set(key, ref);
  }
  return { refs, byKey, ignored };
}

function mapOpenClip(file: string, tensors: TensorInfo[]): Mapped {
  const P = LDM_PREFIXES.openClip;
  // SD 2.x uses the penultimate layer: diffusers keeps all resblocks but the last one
  const blocks = new Set<number>();
  for (const t of tensors) {
    const m = /^transformer\.resblocks\.(\d+)\./.exec(t.name.slice(P.length));
    if (m) blocks.add(Number(m[1]));
  }
  const numLayers = blocks.size - 1;
  const refs: WeightRef[] = [];
  const byKey = new Map<string, WeightRef>();
  const ignored = new Map<string, string>();
  const problems: Problem[] = [];
  for (const t of tensors) {
    const rest = t.name.slice(P.length);
    const why = openClipIgnoredReason(rest, numLayers);
    if (why) {
      ignored.set(t.name, why);
      continue;
    }
    const targets = openClipToDiffusers(rest);
    if (!targets) {
      problems.push({ message: "unexpected tensor in the OpenCLIP text encoder", subject: `${file}: ${t.name}` });
      continue;
    }
    for (const target of targets) {
      let ref: WeightRef;
      if (target.part) {
        const rows = t.shape[0]!;
        if (rows % 3 !== 0) {
          problems.push({
            message: `fused q/k/v tensor has ${rows} rows, not a multiple of 3`,
            subject: `${file}: ${t.name}`,
          });
          continue;
        }
        const len = t.byteLength / 3;
        ref = {
          key: target.key,
          file,
          sourceKey: t.name,
          dtype: t.dtype,
          shape: [rows / 3, ...t.shape.slice(1)],
          offset: t.offset + target.part.index * len,
          byteLength: len,
          sourceShape: t.shape,
        };
      } else {
        ref = { key: target.key, file, sourceKey: t.name, dtype: t.dtype, shape: t.shape, offset: t.offset, byteLength: t.byteLength };
      }
      refs.push(ref);
      byKey.set(ref.key, ref);
    }
  }
  if (problems.length) throw new UserError(tooMany(problems));
  return { refs, byKey, ignored };
}

// ---------------------------------------------------------------------------------------------------
// Architecture inference

function layoutError(file: string, message: string): never {
  return fail(message, {
    subject: file,
    hint: "the checkpoint's U-Net/VAE layout is not one sdc can infer; use a diffusers folder with its config.json",
  });
}

function indices(keys: string[], re: RegExp): number[] {
  const s = new Set<number>();
  for (const k of keys) {
    const m = re.exec(k);
    if (m) s.add(Number(m[1]));
  }
  return [...s].sort((a, b) => a - b);
}

function inferUnetLayout(file: string, keys: string[]): UnetLayout {
  if (keys.some((k) => k.startsWith("label_emb."))) {
    fail("the U-Net is class-conditioned (label_emb.*: an upscaler or unCLIP model); sdc supports text-to-image SD 1.x/2.x U-Nets", {
      subject: file,
    });
  }
  const inputs = indices(keys, /^input_blocks\.(\d+)\./);
  const outputs = indices(keys, /^output_blocks\.(\d+)\./);
  const ops = indices(keys, /^input_blocks\.(\d+)\.0\.op\.weight$/);
  const levels = ops.length + 1;
  const count = inputs.length;
  if (count === 0 || inputs[count - 1] !== count - 1) layoutError(file, `input_blocks are not numbered 0..${count - 1}`);
  const lpb = count / levels - 1;
  if (!Number.isInteger(lpb) || lpb < 1) {
    layoutError(file, `${count} input_blocks do not split into ${levels} levels (${ops.length} downsamplers)`);
  }
  ops.forEach((n, i) => {
    if (n !== (i + 1) * (lpb + 1)) layoutError(file, `downsampler at input_blocks.${n}, expected input_blocks.${(i + 1) * (lpb + 1)}`);
  });
  if (outputs.length !== levels * (lpb + 1) || outputs[outputs.length - 1] !== outputs.length - 1) {
    layoutError(file, `${outputs.length} output_blocks, expected ${levels * (lpb + 1)} for ${levels} levels of ${lpb + 1}`);
  }
  const hasPrefix = (p: string) => keys.some((k) => k.startsWith(p));
  const downAttention = Array.from({ length: levels }, (_, i) => hasPrefix(`input_blocks.${1 + i * (lpb + 1)}.1.`));
  const upAttention = Array.from({ length: levels }, (_, i) => hasPrefix(`output_blocks.${i * (lpb + 1)}.1.`));
  return { levels, layersPerBlock: lpb, downAttention, upAttention };
}

function inferVaeLayout(file: string, keys: string[]): VaeLayout {
  const levels = indices(keys, /^encoder\.down\.(\d+)\./).length;
  const lpb = indices(keys, /^encoder\.down\.0\.block\.(\d+)\./).length;
  if (levels === 0 || lpb === 0) layoutError(file, "the VAE encoder has no encoder.down.N.block.M tensors");
  const up = indices(keys, /^decoder\.up\.(\d+)\./).length;
  if (up !== levels) layoutError(file, `the VAE has ${levels} encoder levels but ${up} decoder levels`);
  return { levels, layersPerBlock: lpb };
}

function shapeOf(m: Mapped, key: string, file: string): number[] {
  const r = m.byKey.get(key);
  if (!r) fail(`expected tensor ${key} (diffusers name) is missing`, { subject: file, hint: "the checkpoint is incomplete" });
  return r.shape;
}

function inferConfigs(
  file: string,
  family: SdFamily,
  ul: UnetLayout,
  unet: Mapped,
  vl: VaeLayout,
  vae: Mapped,
  text: Mapped,
  st: SafetensorsFile,
): InferredConfigs {
  const notes: string[] = [];
  const u = (k: string) => shapeOf(unet, k, file);
  const blockOut = Array.from({ length: ul.levels }, (_, i) => u(`down_blocks.${i}.resnets.0.conv2.weight`)[0]!);
  const convIn = u("conv_in.weight");
  const attnKeys = [...unet.byKey.keys()];
  const crossKey = attnKeys.find((k) => k.endsWith(".attn2.to_k.weight"));
  const projIn = attnKeys.find((k) => k.endsWith(".proj_in.weight"));
  const depth = (prefix: string) => indices(attnKeys, new RegExp(`^${prefix.replace(/\./g, "\\.")}transformer_blocks\\.(\\d+)\\.`)).length;
  const depths = ul.downAttention.flatMap((a, i) => (a ? [depth(`down_blocks.${i}.attentions.0.`)] : []));
  const headDim =
    family === "sd1"
      ? 8
      : blockOut.every((c) => c % 64 === 0)
        ? blockOut.map((c) => c / 64)
        : undefined;
  const unetCfg: Record<string, unknown> = {
    in_channels: convIn[1],
    out_channels: u("conv_out.weight")[0],
    conv_in_kernel: convIn[2],
    conv_out_kernel: u("conv_out.weight")[2],
    block_out_channels: blockOut,
    layers_per_block: ul.layersPerBlock,
    down_block_types: ul.downAttention.map((a) => (a ? "CrossAttnDownBlock2D" : "DownBlock2D")),
    up_block_types: ul.upAttention.map((a) => (a ? "CrossAttnUpBlock2D" : "UpBlock2D")),
    mid_block_type: "UNetMidBlock2DCrossAttn",
    cross_attention_dim: crossKey ? unet.byKey.get(crossKey)!.shape[1] : undefined,
    use_linear_projection: projIn ? unet.byKey.get(projIn)!.shape.length === 2 : false,
    transformer_layers_per_block: depths.every((d) => d === depths[0]) ? (depths[0] ?? 1) : depths,
    // LDM's openaimodel always embeds timesteps as [cos, sin] without a shift
    flip_sin_to_cos: true,
    freq_shift: 0,
    norm_num_groups: 32,
    attention_head_dim: headDim,
    upcast_attention: family === "sd2",
    sample_size: 64,
  };
  if (headDim === undefined) delete unetCfg.attention_head_dim;
  notes.push(
    family === "sd1"
      ? "attention_head_dim 8 (SD 1.x's 8 heads) is a family default: head counts are not visible in weights."
      : "attention_head_dim = channels/64 per level (SD 2.x's 64-wide heads) is a family default: head counts are not visible in weights.",
    "norm_num_groups 32 is the SD default (group counts are not visible in weights).",
    `upcast_attention ${family === "sd2"} and sample_size 64 are defaults: SD 2.1 needs upcasting in fp16; 768-v models use sample_size 96.`,
  );

  const vaeCfg = inferVaeConfig(file, vl, vae);
  notes.push(VAE_NOTE);

  const t = (k: string) => shapeOf(text, k, file);
  const emb = t("text_model.embeddings.token_embedding.weight");
  const layers = indices([...text.byKey.keys()], /^text_model\.encoder\.layers\.(\d+)\./).length;
  const hidden = emb[1]!;
  const textCfg: Record<string, unknown> = {
    vocab_size: emb[0],
    hidden_size: hidden,
    intermediate_size: t("text_model.encoder.layers.0.mlp.fc1.weight")[0],
    num_hidden_layers: layers,
    max_position_embeddings: t("text_model.embeddings.position_embedding.weight")[0],
    // OpenAI CLIP ViT-L/14 (SD 1.x) uses quick_gelu, OpenCLIP ViT-H/14 (SD 2.x) gelu
    hidden_act: family === "sd1" ? "quick_gelu" : "gelu",
    ...(hidden % 64 === 0 ? { num_attention_heads: hidden / 64 } : {}),
  };
  notes.push("num_attention_heads = hidden_size/64 (CLIP's 64-wide heads) is a family default, not visible in weights.");
  if (family === "sd2") {
    notes.push("OpenCLIP's last resblock is left out: SD 2.x conditions on the penultimate layer (as diffusers' 23-layer text encoder).");
  }

  // SD 1.x and 2.x were trained with SD 1.5's schedule. prediction_type is not visible in weights:
  // SD 2.x 768-v checkpoints need "v_prediction", which the user must say (A1111 takes it from a YAML
  // next to the file, diffusers' converter guesses from a global_step that safetensors files do not
  // carry). The UIs' default is epsilon.
  const scheduler: Record<string, unknown> = { ...PRESETS["sd1.5"].scheduler, prediction_type: "epsilon" };
  const schedAssumed = ["_class_name", "prediction_type", "set_alpha_to_one", "skip_prk_steps", "steps_offset", "clip_sample"];
  notes.push("prediction_type epsilon is assumed: v-prediction (SD 2.x 768-v) is not visible in weights; set it explicitly.");
  checkScheduleBuffers(st, scheduler, schedAssumed, notes);

  const unetAssumed = ["norm_num_groups", "upcast_attention", "sample_size", "attention_head_dim", "mid_block_type"];
  return {
    family,
    unet: unetCfg,
    vae: vaeCfg,
    textEncoder: textCfg,
    scheduler,
    tokenizer: { pad_token: family === "sd1" ? "<|endoftext|>" : "!", model_max_length: textCfg.max_position_embeddings as number },
    assumed: {
      unet: unetAssumed.filter((k) => k in unetCfg),
      vae: [...VAE_ASSUMED],
      textEncoder: ["hidden_act", "num_attention_heads"].filter((k) => k in textCfg),
      scheduler: schedAssumed,
    },
    notes,
  };
}

const VAE_ASSUMED = ["norm_num_groups", "scaling_factor", "sample_size"];
const VAE_NOTE = "VAE norm_num_groups 32, scaling_factor 0.18215 and sample_size 512 are the SD 1.x/2.x defaults, not visible in weights.";

function inferVaeConfig(file: string, vl: VaeLayout, vae: Mapped): Record<string, unknown> {
  const v = (k: string) => shapeOf(vae, k, file);
  return {
    in_channels: v("encoder.conv_in.weight")[1],
    out_channels: v("decoder.conv_out.weight")[0],
    latent_channels: v("post_quant_conv.weight")[0],
    block_out_channels: Array.from({ length: vl.levels }, (_, i) => v(`encoder.down_blocks.${i}.resnets.0.conv2.weight`)[0]),
    layers_per_block: vl.layersPerBlock,
    down_block_types: Array.from({ length: vl.levels }, () => "DownEncoderBlock2D"),
    up_block_types: Array.from({ length: vl.levels }, () => "UpDecoderBlock2D"),
    norm_num_groups: 32,
    scaling_factor: 0.18215,
    sample_size: 512,
  };
}

export interface StandaloneVae {
  vae: WeightSet;
  /** diffusers AutoencoderKL config keys read from the weights, plus the defaults listed in `assumed`. */
  inferred: Record<string, unknown>;
  assumed: string[];
  /** The naming the file uses. */
  naming: "ldm" | "diffusers";
}

/**
 * A VAE shipped on its own (e.g. the fine-tuned `vae-ft-mse-840000-ema-pruned.safetensors` the UIs
 * pair with checkpoints): LDM naming with or without `first_stage_model.`, or diffusers naming.
 */
export function loadVaeFile(file: string): StandaloneVae {
  const ext = path.extname(file).toLowerCase();
  if (PICKLE_EXT.includes(ext)) {
    fail(`${ext} files are Python pickles; sdc reads only .safetensors`, { subject: file, hint: CONVERT_HINT });
  }
  const st = SafetensorsFile.open(file);
  const all = [...st.tensors.values()];
  const prefix = all.some((t) => t.name.startsWith(LDM_PREFIXES.vae)) ? LDM_PREFIXES.vae : "";
  const tensors = all.filter((t) => t.name.startsWith(prefix) && !LDM_SCHEDULE_BUFFERS.has(t.name));
  const keys = tensors.map((t) => t.name.slice(prefix.length));
  const ignored = new Map(all.filter((t) => !tensors.includes(t)).map((t) => [t.name, "not part of the VAE"] as [string, string]));
  const diffusersNaming = keys.some((k) => k.startsWith("encoder.down_blocks."));
  let layout: VaeLayout;
  let mapped: Mapped;
  if (diffusersNaming) {
    const levels = indices(keys, /^encoder\.down_blocks\.(\d+)\./).length;
    const lpb = indices(keys, /^encoder\.down_blocks\.0\.resnets\.(\d+)\./).length;
    layout = { levels, layersPerBlock: lpb };
    // diffusers naming: identity, checked against the rules so stray keys are still reported
    const identity: PrefixRule[] = vaeRules(layout).map((r) => ({ ldm: r.diffusers, diffusers: r.diffusers }));
    mapped = mapGroup(file, "vae", tensors, prefix, identity, () => null);
    mapped.refs = mapped.refs.map((r) => ({ ...r, key: currentDiffusersVaeKey(r.key) }));
    mapped.byKey = new Map(mapped.refs.map((r) => [r.key, r]));
  } else {
    if (!keys.some((k) => k.startsWith("encoder.down."))) {
      fail("has no VAE encoder tensors (encoder.down.N... or encoder.down_blocks.N...)", { subject: file, hint: "is this a VAE file?" });
    }
    layout = inferVaeLayout(file, keys);
    mapped = mapGroup(file, "vae", tensors, prefix, vaeRules(layout), (key, t) =>
      isVaeAttentionLinear(key) && t.shape.length === 4 ? t.shape.slice(0, 2) : null,
    );
  }
  return {
    vae: new WeightSet("vae", mapped.refs, [file], ignored),
    inferred: inferVaeConfig(file, layout, mapped),
    assumed: [...VAE_ASSUMED],
    naming: diffusersNaming ? "diffusers" : "ldm",
  };
}

/**
 * LatentDiffusion stores its beta schedule; when present, confirm the scaled_linear default or
 * record the betas' own range (num_train_timesteps, beta_start, beta_end) and say so.
 */
function checkScheduleBuffers(st: SafetensorsFile, sched: Record<string, unknown>, assumed: string[], notes: string[]): void {
  const info = st.tensors.get("betas");
  if (!info) {
    assumed.push("num_train_timesteps", "beta_start", "beta_end", "beta_schedule");
    notes.push("the file has no betas buffer: the SD noise schedule (scaled_linear 0.00085..0.012, 1000 steps) is assumed.");
    return;
  }
  if (info.shape.length !== 1 || !["F32", "F64", "F16", "BF16"].includes(info.dtype)) {
    fail(`betas has ${info.dtype} ${shapeStr(info.shape)}; expected a float vector`, { subject: `${st.path}: betas` });
  }
  const betas = st.readFloat32("betas");
  const n = betas.length;
  const tol = info.dtype === "F32" || info.dtype === "F64" ? 1e-6 : 1e-2;
  const fits = (start: number, end: number, schedule: string) =>
    betas.every((b, i) => {
      const x = n === 1 ? 0 : i / (n - 1);
      const want = schedule === "linear" ? start + (end - start) * x : (Math.sqrt(start) + (Math.sqrt(end) - Math.sqrt(start)) * x) ** 2;
      return Math.abs(b - want) <= tol * Math.abs(want);
    });
  sched.num_train_timesteps = n;
  if (fits(0.00085, 0.012, "scaled_linear")) {
    notes.push("the file's betas match the scaled_linear 0.00085..0.012 schedule.");
    return;
  }
  const start = betas[0]!;
  const end = betas[n - 1]!;
  for (const schedule of ["scaled_linear", "linear"]) {
    if (fits(start, end, schedule)) {
      Object.assign(sched, { beta_start: start, beta_end: end, beta_schedule: schedule });
      notes.push(`the file's betas are a ${schedule} schedule ${start}..${end}; the scheduler config uses it.`);
      return;
    }
  }
  Object.assign(sched, { beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012 });
  assumed.push("beta_start", "beta_end", "beta_schedule");
  notes.push("the file's betas follow no linear or scaled_linear schedule; the SD default is assumed.");
}
