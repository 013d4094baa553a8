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
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { sym } from "../dist/ir/dims.js";
import { tomeLevels } from "../dist/models/tome.js";
import { buildUNet } from "../dist/models/unet.js";
import { tomeFeeds } from "../dist/runtime/tome.js";
import { emojiData, evaluateEmoji, sd15Unet, runTimingChild, timeGraphsChild, unetFeeds, writeCpuGraph } from "./steps-util.mjs";
import { machine, record, table, tempDir } from "./util.mjs";

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

const int64 = (ort, v) => new ort.Tensor("int64", BigInt64Array.from(v.data, (x) => BigInt(x)), v.dims);
/** A U-Net's inputs: the plain ones, and its ToMe splits when it merges. */
const feedsWithTome = (ort, base, tome) => ({ ...base, ...(tome ? Object.fromEntries(Object.entries(tomeFeeds(tome, 0, { random: true }).next(2)).map(([k, v]) => [k, int64(ort, v)])) : {}) });

if (process.argv[2] === "--child") {
  // child: time one call of every graph listed, interleaved (steps-util.mjs)
  const [latentArg, graphsJson] = process.argv.slice(3);
  const L = Number(latentArg);
  await timeGraphsChild(JSON.parse(graphsJson), (g, ort) => feedsWithTome(ort, unetFeeds(ort, L), g.tome), REPEAT);
}

console.log(`Token merging (ToMe): speed and image difference against the full U-Net; ${machine()}`);
const work = tempDir("sdc-tome-bench-");
process.on("exit", () => fs.rmSync(work, { recursive: true, force: true }));
const recorded = [];

// ---------------------------------------------------------------------------------------------
// 1. the emoji model

const emoji = PARTS.includes("emoji") ? emojiData(REPO) : null;
if (emoji) {
  const { data, limit } = emoji;
  {
    const variants = [{ name: "no ToMe (baseline)", flag: null }, ...SETTINGS.map((s) => ({ name: s.name, flag: `${s.ratio},${s.maxDownsample}` }))];
    const rows = await evaluateEmoji({ repo: REPO, work, data, limit, steps: STEPS, variants: variants.map((v) => ({ ...v, args: v.flag ? ["--tome", v.flag] : [] })) });
    // per-call U-Net times at one image's batch (2: uncond + cond), each variant's compiled U-Net,
    // interleaved, the fastest of 40 (the machine's load is not ours)
    const ort = await import("onnxruntime-node");
    const compiled = (i) => path.join(rows[i].out, "compiled", "emoji-evaluate");
    const open = (file) => ort.InferenceSession.create(file, { executionProviders: ["cpu"], graphOptimizationLevel: "all", logSeverityLevel: 3, intraOpNumThreads: 1 });
    const calls = [];
    for (const [i] of rows.entries()) {
      const plan = JSON.parse(fs.readFileSync(path.join(compiled(i), "plan.json"), "utf8"));
      const input = (n) => plan.graphs.unet.inputs.find((x) => x.name === n).shape;
      const feeds = feedsWithTome(ort, unetFeeds(ort, 8, input("encoder_hidden_states")[2]), plan.tome);
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
  const { cfg, builder } = sd15Unet(work);
  const write = (name, opts) => {
    const b = builder();
    buildUNet(b, cfg, { sequence: sym("sequence"), ...opts });
    return writeCpuGraph(b, path.join(work, name));
  };
  for (const L of LATENTS) {
    const graphs = [{ name: "plain U-Net (baseline)", ...write(`plain-${L}`, { height: sym("height"), width: sym("width") }), tome: null }];
    for (const s of SETTINGS) {
      const t = spec(cfg, L, s);
      graphs.push({ name: s.name, ...write(`tome-${L}-${graphs.length}`, { height: L, width: L, tome: t.levels }), tome: t });
    }
    const res = runTimingChild(process.argv[1], L, graphs.map((g) => ({ file: g.file, tome: g.tome })));
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
