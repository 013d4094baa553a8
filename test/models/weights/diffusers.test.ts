import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import {
  loadDiffusersComponent,
  readComponentConfig,
  readJsonFile,
  readModelIndex,
} from "../../../src/models/weights/diffusers.js";
import { SafetensorsFile, toFloat32, writeSafetensors } from "../../../src/models/weights/safetensors.js";
import { readWeightFloat32, readWeightRaw } from "../../../src/models/weights/weight-set.js";
import { MODEL_FIXTURES, tempDir } from "../../helpers/repo.js";
import { bytesEqual, problemsOf } from "./helpers.js";

const SD1 = path.join(MODEL_FIXTURES, "tiny-sd1");
const dir = tempDir("sdc-weights-");

describe("loadDiffusersComponent on the tiny-sd1 fixture", () => {
  it("maps every tensor of each component file to a WeightRef at its byte range", () => {
    for (const [component, fname] of [
      ["unet", "diffusion_pytorch_model.safetensors"],
      ["vae", "diffusion_pytorch_model.safetensors"],
      ["text_encoder", "model.safetensors"],
    ] as const) {
      const ws = loadDiffusersComponent(SD1, component);
      const st = SafetensorsFile.open(path.join(SD1, component, fname));
      const expected = [...st.tensors.keys()].filter((k) => k !== "text_model.embeddings.position_ids").sort();
      expect(ws.keys().sort()).toEqual(expected);
      for (const r of ws.entries()) {
        const t = st.info(r.key);
        expect([r.file, r.sourceKey, r.dtype, r.shape, r.offset, r.byteLength]).toEqual([st.path, t.name, t.dtype, t.shape, t.offset, t.byteLength]);
      }
      expect(ws.files).toEqual([st.path]);
    }
  });

  it("keeps the text encoder's position_ids buffer out of the weights, saying why", () => {
    const ws = loadDiffusersComponent(SD1, "text_encoder");
    expect(ws.has("text_model.embeddings.position_ids")).toBe(false);
    expect([...ws.ignored.keys()]).toEqual(["text_model.embeddings.position_ids"]);
  });

  it("loads the fp16 variant: same keys and shapes, F16 values equal to the fp32 ones rounded", () => {
    const f32 = loadDiffusersComponent(SD1, "unet");
    const f16 = loadDiffusersComponent(SD1, "unet", { variant: "fp16" });
    expect(f16.files[0]).toMatch(/diffusion_pytorch_model\.fp16\.safetensors$/);
    expect(f16.keys().sort()).toEqual(f32.keys().sort());
    let maxRel = 0;
    for (const k of f32.keys()) {
      const a = f32.get(k);
      const b = f16.get(k, a.shape);
      expect(b.dtype).toBe("F16");
      const x = readWeightFloat32(a);
      const y = readWeightFloat32(b);
      for (let i = 0; i < x.length; i++) maxRel = Math.max(maxRel, Math.abs(x[i]! - y[i]!) / Math.max(Math.abs(x[i]!), 2 ** -14));
    }
    expect(maxRel).toBeLessThanOrEqual(2 ** -11); // half an F16 ulp
    expect(f32.unused()).toEqual([]);
  });

  it("get() checks shapes and names near matches for a missing key; unused() lists what was never asked for", () => {
    const ws = loadDiffusersComponent(SD1, "unet");
    const r = ws.get("conv_in.weight", [16, 4, 3, 3]);
    expect(r.shape).toEqual([16, 4, 3, 3]);
    const wrong = problemsOf(() => ws.get("conv_in.weight", [32, 4, 3, 3]));
    expect(wrong[0]).toMatchObject({ subject: "unet.conv_in.weight", message: "has shape [16, 4, 3, 3], but the model expects [32, 4, 3, 3]" });
    const missing = problemsOf(() => ws.get("down_blocks.0.resnet.0.conv1.weight"));
    expect(missing[0]!.subject).toBe("down_blocks.0.resnet.0.conv1.weight");
    expect(missing[0]!.message).toBe("missing from the unet weights");
    expect(missing[0]!.hint).toContain(`searched ${path.join(SD1, "unet", "diffusion_pytorch_model.safetensors")}`);
    expect(missing[0]!.hint).toContain("similar names: down_blocks.0.resnets.0.conv1.weight");
    expect(ws.unused()).not.toContain("conv_in.weight");
    expect(ws.unused()).toContain("conv_in.bias");
    expect(ws.unused()).toHaveLength(ws.keys().length - 1);
  });

  it("reads model_index.json and component configs", () => {
    expect(readModelIndex(SD1)).toMatchObject({ _class_name: "StableDiffusionPipeline", unet: ["diffusers", "UNet2DConditionModel"] });
    expect(readComponentConfig(SD1, "unet")).toMatchObject({ layers_per_block: 1, block_out_channels: [16, 32] });
  });
});

