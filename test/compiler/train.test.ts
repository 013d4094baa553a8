/**
 * `sdc compile` on pipelines with a train section: the training graphs (train_step, train_eval,
 * train_accumulate) with their documented signature in plan.json, what a run setting changes (no
 * rebuild), what a graph setting rebuilds (the training graphs only), the refusals, and one step
 * of each compiled graph run with onnxruntime.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { compile } from "../../src/compiler/compile.js";
import { SafetensorsFile } from "../../src/models/weights/safetensors.js";
import { PlanSchema, type GraphSpecT } from "../../src/plan/schema.js";
import { isUserError, renderProblems } from "../../src/util/errors.js";
import { loadPipeline } from "../../src/config/load.js";
import { REPO } from "../helpers/repo.js";
import { copyFixture, pipelineIn, tmp } from "./helpers.js";

const train = (extra: string) => `train:\n  data:\n    dir: data\n    resolution: 64\n  steps: 10\n${extra}`;

async function compiled(extra: string) {
  const dir = tmp();
  fs.mkdirSync(path.join(dir, "data"));
  const model = copyFixture("tiny-sd1", dir);
  const p = await pipelineIn(dir, model, train(extra));
  const r = await compile(p, { cwd: dir });
  return { dir, model, p, r };
}

/** Feeds for a graph from its plan entry: parameters from the checkpoint, state zeros, batch random. */
function feeds(spec: GraphSpecT, weights: SafetensorsFile | null, sizes: Record<string, number>) {
  const f: Record<string, ort.Tensor> = {};
  let seed = 1;
  for (const t of spec.inputs) {
    const shape = t.shape.map((d) => (typeof d === "number" ? d : (sizes[d] ?? (() => { throw new Error(`no size for ${d}`); })())));
    const n = shape.reduce((a, b) => a * b, 1);
    if (t.role === "step") f[t.name] = new ort.Tensor("int64", new BigInt64Array([1n]), shape);
    else if (t.role === "learning_rate") f[t.name] = new ort.Tensor("float64", new Float64Array([1e-3]), shape);
    else if (t.dtype === "int64") f[t.name] = new ort.Tensor("int64", BigInt64Array.from({ length: n }, (_, i) => BigInt((i * 397) % 1000)), shape);
    else if (t.role === "parameter" && weights && weights.tensors.has(t.stateDictName!)) f[t.name] = new ort.Tensor("float32", weights.readFloat32(t.stateDictName!), shape);
    else if (t.role === "optimizer_state" || t.role === "grad_accumulator") f[t.name] = new ort.Tensor("float32", new Float32Array(n), shape);
    else {
      const a = new Float32Array(n);
      let s = seed++ * 7919;
      for (let i = 0; i < n; i++) a[i] = ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31 - 0.5) * 0.2;
      f[t.name] = new ort.Tensor("float32", a, shape);
    }
  }
  return f;
}

