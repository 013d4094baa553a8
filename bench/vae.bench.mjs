// SD 1.5's VAE decoder and encoder on the CPU provider, fp32, batch 1, at 32² and 64² latents
// (256² and 512² images; SDC_BENCH_LATENTS=32,64), sdc's graphs against torch.onnx.export of the
// same diffusers 0.24 AutoencoderKL with the same seeded weights (bench/export-torch.py makes both
// when python3 imports torch and diffusers: see probePython in util.mjs), each run by
// onnxruntime-node with 2 threads (SDC_BENCH_THREADS) and optimisation level all. Without torch,
// sdc's graphs run on zero weights and the baseline is sdc's previous figure from the results file.
// Sessions run in their own processes, interleaved (baseline, sdc, then sdc, baseline, ...) for
// SDC_BENCH_ROUNDS rounds so a load from elsewhere hits both; each times SDC_BENCH_REPEAT runs after
// a warm-up, and a figure is the median of every run of its variant.
// sdc's graphs run as sdc's runtime runs them: without onnxruntime's CPU memory arena (the export with
// onnxruntime's defaults). The decoder also runs as sdc compiled it before the upsamplers were
// computed at the low resolution (Resize → 3×3 Conv, the `before` variant) and with the arena (the
// `arena` variant), in the same rounds; SDC_BENCH_BEFORE=0 leaves both out.
// Then tiling: the decoder at SDC_BENCH_TILED² latents (default 128: a 1024² image) with
// sample.vae_tiling's defaults for SD (512-pixel tiles, overlap 0.25) against the same decode untiled
// (SDC_BENCH_UNTILED=0 skips the untiled one: it needs several GiB), time and peak memory.
// SDC_BENCH_TILE sets the tile in pixels. SDC_BENCH_LATENTS= (empty), SDC_BENCH_KINDS=decoder (or
// encoder) and SDC_BENCH_TILED=0 leave parts out; SDC_BENCH_NODES=0 skips
// counting the nodes onnxruntime's optimiser leaves. Each call's CPU seconds are recorded beside its
// wall time: on a machine shared with other work, SDC_BENCH_SPIN=0 (idle onnxruntime threads sleep
// instead of spinning) makes them count the graph's own work, which the load disturbs far less.
import * as fs from "node:fs";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Builder } from "../dist/ir/builder.js";
import { sym } from "../dist/ir/dims.js";
import { AutoencoderKLConfigSchema } from "../dist/models/arch.js";
import { PRESETS } from "../dist/models/presets.js";
import { buildVaeDecoder, buildVaeEncoder } from "../dist/models/vae.js";
import { writeCpuGraph } from "./steps-util.mjs";
import { machine, median, onnxNodeCount, previous, probePython, ratio, record, runNodeChild, safetensorsHeader, sparseZeros, table, tempDir } from "./util.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const LATENTS = (process.env.SDC_BENCH_LATENTS ?? "32,64").split(",").filter(Boolean).map(Number);
const ROUNDS = Number(process.env.SDC_BENCH_ROUNDS ?? 2);
const REPEAT = Number(process.env.SDC_BENCH_REPEAT ?? 2);
const THREADS = Number(process.env.SDC_BENCH_THREADS ?? 2);
const TILED = Number(process.env.SDC_BENCH_TILED ?? 128);
const NODES = process.env.SDC_BENCH_NODES !== "0";
const KINDS = (process.env.SDC_BENCH_KINDS ?? "decoder,encoder").split(",").filter(Boolean);
const TILE = Number(process.env.SDC_BENCH_TILE ?? 512);
const UNTILED = process.env.SDC_BENCH_UNTILED !== "0";
const BENCH = "vae";
const child = path.join(here, "graph-child.mjs");

