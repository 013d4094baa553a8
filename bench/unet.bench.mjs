// SD 1.5's U-Net on the CPU provider: one denoising step (batch 2 = uncond + cond) at 32×32 and
// 64×64 latents (256² and 512² images; SDC_BENCH_LATENTS=32,64 to choose), fp32, 2 threads
// (SDC_BENCH_THREADS), for sdc's graph (fused attention/GroupNorm/LayerNorm/GELU) and its baselines:
// torch.onnx.export of diffusers 0.24's UNet2DConditionModel with the same seeded weights
// (bench/export-torch.py, when python3 imports torch and diffusers: see probePython in util.mjs;
// SDC_BENCH_EXPORT_DIR keeps the export, which takes minutes, between runs), and the same U-Net with
// every composite decomposed into plain ONNX ops. Without torch the weights are a sparse file of zeros
// (timings of dense kernels do not depend on values) and sdc's previous figures are the reference.
// Each variant runs in its own process, so its peak memory is its own, interleaved over
// SDC_BENCH_ROUNDS rounds (the order turns each round) so a load from elsewhere hits all of them.
// SDC_BENCH_PLAIN=0 leaves the plain-ops graph out when the export runs; SDC_BENCH_WARMUP sets the
// warm-up calls before the timed ones (default 1).
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
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
import { machine, median, onnxNodeCount, previous, probePython, ratio, record, runNodeChild, safetensorsHeader, sparseZeros, table, tempDir } from "./util.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const LATENTS = (process.env.SDC_BENCH_LATENTS ?? "32,64").split(",").filter(Boolean).map(Number);
const ROUNDS = Number(process.env.SDC_BENCH_ROUNDS ?? 2);
const REPEAT = Number(process.env.SDC_BENCH_REPEAT ?? 2);
const THREADS = Number(process.env.SDC_BENCH_THREADS ?? 2);
const WARMUP = Number(process.env.SDC_BENCH_WARMUP ?? 1);
const PLAIN = process.env.SDC_BENCH_PLAIN !== "0";
const BENCH = "unet";
const child = path.join(here, "graph-child.mjs");

console.log(`SD 1.5 U-Net on the CPU provider, fp32, batch 2, ${THREADS} threads; ${machine()}`);
const work = tempDir("sdc-unet-bench-");
process.on("exit", () => fs.rmSync(work, { recursive: true, force: true }));
const cfg = UNet2DConditionConfigSchema.parse(PRESETS["sd1.5"].unet);

const torch = process.env.SDC_BENCH_TORCH === "0" ? { ok: false, reason: "SDC_BENCH_TORCH=0" } : probePython(path.join(here, "export-torch.py"), { threads: THREADS });
let wfile;
let exported = null;
if (torch.ok) {
  const dir = process.env.SDC_BENCH_EXPORT_DIR ?? path.join(work, "export");
  const files = [path.join(dir, "unet.safetensors"), path.join(dir, "unet", "model.onnx")];
  if (!files.every((f) => fs.existsSync(f))) {
    console.log(`exporting diffusers ${torch.versions.diffusers}'s UNet2DConditionModel with torch ${torch.versions.torch} (seeded random weights; minutes, ~7 GB of disk) ...`);
    const r = spawnSync(torch.python, [path.join(here, "export-torch.py"), "unet", dir, "0"], { env: torch.env, encoding: "utf8" });
    if (r.status !== 0) {
      console.error(r.stderr);
      process.exit(1);
    }
  }
  [wfile, exported] = files;
  console.log(`baseline: torch.onnx.export (torch ${torch.versions.torch}, diffusers ${torch.versions.diffusers}, opset 17, diffusers' AttnProcessor: torch 1.13 has no fused attention to export)`);
} else {
  console.log(`no PyTorch export baseline (${torch.reason}): zero weights; the plain-ops graph and sdc's previous figures are the references`);
  const shapes = new Map();
  buildUNet(new Builder("unet", (key, shape) => (shapes.set(key, shape), { kind: "lazy", identity: key, produce: () => new Uint8Array(0) })), cfg);
  wfile = path.join(work, "unet.safetensors");
  sparseZeros(wfile, shapes);
}
const { tensors, base } = safetensorsHeader(wfile);

