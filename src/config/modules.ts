/**
 * Module names of a resolved architecture, and the LoRA target check built on them.
 *
 * LoRA layers are attached by module name (`to_q`, `down_blocks.0.attentions.0.proj_in`, ...) in
 * diffusers' and PEFT's naming. Before any weights are read, a target list can be checked against
 * the names the architecture will have, so a typo is a located error with a did-you-mean instead of
 * a LoRA that silently attaches to nothing. The enumeration follows diffusers v0.24's
 * `UNet2DConditionModel` and transformers v4.30's `CLIPTextModel` construction; a test compares it
 * with their `named_modules()` for several configs.
 */
import { type CLIPTextConfig, perBlock, type UNet2DConditionConfig } from "../models/arch.js";
import { closest } from "./suggest.js";

export type ModuleKind = "Linear" | "Conv2d" | "GroupNorm" | "LayerNorm" | "Embedding";
export type ModuleMap = Map<string, ModuleKind>;

/** Kinds a LoRA can be attached to. */
const LORA_KINDS: readonly ModuleKind[] = ["Linear", "Conv2d"];

function resnet(out: ModuleMap, prefix: string, inCh: number, outCh: number): void {
  out.set(`${prefix}.norm1`, "GroupNorm");
  out.set(`${prefix}.conv1`, "Conv2d");
  out.set(`${prefix}.time_emb_proj`, "Linear");
  out.set(`${prefix}.norm2`, "GroupNorm");
  out.set(`${prefix}.conv2`, "Conv2d");
  if (inCh !== outCh) out.set(`${prefix}.conv_shortcut`, "Conv2d");
}

function transformer(out: ModuleMap, prefix: string, layers: number, linearProjection: boolean): void {
  const proj: ModuleKind = linearProjection ? "Linear" : "Conv2d";
  out.set(`${prefix}.norm`, "GroupNorm");
  out.set(`${prefix}.proj_in`, proj);
  for (let k = 0; k < layers; k++) {
    const b = `${prefix}.transformer_blocks.${k}`;
    for (const attn of ["attn1", "attn2"]) {
      for (const p of ["to_q", "to_k", "to_v", "to_out.0"]) out.set(`${b}.${attn}.${p}`, "Linear");
    }
    for (const n of ["norm1", "norm2", "norm3"]) out.set(`${b}.${n}`, "LayerNorm");
    out.set(`${b}.ff.net.0.proj`, "Linear");
    out.set(`${b}.ff.net.2`, "Linear");
  }
  out.set(`${prefix}.proj_out`, proj);
}

/** Transformer layers of attention `j` in a block: an int, or a per-layer list (asymmetric U-Nets). */
function layersAt(perBlockValue: number | number[], j: number): number {
  return Array.isArray(perBlockValue) ? perBlockValue[j] ?? perBlockValue[perBlockValue.length - 1]! : perBlockValue;
}

/** Every parameter-holding leaf module of a UNet2DConditionModel, by its diffusers name. */
export function unetModules(cfg: UNet2DConditionConfig): ModuleMap {
  const out: ModuleMap = new Map();
  const ch = cfg.block_out_channels;
  const n = cfg.down_block_types.length;
  const layers = perBlock(cfg.layers_per_block, n, "layers_per_block");
  const tlayers = perBlock(cfg.transformer_layers_per_block, n, "transformer_layers_per_block");
  const lin = cfg.use_linear_projection;

  out.set("conv_in", "Conv2d");
  out.set("time_embedding.linear_1", "Linear");
  out.set("time_embedding.linear_2", "Linear");

  let outCh = ch[0]!;
  cfg.down_block_types.forEach((type, i) => {
    const inCh = outCh;
    outCh = ch[i]!;
    for (let j = 0; j < layers[i]!; j++) {
      resnet(out, `down_blocks.${i}.resnets.${j}`, j === 0 ? inCh : outCh, outCh);
      if (type === "CrossAttnDownBlock2D") transformer(out, `down_blocks.${i}.attentions.${j}`, layersAt(tlayers[i]!, j), lin);
    }
    if (i < n - 1) out.set(`down_blocks.${i}.downsamplers.0.conv`, "Conv2d");
  });

  if (cfg.mid_block_type === "UNetMidBlock2DCrossAttn") {
    const c = ch[n - 1]!;
    resnet(out, "mid_block.resnets.0", c, c);
    transformer(out, "mid_block.attentions.0", layersAt(tlayers[n - 1]!, 0), lin);
    resnet(out, "mid_block.resnets.1", c, c);
  }

  const rch = [...ch].reverse();
  const rlayers = [...layers].reverse();
  const rtlayers = (cfg.reverse_transformer_layers_per_block as (number | number[])[] | null) ?? [...tlayers].reverse();
  let upOut = rch[0]!;
  cfg.up_block_types.forEach((type, i) => {
    const prevOut = upOut;
    upOut = rch[i]!;
    const inCh = rch[Math.min(i + 1, ch.length - 1)]!;
    const num = rlayers[i]! + 1;
    for (let j = 0; j < num; j++) {
      const skip = j === num - 1 ? inCh : upOut;
      const resIn = j === 0 ? prevOut : upOut;
      resnet(out, `up_blocks.${i}.resnets.${j}`, resIn + skip, upOut);
      if (type === "CrossAttnUpBlock2D") transformer(out, `up_blocks.${i}.attentions.${j}`, layersAt(rtlayers[i]!, j), lin);
    }
    if (i < n - 1) out.set(`up_blocks.${i}.upsamplers.0.conv`, "Conv2d");
  });

  if (cfg.norm_num_groups !== null) out.set("conv_norm_out", "GroupNorm");
  out.set("conv_out", "Conv2d");
  return out;
}