console.log(`SD 1.5 VAE on the CPU provider, fp32, batch 1, ${THREADS} threads; ${machine()}`);
const work = tempDir("sdc-vae-bench-");
// SDC_BENCH_KEEP=1 keeps the graphs (for a profile: graph-child.mjs with "profile")
if (process.env.SDC_BENCH_KEEP === "1") console.log(`graphs kept in ${work}`);
else process.on("exit", () => fs.rmSync(work, { recursive: true, force: true }));
const cfg = AutoencoderKLConfigSchema.parse(PRESETS["sd1.5"].vae);

// the baseline: torch.onnx.export of diffusers' AutoencoderKL, and its weights for sdc
const torch = probePython(path.join(here, "export-torch.py"), { threads: THREADS });
let weights;
let exported = null;
if (torch.ok) {
  // SDC_BENCH_EXPORT_DIR keeps the export between runs (it takes a minute)
  const dir = process.env.SDC_BENCH_EXPORT_DIR ?? path.join(work, "export");
  const files = ["vae.safetensors", "vae_decoder/model.onnx", "vae_encoder/model.onnx"].map((f) => path.join(dir, f));
  if (!files.every((f) => fs.existsSync(f))) {
    console.log(`exporting diffusers ${torch.versions.diffusers}'s AutoencoderKL with torch ${torch.versions.torch} (seeded random weights) ...`);
    const r = spawnSync(torch.python, [path.join(here, "export-torch.py"), "vae", dir, "0"], { env: torch.env, encoding: "utf8" });
    if (r.status !== 0) {
      console.error(r.stderr);
      process.exit(1);
    }
  }
  weights = files[0];
  exported = { decoder: files[1], encoder: files[2] };
  console.log(`baseline: torch.onnx.export (torch ${torch.versions.torch}, diffusers ${torch.versions.diffusers}, opset 17, diffusers' AttnProcessor: torch 1.13 has no fused attention to export)`);
} else {
  console.log(`no PyTorch baseline (${torch.reason}); sdc runs on zero weights and is compared with its previous figures`);
  const shapes = new Map();
  const lazy = (key, shape) => (shapes.set(key, shape), { kind: "lazy", identity: key, produce: () => new Uint8Array(0) });
  buildVaeDecoder(new Builder("d", lazy), cfg);
  buildVaeEncoder(new Builder("e", lazy), cfg);
  weights = path.join(work, "vae.safetensors");
  sparseZeros(weights, shapes);
}

// sdc's graphs, lowered for the CPU provider as `sdc compile` does with device cpu or auto
const { tensors, base } = safetensorsHeader(weights);
function sdcGraph(name, build, unfused = []) {
  const b = new Builder(name, (key) => {
    const t = tensors[key];
    if (!t) throw new Error(`${key} is not in ${weights}`);
    return { kind: "file", file: weights, offset: base + t.data_offsets[0], byteLength: t.data_offsets[1] - t.data_offsets[0], storageDtype: "float32" };
  });
  build(b, cfg, { height: sym("height"), width: sym("width") });
  return writeCpuGraph(b, path.join(work, name), unfused);
}
const sdc = { decoder: sdcGraph("vae_decoder", buildVaeDecoder), encoder: sdcGraph("vae_encoder", buildVaeEncoder) };
const BEFORE = process.env.SDC_BENCH_BEFORE !== "0";
const before = BEFORE ? sdcGraph("vae_decoder_before", buildVaeDecoder, ["Upsample2xConv"]) : null;
const nodes = { decoder: { sdc: sdc.decoder.nodes }, encoder: { sdc: sdc.encoder.nodes } };
if (exported) for (const k of ["decoder", "encoder"]) nodes[k].baseline = await onnxNodeCount(exported[k]);

const feedsOf = (kind, latent) => (kind === "decoder" ? { latent_sample: { dims: [1, 4, latent, latent] } } : { sample: { dims: [1, 3, latent * 8, latent * 8] } });
const job = (model, feeds, extra = {}) => JSON.stringify({ model, feeds, repeat: REPEAT, warmup: 1, threads: THREADS, ...extra });

