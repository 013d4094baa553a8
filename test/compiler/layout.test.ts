/**
 * The compiled folder is what diffusers' OnnxStableDiffusionPipeline (and Optimum) load: the same
 * files, model_index.json classes, graph input/output names and dtypes as diffusers v0.24's
 * scripts/convert_stable_diffusion_checkpoint_to_onnx.py exports; plus plan.json, which must
 * validate and describe the files exactly. Weights that need no change are not copied: the graph
 * folder holds a hard link to the checkpoint file and the initializers point at the tensors' bytes.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import { beforeAll, describe, expect, it } from "vitest";
import { compile, type CompileResult } from "../../src/compiler/compile.js";
import { SafetensorsFile } from "../../src/models/weights/safetensors.js";
import { GRAPH_NAMES, PlanSchema, type GraphName } from "../../src/plan/schema.js";
import { sha256File } from "../../src/util/hash.js";
import { f16ToF32, f32ToF16 } from "../../src/util/half.js";
import { maxErrOverMaxRef } from "../helpers/ort.js";
import { refTensor, session } from "../helpers/pipeline.js";
import { copyFixture, externalInitializers, listFiles, onnxIo, pipelineIn, readOnnx, referenceCases, tmp } from "./helpers.js";

/**
 * Names and dtypes as diffusers v0.24's export script writes them (fp32 export): text encoder
 * `input_ids` int32 → `last_hidden_state`, `pooler_output`; U-Net `sample`, `timestep` (a float
 * tensor, torch.randn(2)), `encoder_hidden_states` → `out_sample`; VAE encoder `sample` →
 * `latent_sample`; VAE decoder `latent_sample` → `sample`. (`return_dict` is a Python constant there,
 * not a graph input.) sdc's VAE encoder returns the distribution's mean as `latent_sample` (diffusers'
 * export draws a sample inside the graph) and adds the moments as a second output.
 */
const F = "float32";
const DIFFUSERS_IO: Record<GraphName, { inputs: [string, string, number][]; outputs: [string, string, number][] }> = {
  text_encoder: { inputs: [["input_ids", "int32", 2]], outputs: [["last_hidden_state", F, 3], ["pooler_output", F, 2]] },
  unet: { inputs: [["sample", F, 4], ["timestep", F, 1], ["encoder_hidden_states", F, 3]], outputs: [["out_sample", F, 4]] },
  vae_encoder: { inputs: [["sample", F, 4]], outputs: [["latent_sample", F, 4], ["latent_parameters", F, 4]] },
  vae_decoder: { inputs: [["latent_sample", F, 4]], outputs: [["sample", F, 4]] },
};

/** The checkpoint file each graph's weights come from, in a diffusers folder. */
const SOURCE: Record<GraphName, string> = {
  text_encoder: "text_encoder/model",
  unet: "unet/diffusion_pytorch_model",
  vae_decoder: "vae/diffusion_pytorch_model",
  vae_encoder: "vae/diffusion_pytorch_model",
};

/**
 * Checks one graph's weights against its checkpoint and returns the byte counts: every external
 * location is a plain file name in the plan and in the folder; the checkpoint is hard-linked (same
 * inode); an initializer in it points at the tensor of the same name (zero-copy); nothing from the
 * checkpoint is copied into model.onnx_data; only small weights sit inside model.onnx; the plan's
 * bytesLinked/bytesWritten are what the file says.
 */
