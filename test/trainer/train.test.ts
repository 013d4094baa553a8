/**
 * The trainer end to end on the tiny shipped model and a generated shapes data set: a short LoRA
 * training whose loss falls, exact resume (an interrupted run resumed equals an uninterrupted one,
 * bit for bit), the LoRA files it exports loaded back by sdc, and a U-Net and a VAE fine-tune.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { loadPipeline } from "../../src/config/load.js";
import { makeShapes } from "../../src/data/shapes.js";
import { loadImage, readPngText } from "../../src/image/image.js";
import { readLora } from "../../src/models/weights/lora.js";
import { SafetensorsFile } from "../../src/models/weights/safetensors.js";
import { loadSingleFile } from "../../src/models/weights/single-file.js";
import { readWeightFloat32 } from "../../src/models/weights/weight-set.js";
import { run } from "../../src/pipeline.js";
import { trainPipeline } from "../../src/train-pipeline.js";
import { REPO, tempDir } from "../helpers/repo.js";

async function project(trainYaml: string, count = 16) {
  const dir = tempDir("sdc-train-");
  await makeShapes({ dir: path.join(dir, "data"), count, size: 32, seed: 1 });
  const file = path.join(dir, "p.yaml");
  fs.writeFileSync(
    file,
    `version: 1\nname: p\nmodel:\n  from: ${JSON.stringify(path.join(REPO, "models", "tiny-sd"))}\noutput:\n  dir: out\ntrain:\n  data:\n    dir: data\n    resolution: 32\n${trainYaml}`,
  );
  return { dir, load: () => loadPipeline(file, { cwd: dir }) };
}

const lora = `  target: lora
  lora:
    rank: 4
    dropout: 0.1
  optimizer:
    lr: 0.01
  batch: 4
  seed: 7
  checkpointing:
    every: 3
    keep: 0
`;

describe("the trainer", () => {
  it("LoRA on shapes: the loss falls, checkpoints are written, and the exported LoRA loads back (both layouts)", async () => {
    const { dir, load } = await project(`${lora}  steps: 24\n  objective:\n    cfg_dropout: 0.2\n  validation:\n    prompts: [red circle on blue background, { prompt: green star, seed: 3, guidance: 1 }]\n    every: 12\n    steps: 4\n    holdout_dir: holdout\n`);
    await makeShapes({ dir: path.join(dir, "holdout"), count: 8, size: 32, seed: 99 });
    const r = await trainPipeline(await load(), { cwd: dir, threads: 2 });
    expect(r.steps).toBe(24);
    const first = r.losses.slice(0, 6).reduce((a, b) => a + b.loss, 0) / 6;
    const last = r.losses.slice(-6).reduce((a, b) => a + b.loss, 0) / 6;
    console.log(`LoRA smoke: mean loss of steps 1-6 ${first.toFixed(4)}, of steps 19-24 ${last.toFixed(4)}`);
    expect(last).toBeLessThan(first * 0.9);
    expect(r.checkpoints.map((c) => path.basename(c))).toEqual(["checkpoint-000003", "checkpoint-000006", "checkpoint-000009", "checkpoint-000012", "checkpoint-000015", "checkpoint-000018", "checkpoint-000021", "checkpoint-000024"]);
    // validation loss over the held-out shapes, with the same noise each time, at steps 0, 12 and 24
    const log = fs.readFileSync(path.join(dir, "out", "train_log.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    const val = log.filter((x) => x.event === "validation" && x.loss !== undefined);
    console.log(`held-out loss: ${val.map((x) => `step ${x.step} ${Number(x.loss).toFixed(4)}`).join(", ")}`);
    expect(val.map((x) => x.step)).toEqual([0, 12, 24]);
    for (const x of val) expect(Number.isFinite(x.loss)).toBe(true);
    expect(fs.existsSync(path.join(dir, "out", "loss.png"))).toBe(true);
    // validation grids at steps 0, 12 and 24: two 32×32 images side by side, with their settings
    expect(r.validation.map((f) => path.relative(dir, f))).toEqual(["out/validation/step-000000.png", "out/validation/step-000012.png", "out/validation/step-000024.png"]);
    const text = readPngText(r.validation[1]!);
    expect(text.parameters).toContain("red circle on blue background");
    expect(text.parameters).toMatch(/Seeds: "?7 3"?/);
    expect(text.parameters).toMatch(/Training step: 12/);
    const [peft, kohya] = r.exported;
    expect(path.relative(dir, peft!)).toBe("out/lora/pytorch_lora_weights.safetensors");
    expect(SafetensorsFile.open(kohya!).metadata).toMatchObject({ ss_network_dim: "4", ss_network_alpha: "4", ss_v2: "False" });
    const a = readLora(peft!);
    const b = readLora(kohya!);
    expect(a.length).toBe(b.length);
    expect(a.length).toBeGreaterThan(0);
  });

  it("resume: stopped after 4 steps and resumed, the run equals an uninterrupted one bit for bit", async () => {
    const whole = await project(`${lora}  steps: 8\n`);
    const w = await trainPipeline(await whole.load(), { cwd: whole.dir, threads: 2 });

    const parts = await project(`${lora}  steps: 8\n`);
    const p1 = await trainPipeline(await parts.load(), { cwd: parts.dir, threads: 2, stopAfter: 4 });
    expect(p1.stopped).toBe(true);
    expect(p1.steps).toBe(4);
    // a process that died after step 4: only its checkpoint remains
    const p2 = await trainPipeline(await parts.load(), { cwd: parts.dir, threads: 2, resume: "latest" });
    expect(p2.losses.map((l) => l.loss)).toEqual(w.losses.map((l) => l.loss));
    const wa = SafetensorsFile.open(w.exported[0]!);
    const pa = SafetensorsFile.open(p2.exported[0]!);
    for (const name of wa.tensors.keys()) expect(Buffer.from(pa.readRaw(name)).equals(Buffer.from(wa.readRaw(name))), name).toBe(true);
  });

  it("a resume with changed settings is refused, naming why", async () => {
    const { dir, load } = await project(`${lora}  steps: 6\n`);
    await trainPipeline(await load(), { cwd: dir, threads: 2, stopAfter: 3 });
    fs.writeFileSync(path.join(dir, "p.yaml"), fs.readFileSync(path.join(dir, "p.yaml"), "utf8").replace("lr: 0.01", "lr: 0.02"));
    await expect(trainPipeline(await load(), { cwd: dir, threads: 2, resume: "latest" })).rejects.toThrow(/made with other training settings: train\.lr: 0\.01 → 0\.02/);
    const forced = await trainPipeline(await load(), { cwd: dir, threads: 2, resume: "latest", forceResume: true });
    expect(forced.steps).toBe(6);
  });

  it("U-Net fine-tune with EMA and gradient accumulation, and a VAE: diffusers folders written", async () => {
    const u = await project(`  target: unet\n  optimizer:\n    lr: 0.001\n  ema:\n    enabled: true\n  gradient_accumulation: 2\n  batch: 2\n  steps: 3\n  export:\n    single_file: true\n    dtype: fp32\n`, 8);
    const ru = await trainPipeline(await u.load(), { cwd: u.dir, threads: 2 });
    // the whole pipeline as a diffusers folder: the trained U-Net, the model's other components (hard links), tokenizer, scheduler, model_index.json
    expect(ru.exported.map((f) => path.relative(u.dir, f))).toEqual([
      "out/unet/diffusion_pytorch_model.safetensors",
      "out/unet_ema/diffusion_pytorch_model.safetensors",
      "out/vae/diffusion_pytorch_model.safetensors",
      "out/text_encoder/model.safetensors",
      "out/model_index.json",
      "out/p.safetensors",
    ]);
    expect(fs.statSync(path.join(u.dir, "out", "vae", "diffusion_pytorch_model.safetensors")).ino).toBe(fs.statSync(path.join(REPO, "models", "tiny-sd", "vae", "diffusion_pytorch_model.safetensors")).ino);
    expect(fs.readdirSync(path.join(u.dir, "out", "tokenizer"))).toEqual(expect.arrayContaining(fs.readdirSync(path.join(REPO, "models", "tiny-sd", "tokenizer"))));
    const trained = SafetensorsFile.open(ru.exported[0]!);
    const base = SafetensorsFile.open(path.join(REPO, "models", "tiny-sd", "unet", "diffusion_pytorch_model.safetensors"));
    expect([...trained.tensors.keys()].sort()).toEqual([...base.tensors.keys()].sort());
    expect(JSON.parse(fs.readFileSync(path.join(u.dir, "out", "unet", "config.json"), "utf8"))._class_name).toBe("UNet2DConditionModel");
    // the single-file checkpoint (LDM names) holds the EMA U-Net and the model's VAE and text encoder, as sdc's own loader reads it
    expect(ru.exported[5]).toBe(path.join(u.dir, "out", "p.safetensors"));
    const single = loadSingleFile(ru.exported[5]!);
    const ema = SafetensorsFile.open(ru.exported[1]!);
    for (const key of ema.tensors.keys()) expect(Array.from(readWeightFloat32(single.unet.get(key, ema.info(key).shape))), key).toEqual(Array.from(ema.readFloat32(key)));
    const baseVae = SafetensorsFile.open(path.join(REPO, "models", "tiny-sd", "vae", "diffusion_pytorch_model.safetensors"));
    for (const key of baseVae.tensors.keys()) {
      const shape = baseVae.info(key).shape;
      expect(Array.from(readWeightFloat32(single.vae.get(key, shape))), key).toEqual(Array.from(baseVae.readFloat32(key)));
    }

    const v = await project(`  target: vae\n  optimizer:\n    lr: 0.001\n  batch: 2\n  steps: 2\n`, 4);
    const rv = await trainPipeline(await v.load(), { cwd: v.dir, threads: 2 });
    expect(rv.exported.map((f) => path.relative(v.dir, f))).toEqual(["out/vae/diffusion_pytorch_model.safetensors", "out/unet/diffusion_pytorch_model.safetensors", "out/text_encoder/model.safetensors", "out/model_index.json"]);
    expect(rv.losses.every((l) => Number.isFinite(l.loss))).toBe(true);
  });

  it("the LoRA it exports, folded into the model with model.lora, draws what the trainer's last validation image drew", async () => {
    const { dir, load } = await project(`${lora}  steps: 6\n  validation:\n    prompts: [{ prompt: red circle on blue background, seed: 5, guidance: 4, steps: 5 }]\n    every: 6\n`);
    const r = await trainPipeline(await load(), { cwd: dir, threads: 2 });
    const kohya = r.exported[1]!;
    const sample = path.join(dir, "sample.yaml");
    fs.writeFileSync(
      sample,
      `version: 1\nname: s\nmodel:\n  from: ${JSON.stringify(path.join(REPO, "models", "tiny-sd"))}\n  lora:\n    - file: ${JSON.stringify(kohya)}\n` +
        `scheduler:\n  type: pndm\n  steps: 5\nguidance:\n  scale: 4\n  negative_prompt: ""\nsample:\n  prompt: red circle on blue background\n  seed: 5\n  width: 32\n  height: 32\noutput:\n  dir: folded\n`,
    );
    const out = await run(await loadPipeline(sample, { cwd: dir }), { cwd: dir, progress: false });
    const folded = await loadImage(out.outputs[0]!);
    const grid = await loadImage(r.validation.at(-1)!, { multipleOf: 1 });
    // the captioned grid holds the one 32×32 image below its header: find the rows where it sits
    const tile = (y0: number) => {
      let m = 0;
      for (let y = 0; y < 32; y++) for (let x = 0; x < 32 * 3; x++) m = Math.max(m, Math.abs(folded.data[y * 96 + x]! - grid.data[(y0 + y) * grid.width * 3 + x]!));
      return m;
    };
    let worst = 255;
    for (let y0 = 0; y0 + 32 <= grid.height; y0++) worst = Math.min(worst, tile(y0));
    console.log(`LoRA folded vs in-training validation image: max pixel difference ${worst}/255`);
    expect(worst).toBeLessThanOrEqual(2);
    // and the LoRA matters: without it the image is another one
    fs.writeFileSync(sample, fs.readFileSync(sample, "utf8").replace(/  lora:\n    - file: .*\n/, "").replace("dir: folded", "dir: base"));
    const base = await loadImage((await run(await loadPipeline(sample, { cwd: dir }), { cwd: dir, progress: false })).outputs[0]!);
    let change = 0;
    base.data.forEach((x, i) => (change = Math.max(change, Math.abs(x - folded.data[i]!))));
    expect(change).toBeGreaterThan(10);
  });

  it("text encoder trained with the U-Net: the exported folder, loaded with model.from, draws what the last validation image drew", async () => {
    const { dir, load } = await project(
      `  target: unet\n  train_text_encoder: true\n  objective:\n    cfg_dropout: 0.5\n  optimizer:\n    lr: 0.003\n  batch: 4\n  steps: 4\n  seed: 3\n` +
        `  validation:\n    prompts: [{ prompt: red circle on blue background, seed: 5, guidance: 4, steps: 5 }]\n    every: 4\n`,
      8,
    );
    const r = await trainPipeline(await load(), { cwd: dir, threads: 2 });
    expect(r.exported.map((f) => path.relative(dir, f))).toEqual(["out/unet/diffusion_pytorch_model.safetensors", "out/text_encoder/model.safetensors", "out/vae/diffusion_pytorch_model.safetensors", "out/model_index.json"]);
    // both components moved from the model's weights
    const moved = (file: string, base: string) => {
      const a = SafetensorsFile.open(file);
      const b = SafetensorsFile.open(base);
      // every weight (buffers such as position_ids are not weights)
      expect([...a.tensors.keys()].sort()).toEqual([...b.tensors.keys()].filter((k) => !k.endsWith("position_ids")).sort());
      let d = 0;
      for (const k of a.tensors.keys()) {
        const x = a.readFloat32(k);
        const y = b.readFloat32(k);
        for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i]! - y[i]!));
      }
      return d;
    };
    expect(moved(r.exported[1]!, path.join(REPO, "models", "tiny-sd", "text_encoder", "model.safetensors"))).toBeGreaterThan(1e-3);
    expect(moved(r.exported[0]!, path.join(REPO, "models", "tiny-sd", "unet", "diffusion_pytorch_model.safetensors"))).toBeGreaterThan(1e-3);
    const sample = path.join(dir, "sample.yaml");
    fs.writeFileSync(
      sample,
      `version: 1\nname: s\nmodel:\n  from: out\nscheduler:\n  type: pndm\n  steps: 5\nguidance:\n  scale: 4\n  negative_prompt: ""\nsample:\n  prompt: red circle on blue background\n  seed: 5\n  width: 32\n  height: 32\noutput:\n  dir: exported\n`,
    );
    const out = await run(await loadPipeline(sample, { cwd: dir }), { cwd: dir, progress: false });
    const img = await loadImage(out.outputs[0]!);
    const grid = await loadImage(r.validation.at(-1)!, { multipleOf: 1 });
    let worst = 255;
    for (let y0 = 0; y0 + 32 <= grid.height; y0++) {
      let m = 0;
      for (let y = 0; y < 32; y++) for (let x = 0; x < 96; x++) m = Math.max(m, Math.abs(img.data[y * 96 + x]! - grid.data[(y0 + y) * grid.width * 3 + x]!));
      worst = Math.min(worst, m);
    }
    console.log(`exported folder vs in-training validation image: max pixel difference ${worst}/255`);
    expect(worst).toBeLessThanOrEqual(2);
  });

  it("LoRA on the U-Net and the text encoder (train_text_encoder): both LoRA files hold both, and folded with model.lora they draw what the last validation image drew", async () => {
    const { dir, load } = await project(`${lora.replace("    dropout: 0.1\n", "")}  train_text_encoder: true\n  steps: 4\n  validation:\n    prompts: [{ prompt: red circle on blue background, seed: 5, guidance: 4, steps: 5 }]\n    every: 4\n`);
    const r = await trainPipeline(await load(), { cwd: dir, threads: 2 });
    const [peft, kohya] = r.exported;
    const peftKeys = [...SafetensorsFile.open(peft!).tensors.keys()];
    expect(peftKeys.some((k) => k.startsWith("text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A"))).toBe(true);
    expect(peftKeys.some((k) => k.startsWith("unet.") && k.includes(".to_q.lora_A"))).toBe(true);
    // the text encoder's LoRA was trained: its B factors (zero at the start) moved
    const up = SafetensorsFile.open(peft!).readFloat32("text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight");
    expect(Math.max(...Array.from(up, Math.abs))).toBeGreaterThan(1e-4);
    const kohyaKeys = [...SafetensorsFile.open(kohya!).tensors.keys()];
    expect(kohyaKeys.some((k) => k.startsWith("lora_te_text_model_encoder_layers_0_self_attn_q_proj."))).toBe(true);
    expect(kohyaKeys.some((k) => k.startsWith("lora_unet_"))).toBe(true);
    const sample = path.join(dir, "sample.yaml");
    fs.writeFileSync(
      sample,
      `version: 1\nname: s\nmodel:\n  from: ${JSON.stringify(path.join(REPO, "models", "tiny-sd"))}\n  lora:\n    - file: ${JSON.stringify(kohya)}\n` +
        `scheduler:\n  type: pndm\n  steps: 5\nguidance:\n  scale: 4\n  negative_prompt: ""\nsample:\n  prompt: red circle on blue background\n  seed: 5\n  width: 32\n  height: 32\noutput:\n  dir: folded\n`,
    );
    const folded = await loadImage((await run(await loadPipeline(sample, { cwd: dir }), { cwd: dir, progress: false })).outputs[0]!);
    const grid = await loadImage(r.validation.at(-1)!, { multipleOf: 1 });
    let worst = 255;
    for (let y0 = 0; y0 + 32 <= grid.height; y0++) {
      let m = 0;
      for (let y = 0; y < 32; y++) for (let x = 0; x < 96; x++) m = Math.max(m, Math.abs(folded.data[y * 96 + x]! - grid.data[(y0 + y) * grid.width * 3 + x]!));
      worst = Math.min(worst, m);
    }
    console.log(`U-Net + text encoder LoRA folded vs in-training validation image: max pixel difference ${worst}/255`);
    expect(worst).toBeLessThanOrEqual(2);
  });

  it("an image that fails to decode mid-run is skipped and named once (on_bad_image: skip), and training goes on", async () => {
    const { dir, load } = await project(`${lora}  steps: 4\n`, 8);
    const bad = path.join(dir, "data", "00003.png");
    fs.truncateSync(bad, 100); // the header (and its size) survives; the pixels do not
    const notes: string[] = [];
    const r = await trainPipeline(await load(), { cwd: dir, threads: 2, onEvent: (e) => e.event === "note" && notes.push(e.message) });
    expect(r.steps).toBe(4);
    expect(notes.filter((n) => n.includes("00003.png"))).toHaveLength(1);
    expect(r.losses.every((l) => Number.isFinite(l.loss))).toBe(true);
  });
});