// nodes after onnxruntime's optimisation (what its profiler sees), once per graph
for (const k of NODES ? KINDS : []) {
  const opt = (model) => runNodeChild(child, [job(model, feedsOf(k, 8), { repeat: 0, warmup: 0, optimizedModel: path.join(work, `opt-${k}.onnx`) })]);
  nodes[k].sdcOptimized = opt(sdc[k].file).optimizedNodes;
  if (exported) nodes[k].baselineOptimized = opt(exported[k]).optimizedNodes;
}

const extra = { threads: THREADS, rounds: ROUNDS, repeat: REPEAT, spinning: process.env.SDC_BENCH_SPIN !== "0", baseline: exported ? `torch ${torch.versions.torch} export, diffusers ${torch.versions.diffusers}` : "previous sdc figures" };
const rows = [];
for (const latent of LATENTS) {
  for (const k of KINDS) {
    const figure = `VAE ${k} ${latent}²`;
    const runs = { sdc: [], baseline: [], before: [], arena: [] };
    const cpu = { sdc: [], baseline: [], before: [], arena: [] };
    const peak = { sdc: 0, baseline: 0, before: 0, arena: 0 };
    const withBefore = k === "decoder" && before;
    for (let r = 0; r < ROUNDS; r++) {
      let order = !exported ? ["sdc"] : r % 2 === 0 ? ["baseline", "sdc"] : ["sdc", "baseline"];
      if (withBefore) order = r % 2 === 0 ? [...order, "before", "arena"] : ["arena", "before", ...order];
      for (const v of order) {
        const model = v === "sdc" || v === "arena" ? sdc[k].file : v === "before" ? before.file : exported[k];
        // as sdc's runtime opens the VAE: no CPU memory arena (src/runtime/graphs.ts)
        const sessionOptions = v === "sdc" || v === "before" ? { enableCpuMemArena: false } : {};
        const res = runNodeChild(child, [job(model, feedsOf(k, latent), { sessionOptions })]);
        runs[v].push(...res.runS);
        cpu[v].push(...res.cpuS);
        peak[v] = Math.max(peak[v], res.peakMiB);
      }
    }
    const prev = exported ? null : previous(BENCH, figure);
    const row = {
      figure,
      unit: "s",
      sdc: median(runs.sdc),
      sdcMin: Math.min(...runs.sdc),
      sdcRuns: runs.sdc,
      sdcCpu: median(cpu.sdc),
      sdcPeakMiB: Math.round(peak.sdc),
      sdcNodes: nodes[k].sdc,
      sdcOptimizedNodes: nodes[k].sdcOptimized,
      ...(exported
        ? { baseline: median(runs.baseline), baselineMin: Math.min(...runs.baseline), baselineRuns: runs.baseline, baselineCpu: median(cpu.baseline), baselinePeakMiB: Math.round(peak.baseline), baselineKind: "torch.onnx.export", baselineNodes: nodes[k].baseline, baselineOptimizedNodes: nodes[k].baselineOptimized }
        : { baseline: prev?.sdc ?? null, baselineMin: prev?.sdcMin ?? null, baselineCpu: prev?.sdcCpu ?? null, baselinePeakMiB: prev?.sdcPeakMiB ?? null, baselineKind: prev ? `sdc ${prev.commit ?? "?"} ${prev.date.slice(0, 10)}` : "none" }),
    };
    rows.push(row);
    // each figure is recorded as soon as it is measured
    record(BENCH, [row], extra);
    if (withBefore) {
      // the same graph with the upsamplers at the high resolution, against today's
      const b = { figure: `${figure}, upsampling at high resolution vs low`, unit: "s", sdc: median(runs.sdc), sdcMin: Math.min(...runs.sdc), sdcCpu: median(cpu.sdc), sdcPeakMiB: Math.round(peak.sdc), sdcNodes: nodes[k].sdc, baseline: median(runs.before), baselineMin: Math.min(...runs.before), baselineRuns: runs.before, baselineCpu: median(cpu.before), baselinePeakMiB: Math.round(peak.before), baselineKind: "sdc, Resize → 3×3 Conv", baselineNodes: before.nodes };
      rows.push(b);
      record(BENCH, [b], extra);
      const a = { figure: `${figure}, without the CPU memory arena vs with it`, unit: "s", sdc: median(runs.sdc), sdcMin: Math.min(...runs.sdc), sdcCpu: median(cpu.sdc), sdcPeakMiB: Math.round(peak.sdc), sdcNodes: nodes[k].sdc, baseline: median(runs.arena), baselineMin: Math.min(...runs.arena), baselineRuns: runs.arena, baselineCpu: median(cpu.arena), baselinePeakMiB: Math.round(peak.arena), baselineKind: "sdc with onnxruntime's CPU arena", baselineNodes: nodes[k].sdc };
      rows.push(a);
      record(BENCH, [a], extra);
    }
    console.log(`${figure}: sdc ${row.sdc.toFixed(3)} s, baseline ${row.baseline?.toFixed(3) ?? "–"} s (${ratio(row.sdc, row.baseline)}; fastest runs ${ratio(row.sdcMin, row.baselineMin)})`);
  }
}