describe("a VAE saved by diffusers before 0.15 (query/key/value/proj_attn)", () => {
  it("gets today's names, as diffusers renames them on load", () => {
    const src = SafetensorsFile.open(path.join(SD1, "vae", "diffusion_pytorch_model.safetensors"));
    const root = path.join(dir, "legacy-vae");
    const legacy: Record<string, string> = { to_q: "query", to_k: "key", to_v: "value", "to_out.0": "proj_attn" };
    writeSafetensors(
      path.join(root, "vae", "diffusion_pytorch_model.safetensors"),
      [...src.tensors.values()].map((t) => ({
        name: t.name.replace(/attentions\.0\.(to_q|to_k|to_v|to_out\.0)\./, (_, p: string) => `attentions.0.${legacy[p]}.`),
        dtype: t.dtype,
        shape: t.shape,
        data: () => src.readRaw(t.name),
      })),
    );
    const ws = loadDiffusersComponent(root, "vae");
    const ref = loadDiffusersComponent(SD1, "vae");
    expect(ws.keys().sort()).toEqual(ref.keys().sort());
    const r = ws.get("decoder.mid_block.attentions.0.to_out.0.weight");
    expect(r.sourceKey).toBe("decoder.mid_block.attentions.0.proj_attn.weight");
    expect(bytesEqual(readWeightRaw(r), readWeightRaw(ref.get("decoder.mid_block.attentions.0.to_out.0.weight")))).toBe(true);
  });
});

describe("sharded weights", () => {
  /** Copy tiny-sd1's unet into `n` shards with an index named `indexName` and shard names `shard(i)`. */
  function shard(name: string, indexName: string, shardName: (i: number) => string, n = 2): string {
    const root = path.join(dir, name);
    const cdir = path.join(root, "unet");
    fs.mkdirSync(cdir, { recursive: true });
    const src = SafetensorsFile.open(path.join(SD1, "unet", "diffusion_pytorch_model.safetensors"));
    const keys = [...src.tensors.keys()].sort();
    const weightMap: Record<string, string> = {};
    for (let i = 0; i < n; i++) {
      const mine = keys.filter((_, j) => j % n === i);
      writeSafetensors(
        path.join(cdir, shardName(i)),
        mine.map((k) => {
          const t = src.info(k);
          return { name: k, dtype: t.dtype, shape: t.shape, data: () => src.readRaw(k) };
        }),
      );
      for (const k of mine) weightMap[k] = shardName(i);
    }
    fs.writeFileSync(path.join(cdir, indexName), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }, null, 2));
    return root;
  }

  it("reads a sharded component through its index, with identical bytes", () => {
    const root = shard("sharded", "diffusion_pytorch_model.safetensors.index.json", (i) => `diffusion_pytorch_model-0000${i + 1}-of-00002.safetensors`);
    const ws = loadDiffusersComponent(root, "unet");
    const ref = loadDiffusersComponent(SD1, "unet");
    expect(ws.keys().sort()).toEqual(ref.keys().sort());
    expect(ws.files).toHaveLength(2);
    for (const k of ref.keys()) expect(bytesEqual(readWeightRaw(ws.get(k)), readWeightRaw(ref.get(k)))).toBe(true);
  });

  it("finds a sharded fp16 variant under both index spellings", () => {
    for (const idx of ["diffusion_pytorch_model.safetensors.index.fp16.json", "diffusion_pytorch_model.fp16.safetensors.index.json"]) {
      const root = shard(`variant-${idx}`, idx, (i) => `diffusion_pytorch_model.fp16-0000${i + 1}-of-00002.safetensors`);
      expect(loadDiffusersComponent(root, "unet", { variant: "fp16" }).keys()).toHaveLength(loadDiffusersComponent(SD1, "unet").keys().length);
    }
  });

  it("names a missing shard and a tensor the index misplaces", () => {
    const root = shard("broken", "diffusion_pytorch_model.safetensors.index.json", (i) => `s${i}.safetensors`);
    const indexFile = path.join(root, "unet", "diffusion_pytorch_model.safetensors.index.json");
    const index = JSON.parse(fs.readFileSync(indexFile, "utf8"));
    index.weight_map["conv_in.weight"] = index.weight_map["conv_in.weight"] === "s0.safetensors" ? "s1.safetensors" : "s0.safetensors";
    index.weight_map["extra.weight"] = "s9.safetensors";
    fs.writeFileSync(indexFile, JSON.stringify(index));
    const p = problemsOf(() => loadDiffusersComponent(root, "unet"));
    expect(p.map((q) => q.message).sort()).toEqual([
      "shard listed in the index is missing",
      `the index places this tensor in ${index.weight_map["conv_in.weight"]}, which does not contain it`,
    ]);
    expect(p.find((q) => q.message.startsWith("shard"))!.subject).toBe(path.join(root, "unet", "s9.safetensors"));
  });

  it("refuses shard names that leave the folder", () => {
    const root = path.join(dir, "escape");
    fs.mkdirSync(path.join(root, "unet"), { recursive: true });
    fs.writeFileSync(path.join(root, "unet", "diffusion_pytorch_model.safetensors.index.json"), JSON.stringify({ weight_map: { a: "../x.safetensors" } }));
    expect(problemsOf(() => loadDiffusersComponent(root, "unet"))[0]!.message).toBe(
      'weight_map maps a to "../x.safetensors", not a .safetensors file name in the same folder',
    );
  });
});

