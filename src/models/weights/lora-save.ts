/**
 * Writing LoRA files that the common tools load: diffusers/PEFT keys (`unet.<module>.lora_A.weight`,
 * what diffusers' `load_lora_weights` reads) or the kohya layout AUTOMATIC1111 and ComfyUI load
 * (`lora_unet_<module with _>.lora_down.weight`, `.lora_up.weight`, `.alpha`, plus kohya's `ss_*`,
 * `sshs_*` and `modelspec.*` metadata; an SD 2 LoRA without `ss_v2: "True"` is hidden by
 * AUTOMATIC1111). Key names come from keymap.ts; sdc's own reader (`readLora`) reads both back.
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import { f32ToF16 } from "../../util/half.js";
import { kohyaName, type LoraComponent } from "./keymap.js";
import { writeSafetensors, type TensorEntry } from "./safetensors.js";

export interface LoraFactors {
  component: LoraComponent;
  /** diffusers module path, e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q". */
  module: string;
  /** A (down) [r, in] or [r, in, 1, 1], and B (up) [out, r] or [out, r, 1, 1]. */
  down: Float32Array;
  downShape: number[];
  up: Float32Array;
  upShape: number[];
}

export interface SaveLoraOptions {
  format: "peft" | "kohya";
  rank: number;
  alpha: number;
  /** The base model family: decides kohya's ss_v2 / ss_base_model_version / modelspec.architecture. */
  base: "sd1" | "sd2" | "sd2-v";
  dtype?: "F32" | "F16";
  title?: string;
  /** Extra string metadata (training settings), kept as given. */
  metadata?: Record<string, string>;
}

const PEFT_PREFIX: Record<LoraComponent, string> = { unet: "unet", text_encoder: "text_encoder" };

function bytes(a: Float32Array, dtype: "F32" | "F16"): Uint8Array {
  if (dtype === "F16") return new Uint8Array(f32ToF16(a).buffer);
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

export function saveLora(file: string, factors: readonly LoraFactors[], o: SaveLoraOptions): void {
  const dtype = o.dtype ?? "F32";
  const entries: TensorEntry[] = [];
  // PEFT files carry no per-module alpha (loaders take scale 1 unless told otherwise), so a scale
  // alpha/rank ≠ 1 is folded into B there: the file means the same under every loader
  const peftScale = o.alpha / o.rank;
  for (const f of factors) {
    if (o.format === "peft") {
      const key = `${PEFT_PREFIX[f.component]}.${f.module}`;
      const up = peftScale === 1 ? f.up : f.up.map((x) => x * peftScale);
      entries.push({ name: `${key}.lora_A.weight`, dtype, shape: f.downShape, data: bytes(f.down, dtype) });
      entries.push({ name: `${key}.lora_B.weight`, dtype, shape: f.upShape, data: bytes(up, dtype) });
    } else {
      const key = kohyaName(f.component, f.module);
      entries.push({ name: `${key}.lora_down.weight`, dtype, shape: f.downShape, data: bytes(f.down, dtype) });
      entries.push({ name: `${key}.lora_up.weight`, dtype, shape: f.upShape, data: bytes(f.up, dtype) });
      entries.push({ name: `${key}.alpha`, dtype, shape: [], data: bytes(new Float32Array([o.alpha]), dtype) });
    }
  }
  const base = { "sdc.lora_rank": String(o.rank), "sdc.lora_alpha": String(o.alpha), ...(o.metadata ?? {}) };
  if (o.format === "peft") {
    writeSafetensors(file, entries, { format: "pt", ...base });
    return;
  }
  const v2 = o.base !== "sd1";
  const ss: Record<string, string> = {
    ss_network_module: "networks.lora",
    ss_network_dim: String(o.rank),
    ss_network_alpha: String(o.alpha),
    ss_base_model_version: v2 ? "sd_v2" : "sd_v1",
    ss_v2: v2 ? "True" : "False",
    ...(o.base === "sd2-v" ? { ss_v_parameterization: "True" } : {}),
  };
  // kohya hashes a serialization that carries only the ss_* metadata (so later metadata edits keep the hash)
  const tmp = `${file}.hash.tmp`;
  writeSafetensors(tmp, entries, ss);
  const { modelHash, legacyHash } = addnetHashes(fs.readFileSync(tmp));
  fs.rmSync(tmp, { force: true });
  writeSafetensors(file, entries, {
    ...base,
    ...ss,
    sshs_model_hash: modelHash,
    sshs_legacy_hash: legacyHash,
    "modelspec.sai_model_spec": "1.0.0",
    "modelspec.architecture": o.base === "sd1" ? "stable-diffusion-v1/lora" : o.base === "sd2" ? "stable-diffusion-v2-512/lora" : "stable-diffusion-v2-768-v/lora",
    "modelspec.implementation": "diffusers",
    "modelspec.title": o.title ?? "sdc LoRA",
    "modelspec.date": new Date().toISOString().slice(0, 10),
  });
}

/**
 * The hashes sd-webui-additional-networks shows: sha256 of the tensor data (everything after the
 * header), and the legacy one, sha256 of the 64 KiB at 1 MiB into the file, first 8 hex digits.
 */
export function addnetHashes(file: Uint8Array): { modelHash: string; legacyHash: string } {
  const n = Number(Buffer.from(file.buffer, file.byteOffset, 8).readBigUInt64LE(0));
  const modelHash = createHash("sha256").update(file.subarray(8 + n)).digest("hex");
  const legacyHash = createHash("sha256").update(file.subarray(0x100000, 0x110000)).digest("hex").slice(0, 8);
  return { modelHash, legacyHash };
}