// tiling: a large decode tiled (512-pixel tiles) and not
if (TILED > 0) {
  const feeds = feedsOf("decoder", TILED);
  const tiled = runNodeChild(child, [job(sdc.decoder.file, feeds, { repeat: 1, warmup: 0, sessionOptions: { enableCpuMemArena: false }, tiled: { tile: TILE, overlap: 0.25, scaleFactor: 8, dir: "decode", input: "latent_sample", output: "sample" } })]);
  const whole = UNTILED ? runNodeChild(child, [job(sdc.decoder.file, feeds, { repeat: 1, warmup: 0, sessionOptions: { enableCpuMemArena: false } })]) : null;
  rows.push({
    figure: `VAE decoder ${TILED}² tiled (${TILE}-px tiles)`,
    unit: "s",
    sdc: tiled.runS[0],
    sdcCpu: tiled.cpuS[0],
    baselineCpu: whole?.cpuS[0] ?? null,
    sdcPeakMiB: Math.round(tiled.peakMiB),
    baseline: whole?.runS[0] ?? null,
    baselinePeakMiB: whole ? Math.round(whole.peakMiB) : null,
    baselineKind: "sdc untiled",
  });
  record(BENCH, rows.slice(-1), extra);
}

console.log(`\nmedian seconds per call over ${ROUNDS} interleaved rounds of ${REPEAT} runs after a warm-up (and the ratio of each variant's fastest run, which a load from elsewhere disturbs least); peak RSS of each variant's process:`);
table(
  rows.map((r) => ({
    figure: r.figure,
    "sdc s": r.sdc.toFixed(3),
    "baseline s": r.baseline?.toFixed(3) ?? "–",
    baseline: r.baselineKind,
    "sdc/baseline": ratio(r.sdc, r.baseline),
    "fastest runs": ratio(r.sdcMin, r.baselineMin),
    "CPU s sdc / baseline": r.sdcCpu ? `${r.sdcCpu.toFixed(2)} / ${r.baselineCpu?.toFixed(2) ?? "–"} (${ratio(r.sdcCpu, r.baselineCpu)})` : "",
    "peak MiB sdc / baseline": `${r.sdcPeakMiB} / ${r.baselinePeakMiB ?? "–"}`,
    "memory ratio": ratio(r.sdcPeakMiB, r.baselinePeakMiB),
    "nodes (after ORT opt.)": r.sdcNodes ? `${r.sdcNodes} (${r.sdcOptimizedNodes ?? "–"}) / ${r.baselineNodes ?? "–"} (${r.baselineOptimizedNodes ?? "–"})` : "",
  })),
);