/** Every parameter-holding leaf module of a CLIPTextModel, by its transformers name. */
export function textEncoderModules(cfg: CLIPTextConfig): ModuleMap {
  const out: ModuleMap = new Map();
  out.set("text_model.embeddings.token_embedding", "Embedding");
  out.set("text_model.embeddings.position_embedding", "Embedding");
  for (let i = 0; i < cfg.num_hidden_layers; i++) {
    const p = `text_model.encoder.layers.${i}`;
    for (const q of ["q_proj", "k_proj", "v_proj", "out_proj"]) out.set(`${p}.self_attn.${q}`, "Linear");
    out.set(`${p}.layer_norm1`, "LayerNorm");
    out.set(`${p}.mlp.fc1`, "Linear");
    out.set(`${p}.mlp.fc2`, "Linear");
    out.set(`${p}.layer_norm2`, "LayerNorm");
  }
  out.set("text_model.final_layer_norm", "LayerNorm");
  return out;
}

export type LoraComponent = "unet" | "text_encoder";

export interface MissingTarget {
  target: string;
  /** A close module name (or name suffix) that does exist. */
  suggestion?: string;
  /** Set when the name exists, but only on layers a LoRA cannot attach to (their kinds). */
  notLoraable?: ModuleKind[];
  /** Set when the name exists in a component that was not asked for. */
  foundIn?: LoraComponent;
}

/**
 * The targets that match no LoRA-able module of the given components.
 *
 * A target matches as PEFT's `target_modules` do: the full module name, or a dot-separated suffix of
 * it (`to_q` matches every `...attn1.to_q`). Full names may carry a component prefix
 * (`unet.down_blocks.0...`, `text_encoder.text_model...`).
 */
export function missingTargets(
  targets: readonly string[],
  model: { unet: UNet2DConditionConfig; textEncoder: CLIPTextConfig },
  components: readonly LoraComponent[] = ["unet"],
): MissingTarget[] {
  const asked = suffixIndex(model, components);
  const others = (["unet", "text_encoder"] as const).filter((c) => !components.includes(c));
  const elsewhere = others.map((c) => [c, suffixIndex(model, [c])] as const);
  const loraable = (kinds: ModuleKind[] | undefined) => kinds?.some((k) => LORA_KINDS.includes(k)) ?? false;
  const candidates = [...asked].filter(([, kinds]) => loraable(kinds)).map(([s]) => s);
  const missing: MissingTarget[] = [];
  for (const t of targets) {
    const kinds = asked.get(t);
    if (loraable(kinds)) continue;
    if (kinds) {
      missing.push({ target: t, notLoraable: [...new Set(kinds)] });
      continue;
    }
    const other = elsewhere.find(([, idx]) => loraable(idx.get(t)));
    if (other) {
      missing.push({ target: t, foundIn: other[0] });
      continue;
    }
    const suggestion = closest(t, candidates);
    missing.push({ target: t, ...(suggestion ? { suggestion } : {}) });
  }
  return missing;
}

/** Every dot-separated suffix of every module name (with and without the component prefix) → kinds. */
function suffixIndex(model: { unet: UNet2DConditionConfig; textEncoder: CLIPTextConfig }, components: readonly LoraComponent[]): Map<string, ModuleKind[]> {
  const index = new Map<string, ModuleKind[]>();
  for (const c of components) {
    const mods = c === "unet" ? unetModules(model.unet) : textEncoderModules(model.textEncoder);
    for (const [name, kind] of mods) {
      const parts = `${c}.${name}`.split(".");
      for (let i = 0; i < parts.length; i++) {
        const s = parts.slice(i).join(".");
        const kinds = index.get(s) ?? [];
        kinds.push(kind);
        index.set(s, kinds);
      }
    }
  }
  return index;
}
