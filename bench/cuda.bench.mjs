// CUDA checks and SD 1.5 U-Net timings (needs a GPU with onnxruntime-node's CUDA provider; on a
// machine without one it says so and exits 0).
//
// 1. The default pipeline on CUDA (fp32 and fp16) against the CPU: same seed, image difference.
// 2. Node placement: every compiled graph opened with CPU fallback disabled, so an op without a
//    CUDA kernel is named instead of silently running on the CPU.
// 3. SD 1.5's U-Net at full size (random fp16 weights, generated here), batch 2 (cond + uncond)
//    at 64×64 latents (512×512 images): per-step time for each lowering of sdc's composites
//    (all fused, each one decomposed, all primitives), fp16 and fp32. Baseline: all primitives,
//    the graph a plain export gives. Ratios are against it, measured in the same run.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import { Builder } from "../dist/ir/builder.js";
import { writeOnnx } from "../dist/ir/onnx/writer.js";
import { dce } from "../dist/ir/passes/dce.js";
import { foldKnown } from "../dist/ir/passes/fold.js";
import { lowerComposites } from "../dist/ir/passes/lower.js";
import { sym } from "../dist/ir/dims.js";
import { verify } from "../dist/ir/verify.js";
import { UNet2DConditionConfigSchema } from "../dist/models/arch.js";
import { PRESETS } from "../dist/models/presets.js";
import { buildUNet } from "../dist/models/unet.js";
import { writeSafetensors } from "../dist/models/weights/safetensors.js";
import { loadPipeline, run } from "../dist/index.js";
import { cudaUnavailableReason } from "../dist/runtime/session.js";
import { spawnSync } from "node:child_process";
import { table, tempDir, timeIt } from "./util.mjs";

/**
 * Where onnxruntime placed each node: a child process opens the model with verbose logging and
 * the placement lines are summarised ({ provider: count }, and the op types left on the CPU).
 * (Disabling CPU fallback is no test: the CUDA provider keeps shape arithmetic on the CPU by design.)
 */
function placement(file, ep) {
  const code = `import * as ort from "onnxruntime-node"; ort.env.logLevel = "verbose";
    const s = await ort.InferenceSession.create(${JSON.stringify(file)}, { executionProviders: [${JSON.stringify(ep)}], logSeverityLevel: 0, logVerbosityLevel: 0 });
    await s.release();`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", code], { encoding: "utf8", maxBuffer: 1 << 28, cwd: process.cwd() });
  const lines = `${r.stdout}\n${r.stderr}`.split("\n").filter((l) => l.includes("VerifyEachNodeIsAssignedToAnEp"));
  const counts = {};
  const cpuOps = {};
  let current = null;
  for (const l of lines) {
    const m = /placed on \[(\w+)\]\. Number of nodes: (\d+)/.exec(l);
    if (m) {
      current = m[1];
      counts[current] = Number(m[2]);
      continue;
    }
    const op = /\]\s+(\w+) \(/.exec(l);
    if (op && current === "CPUExecutionProvider") cpuOps[op[1]] = (cpuOps[op[1]] ?? 0) + 1;
  }
  if (r.status !== 0) return { error: (r.stderr || "").split("\n").filter((l) => /error|Error/.test(l)).slice(0, 3).join(" | ").slice(0, 400) };
  return { counts, cpuOps };
}

const report = { machine: `${os.cpus()[0]?.model} × ${os.availableParallelism()}`, ort: ort.env.versions, steps: [] };
const out = process.env.OUT;
if (out) fs.mkdirSync(out, { recursive: true });
const save = () => out && fs.writeFileSync(path.join(out, "cuda-report.json"), JSON.stringify(report, null, 2));
const note = (k, v) => {
  report[k] = v;
  console.log(`${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`);
  save();
};

// SDC_BENCH_REHEARSE=1 runs every step on the CPU provider at a small size (to test this script)
const rehearse = process.env.SDC_BENCH_REHEARSE === "1";
const EP = rehearse ? "cpu" : "cuda";
const missing = rehearse ? null : cudaUnavailableReason();
if (missing) {
  console.log(`skipped: ${missing}`);
  process.exit(0);
}

