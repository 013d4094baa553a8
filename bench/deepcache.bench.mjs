// DeepCache (sample.deepcache): speed and image difference against the full computation.
//
// 1. The default model (models/emoji, pipelines/txt2img.yaml's sampler: DPM-Solver++ 20 steps,
//    guidance 4): examples/emoji/evaluate.mjs draws the held-out prompts (SDC_BENCH_EMOJI_LIMIT of
//    them, default 48) with the full U-Net and with each DeepCache setting, same seed; the table
//    gives seconds per image (the whole run and the denoising loop), PSNR of each image against the
//    full computation's, and the adherence measures. Needs the emoji data set
//    (SDC_BENCH_EMOJI_DATA, default data/emoji-32; make it with examples/emoji/make-dataset.mjs);
//    skipped with the reason when it is missing.
// 2. SD 1.5's U-Net (random sparse weights, as bench/unet.bench.mjs), CPU provider, fp32, batch 2:
//    one call of the full U-Net (with the DeepCache feature output: the same nodes as the plain one)
//    and of each shallow U-Net, interleaved in one process, the fastest of SDC_BENCH_REPEAT each
//    (SDC_BENCH_LATENTS, default 32; 64 for 512² images). The U-Net seconds per 20-step image follow from those per-call times. Random weights
//    say nothing about image quality, so there is no PSNR here.
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { sym } from "../dist/ir/dims.js";
import { buildUNet, deepCacheCut } from "../dist/models/unet.js";
import { emojiData, evaluateEmoji, sd15Unet, runTimingChild, timeGraphsChild, unetFeeds, writeCpuGraph } from "./steps-util.mjs";
import { machine, table, tempDir } from "./util.mjs";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const LATENTS = (process.env.SDC_BENCH_LATENTS ?? "32").split(",").map(Number);
const REPEAT = Number(process.env.SDC_BENCH_REPEAT ?? 3);
const STEPS = 20;
const PARTS = (process.env.SDC_BENCH_PARTS ?? "emoji,sd15").split(",");

if (process.argv[2] === "--child") {
  // child: time one call of every graph listed, interleaved (steps-util.mjs)
  const [latentArg, graphsJson] = process.argv.slice(3);
  const L = Number(latentArg);
  await timeGraphsChild(JSON.parse(graphsJson), (g, ort) => {
    const base = unetFeeds(ort, L);
    return g.feature ? { ...base, deepcache_feature: new ort.Tensor("float32", Float32Array.from({ length: g.feature.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i * 12.9898) * 0.5), g.feature) } : base;
  }, REPEAT);
}

console.log(`DeepCache: speed and image difference against the full U-Net; ${machine()}`);
const work = tempDir("sdc-deepcache-bench-");
process.on("exit", () => fs.rmSync(work, { recursive: true, force: true }));
const fullCalls = (interval) => Math.ceil(STEPS / interval);

// ---------------------------------------------------------------------------------------------
// 1. the emoji model

