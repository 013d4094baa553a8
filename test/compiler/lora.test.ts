/**
 * LoRA folding at compile time. tiny-sd1 with each LoRA dialect of test/fixtures/models/lora/ at
 * scale 0.75 must compute what tiny-sd1 computes with diffusers 0.24's fused weights
 * (`load_lora_weights` + `fuse_lora(lora_scale=0.75)`, recorded in tiny-sd1.merged.safetensors:
 * `kohya.*` for the files with alphas, `noalpha.*` for those without), within 1e-5 relative, on
 * every reference input of the U-Net and text encoder. Only the weights a LoRA changes are written
 * (once each); every other weight stays a hard link into the checkpoint.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { compile, type CompileResult } from "../../src/compiler/compile.js";
import { SafetensorsFile } from "../../src/models/weights/safetensors.js";
import { GRAPH_NAMES } from "../../src/plan/schema.js";
import { compareOutputs, copyFixture, externalInitializers, graphFiles, MODELS, pipelineIn, readOnnx, rewriteSafetensors, runReferenceInputs, snapshot, tmp } from "./helpers.js";

const LORA = path.join(MODELS, "lora");
const meta = JSON.parse(fs.readFileSync(path.join(LORA, "lora.json"), "utf8")) as {
  files: Record<string, string>;
  lora_scale: number;
  merged: string;
  modules: { unet: string[]; text_encoder: string[] };
};
const TOL = 1e-5;
const isAttention = (m: string) => /\.to_(q|k|v|out\.0)$/.test(m);

/** Which fused reference each dialect must equal, and which modules it touches. */
const DIALECTS: { dialect: string; merged: "kohya" | "noalpha"; unet: string[]; text_encoder: string[] }[] = [
  { dialect: "kohya", merged: "kohya", unet: meta.modules.unet, text_encoder: meta.modules.text_encoder },
  { dialect: "kohya-ldm", merged: "kohya", unet: meta.modules.unet, text_encoder: meta.modules.text_encoder },
  { dialect: "peft", merged: "noalpha", unet: meta.modules.unet, text_encoder: meta.modules.text_encoder },
  { dialect: "diffusers", merged: "noalpha", unet: meta.modules.unet, text_encoder: meta.modules.text_encoder },
  { dialect: "attnprocs", merged: "noalpha", unet: meta.modules.unet.filter(isAttention), text_encoder: [] },
];

const FILES = { unet: "unet/diffusion_pytorch_model.safetensors", text_encoder: "text_encoder/model.safetensors" } as const;

let work: string;
let base: CompileResult;
let baseOutputs: Promise<Map<string, Float32Array>>;
const results: string[] = [];

beforeAll(async () => {
  work = tmp();
  const model = copyFixture("tiny-sd1", work);
  base = await compile(await pipelineIn(work, model, "", { file: "base.yaml" }), { outDir: path.join(work, "base") });
  baseOutputs = runReferenceInputs(base.dir, "tiny-sd1", ["unet", "text_encoder"]);
});

/** A copy of tiny-sd1 whose weights are diffusers' fused ones for the given modules. */
function fusedFolder(name: string, merged: string, modules: { unet: string[]; text_encoder: string[] }): string {
  const dir = path.join(work, `fused-${name}`);
  fs.cpSync(path.join(MODELS, "tiny-sd1"), dir, { recursive: true });
  const m = SafetensorsFile.open(path.join(LORA, meta.merged));
  for (const c of ["unet", "text_encoder"] as const) {
    const want = new Set(modules[c].map((x) => `${x}.weight`));
    let replaced = 0;
    rewriteSafetensors(path.join(dir, FILES[c]), (key, t) => {
      if (!want.has(key)) return t;
      const src = m.info(`${merged}.${c}.${key}`);
      expect([key, src.shape]).toEqual([key, t.shape]);
      replaced++;
      return { ...t, data: m.readRaw(src.name) };
    });
    expect(replaced).toBe(want.size);
  }
  return dir;
}

