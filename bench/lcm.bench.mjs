// LCM benchmark: seconds per image and image difference of few-step sampling against the full
// computation on the same seeds. The baseline, measured in the same run, is the default pipeline's
// sampler: DPM-Solver++ with 20 steps and guidance 4 on the shipped models/emoji. Against it:
// LCMScheduler with 4 and 8 steps (guidance off, as LCM-LoRA is used, and guidance 4), and
// DPM-Solver++ with as few steps (what the same U-Net budget buys without LCM). Each row draws the
// same prompts with the same seeds; PSNR is taken per image against the baseline's image (8-bit RGB)
// and averaged; "calls" is U-Net evaluations per image (a guided step evaluates a batch of two).
// Sessions are opened once and warmed up; each image is drawn alone (batch 1, seed 42 + k) through
// text encoder, loop and VAE decoder: "s/image" is all of that, "loop s/image" the denoising loop
// alone. Speed-ups are baseline time / row time.
//
// models/emoji is NOT consistency-distilled: it was trained for ordinary diffusion sampling, so its
// LCM rows show what the scheduler does with a model it was not made for (a scheduler demo), not
// LCM's quality. A fair LCM figure needs an LCM-LoRA or LCM checkpoint made for the model.
//
//   npm run build && node bench/lcm.bench.mjs [--images N] [--repeat R] [--json]   (or: npm run bench lcm)
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { machine, table, tempDir } from "./util.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
if (!fs.existsSync(path.join(root, "dist", "index.js"))) {
  console.error("dist/ is missing: run `npm run build` first");
  process.exit(2);
}
const dist = (f) => pathToFileURL(path.join(root, "dist", f)).href;
const { compile, loadPipeline, openPlanGraphs, readPlan, runSettings, encodePrompts, prepareSchedule, initialLatents, denoiseLoop, decodeImage } = await import(dist("index.js"));
const { TorchGenerator } = await import(dist("runtime/rng.js"));
const { ClipTokenizer } = await import(dist("tokenizer/clip.js"));

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const IMAGES = opt("--images", 12);
const REPEAT = opt("--repeat", 2);
const JSON_OUT = args.includes("--json");
const PROMPTS = ["smiling face", "a red heart", "a green frog", "a yellow star", "a blue car", "a red apple", "a sunflower", "an orange cat face", "a purple grape", "a black umbrella", "a pink flower", "a brown dog face"];

const CONFIGS = [
  { name: "dpm-solver++ 20, cfg 4 (baseline)", type: "dpm-solver++", steps: 20, guidance: 4, baseline: true },
  { name: "lcm 4, no cfg", type: "lcm", steps: 4, guidance: 1 },
  { name: "lcm 8, no cfg", type: "lcm", steps: 8, guidance: 1 },
  { name: "lcm 4, cfg 4", type: "lcm", steps: 4, guidance: 4 },
  { name: "lcm 4, no cfg, x0 clipped to 1.5", type: "lcm", steps: 4, guidance: 1, options: { clip_sample: true, clip_sample_range: 1.5 } },
  { name: "dpm-solver++ 4, cfg 4", type: "dpm-solver++", steps: 4, guidance: 4 },
  { name: "dpm-solver++ 8, cfg 4", type: "dpm-solver++", steps: 8, guidance: 4 },
  { name: "dpm-solver++ 4, no cfg", type: "dpm-solver++", steps: 4, guidance: 1 },
];

const work = tempDir("sdc-bench-lcm-");
const prompts = Array.from({ length: IMAGES }, (_, i) => PROMPTS[i % PROMPTS.length]);

/** The config's pipeline, compiled (the graphs are the same for every config: only the plan's scheduler differs). */
async function compiled(c, i) {
  const file = path.join(work, `p${i}.yaml`);
  const yaml = [
    "version: 1",
    `name: bench-lcm-${i}`,
    "model:",
    `  from: ${JSON.stringify(path.join(root, "models", "emoji"))}`,
    "scheduler:",
    `  type: ${c.type}`,
    `  steps: ${c.steps}`,
    ...Object.entries(c.options ?? {}).map(([k, v]) => `  ${k}: ${JSON.stringify(v)}`),
    "guidance:",
    `  scale: ${c.guidance}`,
    '  negative_prompt: ""',
    "runtime:",
    "  device: cpu",
    "",
  ].join("\n");
  fs.writeFileSync(file, yaml);
  const p = await loadPipeline(file, { cwd: work });
  const r = await compile(p, { cwd: work });
  return { dir: r.dir, plan: readPlan(r.dir), settings: runSettings(p) };
}