const emoji = PARTS.includes("emoji") ? emojiData(REPO) : null;
if (emoji) {
  const { data, limit } = emoji;
  {
    const variants = [
      { name: "full U-Net (baseline)", flag: null },
      { name: "interval 2, branch 0", flag: "2,0" },
      { name: "interval 3, branch 0", flag: "3,0" },
      { name: "interval 5, branch 0", flag: "5,0" },
      { name: "interval 3, branch 1", flag: "3,1" },
    ];
    const rows = await evaluateEmoji({ repo: REPO, work, data, limit, steps: STEPS, variants: variants.map((v) => ({ ...v, args: v.flag ? ["--deepcache", v.flag] : [] })) });
    // per-call U-Net times, one image's batch (2: uncond + cond), the graphs of each variant's
    // compiled folder, interleaved and the minimum taken (the machine's load is not ours)
    const ort = await import("onnxruntime-node");
    const compiled = (i) => path.join(work, `emoji-${i}`, "compiled", "emoji-evaluate");
    const open = (file) => ort.InferenceSession.create(file, { executionProviders: ["cpu"], graphOptimizationLevel: "all", logSeverityLevel: 3, intraOpNumThreads: 1 });
    const plan0 = JSON.parse(fs.readFileSync(path.join(compiled(0), "plan.json"), "utf8"));
    const width = plan0.graphs.unet.inputs.find((i) => i.name === "encoder_hidden_states").shape[2];
    const L = 8;
    const rnd = (n) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898) * 0.5);
    const feeds = {
      sample: new ort.Tensor("float32", rnd(2 * 4 * L * L), [2, 4, L, L]),
      timestep: new ort.Tensor("float32", new Float32Array([500, 500]), [2]),
      encoder_hidden_states: new ort.Tensor("float32", rnd(2 * 77 * width), [2, 77, width]),
    };
    const calls = [{ name: "full U-Net", s: await open(path.join(compiled(0), "unet", "model.onnx")), feeds, fetch: ["out_sample"] }];
    for (let i = 1; i < rows.length; i++) {
      const full = await open(path.join(compiled(i), "unet", "model.onnx"));
      const feature = (await full.run(feeds)).deepcache_feature;
      rows[i].fullCall = calls.length;
      calls.push({ name: `full + feature, ${rows[i].v.name}`, s: full, feeds, fetch: ["out_sample", "deepcache_feature"] });
      rows[i].shallowCall = calls.length;
      calls.push({ name: `shallow, ${rows[i].v.name}`, s: await open(path.join(compiled(i), "unet_shallow", "model.onnx")), feeds: { ...feeds, deepcache_feature: feature }, fetch: ["out_sample"] });
    }
    const times = calls.map(() => []);
    for (let rep = 0; rep < 40; rep++)
      for (const [k, c] of calls.entries()) {
        const t = performance.now();
        await c.s.run(c.feeds, c.fetch);
        times[k].push(performance.now() - t);
      }
    const best = times.map((t) => Math.min(...t));
    for (const [i, r] of rows.entries()) {
      const n = r.report.sampler.deepcache ? r.report.sampler.deepcache.calls : { full: STEPS, shallow: 0 };
      r.unetMs = i === 0 ? STEPS * best[0] : n.full * best[r.fullCall] + n.shallow * best[r.shallowCall];
    }
    console.log(`
emoji model, one U-Net call at batch 2 (one image with guidance), 8×8 latents, 1 thread: fastest of 40 interleaved calls`);
    table(calls.map((c, k) => ({ graph: c.name, "ms/call": best[k].toFixed(2), "vs full": `${(best[k] / best[0]).toFixed(2)}×` })));

    const b = rows[0].report;
    console.log(`\nemoji model, ${limit} held-out prompts (s/image and loop s/image: the evaluation's own run, all prompts in one batch, on a machine shared with other work; U-Net ms/image: ${STEPS} calls at batch 2 from the per-call minimums above), DPM-Solver++ ${STEPS} steps, guidance 4, seed 42:`);
    table(
      rows.map(({ v, report: r, psnrMean, psnrMin, identical }) => ({
        variant: v.name,
        "U-Net calls full/shallow": r.sampler.deepcache ? `${r.sampler.deepcache.calls.full}/${r.sampler.deepcache.calls.shallow}` : `${STEPS}/0`,
        "s/image": r.seconds_per_image.toFixed(4),
        "loop s/image": r.denoise_seconds_per_image.toFixed(4),
        "loop speed-up": `${(b.denoise_seconds_per_image / r.denoise_seconds_per_image).toFixed(2)}×`,
        "U-Net ms/image (batch 2)": rows.find((x) => x.report === r).unetMs.toFixed(1),
        "U-Net speed-up": `${(rows[0].unetMs / rows.find((x) => x.report === r).unetMs).toFixed(2)}×`,
        "PSNR dB mean/min": v.flag ? `${psnrMean.toFixed(1)} / ${psnrMin.toFixed(1)}${identical ? ` (${identical} identical)` : ""}` : "—",
        colour: `${(100 * r.colour.accuracy).toFixed(1)}%`,
        "category 1-NN": `${(100 * r.category.nn1).toFixed(1)}%`,
        "Fréchet VAE": r.frechet_vae.model.toFixed(2),
      })),
    );
  }
}

