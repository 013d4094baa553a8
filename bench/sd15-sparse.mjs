// An SD 1.5-sized diffusers folder whose weights are sparse files (a real header, no data): the
// compiler links weights instead of copying them, so graphs build at full size while the folder
// costs no disk. For benchmarks of compile-side work only; its images would be noise (zeros).
import * as fs from "node:fs";
import * as path from "node:path";
import { PRESETS } from "../dist/models/presets.js";

/** Write a safetensors file of zeros with these tensors (F32; `position_ids` I64), sparse. */
function sparseSafetensors(file, shapes) {
  const header = {};
  let offset = 0;
  for (const [name, shape] of Object.entries(shapes)) {
    const dtype = name.endsWith("position_ids") ? "I64" : "F32";
    const bytes = shape.reduce((a, b) => a * b, 1) * (dtype === "I64" ? 8 : 4);
    header[name] = { dtype, shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const fd = fs.openSync(file, "w");
  fs.writeSync(fd, len);
  fs.writeSync(fd, json);
  fs.ftruncateSync(fd, 8 + json.length + offset);
  fs.closeSync(fd);
  return 8 + json.length + offset;
}

/** models/tiny-sd's folder with SD 1.5's architecture and sparse zero weights; returns its size in bytes. */
export function makeSd15Sparse(repo, dir) {
  const keys = JSON.parse(fs.readFileSync(path.join(repo, "test", "fixtures", "models", "sd15.keys.json"), "utf8")).components;
  const tiny = path.join(repo, "models", "tiny-sd");
  for (const f of ["model_index.json", "scheduler/scheduler_config.json", "tokenizer/merges.txt", "tokenizer/vocab.json", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json"]) {
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.copyFileSync(path.join(tiny, f), path.join(dir, f));
  }
  const preset = PRESETS["sd1.5"];
  const config = (c, arch) => {
    const base = JSON.parse(fs.readFileSync(path.join(tiny, c, "config.json"), "utf8"));
    fs.writeFileSync(path.join(dir, c, "config.json"), JSON.stringify({ ...base, ...arch }, null, 2));
  };
  let bytes = 0;
  bytes += sparseSafetensors(path.join(dir, "unet", "diffusion_pytorch_model.safetensors"), keys.unet.diffusers);
  bytes += sparseSafetensors(path.join(dir, "vae", "diffusion_pytorch_model.safetensors"), keys.vae.diffusers);
  bytes += sparseSafetensors(path.join(dir, "text_encoder", "model.safetensors"), keys.text_encoder.diffusers);
  config("unet", preset.unet);
  config("vae", preset.vae);
  config("text_encoder", preset.textEncoder);
  return bytes;
}
