/**
 * Loading round trips: what a pipeline file, its extends chain and command-line overrides turn into,
 * where each value is located afterwards, and how paths and defaults are resolved.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { deepMerge, loadConfig, validate } from "../../src/config/load.js";
import { HEAD, load, P, project, REPO } from "./helpers.js";

describe("a valid pipeline", () => {
  it("is fully defaulted, with the model's own configs and absolute paths", async () => {
    const { cwd, p } = await load({ [P]: `${HEAD}scheduler:\n  type: ddim\n  timestep_spacing: trailing\nsample:\n  prompt: a cat\n` });
    expect(p.name).toBe("p");
    expect(p.file).toBe(path.join(cwd, P));
    expect(p.sources).toEqual([path.join(cwd, P)]);
    expect(p.config.model.from).toBe(path.join(cwd, "models", "tiny-sd"));
    expect(p.config.output.dir).toBe(path.join(cwd, "out", "p"));
    expect(p.config.scheduler.steps).toBe(50);
    expect(p.config.guidance).toEqual({ scale: 7.5, negative_prompt: "", rescale: 0 });
    expect(p.config.runtime).toEqual({ device: "auto", precision: "auto", threads: 0 });
    // unet sample_size 8 × VAE factor 2 (two VAE blocks)
    expect([p.config.sample.width, p.config.sample.height]).toEqual([16, 16]);
    expect(p.config.sample.strength).toBe(0.8);

    expect(p.model.kind).toBe("diffusers");
    expect(p.model.unet.block_out_channels).toEqual([32, 64]);
    expect(p.model.unet._class_name).toBe("UNet2DConditionModel");
    expect(p.model.vae.scaling_factor).toBe(0.18215);
    expect(p.model.textEncoder.hidden_size).toBe(32);
    expect(p.model.textEncoder.clip_skip).toBe(0);
    expect(p.model.tokenizerDir).toBe(path.join(cwd, "models", "tiny-sd", "tokenizer"));
    expect(p.model.weights.unet?.files).toEqual([path.join(cwd, "models/tiny-sd/unet/diffusion_pytorch_model.safetensors")]);
    expect(p.model.weights.text_encoder?.files).toEqual([path.join(cwd, "models/tiny-sd/text_encoder/model.safetensors")]);
    expect(p.model.files.map((f) => path.relative(cwd, f))).toEqual([
      "models/tiny-sd/model_index.json",
      "models/tiny-sd/unet/config.json",
      "models/tiny-sd/vae/config.json",
      "models/tiny-sd/text_encoder/config.json",
      "models/tiny-sd/scheduler/scheduler_config.json",
    ]);
    // The folder's scheduler config, under the YAML's options; `type` picks the class.
    expect(p.model.schedulerConfig).toMatchObject({
      _class_name: "DDIMScheduler",
      beta_schedule: "scaled_linear",
      beta_start: 0.00085,
      steps_offset: 1,
      timestep_spacing: "trailing",
    });
  });

  it("locates every value it was given", async () => {
    const { p } = await load({ [P]: `${HEAD}scheduler:\n  steps: 20\nsample:\n  prompt: [a, b]\n` });
    expect(p.locate(["scheduler", "steps"])).toEqual({ file: P, line: 5, col: 10, endCol: 12 });
    expect(p.locate(["sample", "prompt", 1])).toEqual({ file: P, line: 7, col: 15, endCol: 16 });
    // An absent key is located at its nearest present ancestor's key.
    expect(p.locate(["sample", "seed"])).toEqual({ file: P, line: 6, col: 1, endCol: 7 });
    expect(p.where(["scheduler", "steps"]).snippet).toBe("  5 |   steps: 20\n    |          ^^");
  });

  it("takes YAML component sections over the folder's config.json", async () => {
    const { p } = await load({ [P]: `${HEAD}  unet:\n    upcast_attention: true\n  text_encoder:\n    clip_skip: 1\n` });
    expect(p.model.unet.upcast_attention).toBe(true);
    expect(p.model.unet.cross_attention_dim).toBe(32); // still the folder's
    expect(p.model.textEncoder.clip_skip).toBe(1);
    expect("clip_skip" in p.config.model.text_encoder!).toBe(true);
  });

  it("reads fp16 variants and sharded weights", async () => {
    const { cwd, p } = await load({
      [P]: `${HEAD}  variant: fp16\n`,
      "models/tiny-sd/unet/diffusion_pytorch_model.fp16.safetensors": "x",
      "models/tiny-sd/vae/diffusion_pytorch_model.fp16.safetensors": "x",
      "models/tiny-sd/text_encoder/model.safetensors.index.fp16.json": JSON.stringify({
        weight_map: { a: "model-00001-of-00002.fp16.safetensors", b: "model-00002-of-00002.fp16.safetensors" },
      }),
      "models/tiny-sd/text_encoder/model-00001-of-00002.fp16.safetensors": "x",
      "models/tiny-sd/text_encoder/model-00002-of-00002.fp16.safetensors": "x",
    });
    expect(p.model.variant).toBe("fp16");
    expect(p.model.weights.unet?.files).toEqual([path.join(cwd, "models/tiny-sd/unet/diffusion_pytorch_model.fp16.safetensors")]);
    expect(p.model.weights.text_encoder).toEqual({
      files: [1, 2].map((i) => path.join(cwd, `models/tiny-sd/text_encoder/model-0000${i}-of-00002.fp16.safetensors`)),
      index: path.join(cwd, "models/tiny-sd/text_encoder/model.safetensors.index.fp16.json"),
    });
  });

  it("infers a single .safetensors file's architecture from its tensors, under the YAML's keys", async () => {
    const ckpt = path.join(REPO, "test/fixtures/models/tiny-sd2.ldm.safetensors");
    // group counts and head counts are not visible in weights: a tiny model states them
    const yaml = `version: 1\nmodel:\n  from: ${JSON.stringify(ckpt)}\n  unet:\n    upcast_attention: false\n    norm_num_groups: 4\n    attention_head_dim: [2, 4, 4]\n  vae:\n    norm_num_groups: 4\n  text_encoder:\n    num_attention_heads: 4\n`;
    const { p } = await load({ [P]: yaml });
    const folder = JSON.parse(fs.readFileSync(path.join(REPO, "test/fixtures/models/tiny-sd2/unet/config.json"), "utf8"));
    expect(p.model.kind).toBe("single-file");
    expect(p.model.path).toBe(ckpt);
    expect(p.model.unet.block_out_channels).toEqual(folder.block_out_channels);
    expect(p.model.unet.cross_attention_dim).toBe(folder.cross_attention_dim);
    expect(p.model.unet.use_linear_projection).toBe(true);
    expect(p.model.unet.upcast_attention).toBe(false); // the YAML wins
    expect(p.model.textEncoder.hidden_act).toBe("gelu");
    expect(p.model.tokenizerDir).toBe(path.join(REPO, "models", "clip-tokenizer", "sd2"));
    expect(p.model.files).toContain(ckpt);
  });

  it("reports a single file that is not a Stable Diffusion checkpoint at model.from", async () => {
    const r = await validate(path.join(project({ [P]: "version: 1\nmodel:\n  from: ../ckpt/sd.safetensors\n", "ckpt/sd.safetensors": "x" }), P));
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.problems).toHaveLength(1);
      expect(r.problems[0]!.at).toMatchObject({ line: 3, col: 9 });
      expect(r.problems[0]!.message).toMatch(/^model\.from: .*sd\.safetensors: /);
    }
  });

  it("builds an inline architecture from the YAML and diffusers' defaults", async () => {
    const text = [
      "version: 1",
      "model:",
      "  unet: {block_out_channels: [32, 64], down_block_types: [CrossAttnDownBlock2D, DownBlock2D], up_block_types: [UpBlock2D, CrossAttnUpBlock2D], cross_attention_dim: 64, norm_num_groups: 8, attention_head_dim: 4, sample_size: 8}",
      "  text_encoder: {hidden_size: 64, num_attention_heads: 4, num_hidden_layers: 2}",
      "  vae: {block_out_channels: [32, 64], down_block_types: [DownEncoderBlock2D, DownEncoderBlock2D], up_block_types: [UpDecoderBlock2D, UpDecoderBlock2D], norm_num_groups: 8}",
      "",
    ].join("\n");
    const { p } = await load({ [P]: text });
    expect(p.model.kind).toBe("inline");
    expect(p.model.path).toBeUndefined();
    expect(p.model.unet.layers_per_block).toBe(2); // diffusers' default
    expect(p.model.textEncoder.intermediate_size).toBe(2048); // transformers' default
    expect(p.model.schedulerConfig).toEqual({ _class_name: "DDPMScheduler" });
  });

  it("names a pipeline after its file when it has no name", async () => {
    const { p } = await load({ "pipelines/My Pipeline.yaml": HEAD }, {}, "pipelines/My Pipeline.yaml");
    expect(p.name).toBe("My-Pipeline");
  });
});

describe("extends", () => {
  const base = `${HEAD}scheduler:\n  type: ddim\n  steps: 30\nsample:\n  prompt: [a, b]\n  seed: 5\n  init_image: img.png\n  strength: 0.6\n`;
  const files = {
    "shared/base.yaml": base.replace("../models", "../models"),
    "shared/img.png": "png",
    [P]: "extends: ../shared/base.yaml\nscheduler:\n  steps: 12\nsample:\n  prompt: a cat\n",
  };

  it("deep-merges the base, the extending file winning, lists replaced whole", async () => {
    const { cwd, p } = await load(files);
    expect(p.sources).toEqual([path.join(cwd, P), path.join(cwd, "shared/base.yaml")]);
    expect(p.config.scheduler).toMatchObject({ type: "ddim", steps: 12 });
    expect(p.config.sample).toMatchObject({ prompt: "a cat", seed: 5, strength: 0.6 });
    // paths are relative to the file that wrote them
    expect(p.config.model.from).toBe(path.join(cwd, "models", "tiny-sd"));
    expect(p.config.sample.init_image).toBe(path.join(cwd, "shared", "img.png"));
    expect(p.config.extends).toBe(path.join(cwd, "shared", "base.yaml"));
  });

  it("locates merged values in the file that wrote them", async () => {
    const { p } = await load(files);
    expect(p.locate(["scheduler", "steps"])).toMatchObject({ file: P, line: 3 });
    expect(p.locate(["scheduler", "type"])).toMatchObject({ file: "shared/base.yaml", line: 5 });
    expect(p.locate(["sample", "prompt"])).toMatchObject({ file: P, line: 5 });
    // the base's list items were replaced, so their positions are gone with them
    expect(p.locate(["sample", "prompt", 1])).toMatchObject({ file: P, line: 5 });
  });

  it("gives the same config as writing the merged file by hand", async () => {
    const merged = `${HEAD}scheduler:\n  type: ddim\n  steps: 12\nsample:\n  prompt: a cat\n  seed: 5\n  init_image: ../shared/img.png\n  strength: 0.6\n`;
    const cwd = project({ ...files, "pipelines/flat.yaml": merged });
    const { loadPipeline } = await import("../../src/config/load.js");
    const a = (await loadPipeline(P, { cwd })).config;
    const b = (await loadPipeline("pipelines/flat.yaml", { cwd })).config;
    const { extends: ea, name: _na, output: _oa, ...ra } = a;
    const { extends: eb, name: _nb, output: _ob, ...rb } = b;
    expect(ea).toBe(path.join(cwd, "shared", "base.yaml"));
    expect(eb).toBeUndefined();
    expect(ra).toEqual(rb);
  });

  it("merges objects key by key and replaces everything else", () => {
    expect(deepMerge({ a: { b: 1, c: [1, 2] }, d: 1 }, { a: { c: [3] }, e: null })).toEqual({ a: { b: 1, c: [3] }, d: 1, e: null });
    expect(deepMerge({ a: { b: 1 } }, { a: 5 })).toEqual({ a: 5 });
    const polluted = deepMerge({}, JSON.parse('{"__proto__": {"x": 1}}')) as Record<string, unknown>;
    expect(Object.keys(polluted)).toEqual(["__proto__"]);
    expect(({} as Record<string, unknown>).x).toBeUndefined();
  });
});

describe("overrides", () => {
  it("type values through the schema, exactly as if they were written in the file", async () => {
    const viaCli = await load(
      { [P]: HEAD },
      { overrides: ["scheduler.steps=20", "scheduler.type=euler", "sample.prompt=[a, b]", "guidance.scale=3"], seed: "7" },
    );
    const inFile = await load({ [P]: `${HEAD}scheduler: {steps: 20, type: euler}\nsample: {prompt: [a, b], seed: 7}\nguidance: {scale: 3}\n` });
    const strip = (c: typeof viaCli.p.config, cwd: string) => JSON.parse(JSON.stringify(c).split(cwd).join("<cwd>"));
    expect(strip(viaCli.p.config, viaCli.cwd)).toEqual(strip(inFile.p.config, inFile.cwd));
    expect(viaCli.p.config.scheduler.steps).toBe(20);
    expect(viaCli.p.config.sample.seed).toBe(7);
  });

  it("win over the file and its bases, and are located as flags", async () => {
    const { cwd, p } = await load(
      { [P]: "extends: base.yaml\nscheduler:\n  steps: 12\n", "pipelines/base.yaml": `${HEAD}scheduler:\n  steps: 30\n` },
      { overrides: ["sample.seed=4"], prompt: "a red fox", steps: "5", out: "results" },
    );
    expect(p.config.scheduler.steps).toBe(5);
    expect(p.config.sample.seed).toBe(4);
    expect(p.config.sample.prompt).toBe("a red fox");
    expect(p.config.output.dir).toBe(path.join(cwd, "results")); // relative to the working directory
    expect(p.locate(["scheduler", "steps"])).toBeUndefined();
    expect(p.where(["scheduler", "steps"])).toEqual({ subject: "--steps 5" });
    expect(p.where(["sample", "prompt"])).toEqual({ subject: '--prompt "a red fox"' });
  });

  it("can index into lists and make new sections", async () => {
    const { p } = await load({ [P]: `${HEAD}sample:\n  prompt: [a, b]\n` }, { overrides: ["sample.prompt.1=c", "train.target=unet", "train.data.dir=.", "train.steps=3"] });
    expect(p.config.sample.prompt).toEqual(["a", "c"]);
    expect(p.config.train).toMatchObject({ target: "unet", steps: 3, batch: 1, optimizer: { type: "adamw", lr: 1e-4 } });
    expect(p.config.train!.checkpointing.dir).toBe(path.join(p.config.output.dir, "checkpoints"));
  });
});

describe("validate", () => {
  it("returns the problems instead of throwing them", async () => {
    const cwd = project({ [P]: `${HEAD}sample:\n  seed: -1\n  batch: 0\n` });
    const r = await validate(P, { cwd });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.problems.map((p) => [p.at?.line, p.at?.col])).toEqual([[5, 9], [6, 10]]);
    const good = await validate(P, { cwd, overrides: ["sample.seed=1", "sample.batch=1"] });
    expect(good.ok).toBe(true);
  });
});

describe("the committed pipelines and examples", () => {
  const tiny = path.relative(REPO, path.join(REPO, "test", "fixtures", "config", "models", "tiny-sd"));
  it("txt2img and img2img load against a tiny SD folder", async () => {
    const { loadPipeline } = await import("../../src/config/load.js");
    const t = await loadPipeline("pipelines/txt2img.yaml", { cwd: REPO, overrides: [`model.from=${tiny}`] });
    expect(t.name).toBe("txt2img");
    expect(t.config.scheduler).toMatchObject({ type: "dpm-solver++", steps: 20 });
    const i = await loadPipeline("pipelines/img2img.yaml", { cwd: REPO, overrides: [`model.from=${tiny}`] });
    expect(i.name).toBe("img2img");
    expect(i.sources.map((s) => path.relative(REPO, s))).toEqual(["pipelines/img2img.yaml", "pipelines/txt2img.yaml"]);
    expect(i.config.sample).toMatchObject({ seed: 42, strength: 0.75, init_image: path.join(REPO, "examples", "init.png") });
  });

  it("the from-scratch example is a consistent inline architecture", async () => {
    const { loadPipeline } = await import("../../src/config/load.js");
    const p = await loadPipeline("examples/from-scratch.yaml", { cwd: REPO, overrides: ["train.data.dir=."] });
    expect(p.model.kind).toBe("inline");
    expect(p.config.train).toMatchObject({ target: "unet", epochs: 50, data: { dir: REPO, resolution: 32 } });
  });

  it("every example passes the config stage", () => {
    const dir = path.join(REPO, "examples");
    const files = fs.readdirSync(dir).filter((f) => f.endsWith(".yaml"));
    expect(files.length).toBeGreaterThanOrEqual(5);
    for (const f of files) {
      const { cfg } = loadConfig(path.join(dir, f), {}, REPO, (p) => path.relative(REPO, p));
      expect(cfg.version).toBe(1);
      expect(cfg.name).toBe(f.replace(/\.yaml$/, ""));
    }
  });
});
