/**
 * Seeded initial weights for training from scratch: every parameter the model builders ask for,
 * initialised as PyTorch initialises the modules diffusers and transformers build them from —
 * Conv2d and Linear weights and biases uniform in ±1/√fan_in (kaiming-uniform with a = √5),
 * normalisation weights 1 and biases 0, embeddings normal with σ 0.02 (transformers' CLIP) — drawn
 * from sdc's torch-compatible generator in the order the builders ask for them, so a seed always
 * gives the same model. `writeInitialModel` writes them as a diffusers folder.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Builder } from "../ir/builder.js";
import type { DType } from "../ir/graph.js";
import { TorchGenerator } from "../runtime/rng.js";
import { packageRoot } from "../util/paths.js";
import type { AutoencoderKLConfig, CLIPTextConfig, UNet2DConditionConfig } from "./arch.js";
import { buildClipText } from "./clip-text.js";
import { buildUNet } from "./unet.js";
import { buildVaeDecoder, buildVaeEncoder } from "./vae.js";
import { writeSafetensors } from "./weights/safetensors.js";
import { COMPONENT_WEIGHT_FILE, componentConfigJson, modelIndexJson, type DiffusersComponent } from "./weights/diffusers.js";

export interface InitTensor {
  key: string;
  shape: number[];
  data: Float32Array;
}

export function initialWeights(component: "unet" | "vae" | "text_encoder", config: UNet2DConditionConfig | AutoencoderKLConfig | CLIPTextConfig, seed: number): InitTensor[] {
  const asked: { key: string; shape: number[] }[] = [];
  const b = new Builder(component, (key: string, shape: number[], dtype: DType) => {
    asked.push({ key, shape });
    return { kind: "lazy", identity: key, produce: () => new Uint8Array(shape.reduce((a, c) => a * c, 4)) };
  });
  if (component === "unet") buildUNet(b, config as UNet2DConditionConfig);
  else if (component === "vae") {
    buildVaeEncoder(b, config as AutoencoderKLConfig);
    buildVaeDecoder(b, config as AutoencoderKLConfig);
  } else buildClipText(b, config as CLIPTextConfig);

  const gen = new TorchGenerator(seed);
  const shapes = new Map(asked.map((a) => [a.key, a.shape]));
  return asked.map(({ key, shape }) => {
    const n = shape.reduce((a, c) => a * c, 1);
    const module = key.slice(0, key.lastIndexOf("."));
    const weight = shapes.get(`${module}.weight`);
    let data: Float32Array;
    if (/embedding\.weight$/.test(key)) data = gen.randn(n).map((x) => x * 0.02);
    else if (weight && weight.length === 1) data = new Float32Array(n).fill(key.endsWith(".weight") ? 1 : 0); // a norm's affine
    else {
      const fanIn = (weight ?? shape).slice(1).reduce((a, c) => a * c, 1);
      const bound = 1 / Math.sqrt(fanIn);
      data = gen.rand(n).map((u) => (2 * u - 1) * bound);
    }
    return { key, shape, data };
  });
}

/** A diffusers folder with seeded initial weights for the three components (and sdc's bundled SD 1 tokenizer). */
export function writeInitialModel(dir: string, m: { unet: UNet2DConditionConfig; vae: AutoencoderKLConfig; textEncoder: CLIPTextConfig; schedulerConfig: Record<string, unknown> }, seed: number): void {
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  const component = (name: DiffusersComponent, config: object, tensors: InitTensor[]) => {
    fs.mkdirSync(path.join(tmp, name), { recursive: true });
    fs.writeFileSync(path.join(tmp, name, "config.json"), componentConfigJson(name, config));
    writeSafetensors(path.join(tmp, name, COMPONENT_WEIGHT_FILE[name]), tensors.map((t) => ({ name: t.key, dtype: "F32" as const, shape: t.shape, data: new Uint8Array(t.data.buffer) })), { format: "pt" });
  };
  component("unet", m.unet, initialWeights("unet", m.unet, seed));
  component("vae", m.vae, initialWeights("vae", m.vae, seed + 1));
  component("text_encoder", m.textEncoder, initialWeights("text_encoder", m.textEncoder, seed + 2));
  fs.mkdirSync(path.join(tmp, "tokenizer"));
  const tok = path.join(packageRoot(), "models", "clip-tokenizer", "sd1");
  for (const f of fs.readdirSync(tok)) fs.copyFileSync(path.join(tok, f), path.join(tmp, "tokenizer", f));
  fs.mkdirSync(path.join(tmp, "scheduler"));
  fs.writeFileSync(path.join(tmp, "scheduler", "scheduler_config.json"), `${JSON.stringify(m.schedulerConfig, null, 2)}\n`);
  fs.writeFileSync(path.join(tmp, "model_index.json"), modelIndexJson(String(m.schedulerConfig._class_name)));
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmp, dir);
}
