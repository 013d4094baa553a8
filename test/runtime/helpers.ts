/** Shared test helpers for runtime tests: temporary tokenizer folders, safetensors reading. */
import * as fs from "node:fs";
import * as path from "node:path";
import { CLIP_TOKENIZER, FIXTURES, tempDir } from "../helpers/repo.js";

/**
 * A tokenizer/ folder as SD 1.x (sd1) or 2.x (sd2) diffusers checkpoints ship it, in a temp folder
 * a test may change: the bundled tokenizer's vocab.json, merges.txt and special_tokens_map.json,
 * with the hub's tokenizer_config.json (test/fixtures/clip-tokenizer), then `extra` files.
 */
export function tokenizerFolder(variant: "sd1" | "sd2", extra: Record<string, string> = {}): string {
  const dir = tempDir(`sdc-tok-${variant}-`);
  for (const f of ["vocab.json", "merges.txt", "special_tokens_map.json"]) fs.copyFileSync(path.join(CLIP_TOKENIZER, variant, f), path.join(dir, f));
  fs.copyFileSync(path.join(FIXTURES, "clip-tokenizer", variant, "tokenizer_config.json"), path.join(dir, "tokenizer_config.json"));
  for (const [name, text] of Object.entries(extra)) fs.writeFileSync(path.join(dir, name), text);
  return dir;
}

export interface StTensor {
  dtype: string;
  shape: number[];
  data: Float32Array | BigInt64Array | Uint8Array;
}

/** Minimal safetensors reader for committed fixtures (F32, I64, U8). */
export function readSafetensors(file: string): Map<string, StTensor> {
  return readSafetensorsWithMetadata(file).tensors;
}

export function readSafetensorsWithMetadata(file: string): { tensors: Map<string, StTensor>; metadata: Record<string, string> } {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8")) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out = new Map<string, StTensor>();
  const metadata = ((header as Record<string, unknown>).__metadata__ ?? {}) as Record<string, string>;
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const [a, b] = info.data_offsets;
    const bytes = buf.subarray(8 + n + a, 8 + n + b);
    const copy = new Uint8Array(bytes).buffer; // aligned copy
    const data =
      info.dtype === "F32" ? new Float32Array(copy) : info.dtype === "I64" ? new BigInt64Array(copy) : info.dtype === "U8" ? new Uint8Array(copy) : null;
    if (!data) throw new Error(`fixture dtype ${info.dtype} not handled (${name})`);
    out.set(name, { dtype: info.dtype, shape: info.shape, data });
  }
  return { tensors: out, metadata };
}
