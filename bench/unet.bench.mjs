// SD 1.5's U-Net on the CPU provider: one denoising step (batch 2 = uncond + cond) at 32×32 and
// 64×64 latents (256² and 512² images; SDC_BENCH_LATENTS=32,64 to choose), fp32, for sdc's graph (fused attention/GroupNorm/LayerNorm/GELU) and
// for the baseline: the same U-Net with every composite decomposed into plain ONNX ops, the graph
// shape a PyTorch export gives. Each variant runs in its own process, so its peak memory is its own.
// Weights are a sparse file of zeros (timings of dense kernels do not depend on values).
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { Builder } from "../dist/ir/builder.js";
import { sym } from "../dist/ir/dims.js";
import { writeOnnx } from "../dist/ir/onnx/writer.js";
import { dce } from "../dist/ir/passes/dce.js";
import { foldKnown } from "../dist/ir/passes/fold.js";
import { lowerComposites } from "../dist/ir/passes/lower.js";
import { verify } from "../dist/ir/verify.js";
import { UNet2DConditionConfigSchema } from "../dist/models/arch.js";
import { PRESETS } from "../dist/models/presets.js";
import { buildUNet } from "../dist/models/unet.js";
import { machine, table, tempDir } from "./util.mjs";

const LATENTS = (process.env.SDC_BENCH_LATENTS ?? "32,64").split(",").map(Number);
const REPEAT = Number(process.env.SDC_BENCH_REPEAT ?? 2);

if (process.argv[2] === "--child") {
  // child: open the model, time REPEAT steps after one warm-up, report JSON on stdout
  const ort = await import("onnxruntime-node");
  const file = process.argv[3];
  const LATENT = Number(process.argv[4]);
  let t = performance.now();
  const s = await ort.InferenceSession.create(file, { executionProviders: ["cpu"], graphOptimizationLevel: "all", logSeverityLevel: 3 });
  const sessionS = (performance.now() - t) / 1000;
  const rnd = (n) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898) * 0.5);
  const feeds = {
    sample: new ort.Tensor("float32", rnd(2 * 4 * LATENT * LATENT), [2, 4, LATENT, LATENT]),
    timestep: new ort.Tensor("float32", new Float32Array([500, 500]), [2]),
    encoder_hidden_states: new ort.Tensor("float32", rnd(2 * 77 * 768), [2, 77, 768]),
  };
  await s.run(feeds);
  const times = [];
  for (let i = 0; i < REPEAT; i++) {
    t = performance.now();
    await s.run(feeds);
    times.push((performance.now() - t) / 1000);
  }
  times.sort((a, b) => a - b);
  const hwm = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync("/proc/self/status", "utf8"));
  console.log(JSON.stringify({ sessionS, stepS: times[Math.floor(times.length / 2)], peakMiB: hwm ? Number(hwm[1]) / 1024 : null }));
  process.exit(0);
}

console.log(`SD 1.5 U-Net on the CPU provider, fp32, batch 2; ${machine()}`);
const work = tempDir("sdc-unet-bench-");
process.on("exit", () => fs.rmSync(work, { recursive: true, force: true }));
const cfg = UNet2DConditionConfigSchema.parse(PRESETS["sd1.5"].unet);

// a sparse safetensors of zeros holding every U-Net weight
const shapes = new Map();
buildUNet(new Builder("unet", (key, shape) => (shapes.set(key, shape), { kind: "lazy", identity: key, produce: () => new Uint8Array(0) })), cfg);
const header = {};
let offset = 0;
for (const [name, shape] of shapes) {
  const n = shape.reduce((a, b) => a * b, 4);
  header[name] = { dtype: "F32", shape, data_offsets: [offset, offset + n] };
  offset += n;
}
let json = JSON.stringify(header);
json += " ".repeat((8 - (json.length % 8)) % 8);
const wfile = path.join(work, "unet.safetensors");
const fd = fs.openSync(wfile, "w");
const len = Buffer.alloc(8);
len.writeBigUInt64LE(BigInt(json.length));
fs.writeSync(fd, len);
fs.writeSync(fd, json);
fs.ftruncateSync(fd, 8 + json.length + offset);
fs.closeSync(fd);
const base = 8 + json.length;

const variants = [
  { name: "plain ONNX ops (baseline)", target: { ep: "cpu", training: false, primitivesOnly: true } },
  { name: "sdc (fused)", target: { ep: "cpu", training: false } },
];
const built = [];
for (const v of variants) {
  const b = new Builder("unet", (key) => ({ kind: "file", file: wfile, offset: base + header[key].data_offsets[0], byteLength: header[key].data_offsets[1] - header[key].data_offsets[0], storageDtype: "float32" }));
  buildUNet(b, cfg, { height: sym("height"), width: sym("width"), sequence: sym("sequence") });
  lowerComposites(b.graph, v.target);
  foldKnown(b.graph);
  dce(b.graph);
  verify(b.graph, { final: true });
  const dir = path.join(work, `v${built.length}`);
  writeOnnx(b.graph, { dir });
  built.push({ ...v, file: path.join(dir, "model.onnx"), nodes: b.graph.nodes.length });
}
for (const latent of LATENTS) {
  const rows = [];
  for (const v of built) {
    const r = spawnSync(process.execPath, [process.argv[1], "--child", v.file, String(latent)], { encoding: "utf8", maxBuffer: 1 << 24 });
    if (r.status !== 0) {
      console.error(r.stderr);
      process.exit(1);
    }
    rows.push({ variant: v.name, nodes: v.nodes, ...JSON.parse(r.stdout.trim().split("\n").pop()) });
  }
  const baseRow = rows[0];
  console.log(`\n${latent}×${latent} latents (${latent * 8}×${latent * 8} images), median of ${REPEAT} steps after a warm-up:`);
  table(
    rows.map((r) => ({
      variant: r.variant,
      nodes: r.nodes,
      "session s": r.sessionS.toFixed(1),
      "step s": r.stepS.toFixed(3),
      "speed vs baseline": `${(baseRow.stepS / r.stepS).toFixed(2)}×`,
      "peak MiB": Math.round(r.peakMiB),
      "memory vs baseline": `${(r.peakMiB / baseRow.peakMiB).toFixed(2)}×`,
    })),
  );
}