// ---------------------------------------------------------------------------------------------
// 2. SD 1.5's U-Net

if (PARTS.includes("sd15")) {
  const { cfg, builder } = sd15Unet(work);

  const cuts = [
    { name: "branch 0", cut: deepCacheCut(cfg, 0) },
    { name: "branch 0, layer 0", cut: deepCacheCut(cfg, 0, 0) },
    { name: "branch 1", cut: deepCacheCut(cfg, 1) },
  ];
  const graphs = [{ name: "full U-Net (baseline)", dc: undefined }, { name: "full U-Net + feature output (branch 0)", dc: { mode: "full", cut: cuts[0].cut } }, ...cuts.map((c) => ({ name: `shallow, ${c.name}`, dc: { mode: "shallow", cut: c.cut }, cutName: c.name }))];
  for (const g of graphs) {
    const b = builder();
    buildUNet(b, cfg, { height: sym("height"), width: sym("width"), sequence: sym("sequence"), ...(g.dc ? { deepcache: g.dc } : {}) });
    g.dir = path.join(work, `sd15-${graphs.indexOf(g)}`);
    const w = writeCpuGraph(b, g.dir);
    g.nodes = w.nodes;
    g.params = w.params;
  }
  for (const L of LATENTS) {
    // the plain U-Net runs the same nodes as the one with the feature output (the node counts
    // above), so one full session serves as both: two SD 1.5 sessions would not fit beside other work
    const timed = graphs.slice(1);
    const specs = timed.map((g) => {
      // the cached feature has the spatial size of the skip it meets: the latent size halved per downsampler before it
      let feature = null;
      if (g.dc?.mode === "shallow") {
        const level = Math.floor((g.dc.cut.skips - 1) / 3); // SD 1.5: 3 skips per down level (2 layers + downsampler), conv_in first
        const side = Math.ceil(L / 2 ** level);
        feature = [2, g.dc.cut.channels, side, side];
      }
      return { file: path.join(g.dir, "model.onnx"), feature };
    });
    const res = runTimingChild(process.argv[1], L, specs);
    const rows = timed.map((g, i) => ({ g, stepS: res[i].minS, runs: res[i].runs }));
    const withFeature = rows[0].stepS;
    const plain = withFeature;
    console.log(`\nSD 1.5 U-Net, ${L}×${L} latents (${L * 8}² images), batch 2, fastest of ${REPEAT} interleaved calls after a warm-up:`);
    table([
      { graph: graphs[0].name.replace(" (baseline)", ""), nodes: graphs[0].nodes, "M params": (graphs[0].params / 1e6).toFixed(1), "s/call": "(same nodes as below)", "vs full": "" },
      ...rows.map((r) => ({ graph: r.g.name, nodes: r.g.nodes, "M params": (r.g.params / 1e6).toFixed(1), "s/call": `${r.stepS.toFixed(3)} (${r.runs.map((x) => x.toFixed(2)).join(", ")})`, "vs full": `${(r.stepS / plain).toFixed(3)}×` })),
    ]);
    console.log(`\nU-Net seconds per ${STEPS}-step image from those per-call times (full calls ⌈${STEPS}/N⌉ with the feature output, the rest shallow):`);
    const est = [];
    for (const r of rows.slice(1))
      for (const n of [2, 3, 5]) {
        const s = fullCalls(n) * withFeature + (STEPS - fullCalls(n)) * r.stepS;
        est.push({ setting: `interval ${n}, ${r.g.cutName}`, "U-Net s/image": s.toFixed(2), "full U-Net s/image": (STEPS * plain).toFixed(2), "speed-up": `${((STEPS * plain) / s).toFixed(2)}×` });
      }
    table(est);
  }
}