describe("folders sdc cannot use get a clear refusal", () => {
  function folder(name: string, files: Record<string, string>): string {
    const root = path.join(dir, name);
    for (const [f, content] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(root, f)), { recursive: true });
      fs.writeFileSync(path.join(root, f), content);
    }
    return root;
  }

  it("pickle-only weights: says sdc reads safetensors and how to convert", () => {
    const root = folder("pickle", { "text_encoder/pytorch_model.bin": "x", "text_encoder/config.json": "{}" });
    const [p] = problemsOf(() => loadDiffusersComponent(root, "text_encoder"));
    expect(p!.message).toBe("only pickle weights (pytorch_model.bin) found; sdc needs model.safetensors");
    expect(p!.hint).toContain("sdc reads only .safetensors");
    expect(p!.hint).toContain("save_file");
  });

  it("a requested variant that is absent, and a variant-only folder without the option", () => {
    const [a] = problemsOf(() => loadDiffusersComponent(path.join(MODEL_FIXTURES, "tiny-sd2"), "vae", { variant: "fp16" }));
    expect(a!.message).toBe("diffusion_pytorch_model.fp16.safetensors not found");
    expect(a!.hint).toBe("this folder has no fp16 variant; drop the variant option to use diffusion_pytorch_model.safetensors");
    const root = folder("only-fp16", { "vae/diffusion_pytorch_model.fp16.safetensors": "" });
    const [b] = problemsOf(() => loadDiffusersComponent(root, "vae"));
    expect(b!.hint).toBe("only variant files exist (diffusion_pytorch_model.fp16.safetensors); set the variant option (e.g. fp16)");
  });

  it("a missing component folder, a missing model_index.json", () => {
    const root = folder("empty", { "unet/config.json": "{}" });
    expect(problemsOf(() => loadDiffusersComponent(root, "vae"))[0]!.message).toBe("the diffusers folder has no vae/ folder");
    expect(problemsOf(() => readModelIndex(root))[0]!.message).toBe("not a diffusers folder: model_index.json is missing");
    expect(problemsOf(() => loadDiffusersComponent(root, "unet"))[0]!.message).toBe(
      "diffusion_pytorch_model.safetensors not found (the folder holds: config.json)",
    );
  });

  it("a JSON syntax error is located at file:line:col", () => {
    const root = folder("badjson", { "model_index.json": '{\n  "unet": ["diffusers", "UNet2DConditionModel"],\n}\n' });
    const [p] = problemsOf(() => readModelIndex(root));
    expect(p!.at).toEqual({ file: path.join(root, "model_index.json"), line: 3, col: 1 });
    expect(p!.message).toMatch(/^invalid JSON: /);
    expect(() => readJsonFile(path.join(root, "nope.json"))).toThrow("file not found");
  });
});

describe("readWeightFloat32", () => {
  it("converts F16 weights to the float32 values torch reads", () => {
    const ws = loadDiffusersComponent(SD1, "vae", { variant: "fp16" });
    const r = ws.get("decoder.conv_out.bias");
    const raw = readWeightRaw(r);
    expect([...readWeightFloat32(r)]).toEqual([...toFloat32(raw, "F16", "x")]);
    expect(readWeightFloat32(r)).toHaveLength(3);
  });
});
