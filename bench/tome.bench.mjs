// Token merging (sample.tome): speed and image difference against the full computation.
//
// 1. The default model (models/emoji, DPM-Solver++ 20 steps, guidance 4): examples/emoji/evaluate.mjs
//    draws the held-out prompts (SDC_BENCH_EMOJI_LIMIT of them, default 48) without ToMe and with
//    each setting, same seed; the table gives PSNR of each image against the full computation's and
//    the adherence measures, and the U-Net's time per call (interleaved, fastest of 40). Needs the
//    emoji data set (SDC_BENCH_EMOJI_DATA, default data/emoji-32; make it with
//    examples/emoji/make-dataset.mjs); skipped with the reason when it is missing.
// 2. SD 1.5's U-Net (random sparse weights, as bench/deepcache.bench.mjs), CPU provider, fp32, batch 2:
//    one call of the plain U-Net and of each ToMe U-Net, interleaved in one process, the fastest of
//    SDC_BENCH_REPEAT each after a warm-up, at SDC_BENCH_LATENTS (default 32,64: 256² and 512²
//    images). Random weights say nothing about image quality, so there is no PSNR here.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import sharp from "sharp";
import { Builder } from "../dist/ir/builder.js";
import { sym } from "../dist/ir/dims.js";
import { writeOnnx } from "../dist/ir/onnx/writer.js";
import { dce } from "../dist/ir/passes/dce.js";
import { foldKnown } from "../dist/ir/passes/fold.js";
import { lowerComposites } from "../dist/ir/passes/lower.js";
import { verify } from "../dist/ir/verify.js";
import { UNet2DConditionConfigSchema } from "../dist/models/arch.js";
import { PRESETS } from "../dist/models/presets.js";
import { tomeLevels } from "../dist/models/tome.js";
import { buildUNet } from "../dist/models/unet.js";
import { tomeFeeds } from "../dist/runtime/tome.js";
import { machine, record, sparseZeros, table, tempDir } from "./util.mjs";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const LATENTS = (process.env.SDC_BENCH_LATENTS ?? "32,64").split(",").map(Number);
const REPEAT = Number(process.env.SDC_BENCH_REPEAT ?? 3);
const STEPS = 20;
const PARTS = (process.env.SDC_BENCH_PARTS ?? "emoji,sd15").split(",");
const SETTINGS = [
  { name: "ratio 0.3", ratio: 0.3, maxDownsample: 1 },
  { name: "ratio 0.5", ratio: 0.5, maxDownsample: 1 },
  { name: "ratio 0.7", ratio: 0.7, maxDownsample: 1 },
  { name: "ratio 0.5, max_downsample 2", ratio: 0.5, maxDownsample: 2 },
];

/** The plan's ToMe section for these options (what the compiler writes). */
function spec(unet, L, s) {
  const o = { ratio: s.ratio, maxDownsample: s.maxDownsample, sx: 2, sy: 2, latentHeight: L, latentWidth: L };
  return { ...o, levels: tomeLevels(unet, L, L, o) };
}

if (process.argv[2] === "--child") {
  // child: open every graph listed, then time REPEAT rounds of one call each, interleaved, after a
  // warm-up; the fastest call of each (the machine's load is not ours); JSON on stdout
  const ort = await import("onnxruntime-node");
  const [latentArg, graphsJson] = process.argv.slice(3);
  const L = Number(latentArg);
  const rnd = (n) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898) * 0.5);
  const base = {
    sample: new ort.Tensor("float32", rnd(2 * 4 * L * L), [2, 4, L, L]),
    timestep: new ort.Tensor("float32", new Float32Array([500, 500]), [2]),
    encoder_hidden_states: new ort.Tensor("float32", rnd(2 * 77 * 768), [2, 77, 768]),
  };
  const sessions = [];
  for (const g of JSON.parse(graphsJson)) {
    const s = await ort.InferenceSession.create(g.file, { executionProviders: ["cpu"], graphOptimizationLevel: "all", logSeverityLevel: 3 });
    const feeds = { ...base };
    if (g.tome)
      for (const [k, v] of Object.entries(tomeFeeds(g.tome, 0, { random: true }).next(2))) feeds[k] = new ort.Tensor("int64", BigInt64Array.from(v.data, (x) => BigInt(x)), v.dims);
    await s.run(feeds, ["out_sample"]);
    sessions.push({ s, feeds, times: [] });
  }
  for (let i = 0; i < REPEAT; i++)
    for (const x of sessions) {
      const t = performance.now();
      await x.s.run(x.feeds, ["out_sample"]);
      x.times.push((performance.now() - t) / 1000);
    }
  console.log(JSON.stringify(sessions.map((x) => ({ minS: Math.min(...x.times), runs: x.times }))));
  process.exit(0);
}

