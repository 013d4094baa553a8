#!/usr/bin/env node
/**
 * Measures the emoji model on the held-out prompts that make-dataset.mjs set aside (phrasings no
 * training caption uses): it draws one image per prompt with sdc, then reports
 *
 *  - colour adherence: the prompted colour against the dominant non-white colour of the image
 *    (examples/emoji/colour.mjs, the binning that labelled the training images), beside the same
 *    measurement on the real emoji (the measurement's ceiling) and the majority-colour baseline;
 *  - category adherence: the prompted emoji's category against a k-nearest-neighbour classifier
 *    over the training images in pixel space (1-NN and 5-NN), beside the classifier's leave-one-out
 *    accuracy on the real images (ceiling) and the majority-category baseline; and how often the
 *    prompted emoji itself is the image's nearest (top-1) or among its 5 nearest training images;
 *  - a Fréchet distance to the training set on the model's own VAE encoder features (the posterior
 *    means, 4×8×8 = 256 numbers an image), beside the distance of as many real held-out images (the
 *    floor at this sample size);
 *  - seconds per image, and a captioned grid of samples spread over the list (4× nearest-neighbour upscale).
 *
 *   node examples/emoji/evaluate.mjs [--model models/emoji] [--data data/emoji-32] [--out out/emoji-eval]
 *        [--limit N] [--scheduler dpm-solver++] [--steps 25] [--guidance 4] [--seed 0] [--grid 32] [--json]
 *        [--deepcache INTERVAL[,BRANCH[,LAYER]]]   (sample.deepcache: reuse the U-Net's deep features)
 *        [--tome RATIO[,MAX_DOWNSAMPLE]]           (sample.tome: token merging in self-attention)
 *
 * Writes OUT/samples/*.png, OUT/grid.png and OUT/report.json. Needs the built library (`npm run build`).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { compile, loadPipeline, openPlanGraphs, readPlan, runPlan, runSettings, saveValidationGrid } from "../../dist/index.js";
import { dominantNonWhiteColour } from "./colour.mjs";

// ---------------------------------------------------------------------------------------------
// Options

function usage(msg) {
  if (msg) console.error(`evaluate: ${msg}`);
  console.error("usage: node examples/emoji/evaluate.mjs [--model DIR] [--data DIR] [--out DIR] [--limit N] [--scheduler NAME] [--steps N] [--guidance G] [--seed S] [--grid N] [--json] [--deepcache INTERVAL[,BRANCH[,LAYER]]] [--tome RATIO[,MAX_DOWNSAMPLE]]");
  process.exit(2);
}

function parseArgs(argv) {
  const o = { model: "models/emoji", data: "data/emoji-32", out: "out/emoji-eval", limit: Infinity, scheduler: "dpm-solver++", steps: 25, guidance: 4, seed: 0, grid: 32, json: false, deepcache: null, tome: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => (i + 1 < argv.length ? argv[++i] : usage(`${a} needs a value`));
    const num = (min) => {
      const v = Number(value());
      if (!Number.isFinite(v) || v < min) usage(`${a} takes a number ≥ ${min}`);
      return v;
    };
    if (a === "--model") o.model = value();
    else if (a === "--data") o.data = value();
    else if (a === "--out") o.out = value();
    else if (a === "--limit") o.limit = num(1);
    else if (a === "--scheduler") o.scheduler = value();
    else if (a === "--steps") o.steps = num(1);
    else if (a === "--guidance") o.guidance = num(0);
    else if (a === "--seed") o.seed = num(0);
    else if (a === "--grid") o.grid = num(0);
    else if (a === "--json") o.json = true;
    else if (a === "--deepcache") {
      const [interval, branch = 0, layer] = value().split(",").map(Number);
      if (![interval, branch, layer ?? 0].every((x) => Number.isInteger(x) && x >= 0) || interval < 1) usage("--deepcache takes INTERVAL[,BRANCH[,LAYER]], whole numbers, interval ≥ 1");
      o.deepcache = { interval, branch, layer };
    } else if (a === "--tome") {
      const [ratio, maxDownsample = 1] = value().split(",").map(Number);
      if (!(ratio > 0 && ratio < 1) || ![1, 2, 4, 8].includes(maxDownsample)) usage("--tome takes RATIO[,MAX_DOWNSAMPLE]: a ratio in (0, 1) and 1, 2, 4 or 8");
      o.tome = { ratio, maxDownsample };
    }
    else usage(`unknown argument ${a}`);
  }
  for (const [flag, dir, hint] of [
    ["--model", o.model, "make it with examples/emoji/ship.mjs, or name stage 2's output folder"],
    ["--data", o.data, "make it with: node examples/emoji/make-dataset.mjs data/emoji-32 --size 32"],
  ])
    if (!fs.existsSync(dir)) usage(`${flag} ${dir} does not exist: ${hint}`);
  return o;
}

const readJsonl = (file) =>
  fs
    .readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));

async function rgb(file) {
  const { data, info } = await sharp(file).flatten({ background: "#ffffff" }).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data), width: info.width, height: info.height };
}

// ---------------------------------------------------------------------------------------------
// Statistics

/** Symmetric eigen-decomposition by cyclic Jacobi rotations (a: n×n, row-major, float64): {values, vectors (column k = vector k)}. */
function symmetricEigen(a, n) {
  const m = Float64Array.from(a);
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += m[p * n + q] ** 2;
    if (off < 1e-22) break;
    for (let p = 0; p < n; p++)
      for (let q = p + 1; q < n; q++) {
        const apq = m[p * n + q];
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (m[q * n + q] - m[p * n + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1), s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = m[k * n + p], akq = m[k * n + q];
          m[k * n + p] = c * akp - s * akq;
          m[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = m[p * n + k], aqk = m[q * n + k];
          m[p * n + k] = c * apk - s * aqk;
          m[q * n + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p], vkq = v[k * n + q];
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
  }
  return { values: Array.from({ length: n }, (_, i) => m[i * n + i]), vectors: v };
}

function meanCov(rows, d) {
  const n = rows.length;
  const mu = new Float64Array(d);
  for (const r of rows) for (let i = 0; i < d; i++) mu[i] += r[i] / n;
  const cov = new Float64Array(d * d);
  const x = new Float64Array(d);
  for (const r of rows) {
    for (let i = 0; i < d; i++) x[i] = r[i] - mu[i];
    for (let i = 0; i < d; i++) {
      const xi = x[i] / (n - 1);
      for (let j = i; j < d; j++) cov[i * d + j] += xi * x[j];
    }
  }
  for (let i = 0; i < d; i++) for (let j = 0; j < i; j++) cov[i * d + j] = cov[j * d + i];
  return { mu, cov };
}

function matmul(a, b, n) {
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let k = 0; k < n; k++) {
      const aik = a[i * n + k];
      if (aik === 0) continue;
      for (let j = 0; j < n; j++) c[i * n + j] += aik * b[k * n + j];
    }
  return c;
}

/** Fréchet distance between two Gaussians: |μ1−μ2|² + tr(Σ1 + Σ2 − 2 (Σ1^½ Σ2 Σ1^½)^½). */
function frechet(a, b, d) {
  let dm = 0;
  for (let i = 0; i < d; i++) dm += (a.mu[i] - b.mu[i]) ** 2;
  const { values, vectors } = symmetricEigen(a.cov, d);
  // Σ1^½ = V diag(√λ) Vᵀ
  const sq = new Float64Array(d * d);
  for (let i = 0; i < d; i++)
    for (let j = 0; j < d; j++) {
      let s = 0;
      for (let k = 0; k < d; k++) s += vectors[i * d + k] * Math.sqrt(Math.max(values[k], 0)) * vectors[j * d + k];
      sq[i * d + j] = s;
    }
  const inner = matmul(matmul(sq, b.cov, d), sq, d);
  for (let i = 0; i < d; i++) for (let j = 0; j < i; j++) inner[i * d + j] = inner[j * d + i] = (inner[i * d + j] + inner[j * d + i]) / 2;
  const traceSqrt = symmetricEigen(inner, d).values.reduce((s, l) => s + Math.sqrt(Math.max(l, 0)), 0);
  let trace = 0;
  for (let i = 0; i < d; i++) trace += a.cov[i * d + i] + b.cov[i * d + i];
  return dm + trace - 2 * traceSqrt;
}

/** Squared L2 distances from one image to every training image (pixels in [0, 1]). */
function distances(x, train) {
  return train.map((t) => {
    let s = 0;
    for (let i = 0; i < x.length; i++) {
      const d = (x[i] - t.pixels[i]) / 255;
      s += d * d;
    }
    return s;
  });
}

/** 1-NN and k-NN (majority, ties to the nearest) category, and the rank of `target` among the neighbours. */
function classify(x, train, k, exclude) {
  const d = distances(x, train);
  const order = d.map((_, i) => i).filter((i) => train[i].file_name !== exclude).sort((i, j) => d[i] - d[j]);
  const votes = new Map();
  for (const i of order.slice(0, k)) votes.set(train[i].category, (votes.get(train[i].category) ?? 0) + 1);
  let best, bestN = 0;
  for (const i of order.slice(0, k)) {
    const n = votes.get(train[i].category);
    if (n > bestN) [best, bestN] = [train[i].category, n];
  }
  return { nn1: train[order[0]].category, knn: best, order };
}

const pct = (x) => `${(100 * x).toFixed(1)}%`;

function majority(labels) {
  const counts = new Map();
  for (const l of labels) counts.set(l, (counts.get(l) ?? 0) + 1);
  let best, bestN = 0;
  for (const [l, n] of counts) if (n > bestN) [best, bestN] = [l, n];
  return { label: best, rate: bestN / labels.length };
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const out = path.resolve(o.out);
  fs.mkdirSync(out, { recursive: true });
  const held = readJsonl(path.join(o.data, "held_out.jsonl")).slice(0, o.limit);
  const meta = readJsonl(path.join(o.data, "metadata.jsonl"));
  const say = (line) => (o.json ? process.stderr : process.stdout).write(`${line}\n`);

  // 1. draw one image per held-out prompt with sdc
  fs.writeFileSync(path.join(out, "prompts.txt"), held.map((h) => h.prompt).join("\n") + "\n");
  const samplesDir = path.join(out, "samples");
  fs.rmSync(samplesDir, { recursive: true, force: true });
  const pipelineFile = path.join(out, "evaluate.yaml");
  fs.writeFileSync(
    pipelineFile,
    [
      "version: 1",
      "name: emoji-evaluate",
      "model:",
      `  from: ${JSON.stringify(path.resolve(o.model))}`,
      "scheduler:",
      `  type: ${o.scheduler}`,
      `  steps: ${o.steps}`,
      "guidance:",
      `  scale: ${o.guidance}`,
      '  negative_prompt: ""',
      "sample:",
      "  prompts_file: prompts.txt",
      `  seed: ${o.seed}`,
      ...(o.deepcache ? ["  deepcache:", `    interval: ${o.deepcache.interval}`, `    branch: ${o.deepcache.branch}`, ...(o.deepcache.layer !== undefined ? [`    layer: ${o.deepcache.layer}`] : [])] : []),
      ...(o.tome ? ["  tome:", `    ratio: ${o.tome.ratio}`, `    max_downsample: ${o.tome.maxDownsample}`] : []),
      "output:",
      "  dir: samples",
      "runtime:",
      "  device: cpu",
      "",
    ].join("\n"),
  );
  const p = await loadPipeline(pipelineFile, { cwd: out });
  const c = await compile(p, { cwd: out });
  say(`drawing ${held.length} images (${o.scheduler}, ${o.steps} steps, guidance ${o.guidance}) …`);
  const r = await runPlan(c.dir, runSettings(p), { progress: process.stderr.isTTY && !o.json });
  const files = r.outputs.filter((f) => f.endsWith(".png") && path.dirname(f) === samplesDir);
  if (files.length !== held.length) throw new Error(`expected ${held.length} images, got ${files.length}`);
  const secondsPerImage = r.seconds / held.length;
  say(`${held.length} images in ${r.seconds.toFixed(1)} s (${secondsPerImage.toFixed(3)} s an image, ${r.ep})`);

  const samples = await Promise.all(files.map(rgb));
  const train = await Promise.all(meta.map(async (m) => ({ file_name: m.file_name, category: m.category, pixels: (await rgb(path.join(o.data, m.file_name))).data })));
  const byFile = new Map(train.map((t) => [t.file_name, t]));

  // 2. colour adherence
  const coloured = held.map((h, i) => ({ h, i })).filter(({ h }) => h.colour && h.colour !== "white");
  let colourHits = 0, colourCeiling = 0;
  for (const { h, i } of coloured) {
    if (dominantNonWhiteColour(samples[i].data) === h.colour) colourHits++;
    if (dominantNonWhiteColour(byFile.get(h.file_name).pixels) === h.colour) colourCeiling++;
  }
  const colourBase = majority(coloured.map(({ h }) => h.colour));

  // 3. category adherence and concept retrieval, by nearest neighbours in pixel space
  let nn1 = 0, knn = 0, top1 = 0, top5 = 0, ceil1 = 0, ceilK = 0;
  held.forEach((h, i) => {
    const s = classify(samples[i].data, train, 5);
    if (s.nn1 === h.category) nn1++;
    if (s.knn === h.category) knn++;
    const rank = s.order.findIndex((j) => train[j].file_name === h.file_name);
    if (rank === 0) top1++;
    if (rank < 5) top5++;
    const real = classify(byFile.get(h.file_name).pixels, train, 5, h.file_name);
    if (real.nn1 === h.category) ceil1++;
    if (real.knn === h.category) ceilK++;
  });
  const catBase = majority(held.map((h) => h.category));

  // 4. Fréchet distance on the VAE encoder's posterior means
  const plan = readPlan(c.dir);
  const opened = await openPlanGraphs(c.dir, plan, { device: "cpu" });
  const encode = async (images) => {
    const feats = [];
    for (let b = 0; b < images.length; b += 64) {
      const chunk = images.slice(b, b + 64);
      const { width: W, height: H } = samples[0];
      const data = new Float32Array(chunk.length * 3 * W * H);
      chunk.forEach((img, k) => {
        for (let ch = 0; ch < 3; ch++) for (let q = 0; q < W * H; q++) data[(k * 3 + ch) * W * H + q] = (2 * img[q * 3 + ch]) / 255 - 1;
      });
      const res = (await opened.graphs.vae_encoder.run({ sample: { data, dims: [chunk.length, 3, H, W] } })).latent_parameters;
      const [, C2, h, w] = res.dims;
      const per = (C2 / 2) * h * w;
      for (let k = 0; k < chunk.length; k++) feats.push(Float64Array.from(res.data.subarray(k * C2 * h * w, k * C2 * h * w + per)));
    }
    return feats;
  };
  const trainFeats = await encode(train.map((t) => t.pixels));
  const sampleFeats = await encode(samples.map((s) => s.data));
  const realFeats = await encode(held.map((h) => byFile.get(h.file_name).pixels));
  await opened.release();
  const d = trainFeats[0].length;
  const ref = meanCov(trainFeats, d);
  const fdModel = frechet(meanCov(sampleFeats, d), ref, d);
  const fdReal = frechet(meanCov(realFeats, d), ref, d);

  // 5. the grid
  const shown = Math.min(o.grid, held.length);
  const upscale = (img, f) => {
    const data = new Uint8Array(img.width * f * img.height * f * 3);
    for (let y = 0; y < img.height * f; y++)
      for (let x = 0; x < img.width * f; x++) for (let ch = 0; ch < 3; ch++) data[(y * img.width * f + x) * 3 + ch] = img.data[(Math.floor(y / f) * img.width + Math.floor(x / f)) * 3 + ch];
    return { width: img.width * f, height: img.height * f, data };
  };
  const gridFile = path.join(out, "grid.png");
  if (shown > 0)
    await saveValidationGrid(
      gridFile,
      // evenly spaced over the held-out list, which is in emoji order: every category shows
      Array.from({ length: shown }, (_, k) => Math.floor((k * held.length) / shown)).map((i) => ({
        image: upscale(samples[i], 4),
        prompt: held[i].prompt,
        seed: path.basename(files[i], ".png").split("-").slice(1).join("-"),
      })),
      { step: 0, steps: o.steps, sampler: o.scheduler, cfgScale: o.guidance, cols: 8, title: `sdc emoji model: held-out prompts (${o.scheduler}, ${o.steps} steps, guidance ${o.guidance}; shown 4x)` },
    );

  const n = held.length;
  const report = {
    model: path.resolve(o.model),
    prompts: n,
    sampler: { scheduler: o.scheduler, steps: o.steps, guidance: o.guidance, seed: o.seed, device: r.ep, ...(o.deepcache ? { deepcache: { ...o.deepcache, calls: r.deepcache } } : {}), ...(o.tome ? { tome: o.tome } : {}) },
    seconds_per_image: secondsPerImage,
    // the denoising loop alone (all prompts go through the U-Net in one batch)
    denoise_seconds_per_image: o.steps / r.itPerSec / held.length,
    colour: { evaluated: coloured.length, accuracy: colourHits / coloured.length, real_images: colourCeiling / coloured.length, majority_baseline: colourBase.rate, majority_colour: colourBase.label },
    category: {
      evaluated: n,
      nn1: nn1 / n,
      knn5: knn / n,
      real_images_nn1: ceil1 / n,
      real_images_knn5: ceilK / n,
      majority_baseline: catBase.rate,
      majority_category: catBase.label,
      prompted_emoji_top1: top1 / n,
      prompted_emoji_top5: top5 / n,
      chance_top1: 1 / train.length,
      chance_top5: 5 / train.length,
    },
    frechet_vae: { features: d, model: fdModel, real_held_out_images: fdReal, reference_images: train.length },
    grid: shown > 0 ? gridFile : null,
  };
  fs.writeFileSync(path.join(out, "report.json"), `${JSON.stringify(report, null, 2)}\n`);
  if (o.json) {
    process.stdout.write(`${JSON.stringify(report)}\n`);
    return;
  }
  const rows = [
    ["measure", "model", "real emoji (ceiling)", "baseline"],
    [`colour = prompted colour (${coloured.length} prompts)`, pct(report.colour.accuracy), pct(report.colour.real_images), `${pct(colourBase.rate)} (always ${colourBase.label})`],
    [`category, 1-NN (${n} prompts)`, pct(report.category.nn1), pct(report.category.real_images_nn1), `${pct(catBase.rate)} (always ${catBase.label})`],
    [`category, 5-NN`, pct(report.category.knn5), pct(report.category.real_images_knn5), `${pct(catBase.rate)}`],
    ["prompted emoji is the nearest training image", pct(report.category.prompted_emoji_top1), "—", pct(report.category.chance_top1)],
    ["prompted emoji among the 5 nearest", pct(report.category.prompted_emoji_top5), "—", pct(report.category.chance_top5)],
    [`Fréchet distance, VAE features (${d}-d)`, fdModel.toFixed(2), `${fdReal.toFixed(2)} (${n} held-out images)`, "—"],
  ];
  say("");
  for (const row of rows) say(`| ${row.join(" | ")} |`);
  say(`\nseconds per image: ${secondsPerImage.toFixed(3)} (${r.ep}); report: ${path.join(out, "report.json")}${shown > 0 ? `; grid: ${gridFile}` : ""}`);
}

main().catch((e) => {
  console.error(`evaluate: ${e?.message ?? e}`);
  process.exit(1);
});