function checkWeights(c: CompileResult, g: GraphName, ckptFile: string): { linked: number; written: number; fromCheckpoint: number } {
  const spec = c.plan.graphs[g];
  const gdir = path.join(c.dir, g);
  const m = readOnnx(path.join(gdir, "model.onnx"));
  const ext = externalInitializers(m);
  const ckpt = SafetensorsFile.open(ckptFile);
  const linkedName = path.basename(ckptFile);

  expect(new Set(ext.map((e) => e.location))).toEqual(new Set(spec.externalData));
  for (const f of spec.externalData) {
    expect(f).toMatch(/^[^/\\]+$/);
    expect(fs.statSync(path.join(gdir, f)).isFile()).toBe(true);
  }
  expect(fs.statSync(path.join(gdir, linkedName)).ino).toBe(fs.statSync(ckptFile).ino);

  let linked = 0;
  let written = 0;
  let fromCheckpoint = 0;
  for (const e of ext) {
    expect(e.offset + e.length).toBeLessThanOrEqual(fs.statSync(path.join(gdir, e.location)).size);
    if (e.location === linkedName) {
      const t = ckpt.info(e.name);
      expect([e.name, e.offset, e.length]).toEqual([e.name, t.offset, t.byteLength]);
      linked += e.length;
      fromCheckpoint += e.length;
    } else {
      expect(e.location).toBe("model.onnx_data");
      expect(ckpt.tensors.has(e.name), `${e.name} is a checkpoint weight but was copied`).toBe(false);
      written += e.length;
    }
  }
  expect(spec.bytesLinked).toBe(linked);
  expect(spec.bytesWritten).toBe(written);
  const data = path.join(gdir, "model.onnx_data");
  expect(fs.existsSync(data) ? fs.statSync(data).size : 0).toBe(written);
  // weights kept inside model.onnx are the small ones (biases, norms)
  for (const t of m.graph!.initializer!) {
    if (!t.rawData?.length) continue;
    expect([t.name, t.rawData.length <= 1024]).toEqual([t.name, true]);
    if (ckpt.tensors.has(t.name!)) fromCheckpoint += t.rawData.length;
  }
  // every tensor of the checkpoint that belongs to this graph is used (transformers' position_ids is a buffer)
  const used = new Set(m.graph!.initializer!.map((t) => t.name));
  const unused = [...ckpt.tensors.keys()].filter((k) => belongsTo(g, k) && !used.has(k));
  expect(unused).toEqual([]);
  return { linked, written, fromCheckpoint };
}

function belongsTo(g: GraphName, key: string): boolean {
  if (g === "vae_decoder") return !key.startsWith("encoder.") && !key.startsWith("quant_conv.");
  if (g === "vae_encoder") return !key.startsWith("decoder.") && !key.startsWith("post_quant_conv.");
  if (g === "text_encoder") return key !== "text_model.embeddings.position_ids";
  return true;
}

/** Bytes of the checkpoint's tensors that belong to graph `g`. */
function componentBytes(g: GraphName, file: string): number {
  let n = 0;
  for (const t of SafetensorsFile.open(file).tensors.values()) if (belongsTo(g, t.name)) n += t.byteLength;
  return n;
}

let work: string;
let model: string;
let r: CompileResult;

beforeAll(async () => {
  work = tmp();
  model = copyFixture("tiny-sd1", work); // a private copy: same filesystem as the output, so links work
  r = await compile(await pipelineIn(work, model), { outDir: path.join(work, "compiled", "p") });
});