console.log(`Token merging (ToMe): speed and image difference against the full U-Net; ${machine()}`);
const work = tempDir("sdc-tome-bench-");
process.on("exit", () => fs.rmSync(work, { recursive: true, force: true }));
const recorded = [];

// ---------------------------------------------------------------------------------------------
// 1. the emoji model

async function pixels(file) {
  return new Uint8Array(await sharp(file).removeAlpha().raw().toBuffer());
}

function psnr(a, b) {
  let se = 0;
  for (let i = 0; i < a.length; i++) se += (a[i] - b[i]) ** 2;
  const mse = se / a.length;
  return mse === 0 ? Infinity : 10 * Math.log10((255 * 255) / mse);
}

if (PARTS.includes("emoji")) {
  const data = path.resolve(process.env.SDC_BENCH_EMOJI_DATA ?? path.join(REPO, "data", "emoji-32"));
  const limit = Number(process.env.SDC_BENCH_EMOJI_LIMIT ?? 48);
  if (!fs.existsSync(path.join(data, "held_out.jsonl"))) {
    console.log(`\nemoji model: skipped, no data set at ${data} (node examples/emoji/make-dataset.mjs data/emoji-32 --size 32, or SDC_BENCH_EMOJI_DATA)`);
  } else {
    const variants = [{ name: "no ToMe (baseline)", flag: null }, ...SETTINGS.map((s) => ({ name: s.name, flag: `${s.ratio},${s.maxDownsample}` }))];
    const rows = [];
    let base = null;
    for (const v of variants) {
      const out = path.join(work, `emoji-${rows.length}`);
      const args = [path.join(REPO, "examples", "emoji", "evaluate.mjs"), "--model", path.join(REPO, "models", "emoji"), "--data", data, "--out", out, "--limit", String(limit), "--steps", String(STEPS), "--guidance", "4", "--seed", "42", "--grid", "0", "--json"];
      if (v.flag) args.push("--tome", v.flag);
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
    // per-call U-Net times at one image's batch (2: uncond + cond), each variant's compiled U-Net,
    // interleaved, the fastest of 40 (the machine's load is not ours)
    const ort = await import("onnxruntime-node");
    const compiled = (i) => path.join(rows[i].out, "compiled", "emoji-evaluate");
    const open = (file) => ort.InferenceSession.create(file, { executionProviders: ["cpu"], graphOptimizationLevel: "all", logSeverityLevel: 3, intraOpNumThreads: 1 });
    const calls = [];
    for (const [i] of rows.entries()) {
      const plan = JSON.parse(fs.readFileSync(path.join(compiled(i), "plan.json"), "utf8"));
      const input = (n) => plan.graphs.unet.inputs.find((x) => x.name === n).shape;
      const L = 8;
      const width = input("encoder_hidden_states")[2];
      const rnd = (n) => Float32Array.from({ length: n }, (_, k) => Math.sin(k * 12.9898) * 0.5);
      const feeds = {
        sample: new ort.Tensor("float32", rnd(2 * 4 * L * L), [2, 4, L, L]),
        timestep: new ort.Tensor("float32", new Float32Array([500, 500]), [2]),
        encoder_hidden_states: new ort.Tensor("float32", rnd(2 * 77 * width), [2, 77, width]),
      };
      if (plan.tome)
        for (const [k, v] of Object.entries(tomeFeeds(plan.tome, 0, { random: true }).next(2))) feeds[k] = new ort.Tensor("int64", BigInt64Array.from(v.data, (x) => BigInt(x)), v.dims);
      calls.push({ s: await open(path.join(compiled(i), "unet", "model.onnx")), feeds, nodes: plan.graphs.unet.nodes });
    }
    const times = calls.map(() => []);
    for (let rep = 0; rep < 40; rep++)
      for (const [k, c] of calls.entries()) {
        const t = performance.now();
        await c.s.run(c.feeds, ["out_sample"]);
        times[k].push(performance.now() - t);
      }
    const best = times.map((t) => Math.min(...t));
    console.log(`\nemoji model (32² images, 8×8 latents: ToMe merges at 8×8 = 64 tokens, and 4×4 with max_downsample 2), ${limit} held-out prompts, DPM-Solver++ ${STEPS} steps, guidance 4, seed 42; U-Net ms/call: batch 2, 1 thread, fastest of 40 interleaved:`);
    const t = rows.map(({ v, report: r, psnrMean, psnrMin, identical }, i) => ({
      variant: v.name,
      "U-Net nodes": calls[i].nodes,
      "U-Net ms/call": best[i].toFixed(2),
      "vs no ToMe": `${(best[i] / best[0]).toFixed(2)}×`,
      "PSNR dB mean/min": v.flag ? `${psnrMean.toFixed(1)} / ${psnrMin.toFixed(1)}${identical ? ` (${identical} identical)` : ""}` : "—",
      colour: `${(100 * r.colour.accuracy).toFixed(1)}%`,
      "category 1-NN": `${(100 * r.category.nn1).toFixed(1)}%`,
      "Fréchet VAE": r.frechet_vae.model.toFixed(2),
    }));
    table(t);
    for (const [i, r] of rows.entries())
      if (i > 0) recorded.push({ figure: `emoji U-Net call, ToMe ${r.v.name}`, unit: "ms", sdc: best[i], baseline: best[0], baselineKind: "no ToMe, same run", psnrMean: r.psnrMean, psnrMin: r.psnrMin, colour: r.report.colour.accuracy, nn1: r.report.category.nn1 });
  }
}

// ---------------------------------------------------------------------------------------------
// 2. SD 1.5's U-Net

if (PARTS.includes("sd15")) {
  const cfg = UNet2DConditionConfigSchema.parse(PRESETS["sd1.5"].unet);
  const shapes = new Map();
  buildUNet(new Builder("unet", (key, shape) => (shapes.set(key, shape), { kind: "lazy", identity: key, produce: () => new Uint8Array(0) })), cfg);
  const wfile = path.join(work, "unet.safetensors");
  const { header, base: wbase } = sparseZeros(wfile, shapes);
  const write = (name, opts) => {
    const b = new Builder("unet", (key) => ({ kind: "file", file: wfile, offset: wbase + header[key].data_offsets[0], byteLength: header[key].data_offsets[1] - header[key].data_offsets[0], storageDtype: "float32" }));
    buildUNet(b, cfg, { sequence: sym("sequence"), ...opts });
    lowerComposites(b.graph, { ep: "cpu", training: false });
    foldKnown(b.graph);
    dce(b.graph);
    verify(b.graph, { final: true });
    const dir = path.join(work, name);
    writeOnnx(b.graph, { dir });
    return { file: path.join(dir, "model.onnx"), nodes: b.graph.nodes.length };
  };
  for (const L of LATENTS) {
    const graphs = [{ name: "plain U-Net (baseline)", ...write(`plain-${L}`, { height: sym("height"), width: sym("width") }), tome: null }];
    for (const s of SETTINGS) {
      const t = spec(cfg, L, s);
      graphs.push({ name: s.name, ...write(`tome-${L}-${graphs.length}`, { height: L, width: L, tome: t.levels }), tome: t });
    }
    const r = spawnSync(process.execPath, [process.argv[1], "--child", String(L), JSON.stringify(graphs.map((g) => ({ file: g.file, tome: g.tome })))], { encoding: "utf8", maxBuffer: 1 << 24 });
    if (r.status !== 0) {
      console.error(r.stderr);
      process.exit(1);
    }
    const res = JSON.parse(r.stdout.trim().split("\n").pop());
    const plain = res[0].minS;
    console.log(`\nSD 1.5 U-Net, ${L}×${L} latents (${L * 8}² images), batch 2, fastest of ${REPEAT} interleaved calls after a warm-up:`);
    table(
      graphs.map((g, i) => ({
        graph: g.name,
        nodes: g.nodes,
        "merged tokens per level": g.tome ? g.tome.levels.map((l) => `${l.merged} of ${l.tokens}`).join(", ") : "—",
        "s/call": `${res[i].minS.toFixed(3)} (${res[i].runs.map((x) => x.toFixed(2)).join(", ")})`,
        "vs plain": `${(res[i].minS / plain).toFixed(3)}×`,
        "speed-up": `${(plain / res[i].minS).toFixed(2)}×`,
      })),
    );
    for (const [i, g] of graphs.entries()) if (i > 0) recorded.push({ figure: `SD 1.5 U-Net b2 ${L}², ToMe ${g.name}`, unit: "s", sdc: res[i].minS, sdcRuns: res[i].runs, baseline: plain, baselineRuns: res[0].runs, baselineKind: "plain U-Net, same run" });
  }
}

if (recorded.length) record("tome", recorded, { repeat: REPEAT });