describe.each(DIALECTS)("LoRA dialect $dialect", ({ dialect, merged, unet, text_encoder }) => {
  let lora: CompileResult;
  let fused: CompileResult;

  beforeAll(async () => {
    const file = path.join(LORA, meta.files[dialect]!);
    const yaml = `  lora:\n    - file: ${JSON.stringify(file)}\n      scale: ${meta.lora_scale}\n`;
    lora = await compile(await pipelineIn(work, path.join(work, "tiny-sd1"), yaml, { file: `${dialect}.yaml` }), { outDir: path.join(work, `lora-${dialect}`) });
    const ref = fusedFolder(dialect, merged, { unet, text_encoder });
    fused = await compile(await pipelineIn(work, ref, "", { file: `${dialect}-fused.yaml` }), { outDir: path.join(work, `fused-${dialect}-out`) });
  });

  it(`U-Net and text encoder outputs equal diffusers' fused weights (< ${TOL} relative)`, async () => {
    const a = await runReferenceInputs(lora.dir, "tiny-sd1", ["unet", "text_encoder"]);
    const b = await runReferenceInputs(fused.dir, "tiny-sd1", ["unet", "text_encoder"]);
    const c = compareOutputs(a, b);
    results.push(`${dialect}: max rel err ${c.max.toExponential(2)} (${c.worst})`);
    expect(c.max).toBeLessThan(TOL);
    // and the LoRA changed something: the outputs differ from the base model's
    const plain = compareOutputs(await baseOutputs, b);
    expect(plain.max).toBeGreaterThan(1e3 * TOL);
  });

  it("writes exactly the weights it changes, once each; every other weight stays linked", () => {
    for (const c of ["unet", "text_encoder"] as const) {
      const changed = new Set((c === "unet" ? unet : text_encoder).map((m) => `${m}.weight`));
      const st = SafetensorsFile.open(path.join(work, "tiny-sd1", FILES[c]));
      const big = [...changed].filter((k) => st.info(k).byteLength > 1024); // smaller ones live inside model.onnx
      const bigBytes = big.reduce((n, k) => n + st.info(k).byteLength, 0);

      const ext = externalInitializers(readOnnx(path.join(lora.dir, c, "model.onnx")));
      const baseWritten = externalInitializers(readOnnx(path.join(base.dir, c, "model.onnx"))).filter((e) => e.location === "model.onnx_data").map((e) => e.name);
      const written = ext.filter((e) => e.location === "model.onnx_data").map((e) => e.name);
      expect(written.sort()).toEqual([...baseWritten, ...big].sort()); // no duplicates: each written once
      expect(ext.filter((e) => changed.has(e.name) && e.location !== "model.onnx_data")).toEqual([]);

      const spec = lora.plan.graphs[c];
      expect([c, spec.bytesWritten - base.plan.graphs[c].bytesWritten]).toEqual([c, bigBytes]);
      expect([c, base.plan.graphs[c].bytesLinked - spec.bytesLinked]).toEqual([c, bigBytes]);
      expect(fs.statSync(path.join(lora.dir, c, "model.onnx_data"), { throwIfNoEntry: false })?.size ?? 0).toBe(spec.bytesWritten);
    }
    // the VAE has no LoRA: its graphs are the base model's
    for (const g of ["vae_decoder", "vae_encoder"] as const) expect(lora.plan.graphs[g].sha256).toBe(base.plan.graphs[g].sha256);
  });
});

describe("LoRA and incremental compiles", () => {
  it("adding a LoRA or changing its scale rebuilds the text encoder and U-Net only", async () => {
    const out = path.join(work, "inc");
    const model = path.join(work, "tiny-sd1");
    const yaml = (scale: number) => `  lora:\n    - file: ${JSON.stringify(path.join(LORA, meta.files.kohya!))}\n      scale: ${scale}\n`;
    await compile(await pipelineIn(work, model, "", { file: "inc.yaml" }), { outDir: out });
    const s0 = snapshot(out);
    const r1 = await compile(await pipelineIn(work, model, yaml(0.75), { file: "inc.yaml" }), { outDir: out });
    expect(r1.rebuilt).toEqual(["text_encoder", "unet"]);
    const s1 = snapshot(out);
    const r2 = await compile(await pipelineIn(work, model, yaml(0.5), { file: "inc.yaml" }), { outDir: out });
    expect(r2.rebuilt).toEqual(["text_encoder", "unet"]);
    const s2 = snapshot(out);
    for (const g of ["vae_decoder", "vae_encoder"]) {
      expect(graphFiles(s1, g)).toEqual(graphFiles(s0, g));
      expect(graphFiles(s2, g)).toEqual(graphFiles(s0, g));
    }
    expect(s2["unet/model.onnx_data"]!.sha256).not.toBe(s1["unet/model.onnx_data"]!.sha256);
    expect(GRAPH_NAMES.filter((g) => r2.reused.includes(g))).toEqual(["vae_decoder", "vae_encoder"]);
  });
});

describe("summary", () => {
  it("logs the measured differences", () => {
    console.log(`LoRA folded vs diffusers fused:\n  ${results.join("\n  ")}`);
    expect(results).toHaveLength(DIALECTS.length);
  });
});
