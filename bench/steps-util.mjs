// Helpers the step-saving benchmarks share (deepcache.bench.mjs, tome.bench.mjs): the emoji model's
// held-out evaluation of several variants with PSNR against the first, interleaved U-Net timing in
// a child process, and writing a graph lowered as `sdc compile` does for the CPU.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { Builder } from "../dist/ir/builder.js";
import { writeOnnx } from "../dist/ir/onnx/writer.js";
import { dce } from "../dist/ir/passes/dce.js";
import { foldKnown } from "../dist/ir/passes/fold.js";
import { lowerComposites } from "../dist/ir/passes/lower.js";
import { verify } from "../dist/ir/verify.js";
import { UNet2DConditionConfigSchema } from "../dist/models/arch.js";
import { PRESETS } from "../dist/models/presets.js";
import { buildUNet } from "../dist/models/unet.js";
import { sparseZeros } from "./util.mjs";

async function pixels(file) {
  return new Uint8Array(await sharp(file).removeAlpha().raw().toBuffer());
}

export function psnr(a, b) {
  let se = 0;
  for (let i = 0; i < a.length; i++) se += (a[i] - b[i]) ** 2;
  const mse = se / a.length;
  return mse === 0 ? Infinity : 10 * Math.log10((255 * 255) / mse);
}

/** The emoji data set and prompt count the evaluation uses (SDC_BENCH_EMOJI_DATA, SDC_BENCH_EMOJI_LIMIT), or null (said why) without it. */
export function emojiData(repo) {
  const data = path.resolve(process.env.SDC_BENCH_EMOJI_DATA ?? path.join(repo, "data", "emoji-32"));
  if (!fs.existsSync(path.join(data, "held_out.jsonl"))) {
    console.log(`\nemoji model: skipped, no data set at ${data} (node examples/emoji/make-dataset.mjs data/emoji-32 --size 32, or SDC_BENCH_EMOJI_DATA)`);
    return null;
  }
  return { data, limit: Number(process.env.SDC_BENCH_EMOJI_LIMIT ?? 48) };
}

/**
 * examples/emoji/evaluate.mjs on the held-out prompts for each variant (`args`: its extra flags),
 * same seed; each row gets the evaluation's report, its output folder and the PSNR of its images
 * against the first variant's (mean over the images that differ, worst, and how many are identical).
 */
export async function evaluateEmoji({ repo, work, data, limit, steps, variants }) {
  const rows = [];
  let base = null;
  for (const v of variants) {
    const out = path.join(work, `emoji-${rows.length}`);
    const args = [path.join(repo, "examples", "emoji", "evaluate.mjs"), "--model", path.join(repo, "models", "emoji"), "--data", data, "--out", out, "--limit", String(limit), "--steps", String(steps), "--guidance", "4", "--seed", "42", "--grid", "0", "--json", ...v.args];
    const r = spawnSync(process.execPath, args, { encoding: "utf8", maxBuffer: 1 << 26 });
    if (r.status !== 0) {
      console.error(r.stderr);
      process.exit(1);
    }
    const report = JSON.parse(r.stdout.trim().split("\n").pop());
    const files = fs.readdirSync(path.join(out, "samples")).filter((f) => f.endsWith(".png")).sort().map((f) => path.join(out, "samples", f));
    const images = await Promise.all(files.map(pixels));
    base ??= images;
    const p = images.map((img, i) => psnr(img, base[i]));
    const finite = p.filter(Number.isFinite);
    rows.push({ v, out, report, psnrMean: finite.length ? finite.reduce((a, b) => a + b, 0) / finite.length : Infinity, psnrMin: Math.min(...p), identical: p.length - finite.length });
  }
  return rows;
}

/**
 * The child side of an interleaved timing: open every graph listed (`{ file, ... }`), one warm-up
 * call each, then `repeat` rounds of one call each; prints the fastest call of each and all of them
 * as a JSON line. `feedsOf(graph)` gives a graph's inputs (ort tensors).
 */
export async function timeGraphsChild(graphs, feedsOf, repeat) {
  const ort = await import("onnxruntime-node");
  const sessions = [];
  for (const g of graphs) {
    const s = await ort.InferenceSession.create(g.file, { executionProviders: ["cpu"], graphOptimizationLevel: "all", logSeverityLevel: 3 });
    const feeds = feedsOf(g, ort);
    await s.run(feeds, ["out_sample"]);
    sessions.push({ s, feeds, times: [] });
  }
  for (let i = 0; i < repeat; i++)
    for (const x of sessions) {
      const t = performance.now();
      await x.s.run(x.feeds, ["out_sample"]);
      x.times.push((performance.now() - t) / 1000);
    }
  console.log(JSON.stringify(sessions.map((x) => ({ minS: Math.min(...x.times), runs: x.times }))));
  process.exit(0);
}

/** Run this script's child mode on `graphs` at latent size L; the parsed result. */
export function runTimingChild(script, L, graphs) {
  const r = spawnSync(process.execPath, [script, "--child", String(L), JSON.stringify(graphs)], { encoding: "utf8", maxBuffer: 1 << 24 });
  if (r.status !== 0) {
    console.error(r.stderr);
    process.exit(1);
  }
  return JSON.parse(r.stdout.trim().split("\n").pop());
}

/** A built graph lowered for the CPU provider, folded, checked and written to `dir` (as `sdc compile` does). */
export function writeCpuGraph(b, dir, unfused = []) {
  lowerComposites(b.graph, { ep: "cpu", training: false, unfused });
  foldKnown(b.graph);
  dce(b.graph);
  verify(b.graph, { final: true });
  writeOnnx(b.graph, { dir });
  return { file: path.join(dir, "model.onnx"), nodes: b.graph.nodes.length, params: b.graph.paramCount() };
}

/** SD 1.5 U-Net inputs at batch 2 and latent size L, deterministic values. */
export function unetFeeds(ort, L, width = 768) {
  const rnd = (n) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898) * 0.5);
  return {
    sample: new ort.Tensor("float32", rnd(2 * 4 * L * L), [2, 4, L, L]),
    timestep: new ort.Tensor("float32", new Float32Array([500, 500]), [2]),
    encoder_hidden_states: new ort.Tensor("float32", rnd(2 * 77 * width), [2, 77, width]),
  };
}

/** SD 1.5's U-Net config, and builders whose weights are sparse zeros in a file under `work` (kernels do not care about values). */
export function sd15Unet(work) {
  const cfg = UNet2DConditionConfigSchema.parse(PRESETS["sd1.5"].unet);
  const shapes = new Map();
  buildUNet(new Builder("unet", (key, shape) => (shapes.set(key, shape), { kind: "lazy", identity: key, produce: () => new Uint8Array(0) })), cfg);
  const wfile = path.join(work, "unet.safetensors");
  const { header, base } = sparseZeros(wfile, shapes);
  const builder = () => new Builder("unet", (key) => ({ kind: "file", file: wfile, offset: base + header[key].data_offsets[0], byteLength: header[key].data_offsets[1] - header[key].data_offsets[0], storageDtype: "float32" }));
  return { cfg, builder };
}