describe("the compiled folder (fp32, tiny-sd1)", () => {
  it("has diffusers' ONNX pipeline layout, plus plan.json", () => {
    expect(r.rebuilt).toEqual(GRAPH_NAMES);
    expect(listFiles(r.dir)).toEqual([
      "model_index.json",
      "plan.json",
      "scheduler/scheduler_config.json",
      "text_encoder/model.onnx",
      "text_encoder/model.onnx_data", // the causal mask: a computed constant
      "text_encoder/model.safetensors",
      "tokenizer/merges.txt",
      "tokenizer/special_tokens_map.json",
      "tokenizer/tokenizer.json",
      "tokenizer/tokenizer_config.json",
      "tokenizer/vocab.json",
      "unet/diffusion_pytorch_model.safetensors",
      "unet/model.onnx",
      "vae_decoder/diffusion_pytorch_model.safetensors",
      "vae_decoder/model.onnx",
      "vae_encoder/diffusion_pytorch_model.safetensors",
      "vae_encoder/model.onnx",
    ]);
    expect(fs.readdirSync(path.dirname(r.dir))).toEqual(["p"]); // no temporary folder left beside it
  });

  it("model_index.json names the classes OnnxStableDiffusionPipeline.from_pretrained loads", () => {
    // keys = OnnxStableDiffusionPipeline.__init__'s components; values as its save_pretrained writes them
    expect(JSON.parse(fs.readFileSync(path.join(r.dir, "model_index.json"), "utf8"))).toEqual({
      _class_name: "OnnxStableDiffusionPipeline",
      _diffusers_version: "0.24.0",
      feature_extractor: [null, null],
      requires_safety_checker: false,
      safety_checker: [null, null],
      scheduler: ["diffusers", "PNDMScheduler"],
      text_encoder: ["diffusers", "OnnxRuntimeModel"],
      tokenizer: ["transformers", "CLIPTokenizer"],
      unet: ["diffusers", "OnnxRuntimeModel"],
      vae_decoder: ["diffusers", "OnnxRuntimeModel"],
      vae_encoder: ["diffusers", "OnnxRuntimeModel"],
    });
  });

  it("tokenizer/ holds the source files unchanged and a tokenizer.json over the same vocabulary", () => {
    for (const f of ["merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]) {
      expect([f, sha256File(path.join(r.dir, "tokenizer", f))]).toEqual([f, sha256File(path.join(model, "tokenizer", f))]);
    }
    const tj = JSON.parse(fs.readFileSync(path.join(r.dir, "tokenizer", "tokenizer.json"), "utf8"));
    const vocab = JSON.parse(fs.readFileSync(path.join(model, "tokenizer", "vocab.json"), "utf8"));
    expect(tj.model.type).toBe("BPE");
    expect(tj.model.vocab).toEqual(vocab);
  });

  it("scheduler/scheduler_config.json is the model's scheduler config", () => {
    const src = JSON.parse(fs.readFileSync(path.join(model, "scheduler", "scheduler_config.json"), "utf8"));
    const out = JSON.parse(fs.readFileSync(path.join(r.dir, "scheduler", "scheduler_config.json"), "utf8"));
    // as diffusers' save_config: the class's own keys; clip_sample (in SD1.5's file) is no PNDMScheduler option
    expect(Object.keys(src).filter((k) => !(k in out))).toEqual(["clip_sample"]);
    expect(out).toMatchObject(Object.fromEntries(Object.entries(src).filter(([k]) => k in out)));
    expect(r.plan.scheduler.className).toBe("PNDMScheduler");
  });

  it.each(GRAPH_NAMES)("%s: input/output names and dtypes as diffusers' ONNX export, batch symbolic; plan.json says the same", (g) => {
    const m = readOnnx(path.join(r.dir, g, "model.onnx"));
    const ins = onnxIo(m, "input");
    const outs = onnxIo(m, "output");
    expect(ins.map((v) => [v.name, v.dtype, v.shape.length])).toEqual(DIFFUSERS_IO[g].inputs);
    expect(outs.map((v) => [v.name, v.dtype, v.shape.length])).toEqual(DIFFUSERS_IO[g].outputs);
    for (const v of [...ins, ...outs]) expect([v.name, v.shape[0]]).toEqual([v.name, "batch"]);
    expect(r.plan.graphs[g].inputs).toEqual(ins);
    expect(r.plan.graphs[g].outputs).toEqual(outs);
    // no weight is a graph input (older exporters listed initializers as inputs)
    const inits = new Set(m.graph!.initializer!.map((t) => t.name));
    expect(ins.filter((v) => inits.has(v.name))).toEqual([]);
  });

  it("the U-Net accepts one timestep for the whole batch, as OnnxStableDiffusionPipeline feeds it", async () => {
    const { cases, ref } = referenceCases("tiny-sd1");
    const c = cases.find((x) => x.case === "b2_8x8_t500")!; // both rows at t = 500
    const s = await session(r.dir, "unet");
    const feeds = Object.fromEntries(Object.entries(c.inputs).map(([n, t]) => [n, refTensor(ref, t, "float32")]));
    const full = await s.run(feeds);
    const one = await s.run({ ...feeds, timestep: new ort.Tensor("float32", new Float32Array([500]), [1]) });
    await s.release();
    expect(Array.from(one.out_sample!.data as Float32Array)).toEqual(Array.from(full.out_sample!.data as Float32Array));
  });

  it("plan.json validates against PlanSchema and every graph's sha256 matches its file", () => {
    const raw = JSON.parse(fs.readFileSync(path.join(r.dir, "plan.json"), "utf8"));
    const plan = PlanSchema.parse(raw);
    expect(plan).toEqual(r.plan);
    expect(plan.format).toBe("sdc-plan/2");
    for (const g of GRAPH_NAMES) {
      expect(plan.graphs[g].file).toBe(`${g}/model.onnx`);
      expect([g, sha256File(path.join(r.dir, plan.graphs[g].file))]).toEqual([g, plan.graphs[g].sha256]);
    }
    expect(plan.model).toMatchObject({ kind: "diffusers", name: "tiny-sd1" });
    expect(plan.model.hash).toBe(sha256File(path.join(model, "unet", "diffusion_pytorch_model.safetensors")).slice(0, 10));
    expect(plan.vae).toEqual({ scalingFactor: 0.18215, scaleFactor: 2, latentChannels: 4 });
  });

  it.each(GRAPH_NAMES)("%s: external data lies inside the graph's folder; unchanged weights are hard links into the checkpoint, not copies", (g) => {
    const bytes = checkWeights(r, g, path.join(model, `${SOURCE[g]}.safetensors`));
    expect(bytes.fromCheckpoint).toBe(componentBytes(g, path.join(model, `${SOURCE[g]}.safetensors`)));
  });

  it("the unet and VAE write no bytes; the text encoder writes only its causal mask", () => {
    expect(r.plan.graphs.unet.bytesWritten).toBe(0);
    expect(r.plan.graphs.vae_decoder.bytesWritten).toBe(0);
    expect(r.plan.graphs.vae_encoder.bytesWritten).toBe(0);
    expect(r.plan.graphs.text_encoder.bytesWritten).toBe(77 * 77 * 4);
  });
});

describe("fp16", () => {
  it("runtime.precision fp16 on the fp16 variant: every weight linked zero-copy, fp16 inputs/outputs, outputs within 5e-3 of the fp32 reference", async () => {
    const p = await pipelineIn(work, model, "  variant: fp16\nruntime:\n  precision: fp16\n", { file: "fp16.yaml" });
    const h = await compile(p, { outDir: path.join(work, "compiled", "fp16") });
    for (const g of GRAPH_NAMES) {
      const spec = h.plan.graphs[g];
      const src = path.join(model, `${SOURCE[g]}.fp16.safetensors`);
      expect([g, spec.precision, spec.externalData.includes(path.basename(src))]).toEqual([g, "fp16", true]);
      const bytes = checkWeights(h, g, src);
      expect([g, bytes.fromCheckpoint]).toEqual([g, componentBytes(g, src)]);
      expect([g, spec.bytesWritten]).toEqual([g, g === "text_encoder" ? 77 * 77 * 2 : 0]); // the causal mask, in float16
      const want = DIFFUSERS_IO[g];
      expect(spec.inputs.map((v) => [v.name, v.dtype])).toEqual(want.inputs.map(([n, d]) => [n, d === F ? "float16" : d]));
      expect(spec.outputs.map((v) => [v.name, v.dtype])).toEqual(want.outputs.map(([n, d]) => [n, d === F ? "float16" : d]));
    }

    // fp16 weights (rounded from the fp32 ones) and fp16 activations against the fp32 references
    const { cases, ref } = referenceCases("tiny-sd1");
    const rename: Record<string, string> = { mean: "latent_sample", moments: "latent_parameters" };
    let worst = 0;
    for (const c of cases) {
      const s = await session(h.dir, c.model);
      const feeds = Object.fromEntries(
        Object.entries(c.inputs).map(([n, t]) => {
          const x = refTensor(ref, t, n === "input_ids" ? "int32" : "float32");
          return [n, n === "input_ids" ? x : new ort.Tensor("float16", f32ToF16(x.data as Float32Array), x.dims)];
        }),
      );
      const out = await s.run(feeds);
      await s.release();
      const outputs = (c as unknown as { outputs: Record<string, string | string[]> }).outputs;
      for (const [k, name] of Object.entries(outputs)) {
        const got = out[rename[k] ?? k];
        if (!got || typeof name !== "string") continue;
        const h = got.data as Uint16Array;
        const e = maxErrOverMaxRef(f16ToF32(new Uint8Array(h.buffer, h.byteOffset, h.byteLength)), ref.readFloat32(name));
        worst = Math.max(worst, e);
        expect(e, `${c.model} ${c.case} ${k}`).toBeLessThan(5e-3);
      }
    }
    console.log(`fp16 graphs vs fp32 references: max rel err ${worst.toExponential(2)}`);
    expect(worst).toBeGreaterThan(1e-5); // it really ran in fp16
  });

  it("fp16 weights in an fp32 graph are converted once at write time: written, not linked", async () => {
    const p = await pipelineIn(work, model, "  variant: fp16\n", { file: "fp16w.yaml" });
    const h = await compile(p, { outDir: path.join(work, "compiled", "fp16w") });
    for (const g of GRAPH_NAMES) {
      const spec = h.plan.graphs[g];
      expect([g, spec.bytesLinked, spec.bytesWritten]).toEqual([g, 0, r.plan.graphs[g].bytesLinked + r.plan.graphs[g].bytesWritten]);
      expect(spec.externalData).toEqual(["model.onnx_data"]);
    }
  });
});