const variants = [
  ...(exported ? [{ key: "export", name: "torch.onnx.export (plain attention)", file: exported, nodes: await onnxNodeCount(exported) }] : []),
  ...(PLAIN || !exported ? [{ key: "plain", name: "sdc, plain ONNX ops", target: { ep: "cpu", training: false, primitivesOnly: true } }] : []),
  { key: "sdc", name: "sdc (fused)", target: { ep: "cpu", training: false } },
];
for (const v of variants) {
  if (v.file) continue;
  const b = new Builder("unet", (key) => ({ kind: "file", file: wfile, offset: base + tensors[key].data_offsets[0], byteLength: tensors[key].data_offsets[1] - tensors[key].data_offsets[0], storageDtype: "float32" }));
  buildUNet(b, cfg, { height: sym("height"), width: sym("width"), sequence: sym("sequence") });
  lowerComposites(b.graph, v.target);
  foldKnown(b.graph);
  dce(b.graph);
  verify(b.graph, { final: true });
  const dir = path.join(work, v.key);
  writeOnnx(b.graph, { dir });
  v.file = path.join(dir, "model.onnx");
  v.nodes = b.graph.nodes.length;
}
const feeds = (latent) => ({ sample: { dims: [2, 4, latent, latent] }, timestep: { dims: [2], fill: 500 }, encoder_hidden_states: { dims: [2, 77, 768] } });

const rows = [];
for (const latent of LATENTS) {
  const res = Object.fromEntries(variants.map((v) => [v.key, { runs: [], cpu: [], peak: 0, session: [] }]));
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? variants : [...variants].reverse();
    for (const v of order) {
      const o = runNodeChild(child, [JSON.stringify({ model: v.file, feeds: feeds(latent), repeat: REPEAT, warmup: WARMUP, threads: THREADS })]);
      res[v.key].runs.push(...o.runS);
      res[v.key].cpu.push(...o.cpuS);
      res[v.key].session.push(o.sessionS);
      res[v.key].peak = Math.max(res[v.key].peak, o.peakMiB);
    }
  }
  const ref = exported ? "export" : "plain";
  console.log(`\n${latent}×${latent} latents (${latent * 8}×${latent * 8} images), median of ${ROUNDS} interleaved rounds of ${REPEAT} steps after ${WARMUP} warm-up call(s):`);
  table(
    variants.map((v) => ({
      variant: v.name,
      nodes: v.nodes,
      "session s": median(res[v.key].session).toFixed(1),
      "step s": median(res[v.key].runs).toFixed(3),
      [`vs ${ref}`]: ratio(median(res[v.key].runs), median(res[ref].runs)),
      "fastest runs": ratio(Math.min(...res[v.key].runs), Math.min(...res[ref].runs)),
      "CPU s": `${median(res[v.key].cpu).toFixed(2)} (${ratio(median(res[v.key].cpu), median(res[ref].cpu))})`,
      "peak MiB": Math.round(res[v.key].peak),
      "memory": ratio(res[v.key].peak, res[ref].peak),
    })),
  );
  const figure = `U-Net b2 ${latent}²`;
  const s = res.sdc;
  const prev = exported ? null : previous(BENCH, figure);
  const row = {
    figure,
    unit: "s",
    sdc: median(s.runs),
    sdcMin: Math.min(...s.runs),
    sdcRuns: s.runs,
    sdcCpu: median(s.cpu),
    sdcPeakMiB: Math.round(s.peak),
    sdcNodes: variants.find((v) => v.key === "sdc").nodes,
    ...(res.plain ? { plainOps: median(res.plain.runs), plainOpsPeakMiB: Math.round(res.plain.peak), plainOpsCpu: median(res.plain.cpu) } : {}),
    ...(exported
      ? { baseline: median(res.export.runs), baselineMin: Math.min(...res.export.runs), baselineRuns: res.export.runs, baselineCpu: median(res.export.cpu), baselinePeakMiB: Math.round(res.export.peak), baselineKind: "torch.onnx.export", baselineNodes: variants[0].nodes }
      : { baseline: prev?.sdc ?? null, baselineMin: prev?.sdcMin ?? null, baselineCpu: prev?.sdcCpu ?? null, baselinePeakMiB: prev?.sdcPeakMiB ?? null, baselineKind: prev ? `sdc ${prev.commit ?? "?"} ${prev.date.slice(0, 10)}` : "none" }),
  };
  rows.push(row);
  record(BENCH, [row], { threads: THREADS, rounds: ROUNDS, repeat: REPEAT, spinning: process.env.SDC_BENCH_SPIN !== "0", baseline: exported ? `torch ${torch.versions.torch} export, diffusers ${torch.versions.diffusers}` : "previous sdc figures" });
}
