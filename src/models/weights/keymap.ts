/**
 * Every renaming between checkpoint dialects, in one place.
 *
 * sdc's models are named after diffusers' module keys (`down_blocks.0.attentions.0.proj_in.weight`).
 * Checkpoints come in other dialects: the original LDM/CompVis naming of single-file checkpoints
 * (`model.diffusion_model.input_blocks.1.1.proj_in.weight`, `first_stage_model.encoder.down.0...`,
 * `cond_stage_model.transformer.*` for SD1's CLIP, OpenCLIP's `cond_stage_model.model.*` for SD2) and
 * the LoRA dialects (kohya/A1111 `lora_unet_*`, PEFT `lora_A/lora_B`, diffusers' `lora.down/up` and
 * the older attention-processor keys). The tables below are the single source for all of them; they
 * are built from a block layout, so they hold for any number of levels and layers per block.
 *
 * The facts come from diffusers v0.24 (scripts/convert_diffusers_to_original_stable_diffusion.py,
 * pipelines/stable_diffusion/convert_from_ckpt.py, loaders/lora_conversion_utils.py), re-expressed here
 * as data; the fixtures' LDM files are produced by diffusers' own script and read back by its readers.
 */

// ---------------------------------------------------------------------------------------------------
// Prefix rules

/** One renaming: a key `ldm + rest` is `diffusers + inner(rest)` and vice versa. Prefixes end with ".". */
export interface PrefixRule {
  ldm: string;
  diffusers: string;
  /** Renames of the first segments of `rest` (LDM name, diffusers name), e.g. ResnetBlock2D's in_layers.2 = conv1. */
  inner?: readonly (readonly [string, string])[];
}

const UNET_RESNET: readonly (readonly [string, string])[] = [
  ["in_layers.0", "norm1"],
  ["in_layers.2", "conv1"],
  ["out_layers.0", "norm2"],
  ["out_layers.3", "conv2"],
  ["emb_layers.1", "time_emb_proj"],
  ["skip_connection", "conv_shortcut"],
];

const VAE_RESNET: readonly (readonly [string, string])[] = [["nin_shortcut", "conv_shortcut"]];

/** LDM's AttnBlock is 1x1 convs; diffusers' Attention is linear (same bytes, [C,C,1,1] vs [C,C]). */
const VAE_ATTENTION: readonly (readonly [string, string])[] = [
  ["norm", "group_norm"],
  ["q", "to_q"],
  ["k", "to_k"],
  ["v", "to_v"],
  ["proj_out", "to_out.0"],
];

function renameInner(rest: string, inner: PrefixRule["inner"], from: 0 | 1): string | null {
  if (!inner) return rest;
  for (const pair of inner) {
    const a = pair[from];
    if (rest.startsWith(a + ".")) return pair[1 - from] + rest.slice(a.length);
  }
  // A name from the target dialect (conv1 in an LDM file) means mixed naming: refuse, don't pass it on.
  for (const pair of inner) if (rest.startsWith(pair[1 - from] + ".")) return null;
  return rest;
}

/** Rename `key` with the longest matching prefix rule; null when no rule matches. */
export function applyRules(key: string, rules: readonly PrefixRule[], to: "diffusers" | "ldm"): string | null {
  const from = to === "diffusers" ? "ldm" : "diffusers";
  let best: PrefixRule | undefined;
  for (const r of rules) {
    if (key.startsWith(r[from]) && (!best || r[from].length > best[from].length)) best = r;
  }
  if (!best) return null;
  const rest = renameInner(key.slice(best[from].length), best.inner, to === "diffusers" ? 0 : 1);
  return rest === null ? null : best[to] + rest;
}

// ---------------------------------------------------------------------------------------------------
// U-Net

/** Where the U-Net has blocks: enough to place every LDM `input_blocks.N` / `output_blocks.N`. */
export interface UnetLayout {
  levels: number;
  layersPerBlock: number;
  /** Per level, whether the down block has attentions (CrossAttnDownBlock2D). */
  downAttention: boolean[];
  /** Per level of up_blocks (deepest first, diffusers order), whether it has attentions. */
  upAttention: boolean[];
}