describe("sdc compile: training graphs", () => {
  it("U-Net fine-tune: train_step and train_eval, every input and output with its role, parameters under their diffusers names", async () => {
    const { r, model, dir } = await compiled("  target: unet\n  gradient_accumulation: 2\n");
    const plan = PlanSchema.parse(JSON.parse(fs.readFileSync(path.join(r.dir, "plan.json"), "utf8")));
    const t = plan.training!;
    expect(t).toMatchObject({ target: "unet", component: "unet", microBatches: 2, predictionType: "epsilon", optimizer: { type: "adamw" }, maxGradNorm: 1, lora: null });
    expect(Object.keys(t.graphs).sort()).toEqual(["train_accumulate", "train_eval", "train_step", "train_unet"]);
    const step = t.graphs.train_step;
    for (const io of [...step.inputs, ...step.outputs]) expect(io.role, io.name).toBeDefined();
    const unet = SafetensorsFile.open(path.join(model, "unet", "diffusion_pytorch_model.safetensors"));
    const params = step.inputs.filter((i) => i.role === "parameter");
    expect(params.map((p) => p.stateDictName).sort()).toEqual([...unet.tensors.keys()].sort());
    expect(step.inputs.filter((i) => i.role === "optimizer_state").map((i) => i.name)).toContain("exp_avg.conv_in.weight");
    expect(step.outputs.find((o) => o.name === "next.conv_in.weight")).toMatchObject({ role: "updated_parameter", stateDictName: "conv_in.weight" });
    expect(step.inputs.find((i) => i.name === "latents")).toMatchObject({ role: "batch", shape: ["batch", 4, "height", "width"] });
    expect(step.inputs.find((i) => i.name === "timesteps")).toMatchObject({ role: "random", dtype: "int64" });
    expect(step.inputs.find((i) => i.name === "grad_acc.conv_in.weight")).toMatchObject({ role: "grad_accumulator" });
    // no weights inside the step graph: the trainer feeds them
    expect(step.bytesLinked + step.bytesWritten).toBeLessThan(200_000);

    const s = await ort.InferenceSession.create(path.join(r.dir, step.file), { logSeverityLevel: 3 });
    const out = await s.run(feeds(step, unet, { batch: 2, height: 8, width: 8, sequence: 77 }));
    expect(Number.isFinite(Number(out.loss!.data[0]))).toBe(true);
    const before = unet.readFloat32("conv_in.weight");
    const after = out["next.conv_in.weight"]!.data as Float32Array;
    expect(after.some((x, i) => x !== before[i])).toBe(true);
    await s.release();
    expect(fs.existsSync(path.join(dir, "compiled", "p", "train_eval", "model.onnx"))).toBe(true);
  });

  it("LoRA: only the PEFT-named factors are trained; the base weights stay in the checkpoint, linked", async () => {
    const { r, model } = await compiled("  target: lora\n  lora:\n    rank: 2\n    alpha: 4\n");
    const t = r.plan.training!;
    expect(t.lora).toEqual({ rank: 2, alpha: 4, targets: ["to_q", "to_k", "to_v", "to_out.0"], dropout: 0 });
    const step = t.graphs.train_step;
    const params = step.inputs.filter((i) => i.role === "parameter");
    expect(params.length).toBeGreaterThan(0);
    for (const p of params) expect(p.name).toMatch(/\.(to_q|to_k|to_v|to_out\.0)\.lora_[AB]\.weight$/);
    expect(params.find((p) => p.name.endsWith("attn1.to_q.lora_A.weight"))!.shape[0]).toBe(2);
    expect(step.bytesLinked).toBeGreaterThan(0);
    const s = await ort.InferenceSession.create(path.join(r.dir, step.file), { logSeverityLevel: 3 });
    const out = await s.run(feeds(step, null, { batch: 1, height: 8, width: 8, sequence: 77 }));
    expect(Number.isFinite(Number(out.loss!.data[0]))).toBe(true);
    await s.release();
    void model;
  });

  it("VAE: images in, reconstruction + KL, every VAE parameter trained", async () => {
    const { r, model } = await compiled("  target: vae\n  objective:\n    loss: l1\n    kl_weight: 0.001\n");
    const step = r.plan.training!.graphs.train_step;
    const vae = SafetensorsFile.open(path.join(model, "vae", "diffusion_pytorch_model.safetensors"));
    expect(step.inputs.filter((i) => i.role === "parameter").length).toBe(vae.tensors.size);
    expect(step.inputs.find((i) => i.name === "images")).toMatchObject({ role: "batch" });
    expect(step.inputs.find((i) => i.name === "posterior_noise")).toMatchObject({ role: "random" });
  });

  it("a run setting (batch, steps, lr, data) rewrites nothing; a graph setting rebuilds the training graphs only", async () => {
    const dir = tmp();
    fs.mkdirSync(path.join(dir, "data"));
    const model = copyFixture("tiny-sd1", dir);
    const r1 = await compile(await pipelineIn(dir, model, train("  target: lora\n")), { cwd: dir });
    expect(r1.rebuilt).toEqual(expect.arrayContaining(["unet", "train_step", "train_eval"]));
    const r2 = await compile(await pipelineIn(dir, model, train("  target: lora\n  batch: 4\n  optimizer:\n    lr: 0.01\n  lr_schedule:\n    type: cosine\n")), { cwd: dir });
    expect(r2.upToDate).toBe(true);
    const r3 = await compile(await pipelineIn(dir, model, train("  target: lora\n  lora:\n    rank: 8\n")), { cwd: dir });
    expect(r3.rebuilt.sort()).toEqual(["train_eval", "train_step", "train_unet"]);
  });

  it.each([
    ["  target: text_encoder\n", /training the text encoder is not built yet/],
    ["  target: vae\n  validation:\n    prompts: [a cat]\n", /a VAE training has no U-Net to draw with/],
    ["  target: lora\n  lora:\n    target_modules: [to_nothing]\n", /no module of the U-Net is named "to_nothing"/],
  ])("refuses what it cannot build, at the key that asks (%#)", async (extra, message) => {
    const dir = tmp();
    fs.mkdirSync(path.join(dir, "data"));
    const model = copyFixture("tiny-sd1", dir);
    const err = await pipelineIn(dir, model, train(extra))
      .then((p) => compile(p, { cwd: dir }))
      .then(
      () => null,
      (e) => e,
    );
    expect(isUserError(err)).toBe(true);
    const text = renderProblems(err.problems);
    expect(text).toMatch(message);
    expect(text).toMatch(/p\.yaml:\d+:\d+/);
  });

  it.each(["lora", "unet", "vae"])("examples/train-%s-tiny.yaml compiles on a fresh clone, with its training graphs", async (t) => {
    const cwd = tmp();
    const p = await loadPipeline(path.join(REPO, "examples", `train-${t}-tiny.yaml`), { cwd });
    const r = await compile(p, { cwd });
    expect(r.plan.training!.target).toBe(t);
    expect(Object.keys(r.plan.training!.graphs)).toEqual(expect.arrayContaining(["train_step", "train_eval"]));
  });

  it("LoRA dropout: one mask input per adapted module, shaped like its input, drawn by the host (none in train_eval)", async () => {
    const { r } = await compiled("  target: lora\n  lora:\n    dropout: 0.1\n");
    const t = r.plan.training!;
    expect(t.lora!.dropout).toBe(0.1);
    const masks = t.graphs.train_step.inputs.filter((i) => i.name.startsWith("lora_dropout."));
    expect(masks.length).toBe(t.graphs.train_step.inputs.filter((i) => i.role === "parameter" && i.name.endsWith(".lora_A.weight")).length);
    for (const m of masks) expect(m.role).toBe("random");
    expect(masks.find((m) => m.name.endsWith("attn2.to_k"))!.shape).toEqual(["batch", "sequence", 32]);
    expect(t.graphs.train_eval.inputs.some((i) => i.name.startsWith("lora_dropout."))).toBe(false);
  });
});
