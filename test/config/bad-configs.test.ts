/**
 * The table of bad configs: each must produce located, actionable messages (file:line:col, a caret
 * snippet, a hint). The rendered text is pinned with inline snapshots, so a change in wording or
 * position shows up in review.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { CONFIG_FIXTURES, HEAD, P, problems } from "./helpers.js";

const modelFile = (rel: string) => fs.readFileSync(path.join(CONFIG_FIXTURES, "models", "tiny-sd", rel), "utf8");
const replaced = (rel: string, from: string, to: string) => {
  const text = modelFile(rel);
  if (!text.includes(from)) throw new Error(`fixture ${rel} has no ${from}`);
  return { [`models/tiny-sd/${rel}`]: text.replace(from, to) };
};

describe("YAML syntax and structure", () => {
  it("bad indentation", async () => {
    expect(await problems({ [P]: `${HEAD}scheduler:\n  steps: 20\n type: ddim\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:6:1: YAML syntax error: All mapping items must start at the same column
        6 |  type: ddim
          | ^
        hint: check the indentation and the brackets/quotes around this point"
    `);
  });
  it("unclosed flow sequence", async () => {
    expect(await problems({ [P]: `${HEAD}sample:\n  prompt: [a cat, a dog\n  seed: 1\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:6:3: YAML syntax error: Flow sequence in block collection must be sufficiently indented and end with a ]
        6 |   seed: 1
          |   ^
        hint: check the indentation and the brackets/quotes around this point"
    `);
  });
  it("duplicate key", async () => {
    expect(await problems({ [P]: `${HEAD}sample:\n  seed: 1\n  seed: 2\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:6:3: duplicate key "seed": it is already set on line 5
        6 |   seed: 2
          |   ^^^^
        hint: keep one of the two entries"
    `);
  });
  it("tab indentation", async () => {
    expect(await problems({ [P]: `${HEAD}sample:\n\tseed: 1\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:1: YAML does not allow tabs for indentation
        5 | 	seed: 1
          | ^
        hint: indent with spaces"
    `);
  });
  it("alias bomb", async () => {
    const bomb = [
      'x0: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
      "x1: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]",
      "x2: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]",
      "x3: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]",
    ].join("\n");
    expect(await problems({ [P]: `${HEAD}${bomb}\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:9: aliases expand to too much data (more than 100 alias expansions)
        5 | x1: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
          |         ^^
        hint: this looks like an alias bomb; write the values out or use fewer nested aliases"
    `);
  });
  it("alias without anchor", async () => {
    expect(await problems({ [P]: `${HEAD}sample:\n  prompt: *missing\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:11: alias "*missing" refers to no anchor
        5 |   prompt: *missing
          |           ^^^^^^^^
        hint: an alias (*name) must refer to an anchor (&name) defined before it"
    `);
  });
  it("several documents", async () => {
    expect(await problems({ [P]: `${HEAD}---\nversion: 1\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:4:1: a pipeline file holds one YAML document, but this one holds several (---)
        4 | ---
          | ^^^
        hint: remove the extra documents, or split them into separate files"
    `);
  });
  it("empty file", async () => {
    expect(await problems({ [P]: "# nothing here\n" })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:1:1: the pipeline file is empty
        1 | # nothing here
          | ^
        hint: a pipeline starts with \`version: 1\` and a \`model:\` section; see pipelines/txt2img.yaml"
    `);
  });
  it("a list instead of a mapping", async () => {
    expect(await problems({ [P]: "- version: 1\n- model: {}\n" })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:1:1: a pipeline file must be a mapping of sections (version, model, scheduler, ...)
        1 | - version: 1
          | ^^^^^^^^^^^^
        hint: start with \`version: 1\` on its own line"
    `);
  });
  it("custom tag", async () => {
    expect(await problems({ [P]: `${HEAD}sample:\n  seed: !int 3\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:9: unknown YAML tag !int
        5 |   seed: !int 3
          |         ^^^^
        hint: sdc configs use plain YAML values; remove the tag"
    `);
  });
  it("pipeline file that does not exist", async () => {
    expect(await problems({}, {}, "pipelines/nope.yaml")).toMatchInlineSnapshot(`
      "pipelines/nope.yaml: cannot read the pipeline file: no such file
        hint: give the path of a pipeline YAML file, e.g. pipelines/txt2img.yaml"
    `);
  });
});

describe("top level", () => {
  it("missing version and model", async () => {
    expect(await problems({ [P]: "name: x\n" })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:1:1: missing required key "version"
        1 | name: x
          | ^^^^^^^
        hint: add version: <1> — config language version; this sdc reads version 1

      pipelines/p.yaml:1:1: missing required key "model"
        1 | name: x
          | ^^^^^^^
        hint: add model: <a mapping> — the model: where its weights come from, and architecture overrides"
    `);
  });
  it("unsupported version", async () => {
    expect(await problems({ [P]: HEAD.replace("version: 1", "version: 2") })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:1:10: version: expected 1, got the integer 2
        1 | version: 2
          |          ^
        hint: config language version; this sdc reads version 1"
    `);
  });
  it("unknown section with did-you-mean", async () => {
    expect(await problems({ [P]: `${HEAD}schedular:\n  steps: 20\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:4:1: unknown key "schedular" at the top level
        4 | schedular:
          | ^^^^^^^^^
        hint: did you mean "scheduler"?"
    `);
  });
  it("unknown section without a close match", async () => {
    expect(await problems({ [P]: `${HEAD}colors: 3\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:4:1: unknown key "colors" at the top level
        4 | colors: 3
          | ^^^^^^
        hint: allowed keys: $schema, version, name, extends, model, scheduler, guidance, sample, train, output, runtime"
    `);
  });
  it("invalid name", async () => {
    expect(await problems({ [P]: `name: my pipeline\n${HEAD}` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:1:7: name: a name is letters, digits, '.', '_' or '-' (it names the output folders)
        1 | name: my pipeline
          |       ^^^^^^^^^^^
        hint: pipeline name (default: the file name); names compiled/<name> and out/<name>"
    `);
  });
  it("all problems of a file in one run, in source order", async () => {
    const text = `${HEAD}scheduler:\n  type: eular\n  stpes: 20\n  steps: 0\nsample:\n  prompt: 3\nguidance:\n  scale: -1\n`;
    expect(await problems({ [P]: text })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:9: scheduler.type: "eular" is not an allowed value
        5 |   type: eular
          |         ^^^^^
        hint: did you mean "euler"? allowed: ddpm, ddim, pndm, lms, euler, euler-ancestral, heun, dpm-solver++, unipc, lcm, DDPMScheduler, DDIMScheduler, PNDMScheduler, LMSDiscreteScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, HeunDiscreteScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler, LCMScheduler

      pipelines/p.yaml:6:3: unknown key "stpes" in scheduler
        6 |   stpes: 20
          |   ^^^^^
        hint: did you mean "steps"?

      pipelines/p.yaml:7:10: scheduler.steps: 0 is too small
        7 |   steps: 0
          |          ^
        hint: expected an integer from 1 to 10000 — number of inference steps (num_inference_steps)

      pipelines/p.yaml:9:11: sample.prompt: expected a string or a list of strings, got the integer 3
        9 |   prompt: 3
          |           ^
        hint: the prompt, or a list of prompts

      pipelines/p.yaml:11:10: guidance.scale: -1 is too small
        11 |   scale: -1
           |          ^^
        hint: expected a number ≥ 0 — classifier-free guidance scale (1: no guidance)"
    `);
  });
});

describe("model", () => {
  it("unknown key in model", async () => {
    expect(await problems({ [P]: "version: 1\nmodel:\n  form: ../models/tiny-sd\n" })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:3:3: unknown key "form" in model
        3 |   form: ../models/tiny-sd
          |   ^^^^
        hint: did you mean "from"?"
    `);
  });
  it("model folder that does not exist", async () => {
    expect(await problems({ [P]: "version: 1\nmodel:\n  from: ../models/tiny-sdx\n" })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:3:9: model.from: "models/tiny-sdx" does not exist
        3 |   from: ../models/tiny-sdx
          |         ^^^^^^^^^^^^^^^^^^
        hint: model.from is a diffusers folder or a .safetensors file, relative to the YAML file that names it"
    `);
  });
  it("pickle checkpoint", async () => {
    expect(await problems({ [P]: "version: 1\nmodel:\n  from: ../models/sd15.ckpt\n", "models/sd15.ckpt": "x" })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:3:9: model.from: sdc loads only .safetensors checkpoints, and "sd15.ckpt" is a PyTorch pickle (.ckpt)
        3 |   from: ../models/sd15.ckpt
          |         ^^^^^^^^^^^^^^^^^^^
        hint: pickles can run code when loaded, so sdc does not read them; convert once, e.g. with diffusers' scripts/convert_original_stable_diffusion_to_diffusers.py --checkpoint_path <file> --dump_path <folder> --to_safetensors, or in Python: safetensors.torch.save_file(torch.load(<file>)['state_dict'], '<name>.safetensors')"
    `);
  });
  it("folder without model_index.json", async () => {
    expect(await problems({ [P]: HEAD, "models/tiny-sd/model_index.json": null })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:3:9: model folder "models/tiny-sd" has no model_index.json (not a diffusers folder)
        3 |   from: ../models/tiny-sd
          |         ^^^^^^^^^^^^^^^^^
        hint: point model.from at a folder written by diffusers' save_pretrained, or at a single .safetensors checkpoint"
    `);
  });
  it("folder without a component config and tokenizer", async () => {
    expect(await problems({ [P]: HEAD, "models/tiny-sd/unet/config.json": null, "models/tiny-sd/tokenizer/merges.txt": null })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:3:9: model folder "models/tiny-sd" has no unet/config.json (the unet's architecture)
        3 |   from: ../models/tiny-sd
          |         ^^^^^^^^^^^^^^^^^
        hint: the folder looks incomplete; download or save the whole pipeline again

      pipelines/p.yaml:3:9: model folder "models/tiny-sd" has no tokenizer/merges.txt (the CLIP tokenizer)
        3 |   from: ../models/tiny-sd
          |         ^^^^^^^^^^^^^^^^^
        hint: the folder looks incomplete; download or save the whole pipeline again"
    `);
  });
  it("folder with only .bin weights", async () => {
    expect(
      await problems({ [P]: HEAD, "models/tiny-sd/vae/diffusion_pytorch_model.safetensors": null, "models/tiny-sd/vae/diffusion_pytorch_model.bin": "x" }),
    ).toMatchInlineSnapshot(`
      "pipelines/p.yaml:3:9: models/tiny-sd/vae has only PyTorch .bin weights (diffusion_pytorch_model.bin); sdc loads only safetensors
        3 |   from: ../models/tiny-sd
          |         ^^^^^^^^^^^^^^^^^
        hint: convert the folder once in Python: DiffusionPipeline.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)"
    `);
  });
  it("variant without variant files", async () => {
    expect(await problems({ [P]: `${HEAD}  variant: fp16\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:4:12: model.variant is "fp16", but the model folder has no unet/diffusion_pytorch_model.fp16.safetensors, vae/diffusion_pytorch_model.fp16.safetensors, text_encoder/model.fp16.safetensors
        4 |   variant: fp16
          |            ^^^^
        hint: remove model.variant to use the folder's default weights"
    `);
  });
  it("JSON syntax error in a component config", async () => {
    expect(await problems({ [P]: HEAD, ...replaced("unet/config.json", '"act_fn": "silu",', '"act_fn": "silu"') })).toMatchInlineSnapshot(`
      "models/tiny-sd/unet/config.json:5:3: JSON syntax error: Missing , between flow map items
        5 |   "addition_embed_type": null,
          |   ^
        hint: check the commas, brackets and quotes around this point"
    `);
  });
  it("unsupported block type in a component config", async () => {
    expect(await problems({ [P]: HEAD, ...replaced("unet/config.json", '"DownBlock2D"', '"DownBlok2D"') })).toMatchInlineSnapshot(`
      "models/tiny-sd/unet/config.json:23:5: down_block_types[1]: "DownBlok2D" is not an allowed value
        23 |     "DownBlok2D"
           |     ^^^^^^^^^^^^
        hint: did you mean "DownBlock2D"? allowed: CrossAttnDownBlock2D, DownBlock2D; fix unet/config.json, or override the key under model.unet in the pipeline"
    `);
  });
  it("wrong type in a component config", async () => {
    expect(await problems({ [P]: HEAD, ...replaced("vae/config.json", '"latent_channels": 4', '"latent_channels": "4"') })).toMatchInlineSnapshot(`
      "models/tiny-sd/vae/config.json:15:22: latent_channels: expected an integer ≥ 1, got the string "4"
        15 |   "latent_channels": "4",
           |                      ^^^
        hint: fix vae/config.json, or override the key under model.vae in the pipeline"
    `);
  });
  it("unknown architecture key in YAML", async () => {
    expect(await problems({ [P]: `${HEAD}  unet:\n    block_out_channel: [32, 64]\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:5: unknown key "block_out_channel" in model.unet
        5 |     block_out_channel: [32, 64]
          |     ^^^^^^^^^^^^^^^^^
        hint: did you mean "block_out_channels"?"
    `);
  });
  it("wrong type for an architecture key in YAML", async () => {
    expect(await problems({ [P]: `${HEAD}  unet:\n    layers_per_block: [1, 0]\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:27: model.unet.layers_per_block[1]: 0 is too small
        5 |     layers_per_block: [1, 0]
          |                           ^
        hint: expected an integer ≥ 1"
    `);
  });
  it("model section naming nothing", async () => {
    expect(await problems({ [P]: "version: 1\nmodel:\n  lora: []\n" })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:2:1: the model section says neither where the weights come from nor what to build
        2 | model:
          | ^^^^^
        hint: add \`from:\` (a diffusers folder or a .safetensors file, relative to this file), or inline architecture sections (unet, vae, text_encoder) to train from scratch"
    `);
  });
  it("LoRA files that are missing or not safetensors", async () => {
    const text = `${HEAD}  lora:\n    - file: ../loras/style.safetensors\n    - file: ../loras/old.pt\n      scale: 0.5\n`;
    expect(await problems({ [P]: text, "loras/old.pt": "x" })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:13: LoRA weights "loras/style.safetensors" does not exist
        5 |     - file: ../loras/style.safetensors
          |             ^^^^^^^^^^^^^^^^^^^^^^^^^^
        hint: paths are relative to the YAML file that names them

      pipelines/p.yaml:6:13: LoRA weights must be a .safetensors file, got "old.pt"
        6 |     - file: ../loras/old.pt
          |             ^^^^^^^^^^^^^^^
        hint: sdc loads only safetensors; convert it with safetensors.torch.save_file(torch.load(file), 'out.safetensors')"
    `);
  });
  it("unknown key in a LoRA entry", async () => {
    expect(await problems({ [P]: `${HEAD}  lora:\n    - path: a.safetensors\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:7: missing required key "file" in model.lora[0]
        5 |     - path: a.safetensors
          |       ^^^^^^^^^^^^^^^^^^^
        hint: add file: <a string> — a LoRA weights file (.safetensors), relative to this YAML file

      pipelines/p.yaml:5:7: unknown key "path" in model.lora[0]
        5 |     - path: a.safetensors
          |       ^^^^
        hint: allowed keys: file, scale"
    `);
  });
});

describe("scheduler", () => {
  it("unknown type with did-you-mean", async () => {
    expect(await problems({ [P]: `${HEAD}scheduler:\n  type: DDIM\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:9: scheduler.type: "DDIM" is not an allowed value
        5 |   type: DDIM
          |         ^^^^
        hint: did you mean "ddim"? allowed: ddpm, ddim, pndm, lms, euler, euler-ancestral, heun, dpm-solver++, unipc, lcm, DDPMScheduler, DDIMScheduler, PNDMScheduler, LMSDiscreteScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, HeunDiscreteScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler, LCMScheduler"
    `);
  });
  it("steps not an integer", async () => {
    expect(await problems({ [P]: `${HEAD}scheduler:\n  steps: 2.5\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:10: scheduler.steps: expected an integer from 1 to 10000, got the number 2.5
        5 |   steps: 2.5
          |          ^^^
        hint: number of inference steps (num_inference_steps)"
    `);
  });
  it("beta_schedule not an allowed value", async () => {
    expect(await problems({ [P]: `${HEAD}scheduler:\n  beta_schedule: cosine\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:18: scheduler.beta_schedule: "cosine" is not an allowed value
        5 |   beta_schedule: cosine
          |                  ^^^^^^
        hint: allowed: linear, scaled_linear, squaredcos_cap_v2, sigmoid, exp"
    `);
  });
  it("beta_end out of range", async () => {
    expect(await problems({ [P]: `${HEAD}scheduler:\n  beta_end: 1.5\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:13: scheduler.beta_end: 1.5 is too large
        5 |   beta_end: 1.5
          |             ^^^
        hint: expected a number > 0 and < 1"
    `);
  });
  it("more steps than training timesteps", async () => {
    expect(await problems({ [P]: `${HEAD}scheduler:\n  num_train_timesteps: 10\n  steps: 20\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:6:10: scheduler.steps 20 is more than the 10 timesteps the model was trained with
        6 |   steps: 20
          |          ^^
        hint: use at most 10 steps"
    `);
  });
  it("folder's scheduler class sdc does not implement", async () => {
    expect(await problems({ [P]: HEAD, ...replaced("scheduler/scheduler_config.json", '"PNDMScheduler"', '"DEISMultistepScheduler"') })).toMatchInlineSnapshot(`
      "models/tiny-sd/scheduler/scheduler_config.json:2:18: the model's scheduler "DEISMultistepScheduler" is not one sdc implements
        2 |   "_class_name": "DEISMultistepScheduler",
          |                  ^^^^^^^^^^^^^^^^^^^^^^^^
        hint: set scheduler.type in the pipeline; sdc has: ddpm, ddim, pndm, lms, euler, euler-ancestral, heun, dpm-solver++, unipc, lcm (or DDPMScheduler, DDIMScheduler, PNDMScheduler, LMSDiscreteScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, HeunDiscreteScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler, LCMScheduler)"
    `);
  });
  it("bad option value in the folder's scheduler_config.json", async () => {
    expect(await problems({ [P]: HEAD, ...replaced("scheduler/scheduler_config.json", '"leading"', '"leadin"') })).toMatchInlineSnapshot(`
      "models/tiny-sd/scheduler/scheduler_config.json:12:23: timestep_spacing: "leadin" is not an allowed value
        12 |   "timestep_spacing": "leadin",
           |                       ^^^^^^^^
        hint: did you mean "leading"? allowed: leading, trailing, linspace; fix scheduler_config.json, or set the option under scheduler in the pipeline"
    `);
  });
});

describe("guidance, sample, output, runtime", () => {
  it("negative guidance scale", async () => {
    expect(await problems({ [P]: `${HEAD}guidance:\n  scale: -1\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:10: guidance.scale: -1 is too small
        5 |   scale: -1
          |          ^^
        hint: expected a number ≥ 0 — classifier-free guidance scale (1: no guidance)"
    `);
  });
  it("prompt of the wrong type", async () => {
    expect(await problems({ [P]: `${HEAD}sample:\n  prompt: {text: a cat}\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:11: sample.prompt: expected a string or a list of strings, got a mapping
        5 |   prompt: {text: a cat}
          |           ^^^^^^^^^^^^^
        hint: the prompt, or a list of prompts"
    `);
  });
  it("width not a multiple of the latent factor", async () => {
    expect(await problems({ [P]: `${HEAD}sample:\n  width: 31\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:10: sample.width 31 is not a multiple of 2
        5 |   width: 31
          |          ^^
        hint: the VAE turns every 2×2 pixels into one latent, so sizes must be multiples of 2: try 30 or 32"
    `);
  });
  it("height out of range", async () => {
    expect(await problems({ [P]: `${HEAD}sample:\n  height: 100000\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:11: sample.height: 100000 is too large
        5 |   height: 100000
          |           ^^^^^^
        hint: expected an integer from 8 to 8192 — image height in pixels. Default: the model's sample size"
    `);
  });
  it("batch too large and seed negative", async () => {
    expect(await problems({ [P]: `${HEAD}sample:\n  batch: 65\n  seed: -1\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:10: sample.batch: 65 is too large
        5 |   batch: 65
          |          ^^
        hint: expected an integer from 1 to 64 — images per prompt

      pipelines/p.yaml:6:9: sample.seed: -1 is too small
        6 |   seed: -1
          |         ^^
        hint: expected an integer ≥ 0 — seed of the (PyTorch-compatible) CPU generator"
    `);
  });
  it("seed beyond the integers a config can hold", async () => {
    expect(await problems({ [P]: `${HEAD}sample:\n  seed: 18446744073709551615\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:9: sample.seed: 18446744073709552000 is too large
        5 |   seed: 18446744073709551615
          |         ^^^^^^^^^^^^^^^^^^^^
        hint: integers in a config go up to 9007199254740991 (2^53 − 1)"
    `);
  });
  it("sharded weights with a missing shard", async () => {
    const index = JSON.stringify({ metadata: {}, weight_map: { a: "model-00001-of-00002.safetensors", b: "model-00002-of-00002.safetensors" } }, null, 2);
    expect(
      await problems({
        [P]: HEAD,
        "models/tiny-sd/text_encoder/model.safetensors": null,
        "models/tiny-sd/text_encoder/model.safetensors.index.json": index,
        "models/tiny-sd/text_encoder/model-00001-of-00002.safetensors": "x",
      }),
    ).toMatchInlineSnapshot(`
      "models/tiny-sd/text_encoder/model.safetensors.index.json:3:3: shard files listed in weight_map are missing: model-00002-of-00002.safetensors
        3 |   "weight_map": {
          |   ^^^^^^^^^^^^
        hint: download the missing shards"
    `);
  });
  it("a __proto__ key is just an unknown key", async () => {
    expect(await problems({ [P]: `${HEAD}sample:\n  __proto__: {seed: 1}\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:3: unknown key "__proto__" in sample
        5 |   __proto__: {seed: 1}
          |   ^^^^^^^^^
        hint: allowed keys: prompt, prompts_file, width, height, batch, seed, init_image, strength, latents, deepcache, tome, vae_tiling"
    `);
  });
  it("strength without an init image", async () => {
    expect(await problems({ [P]: `${HEAD}sample:\n  strength: 0.5\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:13: sample.strength applies to img2img only, but there is no sample.init_image
        5 |   strength: 0.5
          |             ^^^
        hint: add sample.init_image, or remove strength"
    `);
  });
  it("init image that does not exist", async () => {
    expect(await problems({ [P]: `${HEAD}sample:\n  init_image: ../images/cat.png\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:15: init image "images/cat.png" does not exist
        5 |   init_image: ../images/cat.png
          |               ^^^^^^^^^^^^^^^^^
        hint: paths are relative to the YAML file that names them"
    `);
  });
  it("negative prompts that don't match the prompts", async () => {
    expect(await problems({ [P]: `${HEAD}sample:\n  prompt: [a, b, c]\nguidance:\n  negative_prompt: [x, y]\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:7:20: guidance.negative_prompt has 2 entries but there are 3 prompts
        7 |   negative_prompt: [x, y]
          |                    ^^^^^^
        hint: give one negative prompt for all, or one per prompt"
    `);
  });
  it("device with did-you-mean", async () => {
    expect(await problems({ [P]: `${HEAD}runtime:\n  device: cuda:0\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:11: runtime.device: "cuda:0" is not an allowed value
        5 |   device: cuda:0
          |           ^^^^^^
        hint: did you mean "cuda"? allowed: auto, cuda, cpu"
    `);
  });
  it("output format", async () => {
    expect(await problems({ [P]: `${HEAD}output:\n  format: jpg\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:11: output.format: expected png, got the string "jpg"
        5 |   format: jpg
          |           ^^^
        hint: image file format; sdc writes PNG"
    `);
  });
  it("negative thread count", async () => {
    expect(await problems({ [P]: `${HEAD}runtime:\n  threads: -1\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:12: runtime.threads: -1 is too small
        5 |   threads: -1
          |            ^^
        hint: expected an integer from 0 to 1024 — CPU threads (0: all cores)"
    `);
  });
  it("boolean given as a string", async () => {
    expect(await problems({ [P]: `${HEAD}output:\n  grid: "yes"\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:9: output.grid: expected true or false, got the string "yes"
        5 |   grid: "yes"
          |         ^^^^^
        hint: also save all images of a run as one grid image"
    `);
  });
});

describe("cross-field checks against the architecture", () => {
  it("cross_attention_dim set in YAML differs from the text encoder's hidden_size", async () => {
    expect(await problems({ [P]: `${HEAD}  unet:\n    cross_attention_dim: 48\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:26: unet.cross_attention_dim is 48 but the text encoder's hidden_size is 32 (set at models/tiny-sd/text_encoder/config.json:9)
        5 |     cross_attention_dim: 48
          |                          ^^
        hint: the U-Net's cross-attention reads the text encoder's output, so the two widths must be equal"
    `);
  });
  it("hidden_size in the text encoder's config.json differs from the U-Net's (located in JSON)", async () => {
    expect(await problems({ [P]: HEAD, ...replaced("text_encoder/config.json", '"hidden_size": 32', '"hidden_size": 48') })).toMatchInlineSnapshot(`
      "models/tiny-sd/unet/config.json:19:26: unet.cross_attention_dim is 32 but the text encoder's hidden_size is 48 (set at models/tiny-sd/text_encoder/config.json:9)
        19 |   "cross_attention_dim": 32,
           |                          ^^
        hint: the U-Net's cross-attention reads the text encoder's output, so the two widths must be equal"
    `);
  });
  it("norm_num_groups does not divide the channels", async () => {
    expect(await problems({ [P]: `${HEAD}  unet:\n    norm_num_groups: 12\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:22: unet.norm_num_groups 12 does not divide the channel counts 32, 64 of block_out_channels
        5 |     norm_num_groups: 12
          |                      ^^
        hint: GroupNorm splits channels into equal groups; use a divisor of every channel count, e.g. 8"
    `);
  });
  it("latent channels differ between U-Net and VAE", async () => {
    expect(await problems({ [P]: `${HEAD}  vae:\n    latent_channels: 8\n` })).toMatchInlineSnapshot(`
      "models/tiny-sd/unet/config.json:32:18: unet.in_channels is 4 but the VAE's latent_channels is 8 (set at pipelines/p.yaml:5)
        32 |   "in_channels": 4,
           |                  ^
        hint: the U-Net denoises VAE latents: in_channels must be 8 (or 17 for an inpainting U-Net)

      models/tiny-sd/unet/config.json:42:19: unet.out_channels is 4 but the VAE's latent_channels is 8 (set at pipelines/p.yaml:5)
        42 |   "out_channels": 4,
           |                   ^
        hint: the U-Net predicts latents (or their noise): out_channels must be 8"
    `);
  });
  it("block_out_channels longer than the block types", async () => {
    expect(await problems({ [P]: `${HEAD}  unet:\n    block_out_channels: [32, 64, 64]\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:25: unet.block_out_channels has 3 entries but there are 2 down blocks
        5 |     block_out_channels: [32, 64, 64]
          |                         ^^^^^^^^^^^^
        hint: give one channel count per down block"
    `);
  });
  it("attention_head_dim list of the wrong length", async () => {
    expect(await problems({ [P]: `${HEAD}  unet:\n    attention_head_dim: [2, 2, 2]\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:25: unet.attention_head_dim has 3 entries but there are 2 down blocks
        5 |     attention_head_dim: [2, 2, 2]
          |                         ^^^^^^^^^
        hint: give one value per down block, or a single value for all blocks"
    `);
  });
  it("heads that do not divide the channels", async () => {
    expect(await problems({ [P]: `${HEAD}  unet:\n    attention_head_dim: 3\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:25: unet: the 32 channels of down block 0 do not split into 3 attention heads
        5 |     attention_head_dim: 3
          |                         ^
        hint: attention_head_dim is the number of heads of each block (for SD 1/2 U-Nets) and must divide its block_out_channels"
    `);
  });
  it("an SDXL U-Net (located in its config.json)", async () => {
    expect(
      await problems({ [P]: HEAD, ...replaced("unet/config.json", '"addition_embed_type": null', '"addition_embed_type": "text_time"') }),
    ).toMatchInlineSnapshot(`
      "models/tiny-sd/unet/config.json:5:26: unet.addition_embed_type is "text_time": sdc builds Stable Diffusion 1.x/2.x U-Nets, where it is null (this looks like SDXL)
        5 |   "addition_embed_type": "text_time",
          |                          ^^^^^^^^^^^
        hint: use an SD 1.x/2.x model, or remove the key if the pipeline sets it"
    `);
  });
  it("clip_skip past the last layer", async () => {
    expect(await problems({ [P]: `${HEAD}  text_encoder:\n    clip_skip: 2\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:16: model.text_encoder.clip_skip 2 skips all 2 layers of the text encoder
        5 |     clip_skip: 2
          |                ^
        hint: use a value from 0 to 1 (0: the last layer's output, 1: the one before, ...)"
    `);
  });
});

describe("extends", () => {
  it("base file that does not exist", async () => {
    expect(await problems({ [P]: `extends: base.yaml\nsample:\n  seed: 1\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:1:10: cannot read the base pipeline "pipelines/base.yaml": no such file
        1 | extends: base.yaml
          |          ^^^^^^^^^
        hint: extends takes a path relative to the file that names it"
    `);
  });
  it("cycle", async () => {
    expect(
      await problems({ [P]: `extends: a.yaml\n${HEAD}`, "pipelines/a.yaml": "extends: b.yaml\n", "pipelines/b.yaml": "extends: p.yaml\n" }),
    ).toMatchInlineSnapshot(`
      "pipelines/b.yaml:1:10: extends cycle: pipelines/p.yaml → pipelines/a.yaml → pipelines/b.yaml → pipelines/p.yaml
        1 | extends: p.yaml
          |          ^^^^^^
        hint: a pipeline cannot extend itself, directly or through its bases; remove one of these extends"
    `);
  });
  it("an error in the base is located in the base", async () => {
    expect(
      await problems({ [P]: "extends: ../shared/base.yaml\nsample:\n  seed: 1\n", "shared/base.yaml": `${HEAD.replace("../", "../")}scheduler:\n  steps: zero\n` }),
    ).toMatchInlineSnapshot(`
      "shared/base.yaml:5:10: scheduler.steps: expected an integer from 1 to 10000, got the string "zero"
        5 |   steps: zero
          |          ^^^^
        hint: number of inference steps (num_inference_steps)"
    `);
  });
  it("extends that is not a path", async () => {
    expect(await problems({ [P]: `extends: [a.yaml]\n${HEAD}` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:1:10: extends: expected a string, got a list
        1 | extends: [a.yaml]
          |          ^^^^^^^^
        hint: a base pipeline this one extends (deep-merged; this file wins)"
    `);
  });
});

describe("command-line overrides", () => {
  it("unknown key", async () => {
    expect(await problems({ [P]: HEAD }, { overrides: ["scheduler.stpes=20"] })).toMatchInlineSnapshot(`
      "--set scheduler.stpes=20: unknown key "stpes" in scheduler
        hint: did you mean "steps"?"
    `);
  });
  it("wrong type", async () => {
    expect(await problems({ [P]: HEAD }, { overrides: ["scheduler.steps=abc"] })).toMatchInlineSnapshot(`
      "--set scheduler.steps=abc: scheduler.steps: expected an integer from 1 to 10000, got the string "abc"
        hint: number of inference steps (num_inference_steps)"
    `);
  });
  it("malformed --set", async () => {
    expect(await problems({ [P]: HEAD }, { overrides: ["scheduler.steps"] })).toMatchInlineSnapshot(`
      "--set scheduler.steps: expected --set key.path=value
        hint: e.g. --set scheduler.steps=20 or --set sample.prompt='a red fox'"
    `);
  });
  it("--steps shortcut out of range", async () => {
    expect(await problems({ [P]: HEAD }, { steps: "0" })).toMatchInlineSnapshot(`
      "--steps 0: scheduler.steps: 0 is too small
        hint: expected an integer from 1 to 10000 — number of inference steps (num_inference_steps)"
    `);
  });
  it("--set that makes a mapping where a number belongs", async () => {
    expect(await problems({ [P]: HEAD }, { overrides: ["sample.seed.x=1"] })).toMatchInlineSnapshot(`
      "--set sample.seed.x=1: sample.seed: expected an integer ≥ 0, got a mapping
        hint: seed of the (PyTorch-compatible) CPU generator"
    `);
  });
  it("--set with a value that is not YAML", async () => {
    expect(await problems({ [P]: HEAD }, { overrides: ["sample.prompt=[a, b"] })).toMatchInlineSnapshot(`
      "--set sample.prompt=[a, b: the value is not valid YAML: Flow sequence must end with a ]
        hint: quote strings that contain YAML punctuation, e.g. --set 'sample.prompt="a: b"'"
    `);
  });
  it("--set scheduler.steps and --steps disagree: both flags named", async () => {
    expect(await problems({ [P]: HEAD }, { overrides: ["scheduler.steps=20"], steps: "30" })).toMatchInlineSnapshot(`
      "--set scheduler.steps=20 and --steps 30: both set scheduler.steps
        hint: give one of them (no flag silently wins over another)"
    `);
  });
  it("--prompt and --prompts-file exclude each other", async () => {
    expect(await problems({ [P]: HEAD, "p.txt": "a\n" }, { prompt: "x", promptsFile: "p.txt" })).toMatchInlineSnapshot(`
      "--prompt x and --prompts-file p.txt: sample.prompt and sample.prompts_file exclude each other
        hint: give one of them"
    `);
  });
  it("two --set of one key, and a --set of a mapping around a shortcut's key", async () => {
    expect(await problems({ [P]: HEAD }, { overrides: ["sample.seed=1", "sample.seed=2", "scheduler={steps: 4}"], steps: "5" })).toMatchInlineSnapshot(`
      "--set sample.seed=1 and --set sample.seed=2: both set sample.seed
        hint: give one of them (no flag silently wins over another)

      --set scheduler={steps: 4} and --steps 5: both set scheduler.steps
        hint: give one of them (no flag silently wins over another)"
    `);
  });
  it("the same value twice is no conflict", async () => {
    expect(await problems({ [P]: HEAD }, { overrides: ["scheduler.steps=5"], steps: "5" })).toBe("ok");
  });
  it("--set into a scalar", async () => {
    expect(await problems({ [P]: `${HEAD}sample:\n  seed: 3\n` }, { overrides: ["sample.seed.x=1"] })).toMatchInlineSnapshot(`
      "--set sample.seed.x=1: sample.seed is 3, not a mapping, so it has no key "x"
        hint: set sample.seed itself, e.g. --set sample.seed=<value>"
    `);
  });
});

describe("train", () => {
  const TRAIN = `${HEAD}train:\n  target: lora\n  data:\n    dir: ../data\n`;
  it("neither steps nor epochs", async () => {
    expect(await problems({ [P]: TRAIN, "data/1.png": "x" })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:4:1: train needs a length: neither train.steps nor train.epochs is set
        4 | train:
          | ^^^^^
        hint: add train.steps (optimizer steps) or train.epochs (passes over the data)"
    `);
  });
  it("unknown target", async () => {
    expect(await problems({ [P]: `${HEAD}train:\n  target: loras\n  data:\n    dir: ../data\n  steps: 10\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:11: train.target: "loras" is not an allowed value
        5 |   target: loras
          |           ^^^^^
        hint: did you mean "lora"? allowed: unet, lora, vae, text_encoder"
    `);
  });
  it("LoRA target module that does not exist", async () => {
    expect(
      await problems({ [P]: `${TRAIN}  steps: 10\n  lora:\n    target_modules: [to_q, to_kk, norm1]\n`, "data/1.png": "x" }),
    ).toMatchInlineSnapshot(`
      "pipelines/p.yaml:10:28: train.lora.target_modules: no module of the U-Net is named "to_kk"
        10 |     target_modules: [to_q, to_kk, norm1]
           |                            ^^^^^
        hint: did you mean "to_k"?

      pipelines/p.yaml:10:35: train.lora.target_modules: "norm1" names GroupNorm and LayerNorm layers, which take no LoRA
        10 |     target_modules: [to_q, to_kk, norm1]
           |                                   ^^^^^
        hint: LoRA attaches to Linear and Conv2d layers, named as in diffusers: to_q, to_k, to_v, to_out.0, proj_in, ff.net.0.proj, conv1, ..."
    `);
  });
  it("missing data.dir", async () => {
    expect(await problems({ [P]: `${HEAD}train:\n  target: unet\n  steps: 10\n  data: {}\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:7:3: missing required key "dir" in train.data
        7 |   data: {}
          |   ^^^^
        hint: add dir: <a string> — folder of training images, relative to this file"
    `);
  });
  it("optimizer betas of the wrong length", async () => {
    expect(await problems({ [P]: `${TRAIN}  steps: 10\n  optimizer:\n    betas: [0.9]\n`, "data/1.png": "x" })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:10:12: train.optimizer.betas: needs at least 2 items
        10 |     betas: [0.9]
           |            ^^^^^
        hint: expected a list of 2 values: [a number ≥ 0 and < 1, a number ≥ 0 and < 1]"
    `);
  });
  it("training data folder that does not exist", async () => {
    expect(await problems({ [P]: `${TRAIN}  epochs: 2\n` })).toMatchInlineSnapshot(`
      "pipelines/p.yaml:7:10: training data folder "data" does not exist
        7 |     dir: ../data
          |          ^^^^^^^
        hint: paths are relative to the YAML file that names them"
    `);
  });
});