/** SD 1.x/2.x: 4 levels, 2 resnets per down level, attention everywhere except the deepest level. */
export const SD_UNET_LAYOUT: UnetLayout = {
  levels: 4,
  layersPerBlock: 2,
  downAttention: [true, true, true, false],
  upAttention: [false, true, true, true],
};

export function unetLayoutFromConfig(cfg: {
  block_out_channels: readonly number[];
  layers_per_block: number;
  down_block_types: readonly string[];
  up_block_types: readonly string[];
}): UnetLayout {
  return {
    levels: cfg.block_out_channels.length,
    layersPerBlock: cfg.layers_per_block,
    downAttention: cfg.down_block_types.map((t) => t.startsWith("CrossAttn")),
    upAttention: cfg.up_block_types.map((t) => t.startsWith("CrossAttn")),
  };
}

/** The U-Net's renaming rules (without the `model.diffusion_model.` prefix). */
export function unetRules(layout: UnetLayout): PrefixRule[] {
  const { levels, layersPerBlock: lpb, downAttention, upAttention } = layout;
  const rules: PrefixRule[] = [
    { ldm: "time_embed.0.", diffusers: "time_embedding.linear_1." },
    { ldm: "time_embed.2.", diffusers: "time_embedding.linear_2." },
    { ldm: "input_blocks.0.0.", diffusers: "conv_in." },
    { ldm: "out.0.", diffusers: "conv_norm_out." },
    { ldm: "out.2.", diffusers: "conv_out." },
    { ldm: "middle_block.0.", diffusers: "mid_block.resnets.0.", inner: UNET_RESNET },
    { ldm: "middle_block.1.", diffusers: "mid_block.attentions.0." },
    { ldm: "middle_block.2.", diffusers: "mid_block.resnets.1.", inner: UNET_RESNET },
  ];
  for (let i = 0; i < levels; i++) {
    for (let j = 0; j < lpb; j++) {
      // input_blocks: conv_in, then per level lpb resnets(+attention) and a downsampler (not on the last)
      const n = 1 + i * (lpb + 1) + j;
      rules.push({ ldm: `input_blocks.${n}.0.`, diffusers: `down_blocks.${i}.resnets.${j}.`, inner: UNET_RESNET });
      if (downAttention[i]) rules.push({ ldm: `input_blocks.${n}.1.`, diffusers: `down_blocks.${i}.attentions.${j}.` });
    }
    if (i < levels - 1) {
      rules.push({ ldm: `input_blocks.${(i + 1) * (lpb + 1)}.0.op.`, diffusers: `down_blocks.${i}.downsamplers.0.conv.` });
    }
    for (let j = 0; j <= lpb; j++) {
      // output_blocks: per level lpb+1 resnets(+attention); the level's last one also holds the upsampler
      const n = i * (lpb + 1) + j;
      rules.push({ ldm: `output_blocks.${n}.0.`, diffusers: `up_blocks.${i}.resnets.${j}.`, inner: UNET_RESNET });
      if (upAttention[i]) rules.push({ ldm: `output_blocks.${n}.1.`, diffusers: `up_blocks.${i}.attentions.${j}.` });
    }
    if (i < levels - 1) {
      const n = i * (lpb + 1) + lpb;
      rules.push({ ldm: `output_blocks.${n}.${upAttention[i] ? 2 : 1}.conv.`, diffusers: `up_blocks.${i}.upsamplers.0.conv.` });
    }
  }
  return rules;
}

// ---------------------------------------------------------------------------------------------------
// VAE

export interface VaeLayout {
  levels: number;
  layersPerBlock: number;
}

