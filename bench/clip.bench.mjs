// SD 1.5's CLIP text encoder on the CPU provider, fp32, batch 2 (prompt and negative prompt) × 77
// tokens, 2 threads (SDC_BENCH_THREADS): sdc's graph (fused attention, LayerNorm, QuickGelu) against
// the same encoder with every composite decomposed into plain ONNX ops, the graph shape a PyTorch
// export gives. There is no torch.onnx.export baseline here: transformers' CLIPTextModel is not in the
// reference environment, so the plain-ops graph stands in for it. Weights are a sparse file of zeros
// (dense kernels time the same whatever the values). Each variant runs in its own process,
// interleaved over SDC_BENCH_ROUNDS rounds; a figure is the median of every run of its variant.
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { Builder } from "../dist/ir/builder.js";
import { writeOnnx } from "../dist/ir/onnx/writer.js";
import { dce } from "../dist/ir/passes/dce.js";
import { foldKnown } from "../dist/ir/passes/fold.js";
import { lowerComposites } from "../dist/ir/passes/lower.js";
import { verify } from "../dist/ir/verify.js";
import { CLIPTextConfigSchema } from "../dist/models/arch.js";
import { buildClipText } from "../dist/models/clip-text.js";
import { PRESETS } from "../dist/models/presets.js";
import { machine, median, ratio, record, runNodeChild, safetensorsHeader, sparseZeros, table, tempDir } from "./util.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const ROUNDS = Number(process.env.SDC_BENCH_ROUNDS ?? 3);
const REPEAT = Number(process.env.SDC_BENCH_REPEAT ?? 5);
const THREADS = Number(process.env.SDC_BENCH_THREADS ?? 2);
const child = path.join(here, "graph-child.mjs");

console.log(`SD 1.5 CLIP text encoder on the CPU provider, fp32, batch 2 × 77 tokens, ${THREADS} threads; ${machine()}`);
const work = tempDir("sdc-clip-bench-");
process.on("exit", () => fs.rmSync(work, { recursive: true, force: true }));
const cfg = CLIPTextConfigSchema.parse(PRESETS["sd1.5"].textEncoder);
const shapes = new Map();
buildClipText(new Builder("t", (key, shape) => (shapes.set(key, shape), { kind: "lazy", identity: key, produce: () => new Uint8Array(0) })), cfg);
const wfile = path.join(work, "text_encoder.safetensors");
sparseZeros(wfile, shapes);
const { tensors, base } = safetensorsHeader(wfile);

const variants = [
  { key: "plain", name: "plain ONNX ops (baseline)", target: { ep: "cpu", training: false, primitivesOnly: true } },
  { key: "sdc", name: "sdc (fused)", target: { ep: "cpu", training: false } },
];
for (const v of variants) {
  const b = new Builder("text_encoder", (key) => ({ kind: "file", file: wfile, offset: base + tensors[key].data_offsets[0], byteLength: tensors[key].data_offsets[1] - tensors[key].data_offsets[0], storageDtype: "float32" }));
  buildClipText(b, cfg);
  lowerComposites(b.graph, v.target);
  foldKnown(b.graph);
  dce(b.graph);
  verify(b.graph, { final: true });
  writeOnnx(b.graph, { dir: path.join(work, v.key) });
  v.file = path.join(work, v.key, "model.onnx");
  v.nodes = b.graph.nodes.length;
}
const res = Object.fromEntries(variants.map((v) => [v.key, { runs: [], cpu: [], peak: 0 }]));
for (let r = 0; r < ROUNDS; r++)
  for (const v of r % 2 === 0 ? variants : [...variants].reverse()) {
    const o = runNodeChild(child, [JSON.stringify({ model: v.file, feeds: { input_ids: { dims: [2, 77], dtype: "int32" } }, repeat: REPEAT, warmup: 1, threads: THREADS })]);
    res[v.key].runs.push(...o.runS);
    res[v.key].cpu.push(...o.cpuS);
    res[v.key].peak = Math.max(res[v.key].peak, o.peakMiB);
  }
console.log(`\nmedian of ${ROUNDS} interleaved rounds of ${REPEAT} calls after a warm-up:`);
table(
  variants.map((v) => ({
    variant: v.name,
    nodes: v.nodes,
    "call s": median(res[v.key].runs).toFixed(4),
    "vs baseline": ratio(median(res[v.key].runs), median(res.plain.runs)),
    "fastest runs": ratio(Math.min(...res[v.key].runs), Math.min(...res.plain.runs)),
    "CPU s": `${median(res[v.key].cpu).toFixed(3)} (${ratio(median(res[v.key].cpu), median(res.plain.cpu))})`,
    "peak MiB": Math.round(res[v.key].peak),
    memory: ratio(res[v.key].peak, res.plain.peak),
  })),
);
record("clip", [
  {
    figure: "CLIP text b2",
    unit: "s",
    sdc: median(res.sdc.runs),
    sdcMin: Math.min(...res.sdc.runs),
    sdcRuns: res.sdc.runs,
    sdcCpu: median(res.sdc.cpu),
    sdcPeakMiB: Math.round(res.sdc.peak),
    sdcNodes: variants[1].nodes,
    baseline: median(res.plain.runs),
    baselineMin: Math.min(...res.plain.runs),
    baselineRuns: res.plain.runs,
    baselineCpu: median(res.plain.cpu),
    baselinePeakMiB: Math.round(res.plain.peak),
    baselineKind: "sdc plain ONNX ops (no transformers for a torch export)",
    baselineNodes: variants[0].nodes,
  },
], { threads: THREADS, rounds: ROUNDS, repeat: REPEAT, spinning: process.env.SDC_BENCH_SPIN !== "0" });