/**
 * One image per prompt, each from its own seed (42 + k), as `sdc run --seed` would draw it, on warm
 * sessions: text encoder, schedule, seeded latents, the denoising loop, VAE decode. Returns the
 * images and the seconds of the whole and of the loop alone.
 */
async function drawAll(graphs, tokenizer, cfg) {
  const { plan, settings: s } = cfg;
  const f = plan.vae.scaleFactor;
  const shape = { images: 1, channels: plan.vae.latentChannels, height: s.height / f, width: s.width / f };
  let loopSeconds = 0;
  const images = [];
  const t0 = performance.now();
  for (const [k, prompt] of prompts.entries()) {
    const embeddings = await encodePrompts(graphs.text_encoder, tokenizer, { prompts: [prompt], negativePrompts: [""], perPrompt: 1, guidance: s.guidanceScale > 1 });
    const schedule = prepareSchedule(plan, {});
    const generator = new TorchGenerator(42 + k);
    const latents = await initialLatents({ kind: "noise" }, { shape, schedule, generator });
    const loop = await denoiseLoop(graphs.unet, { schedule, latents, shape, embeddings, guidanceScale: s.guidanceScale, guidanceRescale: s.guidanceRescale, noise: generator });
    loopSeconds += loop.seconds;
    images.push((await decodeImage(graphs.vae_decoder, loop.latents, shape, plan.vae.scalingFactor)).image);
  }
  return { seconds: (performance.now() - t0) / 1000, loopSeconds, images };
}

async function draw(graphs, tokenizer, cfg) {
  await drawAll(graphs, tokenizer, cfg); // warm-up: onnxruntime's first calls allocate
  let best;
  for (let r = 0; r < REPEAT; r++) {
    const res = await drawAll(graphs, tokenizer, cfg);
    if (!best || res.seconds < best.seconds) best = res;
  }
  return best;
}

/** PSNR of two 8-bit RGB images (sdc's RgbImage: width, height, data of 3 bytes a pixel), in dB; Infinity when equal. */
function psnr(a, b) {
  let se = 0;
  for (let i = 0; i < a.data.length; i++) {
    const d = a.data[i] - b.data[i];
    se += d * d;
  }
  return se === 0 ? Infinity : 10 * Math.log10((255 * 255) / (se / a.data.length));
}

const configs = [];
for (const [i, c] of CONFIGS.entries()) configs.push(await compiled(c, i));
const opened = await openPlanGraphs(configs[0].dir, configs[0].plan, { device: "cpu" });
const tokenizer = ClipTokenizer.fromFolder(path.join(configs[0].dir, configs[0].plan.tokenizer.dir));
const results = [];
let base;
try {
  for (const [i, c] of CONFIGS.entries()) {
    const r = await draw(opened.graphs, tokenizer, configs[i]);
    if (c.baseline) base = r;
    const psnrs = r.images.map((img, k) => psnr(img, base.images[k]));
    const finite = psnrs.filter(Number.isFinite);
    const meanPsnr = finite.length ? finite.reduce((a, b) => a + b, 0) / finite.length : Infinity;
    const calls = c.steps * (c.guidance > 1 ? 2 : 1);
    results.push({
      ...c,
      secondsPerImage: r.seconds / IMAGES,
      loopSecondsPerImage: r.loopSeconds / IMAGES,
      speedup: base.seconds / r.seconds,
      loopSpeedup: base.loopSeconds / r.loopSeconds,
      psnr: meanPsnr,
      minPsnr: Math.min(...psnrs),
      calls,
    });
    if (!JSON_OUT) process.stderr.write(`${c.name}: ${(r.seconds / IMAGES).toFixed(4)} s/image, loop ${(r.loopSeconds / IMAGES).toFixed(4)}\n`);
  }
} finally {
  await opened.release();
}

if (JSON_OUT) console.log(JSON.stringify({ machine: machine(), images: IMAGES, repeat: REPEAT, results }, null, 2));
else {
  console.log(`LCM vs the default sampler on models/emoji (not LCM-distilled: the LCM rows are a scheduler demo), ${IMAGES} images 32x32, warm sessions, best of ${REPEAT}; ${machine()}`);
  table(
    results.map((r) => ({
      sampler: r.name,
      "calls/image": r.calls,
      "s/image": r.secondsPerImage.toFixed(3),
      "vs baseline": `${r.speedup.toFixed(2)}x`,
      "loop s/image": r.loopSecondsPerImage.toFixed(4),
      "loop vs baseline": `${r.loopSpeedup.toFixed(2)}x`,
      "PSNR vs baseline dB (min)": Number.isFinite(r.psnr) ? `${r.psnr.toFixed(2)} (${r.minPsnr.toFixed(2)})` : "identical",
    })),
  );
}
fs.rmSync(work, { recursive: true, force: true });