/** The VAE's renaming rules (without the `first_stage_model.` prefix). LDM numbers decoder levels upwards. */
export function vaeRules(layout: VaeLayout): PrefixRule[] {
  const { levels, layersPerBlock: lpb } = layout;
  const rules: PrefixRule[] = [];
  for (const part of ["encoder", "decoder"]) {
    rules.push(
      { ldm: `${part}.conv_in.`, diffusers: `${part}.conv_in.` },
      { ldm: `${part}.conv_out.`, diffusers: `${part}.conv_out.` },
      { ldm: `${part}.norm_out.`, diffusers: `${part}.conv_norm_out.` },
      { ldm: `${part}.mid.block_1.`, diffusers: `${part}.mid_block.resnets.0.`, inner: VAE_RESNET },
      { ldm: `${part}.mid.block_2.`, diffusers: `${part}.mid_block.resnets.1.`, inner: VAE_RESNET },
      { ldm: `${part}.mid.attn_1.`, diffusers: `${part}.mid_block.attentions.0.`, inner: VAE_ATTENTION },
    );
  }
  rules.push(
    { ldm: "quant_conv.", diffusers: "quant_conv." },
    { ldm: "post_quant_conv.", diffusers: "post_quant_conv." },
  );
  for (let i = 0; i < levels; i++) {
    const up = levels - 1 - i;
    for (let j = 0; j < lpb; j++) {
      rules.push({ ldm: `encoder.down.${i}.block.${j}.`, diffusers: `encoder.down_blocks.${i}.resnets.${j}.`, inner: VAE_RESNET });
    }
    for (let j = 0; j <= lpb; j++) {
      rules.push({ ldm: `decoder.up.${up}.block.${j}.`, diffusers: `decoder.up_blocks.${i}.resnets.${j}.`, inner: VAE_RESNET });
    }
    if (i < levels - 1) {
      rules.push({ ldm: `encoder.down.${i}.downsample.conv.`, diffusers: `encoder.down_blocks.${i}.downsamplers.0.conv.` });
      rules.push({ ldm: `decoder.up.${up}.upsample.conv.`, diffusers: `decoder.up_blocks.${i}.upsamplers.0.conv.` });
    }
  }
  return rules;
}

/**
 * diffusers before 0.15 saved the VAE mid-block attention as query/key/value/proj_attn; many published
 * SD 1.x/2.x folders still do, and diffusers renames them on load. Returns the current name, or the
 * key unchanged.
 */
export function currentDiffusersVaeKey(key: string): string {
  const m = /^(encoder|decoder)\.mid_block\.attentions\.0\.(query|key|value|proj_attn)\.(weight|bias)$/.exec(key);
  if (!m) return key;
  const to = { query: "to_q", key: "to_k", value: "to_v", proj_attn: "to_out.0" }[m[2] as "query" | "key" | "value" | "proj_attn"];
  return `${m[1]}.mid_block.attentions.0.${to}.${m[3]}`;
}

/** Diffusers keys whose LDM tensor is a 1x1 conv [C, C, 1, 1] for a diffusers linear [C, C]. */
export function isVaeAttentionLinear(diffusersKey: string): boolean {
  return /^(encoder|decoder)\.mid_block\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$/.test(diffusersKey);
}

// ---------------------------------------------------------------------------------------------------
// Text encoders

/** SD1 single files store transformers' CLIPTextModel under this prefix, mostly with its own names. */
const SD1_TEXT_PREFIX = "cond_stage_model.transformer.";
/** SD2 single files store OpenCLIP's text tower under this prefix. */
const OPENCLIP_PREFIX = "cond_stage_model.model.";

/** SD1: the key after `cond_stage_model.transformer.`; transformers before 4.x had no `text_model.` level. */
export function sd1TextToDiffusers(rest: string): string {
  return rest.startsWith("text_model.") ? rest : `text_model.${rest}`;
}

/** A diffusers key made from an OpenCLIP tensor, or from a third of one (fused q/k/v rows). */
export interface OpenClipTarget {
  key: string;
  /** Row range [begin, end) of the OpenCLIP tensor's first dimension, as thirds of in_proj_*. */
  part?: { index: 0 | 1 | 2; of: 3 };
}