// ---- 1. default pipeline: CUDA vs CPU --------------------------------------------------------
const work = tempDir("sdc-cuda-");
const images = {};
for (const [key, device, precision] of [["cpu-fp32", "cpu", "fp32"], ["cuda-fp32", EP, "fp32"], ["cuda-fp16", EP, "fp16"]]) {
  try {
    const p = await loadPipeline("pipelines/txt2img.yaml", { overrides: [`runtime.device=${device}`, `runtime.precision=${precision}`, "scheduler.steps=10", `output.dir=${path.join(work, key)}`] });
    const lines = [];
    const r = await run(p, { compiledDir: path.join(work, `compiled-${key}`), progress: false, log: (l) => lines.push(l), trace: (stage, data) => stage === "decoded" && (images[key] = data.slice()) });
    note(`pipeline ${key}`, { ep: r.ep, seconds: +r.seconds.toFixed(3), itPerSec: +r.itPerSec.toFixed(1), log: lines.filter((l) => l.startsWith("running")) });
  } catch (e) {
    note(`pipeline ${key}`, `FAILED: ${e.message}`);
  }
}
for (const k of ["cuda-fp32", "cuda-fp16"]) {
  if (!images[k] || !images["cpu-fp32"]) continue;
  let m = 0;
  for (let i = 0; i < images[k].length; i++) m = Math.max(m, Math.abs(images[k][i] - images["cpu-fp32"][i]) / 2);
  note(`image max abs diff ${k} vs cpu-fp32 ([0,1] scale)`, m);
}

// ---- 2. node placement --------------------------------------------------------------------
for (const key of ["cuda-fp32", "cuda-fp16"]) {
  for (const g of ["text_encoder", "unet", "vae_decoder", "vae_encoder"]) {
    const f = path.join(work, `compiled-${key}`, g, "model.onnx");
    if (fs.existsSync(f)) note(`placement ${key} ${g}`, placement(f, EP));
  }
}

// ---- 3. SD 1.5 U-Net at full size ------------------------------------------------------------
const cfg = UNet2DConditionConfigSchema.parse(PRESETS["sd1.5"].unet);
// the parameter list, from a shape-only build
const shapes = new Map();
{
  const b = new Builder("unet", (key, shape, dtype) => {
    shapes.set(key, shape);
    return { kind: "lazy", identity: key, produce: () => new Uint8Array(0) };
  });
  buildUNet(b, cfg);
}
const wfile = path.join(work, "unet.fp16.safetensors");
let t = performance.now();
let seed = 12345;
const rnd = () => {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 2 ** 32;
};
// random fp16 weights ~ U(-0.02, 0.02) (norm scales near 1), generated from a table of halves
const table16 = new Uint16Array(4096);
{
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < table16.length; i++) {
    f[0] = (i / table16.length - 0.5) * 0.04;
    const x = u[0];
    const e = ((x >>> 23) & 0xff) - 127 + 15;
    table16[i] = ((x >>> 16) & 0x8000) | (e <= 0 ? 0 : (e << 10) | ((x >>> 13) & 0x3ff));
  }
}
writeSafetensors(
  wfile,
  [...shapes].map(([name, shape]) => ({
    name,
    dtype: "F16",
    shape,
    data: () => {
      const n = shape.reduce((a, b) => a * b, 1);
      const h = new Uint16Array(n);
      const norm = /norm|group_norm/.test(name) && name.endsWith("weight");
      for (let i = 0; i < n; i++) h[i] = norm ? 0x3c00 : table16[(rnd() * 4096) | 0];
      return new Uint8Array(h.buffer);
    },
  })),
);
note("sd15 unet weights", { parameters: [...shapes.values()].reduce((a, s) => a + s.reduce((x, y) => x * y, 1), 0), bytes: fs.statSync(wfile).size, seconds: +((performance.now() - t) / 1000).toFixed(1) });

const header = JSON.parse(fs.readFileSync(wfile).subarray(8, 8 + Number(fs.readFileSync(wfile).readBigUInt64LE(0))).toString());
const hlen = Number(fs.readFileSync(wfile).readBigUInt64LE(0));
const provider = (key) => {
  const e = header[key];
  return { kind: "file", file: wfile, offset: 8 + hlen + e.data_offsets[0], byteLength: e.data_offsets[1] - e.data_offsets[0], storageDtype: "float16" };
};

