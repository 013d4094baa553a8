#!/usr/bin/env node
/**
 * Makes the shipped emoji model from stage 2's output: the EMA weights of the U-Net and the text
 * encoder (when the run kept EMA) and the VAE, every float tensor stored as float16, with the
 * configs, tokenizer, scheduler and model_index.json — a diffusers folder. The model card
 * (README.md) already in the destination is kept.
 *
 *   node examples/emoji/ship.mjs [STAGE2_DIR] [DEST]     (defaults: out/emoji-stage2 models/emoji)
 *
 * Needs the built library (`npm run build`, done by `npm ci`'s prepare step).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { fromFloat32, isFloatDtype, SafetensorsFile, writeSafetensors } from "../../dist/index.js";

const [src = "out/emoji-stage2", dest = "models/emoji"] = process.argv.slice(2);
if (!fs.existsSync(path.join(src, "model_index.json"))) {
  console.error(`ship: ${src} is not a diffusers folder (no model_index.json): run stage 2 first (examples/emoji/README.md)`);
  process.exit(2);
}

const tmp = `${dest}.tmp-${process.pid}`;
fs.rmSync(tmp, { recursive: true, force: true });
fs.mkdirSync(tmp, { recursive: true });

const components = [
  ["unet", "diffusion_pytorch_model.safetensors"],
  ["text_encoder", "model.safetensors"],
  ["vae", "diffusion_pytorch_model.safetensors"],
];
let bytes = 0;
for (const [name, file] of components) {
  const from = fs.existsSync(path.join(src, `${name}_ema`, file)) ? `${name}_ema` : name;
  const st = SafetensorsFile.open(path.join(src, from, file));
  const entries = [...st.tensors.keys()].sort().map((key) => {
    const info = st.info(key);
    if (!isFloatDtype(info.dtype)) return { name: key, dtype: info.dtype, shape: info.shape, data: st.readRaw(key) };
    const values = st.readFloat32(key);
    if (!values.every(Number.isFinite)) throw new Error(`${from}/${file}: ${key} holds non-finite values`);
    const max = values.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
    if (max > 65504) throw new Error(`${from}/${file}: ${key} reaches ${max}, beyond float16`);
    return { name: key, dtype: "F16", shape: info.shape, data: fromFloat32(values, "F16") };
  });
  fs.mkdirSync(path.join(tmp, name));
  writeSafetensors(path.join(tmp, name, file), entries, { format: "pt" });
  fs.copyFileSync(path.join(src, from, "config.json"), path.join(tmp, name, "config.json"));
  const size = fs.statSync(path.join(tmp, name, file)).size;
  bytes += size;
  console.log(`${name}: ${from}/${file} → float16, ${(size / 1e6).toFixed(2)} MB`);
}
for (const dir of ["tokenizer", "scheduler"]) {
  fs.mkdirSync(path.join(tmp, dir));
  for (const f of fs.readdirSync(path.join(src, dir))) fs.copyFileSync(path.join(src, dir, f), path.join(tmp, dir, f));
}
fs.copyFileSync(path.join(src, "model_index.json"), path.join(tmp, "model_index.json"));
const card = path.join(dest, "README.md");
if (fs.existsSync(card)) fs.copyFileSync(card, path.join(tmp, "README.md"));
fs.rmSync(dest, { recursive: true, force: true });
fs.renameSync(tmp, dest);
console.log(`wrote ${dest}: weights ${(bytes / 1e6).toFixed(2)} MB`);