const OPENCLIP_RESBLOCK: readonly (readonly [string, string])[] = [
  ["ln_1", "layer_norm1"],
  ["ln_2", "layer_norm2"],
  ["attn.out_proj", "self_attn.out_proj"],
  ["mlp.c_fc", "mlp.fc1"],
  ["mlp.c_proj", "mlp.fc2"],
];

/**
 * OpenCLIP → transformers CLIPTextModel names (the key after `cond_stage_model.model.`).
 * Returns [] for tensors CLIPTextModel has no place for (see `openClipIgnoredReason`), null if unknown.
 */
export function openClipToDiffusers(rest: string): OpenClipTarget[] | null {
  switch (rest) {
    case "token_embedding.weight":
      return [{ key: "text_model.embeddings.token_embedding.weight" }];
    case "positional_embedding":
      return [{ key: "text_model.embeddings.position_embedding.weight" }];
    case "ln_final.weight":
      return [{ key: "text_model.final_layer_norm.weight" }];
    case "ln_final.bias":
      return [{ key: "text_model.final_layer_norm.bias" }];
  }
  const m = /^transformer\.resblocks\.(\d+)\.(.+)$/.exec(rest);
  if (!m) return null;
  const layer = `text_model.encoder.layers.${m[1]}.`;
  const inner = m[2]!;
  const fused = /^attn\.in_proj_(weight|bias)$/.exec(inner);
  if (fused) {
    return (["q", "k", "v"] as const).map((p, index) => ({
      key: `${layer}self_attn.${p}_proj.${fused[1]}`,
      part: { index: index as 0 | 1 | 2, of: 3 as const },
    }));
  }
  const r = renameInner(inner, OPENCLIP_RESBLOCK, 0);
  if (r === null || r === inner) return null;
  return [{ key: layer + r }];
}

/** Why an OpenCLIP tensor has no place in diffusers' text encoder, or null if it has one. */
export function openClipIgnoredReason(rest: string, numLayers: number): string | null {
  if (rest === "text_projection" || rest === "logit_scale") {
    return "used only by CLIP's contrastive head; Stable Diffusion uses the token states";
  }
  const m = /^transformer\.resblocks\.(\d+)\./.exec(rest);
  if (m && Number(m[1]) >= numLayers) {
    return "SD 2.x conditions on the penultimate layer, so diffusers' text encoder has one layer fewer than OpenCLIP";
  }
  if (rest === "attn_mask") return "a buffer (the causal mask), rebuilt by the model";
  return null;
}

/** Buffers diffusers folders and SD1 files carry that are not weights (and are often broken in merged files). */
export const TEXT_ENCODER_BUFFERS: Readonly<Record<string, string>> = {
  "text_model.embeddings.position_ids":
    "a buffer (arange of positions), rebuilt by the model; merged checkpoints often store it as floats, some with wrong values",
};

// ---------------------------------------------------------------------------------------------------
// Single-file prefixes


/** Top-level keys of LatentDiffusion's noise schedule buffers. */
export const LDM_SCHEDULE_BUFFERS = new Set([
  "betas",
  "alphas_cumprod",
  "alphas_cumprod_prev",
  "sqrt_alphas_cumprod",
  "sqrt_one_minus_alphas_cumprod",
  "log_one_minus_alphas_cumprod",
  "sqrt_recip_alphas_cumprod",
  "sqrt_recipm1_alphas_cumprod",
  "posterior_variance",
  "posterior_log_variance_clipped",
  "posterior_mean_coef1",
  "posterior_mean_coef2",
  "logvar",
  "model_ema.decay",
  "model_ema.num_updates",
]);

export const LDM_PREFIXES = {
  unet: "model.diffusion_model.",
  vae: "first_stage_model.",
  sd1Text: SD1_TEXT_PREFIX,
  openClip: OPENCLIP_PREFIX,
  /** SDXL's two text encoders. */
  sdxl: "conditioner.",
  ema: "model_ema.",
} as const;