const variants = rehearse ? [
  { name: "all fused", precision: "fp16", unfused: [] },
  { name: "all primitives (baseline)", precision: "fp32", primitivesOnly: true },
] : [
  { name: "all fused", precision: "fp16", unfused: [] },
  { name: "GroupNorm decomposed", precision: "fp16", unfused: ["GroupNorm"] },
  { name: "Attention decomposed", precision: "fp16", unfused: ["Attention"] },
  { name: "Gelu decomposed", precision: "fp16", unfused: ["Gelu"] },
  { name: "all primitives (baseline)", precision: "fp16", primitivesOnly: true },
  { name: "all fused", precision: "fp32", unfused: [] },
  { name: "all primitives (baseline)", precision: "fp32", primitivesOnly: true },
];
const B = 2;
const H = rehearse ? 8 : 64;
const feedsFor = (dtype) => {
  const mk = (n) => {
    const f = new Float32Array(n);
    for (let i = 0; i < n; i++) f[i] = rnd() * 2 - 1;
    return f;
  };
  const t16 = (f) => {
    const h = new Uint16Array(f.length);
    const x = new Float32Array(1);
    const u = new Uint32Array(x.buffer);
    for (let i = 0; i < f.length; i++) {
      x[0] = f[i];
      const e = ((u[0] >>> 23) & 0xff) - 127 + 15;
      h[i] = ((u[0] >>> 16) & 0x8000) | (e <= 0 ? 0 : (e << 10) | ((u[0] >>> 13) & 0x3ff));
    }
    return h;
  };
  const T = (f, dims) => (dtype === "float16" ? new ort.Tensor("float16", t16(f), dims) : new ort.Tensor("float32", f, dims));
  return { sample: T(mk(B * 4 * H * H), [B, 4, H, H]), timestep: T(new Float32Array([500, 500]), [B]), encoder_hidden_states: T(mk(B * 77 * 768), [B, 77, 768]) };
};
const rows = [];
for (const v of variants) {
  const row = { variant: v.name, precision: v.precision };
  try {
    t = performance.now();
    const b = new Builder("unet", (key) => provider(key), v.precision === "fp16" ? "float16" : "float32");
    buildUNet(b, cfg, { height: sym("height"), width: sym("width"), sequence: sym("sequence") });
    lowerComposites(b.graph, { ep: "cuda", training: false, primitivesOnly: v.primitivesOnly, unfused: v.unfused });
    foldKnown(b.graph);
    dce(b.graph);
    verify(b.graph, { final: true });
    const dir = path.join(work, `v-${rows.length}`);
    const w = writeOnnx(b.graph, { dir });
    row.nodes = b.graph.nodes.length;
    row.compileS = +((performance.now() - t) / 1000).toFixed(1);
    row.linkedMB = Math.round(w.bytesLinked / 2 ** 20);
    row.writtenMB = Math.round(w.bytesWritten / 2 ** 20);
    const file = path.join(dir, "model.onnx");
    // placement for the fully fused graphs (the others differ only in the decomposed op)
    const pl = v.name === "all fused" ? placement(file, EP) : { counts: {}, cpuOps: {}, skipped: true };
    row.placement = pl.skipped ? "" : pl.error ? `error: ${pl.error}` : Object.keys(pl.cpuOps).length ? `CPU: ${Object.entries(pl.cpuOps).map(([k, n]) => `${k}×${n}`).join(" ")}` : "all on " + Object.keys(pl.counts).join("+");
    t = performance.now();
    const s = await ort.InferenceSession.create(file, { executionProviders: [EP], logSeverityLevel: 3, graphOptimizationLevel: "all" });
    row.sessionS = +((performance.now() - t) / 1000).toFixed(1);
    const feeds = feedsFor(v.precision === "fp16" ? "float16" : "float32");
    const tm = await timeIt(() => s.run(feeds), { repeat: rehearse ? 1 : 10, warmup: rehearse ? 0 : 3 });
    row.stepMs = +(tm.median * 1000).toFixed(1);
    await s.release();
    fs.rmSync(dir, { recursive: true, force: true });
  } catch (e) {
    row.error = String(e.message).split("\n")[0].slice(0, 300);
  }
  rows.push(row);
  report.steps.push(row);
  console.log(JSON.stringify(row));
  save();
}
for (const p of ["fp16", "fp32"]) {
  const base = rows.find((r) => r.precision === p && r.variant.startsWith("all primitives"));
  for (const r of rows.filter((x) => x.precision === p)) r.vsBaseline = base?.stepMs && r.stepMs ? `${(base.stepMs / r.stepMs).toFixed(2)}×` : "–";
}
console.log("\nSD 1.5 U-Net, batch 2, 64×64 latents (512×512 images), one denoising step:");
table(rows.map((r) => ({ variant: r.variant, precision: r.precision, placement: r.placement ?? "", "step ms": r.stepMs ?? r.error, "speed vs baseline": r.vsBaseline, "session s": r.sessionS ?? "", nodes: r.nodes ?? "" })));
save();
fs.rmSync(work, { recursive: true, force: true });