// ---------------------------------------------------------------------------------------------------
// Writing single files

/**
 * The original (LDM) single-file key of a diffusers key: what AUTOMATIC1111 and the other UIs load.
 * SD 1.x text encoders only (transformers' names under `cond_stage_model.transformer.`); null when
 * no rule covers the key.
 */
export function ldmKeyOf(component: "unet" | "vae" | "text_encoder", key: string, layout: { unet: UnetLayout; vae: VaeLayout }): string | null {
  if (component === "text_encoder") return key.startsWith("text_model.") ? SD1_TEXT_PREFIX + key : null;
  const r = component === "unet" ? applyRules(key, unetRules(layout.unet), "ldm") : applyRules(key, vaeRules(layout.vae), "ldm");
  return r === null ? null : (component === "unet" ? LDM_PREFIXES.unet : LDM_PREFIXES.vae) + r;
}

// ---------------------------------------------------------------------------------------------------
// LoRA dialects

export type LoraComponent = "unet" | "text_encoder";
export type LoraDialect = "kohya" | "kohya-ldm" | "peft" | "diffusers" | "attn-procs";
export type LoraPart = "down" | "up" | "alpha";

export interface LoraKey {
  component: LoraComponent;
  /** diffusers module key, e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q". */
  module: string;
  part: LoraPart;
  dialect: LoraDialect;
}

/**
 * Multi-word names of diffusers, transformers and LDM modules. kohya flattens a module key by
 * replacing every "." with "_"; rejoining these (longest first) restores it.
 */
const COMPOUNDS: readonly string[] = [
  // diffusers U-Net
  "down_blocks", "up_blocks", "mid_block", "transformer_blocks", "to_q", "to_k", "to_v", "to_out", "proj_in",
  "proj_out", "time_emb_proj", "conv_shortcut", "conv_in", "conv_out", "conv_norm_out", "time_embedding",
  "linear_1", "linear_2",
  // LDM U-Net
  "input_blocks", "middle_block", "output_blocks", "in_layers", "out_layers", "emb_layers", "skip_connection",
  "time_embed",
  // transformers CLIP
  "text_model", "self_attn", "q_proj", "k_proj", "v_proj", "out_proj", "layer_norm1", "layer_norm2",
  "final_layer_norm", "token_embedding", "position_embedding",
];
const COMPOUND_TOKENS = COMPOUNDS.map((c) => c.split("_")).sort((a, b) => b.length - a.length);

/** `down_blocks_0_attentions_0_proj_in` → `down_blocks.0.attentions.0.proj_in`. */
export function unflattenKohya(flat: string): string {
  const t = flat.split("_");
  const out: string[] = [];
  for (let i = 0; i < t.length; ) {
    const c = COMPOUND_TOKENS.find((ct) => ct.every((w, k) => t[i + k] === w));
    if (c) {
      out.push(c.join("_"));
      i += c.length;
    } else {
      out.push(t[i]!);
      i += 1;
    }
  }
  return out.join(".");
}

/** The kohya/A1111 name of a diffusers module (what UIs expect in a LoRA file). */
export function kohyaName(component: LoraComponent, module: string): string {
  return `lora_${component === "unet" ? "unet" : "te"}_${module.replace(/\./g, "_")}`;
}

const LDM_UNET_START = /^(input_blocks|middle_block|output_blocks|time_embed|out)\./;

/** U-Net module key in LDM naming (e.g. from a kohya file) → diffusers, for the given layout. */
function ldmUnetModuleToDiffusers(module: string, layout: UnetLayout): string | null {
  const r = applyRules(module + ".", unetRules(layout), "diffusers");
  return r === null ? null : r.slice(0, -1);
}

const ATTN_PROC: Readonly<Record<string, string>> = { to_q: "to_q", to_k: "to_k", to_v: "to_v", to_out: "to_out.0" };
const ATTN_PROC_TE: Readonly<Record<string, string>> = {
  to_q: "q_proj",
  to_k: "k_proj",
  to_v: "v_proj",
  to_out: "out_proj",
};

function guessComponent(module: string): LoraComponent | null {
  if (/^(down_blocks|up_blocks|mid_block|conv_in|conv_out|conv_norm_out|time_embedding)\./.test(module)) return "unet";
  if (module.startsWith("text_model.")) return "text_encoder";
  return null;
}

/**
 * Classify one key of a LoRA file. `lookupFlat` resolves a kohya flat name to a module exactly when
 * the model's module names are known; `unetLayout` places LDM-named kohya keys (default: SD 1.x/2.x).
 * Returns null for a key of no known dialect.
 */
export function parseLoraKey(
  key: string,
  opts: { unetLayout?: UnetLayout; lookupFlat?: (component: LoraComponent, flat: string) => string | undefined } = {},
): LoraKey | null {
  // kohya / A1111: lora_unet_<flat>.lora_down.weight, .lora_up.weight, .alpha
  let m = /^lora_(unet|te)_([A-Za-z0-9_]+)\.(lora_down\.weight|lora_up\.weight|alpha)$/.exec(key);
  if (m) {
    const component: LoraComponent = m[1] === "unet" ? "unet" : "text_encoder";
    const flat = m[2]!;
    const part: LoraPart = m[3] === "alpha" ? "alpha" : m[3]!.startsWith("lora_down") ? "down" : "up";
    const exact = opts.lookupFlat?.(component, flat);
    if (exact) return { component, module: exact, part, dialect: "kohya" };
    const dotted = unflattenKohya(flat);
    if (component === "unet" && LDM_UNET_START.test(dotted)) {
      const module = ldmUnetModuleToDiffusers(dotted, opts.unetLayout ?? SD_UNET_LAYOUT);
      return module === null ? null : { component, module, part, dialect: "kohya-ldm" };
    }
    return { component, module: dotted, part, dialect: "kohya" };
  }
  // optional component prefix for the dotted dialects; PEFT's own save adds base_model.model.
  let component: LoraComponent | null = null;
  let rest = key.replace(/^base_model\.model\./, "");
  const pm = /^(unet|text_encoder)\.(.+)$/.exec(rest);
  if (pm) {
    component = pm[1] as LoraComponent;
    rest = pm[2]!;
  }
  const withComponent = (module: string, part: LoraPart, dialect: LoraDialect): LoraKey | null => {
    const c = component ?? guessComponent(module);
    return c ? { component: c, module, part, dialect } : null;
  };
  // PEFT (diffusers >= 0.26): <module>.lora_A.weight / lora_B.weight
  m = /^(.+)\.lora_(A|B)\.weight$/.exec(rest);
  if (m) return withComponent(m[1]!, m[2] === "A" ? "down" : "up", "peft");
  // diffusers 0.21-0.25: U-Net <module>.lora.down.weight, text encoder <module>.lora_linear_layer.down.weight
  m = /^(.+)\.(lora|lora_linear_layer)\.(down|up)\.weight$/.exec(rest);
  if (m) return withComponent(m[1]!, m[3] as LoraPart, "diffusers");
  // attention processors (diffusers < 0.21): <attn>.processor.to_q_lora.down.weight; text encoder without .processor
  m = /^(.+?)(\.processor)?\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$/.exec(rest);
  if (m) {
    const owner = m[1]!;
    const c = component ?? guessComponent(owner);
    const proj = c === "text_encoder" ? ATTN_PROC_TE[m[3]!]! : ATTN_PROC[m[3]!]!;
    return withComponent(`${owner}.${proj}`, m[4] as LoraPart, "attn-procs");
  }
  // network alphas stored next to diffusers-named factors
  m = /^(.+)\.alpha$/.exec(rest);
  if (m) return withComponent(m[1]!, "alpha", "diffusers");
  return null;
}
