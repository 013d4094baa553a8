// Training-step benchmark: sdc's differentiated step graph (src/training, one ONNX graph run by
// onnxruntime-node on the CPU) against PyTorch doing the same step (diffusers' UNet2DConditionModel,
// torch.optim.AdamW), measured in the same run.
//
// Cases, on one small random-weight U-Net (generated here, saved as a diffusers folder in a temp
// folder that is removed at the end; both engines read the same file):
//   full  every parameter trained, AdamW, ε objective, MSE
//   lora  LoRA rank 4, alpha 4 on to_q/to_k/to_v/to_out.0, AdamW; the base weights frozen
// Both engines: the same fixed batch (latents, noise, timesteps, text states), 2 threads
// (onnxruntime intraOpNumThreads; torch.set_num_threads), each run in its own child process so
// its peak RSS is its own, interleaved (sdc, torch, sdc, torch …) over SDC_BENCH_ROUNDS rounds.
// Time per step: median over every timed step of every round, after SDC_BENCH_WARMUP warm-up
// steps in each process. sdc's step includes the host work between runs (feeding the returned
// parameters and optimizer state back in); PyTorch's includes add_noise, forward, backward,
// optimizer.step and zero_grad. The loss over the timed steps (fixed batch) must fall: printed.
//
// Also printed: the bytes a step moves across the host ↔ onnxruntime boundary at SD 1.5 size
// (onnxruntime-node returns every output to the host and has no IO binding), from the signature
// buildTrainStep returns for SD 1.5's U-Net (shapes only, no weights).
//
// PyTorch baseline: needs python3 with torch, and diffusers 0.24 importable: set
// SDC_BENCH_PYTHONPATH to the folder holding the `diffusers` package (and huggingface_hub), and
// SDC_BENCH_PYTHON to the interpreter (default: the first of python3, /usr/bin/python3 that imports
// torch and diffusers). The repository's test/fixtures/gen/pyshim supplies `safetensors` if it is
// missing. Without them the baseline is skipped, and the reason printed.
//
//   npm run build && node bench/train.bench.mjs        (or: npm run bench train)
//   SDC_BENCH_LATENT=16 SDC_BENCH_STEPS=10 SDC_BENCH_WARMUP=2 SDC_BENCH_ROUNDS=2 SDC_BENCH_THREADS=2
//   SDC_BENCH_JSON=<file>: also append this run's results to a JSON array in that file
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { machine, table, tempDir } from "./util.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const dist = (p) => pathToFileURL(path.join(root, "dist", p)).href;

const LATENT = Number(process.env.SDC_BENCH_LATENT ?? 16);
const STEPS = Number(process.env.SDC_BENCH_STEPS ?? 10);
const WARMUP = Number(process.env.SDC_BENCH_WARMUP ?? 2);
const ROUNDS = Number(process.env.SDC_BENCH_ROUNDS ?? 2);
const THREADS = Number(process.env.SDC_BENCH_THREADS ?? 2);
// Idle worker threads: "0" (default) makes them sleep in both engines (onnxruntime
// session.intra_op.allow_spinning = 0; OMP_WAIT_POLICY=PASSIVE for torch's OpenMP), "1" leaves
// both engines' defaults (busy-waiting). On a machine shared with other work, busy-waiting
// threads measure the contention more than the engine (torch's OpenMP most of all).
const SPIN = process.env.SDC_BENCH_SPIN === "1";
const BATCH = 2;
const SEQUENCE = 8;
const LR = 1e-3;
const OPTIMIZER = { betas: [0.9, 0.999], eps: 1e-8, weight_decay: 1e-2 };
const LORA = { rank: 4, alpha: 4, targets: ["to_q", "to_k", "to_v", "to_out.0"] };
const SCHEDULE = { num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear" };
const UNET_CONFIG = {
  _class_name: "UNet2DConditionModel",
  _diffusers_version: "0.24.0",
  sample_size: LATENT,
  in_channels: 4,
  out_channels: 4,
  down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"],
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"],
  block_out_channels: [32, 64],
  layers_per_block: 1,
  norm_num_groups: 32,
  cross_attention_dim: 64,
  attention_head_dim: 8,
  use_linear_projection: false,
};
const SD15_UNET_PARAMETERS = 859_520_964;
const DTYPE_BYTES = { float32: 4, float64: 8, int64: 8, float16: 2 };

if (process.argv[2] === "--child") {
  process.stdout.write(`${JSON.stringify(await sdcChild(JSON.parse(fs.readFileSync(process.argv[3], "utf8"))))}\n`);
  process.exit(0);
}

if (!fs.existsSync(path.join(root, "dist", "index.js"))) {
  console.error("dist/ is missing: run `npm run build` first");
  process.exit(2);
}

const { Builder, noWeights } = await import(dist("ir/builder.js"));
const { writeOnnx } = await import(dist("ir/onnx/writer.js"));
const { dce } = await import(dist("ir/passes/dce.js"));
const { foldKnown } = await import(dist("ir/passes/fold.js"));
const { verify } = await import(dist("ir/verify.js"));
const { UNet2DConditionConfigSchema } = await import(dist("models/arch.js"));
const { PRESETS } = await import(dist("models/presets.js"));
const { buildUNet } = await import(dist("models/unet.js"));
const { SafetensorsFile, writeSafetensors } = await import(dist("models/weights/safetensors.js"));
const { noiseSchedule } = await import(dist("schedulers/schedule.js"));
const { buildTrainStep } = await import(dist("training/step.js"));

const { alphasCumprod } = noiseSchedule({ ...SCHEDULE, trained_betas: null });
const EPS_MSE = { prediction: "epsilon", loss: "mse", huberC: 0.1, snrGamma: null, noiseOffset: 0, inputPerturbation: 0, captionDropout: false };
const ADAMW = { type: "adamw", betas: OPTIMIZER.betas, eps: OPTIMIZER.eps, weightDecay: OPTIMIZER.weight_decay };

/** sdc's U-Net train step for an architecture; returns the builder and the step's signature. */
function trainStep(arch, provider, { lora, sequence }) {
  const b = new Builder("train_step", provider);
  const sig = buildTrainStep(b, {
    model: { kind: "unet", arch, objective: EPS_MSE, alphasCumprod, sequence },
    lora: lora ? LORA : null,
    optimizer: ADAMW,
    maxGradNorm: null,
    ema: false,
    accumulation: 1,
    mode: "step",
    target: { ep: "cpu", training: true },
  });
  return { b, sig };
}

const work = tempDir("sdc-bench-train-");
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    fs.rmSync(work, { recursive: true, force: true });
    process.exit(130);
  });
}
let exitCode = 0;
try {
  exitCode = await main();
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
process.exit(exitCode);

async function main() {
  const cfg = UNET_CONFIG;
  console.log(`machine: ${machine()}`);
  console.log(
    `U-Net: block_out_channels [${cfg.block_out_channels}], layers_per_block ${cfg.layers_per_block}, attention_head_dim ${cfg.attention_head_dim}, ` +
      `cross_attention_dim ${cfg.cross_attention_dim}; batch ${BATCH} × 4×${LATENT}×${LATENT} latents, sequence ${SEQUENCE}; ` +
      `AdamW lr ${LR}, ε objective, MSE; ${THREADS} threads per engine, ${SPIN ? "idle threads busy-wait (engines' defaults)" : "idle threads sleep"}; ${ROUNDS} rounds × (${WARMUP} warm-up + ${STEPS} timed steps) per engine and case`,
  );

  // -------------------------------------------------------------------------------------------
  // The model, the LoRA factors and the batch, written once and read by both engines

  const arch = UNet2DConditionConfigSchema.parse(cfg);
  const unetDir = path.join(work, "unet");
  const weightsFile = path.join(unetDir, "diffusion_pytorch_model.safetensors");
  fs.mkdirSync(unetDir, { recursive: true });
  fs.writeFileSync(path.join(unetDir, "config.json"), `${JSON.stringify(cfg, null, 2)}\n`);
  const shapes = new Map();
  buildUNet(new Builder("shapes", (key, shape, dtype) => (shapes.set(key, shape), noWeights(key, shape, dtype))), arch);
  const rng = random(0x5dc);
  writeSafetensors(
    weightsFile,
    [...shapes].map(([name, shape]) => ({ name, dtype: "F32", shape, data: f32bytes(initWeight(name, shape, rng)) })),
  );
  const unetParameters = [...shapes.values()].reduce((n, s) => n + numel(s), 0);

  // the LoRA tensors' names and shapes, from the step's signature (built on no weights)
  const loraShapes = trainStep(arch, noWeights, { lora: true, sequence: SEQUENCE }).sig.inputs.filter((e) => e.role === "parameter");
  const loraFile = path.join(work, "lora.safetensors");
  writeSafetensors(
    loraFile,
    loraShapes.map((e) => {
      // A ~ N(0, 1/in), B ~ N(0, 0.25/rank): B non-zero, unlike a fresh PEFT B (as test/fixtures/gen/train.py does), so A trains from step 1
      const [out, inF] = e.shape;
      const s = e.name.endsWith("lora_A.weight") ? 1 / Math.sqrt(inF) : 0.5 / Math.sqrt(LORA.rank);
      return { name: e.name, dtype: "F32", shape: e.shape, data: f32bytes(normal(rng, out * inF, s)) };
    }),
  );
  const batchFile = path.join(work, "batch.safetensors");
  const lat = [BATCH, 4, LATENT, LATENT];
  const timesteps = Array.from({ length: BATCH }, () => Math.floor(rng() * 1000));
  writeSafetensors(batchFile, [
    { name: "latents", dtype: "F32", shape: lat, data: f32bytes(normal(rng, numel(lat), 1)) },
    { name: "noise", dtype: "F32", shape: lat, data: f32bytes(normal(rng, numel(lat), 1)) },
    { name: "timesteps", dtype: "I64", shape: [BATCH], data: new Uint8Array(BigInt64Array.from(timesteps, BigInt).buffer) },
    { name: "encoder_hidden_states", dtype: "F32", shape: [BATCH, SEQUENCE, cfg.cross_attention_dim], data: f32bytes(normal(rng, BATCH * SEQUENCE * cfg.cross_attention_dim, 1)) },
  ]);
  console.log(`weights: ${shapes.size} tensors, ${unetParameters.toLocaleString("en-US")} parameters; LoRA: ${loraShapes.length} tensors, ${loraShapes.reduce((n, e) => n + numel(e.shape), 0).toLocaleString("en-US")} parameters; timesteps [${timesteps}]`);

  // -------------------------------------------------------------------------------------------
  // sdc's step graphs

  const st = SafetensorsFile.open(weightsFile);
  const fileWeights = (key) => {
    const t = st.info(key);
    return { kind: "file", file: st.path, offset: t.offset, byteLength: t.byteLength, storageDtype: "float32" };
  };
  const cases = [];
  for (const name of ["full", "lora"]) {
    const t = performance.now();
    const { b, sig } = trainStep(arch, fileWeights, { lora: name === "lora", sequence: "sequence" });
    foldKnown(b.graph);
    dce(b.graph);
    verify(b.graph, { final: true });
    const dir = path.join(work, `step-${name}`);
    writeOnnx(b.graph, { dir });
    const buildS = (performance.now() - t) / 1000;
    cases.push({ name, lora: name === "lora", onnx: path.join(dir, "model.onnx"), nodes: b.graph.nodes.length, buildS, sig });
    console.log(`sdc step graph "${name}": ${b.graph.nodes.length} nodes, built and written in ${buildS.toFixed(1)} s`);
  }

  // -------------------------------------------------------------------------------------------
  // PyTorch available?

  const torch = probeTorch();
  if (torch.ok) console.log(`PyTorch baseline: ${torch.python}, torch ${torch.versions.torch}, diffusers ${torch.versions.diffusers}`);
  else console.log(`PyTorch baseline skipped: ${torch.reason}`);

  // -------------------------------------------------------------------------------------------
  // The measurements, interleaved

  const results = Object.fromEntries(cases.map((c) => [c.name, { sdc: [], torch: [] }]));
  for (let r = 1; r <= ROUNDS; r++) {
    for (const c of cases) {
      const job = { onnx: c.onnx, weights: weightsFile, lora: c.lora ? loraFile : null, batch: batchFile, warmup: WARMUP, steps: STEPS, threads: THREADS, spin: SPIN, lr: LR, signature: c.sig };
      const s = runChild(process.execPath, [fileURLToPath(import.meta.url), "--child", jobFile(`sdc-${c.name}`, job)], process.env);
      results[c.name].sdc.push(s);
      console.log(`  round ${r} ${c.name} sdc:   median ${(median(s.stepTimesS) * 1000).toFixed(1)} ms/step, peak ${s.peakMiB.toFixed(0)} MiB`);
      if (!torch.ok) continue;
      const tjob = {
        unet: unetDir,
        batch: batchFile,
        lora: c.lora ? LORA : null,
        lora_init: c.lora ? loraFile : null,
        warmup: WARMUP,
        steps: STEPS,
        threads: THREADS,
        lr: LR,
        optimizer: OPTIMIZER,
        schedule: SCHEDULE,
      };
      const p = runChild(torch.python, [path.join(here, "train-torch.py"), jobFile(`torch-${c.name}`, tjob)], torch.env);
      results[c.name].torch.push(p);
      console.log(`  round ${r} ${c.name} torch: median ${(median(p.stepTimesS) * 1000).toFixed(1)} ms/step, peak ${p.peakMiB.toFixed(0)} MiB`);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Report

  const summary = (runs) => {
    if (!runs.length) return null;
    const ms = median(runs.flatMap((x) => x.stepTimesS)) * 1000;
    return { ms, peak: Math.max(...runs.map((x) => x.peakMiB)), idle: Math.max(...runs.map((x) => x.rssImportMiB ?? 0)), runs };
  };
  const rows = [];
  const json = { bench: "train", date: new Date().toISOString(), machine: machine(), config: { unet: cfg, batch: BATCH, latent: LATENT, sequence: SEQUENCE, lr: LR, threads: THREADS, spin: SPIN, rounds: ROUNDS, warmup: WARMUP, steps: STEPS, lora: LORA }, cases: {} };
  let failedTraining = false;
  console.log(`\nmedian of ${ROUNDS} × ${STEPS} timed steps per engine; peak RSS: the largest of the engine's ${ROUNDS} processes (after import: RSS once the runtime is loaded, before the model)`);
  for (const c of cases) {
    const s = summary(results[c.name].sdc);
    const p = summary(results[c.name].torch);
    for (const [engine, v] of [["sdc (onnxruntime)", s], ["PyTorch (baseline)", p]]) {
      if (!v) continue;
      rows.push({
        case: c.name === "full" ? "full fine-tune" : `LoRA r${LORA.rank}`,
        engine,
        trained: v.runs[0].trainedParameters.toLocaleString("en-US"),
        "ms/step": v.ms.toFixed(1),
        "steps/s": (1000 / v.ms).toFixed(2),
        ...(p ? { "× torch time": (v.ms / p.ms).toFixed(2) } : {}),
        "peak RSS MiB": v.peak.toFixed(0),
        ...(p ? { "× torch RSS": (v.peak / p.peak).toFixed(2) } : {}),
        "after import MiB": v.idle.toFixed(0),
      });
    }
    json.cases[c.name] = { nodes: c.nodes, buildS: c.buildS, sdc: strip(s), torch: p ? strip(p) : null };
  }
  console.log("");
  table(rows);

  console.log("\nis sdc training? loss on the fixed batch, first and last timed step of each process (must fall):");
  for (const c of cases) {
    for (const [engine, runs] of [["sdc", results[c.name].sdc], ["torch", results[c.name].torch]]) {
      for (const [i, run] of runs.entries()) {
        const first = run.losses[WARMUP];
        const last = run.losses.at(-1);
        const falls = last < first;
        if (engine === "sdc" && !falls) failedTraining = true;
        console.log(`  ${c.name.padEnd(4)} ${engine.padEnd(5)} round ${i + 1}: step 1 ${run.losses[0].toFixed(5)}, timed ${first.toFixed(5)} → ${last.toFixed(5)} (${falls ? "falls" : "DOES NOT FALL"}, ${((last / first - 1) * 100).toFixed(1)}%)`);
      }
    }
    const s1 = results[c.name].sdc[0]?.losses[0];
    const t1 = results[c.name].torch[0]?.losses[0];
    if (s1 !== undefined && t1 !== undefined) {
      // same weights, same batch: step 1's loss is the same computation in both engines
      const rel = Math.abs(s1 - t1) / Math.abs(t1);
      const sN = results[c.name].sdc[0].losses.at(-1);
      const tN = results[c.name].torch[0].losses.at(-1);
      const relN = Math.abs(sN - tN) / Math.abs(tN);
      console.log(
        `  ${c.name}: same computation? loss at step 1 sdc ${s1.toPrecision(7)} vs torch ${t1.toPrecision(7)} (relative difference ${rel.toExponential(1)}), ` +
          `at step ${WARMUP + STEPS} ${sN.toPrecision(7)} vs ${tN.toPrecision(7)} (${relN.toExponential(1)})`,
      );
      json.cases[c.name].lossRelDiff = { first: rel, last: relN };
      const sa = results[c.name].sdc[0].trainedParameters;
      const ta = results[c.name].torch[0].trainedParameters;
      if (sa !== ta) console.log(`  ${c.name}: WARNING trained parameter counts differ: sdc ${sa}, torch ${ta}`);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Bytes crossed per step at SD 1.5 size

  console.log("\nbytes crossing the host ↔ onnxruntime boundary per step at SD 1.5 size (U-Net step graph built on no weights; onnxruntime-node returns every output to the host):");
  json.sd15 = {};
  const crossRows = [];
  for (const lora of [false, true]) {
    const t = performance.now();
    const { b, sig } = trainStep(PRESETS["sd1.5"].unet, noWeights, { lora, sequence: 77 });
    const buildS = (performance.now() - t) / 1000;
    const batchDims = { batch: 1, height: 64, width: 64 };
    const bytesOf = (e) => e.shape.reduce((n, d) => n * (typeof d === "number" ? d : batchDims[d]), DTYPE_BYTES[e.dtype]);
    const sum = (list) => list.reduce((n, e) => n + bytesOf(e), 0);
    const params = sig.inputs.filter((e) => e.role === "parameter");
    const state = sig.inputs.filter((e) => e.role === "parameter" || e.role === "optimizer_state");
    const updated = sig.outputs.filter((e) => e.role.startsWith("updated_"));
    const small = sig.inputs.filter((e) => e.role !== "parameter" && e.role !== "optimizer_state");
    const smallOut = sig.outputs.filter((e) => !e.role.startsWith("updated_"));
    const count = params.reduce((n, e) => n + numel(e.shape), 0);
    const frozen = lora ? SD15_UNET_PARAMETERS : 0;
    if (!lora && count !== SD15_UNET_PARAMETERS) {
      console.log(`  WARNING: the SD 1.5 U-Net has ${count} parameters here, not ${SD15_UNET_PARAMETERS}`);
      failedTraining = true;
    }
    const r = {
      case: lora ? `LoRA r${LORA.rank} (to_q/k/v/out.0)` : "full fine-tune, AdamW",
      trained: count.toLocaleString("en-US"),
      "host → ort (params + state)": fmtBytes(sum(state)),
      "ort → host (updated)": fmtBytes(sum(updated)),
      "per step": fmtBytes(sum(state) + sum(updated)),
      "batch, lr, step in": fmtBytes(sum(small)),
      "loss out": fmtBytes(sum(smallOut)),
      "frozen (initializers, once)": lora ? fmtBytes(frozen * 4) : "-",
      "graph nodes": b.graph.nodes.length,
      "build s": buildS.toFixed(1),
    };
    crossRows.push(r);
    json.sd15[lora ? "lora" : "full"] = { trainedParameters: count, inputBytes: sum(state), outputBytes: sum(updated), batchBytes: sum(small), smallOutputBytes: sum(smallOut), tensors: params.length, nodes: b.graph.nodes.length, buildS };
  }
  table(crossRows);
  console.log(`  (batch at 1 × 4×64×64 latents, 77 tokens; float32 throughout; LoRA's frozen base weights are initializers read once when the session opens, not per step)`);

  if (process.env.SDC_BENCH_JSON) {
    const f = process.env.SDC_BENCH_JSON;
    const prev = fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, "utf8")) : [];
    prev.push(json);
    fs.writeFileSync(f, `${JSON.stringify(prev, null, 2)}\n`);
    console.log(`\nappended to ${f}`);
  }
  if (failedTraining) console.log("\nFAILED: see the lines above");
  return failedTraining ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------
// sdc's child: open the step graph, feed parameters and optimizer state, run warm-up + timed steps

async function sdcChild(job) {
  const rssStart = rssMiB();
  const ort = await import("onnxruntime-node");
  const { SafetensorsFile } = await import(dist("models/weights/safetensors.js"));
  const rssImport = rssMiB();
  const t0 = performance.now();
  const session = await ort.InferenceSession.create(job.onnx, {
    executionProviders: ["cpu"],
    intraOpNumThreads: job.threads,
    interOpNumThreads: 1,
    logSeverityLevel: 3,
    ...(job.spin ? {} : { extra: { session: { intra_op: { allow_spinning: "0" }, inter_op: { allow_spinning: "0" } } } }),
  });
  const params = SafetensorsFile.open(job.lora ?? job.weights);
  const batch = SafetensorsFile.open(job.batch);
  const feeds = {};
  const shapeOf = new Map(job.signature.inputs.map((e) => [e.name, e.shape]));
  let trained = 0;
  for (const e of job.signature.inputs) {
    if (e.role === "parameter") {
      feeds[e.name] = new ort.Tensor("float32", params.readFloat32(e.name), e.shape);
      trained += numel(e.shape);
    } else if (e.role === "optimizer_state") feeds[e.name] = new ort.Tensor("float32", new Float32Array(numel(e.shape)), e.shape);
    else if (e.role === "batch" || e.role === "random") {
      const t = batch.info(e.name);
      if (t.dtype === "I64") {
        const raw = batch.readRaw(e.name);
        feeds[e.name] = new ort.Tensor("int64", new BigInt64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength)), t.shape);
      } else feeds[e.name] = new ort.Tensor("float32", batch.readFloat32(e.name), t.shape);
    }
  }
  feeds.lr = new ort.Tensor("float64", new Float64Array([job.lr]), []);
  const setupS = (performance.now() - t0) / 1000;
  // each updated tensor `next.<input>` is fed back as <input>
  const carried = job.signature.outputs.filter((e) => e.role.startsWith("updated_")).map((e) => [e.name, e.name.slice("next.".length)]);
  for (const [, input] of carried) if (!shapeOf.has(input)) throw new Error(`output next.${input} has no input`);
  const losses = [];
  const stepTimesS = [];
  for (let k = 1; k <= job.warmup + job.steps; k++) {
    const t = performance.now();
    feeds.step = new ort.Tensor("int64", new BigInt64Array([BigInt(k)]), []);
    const out = await session.run(feeds);
    for (const [output, input] of carried) feeds[input] = out[output];
    const loss = Number(out.loss.data[0]);
    const dt = (performance.now() - t) / 1000;
    losses.push(loss);
    if (k > job.warmup) stepTimesS.push(dt);
  }
  await session.release();
  return { engine: "sdc", setupS, stepTimesS, losses, trainedTensors: job.signature.inputs.filter((e) => e.role === "parameter").length, trainedParameters: trained, rssStartMiB: rssStart, rssImportMiB: rssImport, peakMiB: peakMiB() };
}

// ---------------------------------------------------------------------------------------------
// helpers

/** The interpreter to use for the baseline, or why there is none. */
function probeTorch() {
  const extra = [process.env.SDC_BENCH_PYTHONPATH, path.join(root, "test", "fixtures", "gen", "pyshim"), process.env.PYTHONPATH].filter(Boolean).join(path.delimiter);
  // OpenBLAS (torch's BLAS on Debian) keeps its own thread pool, which torch.set_num_threads does not size
  const env = { ...process.env, PYTHONPATH: extra, PYTHONDONTWRITEBYTECODE: "1", OPENBLAS_NUM_THREADS: String(THREADS) };
  if (!SPIN) env.OMP_WAIT_POLICY = "PASSIVE";
  const candidates = process.env.SDC_BENCH_PYTHON ? [process.env.SDC_BENCH_PYTHON] : ["python3", "/usr/bin/python3"];
  const reasons = [];
  for (const python of candidates) {
    const r = spawnSync(python, [path.join(here, "train-torch.py"), "probe"], { env, encoding: "utf8" });
    if (r.error) {
      reasons.push(`${python}: ${r.error.code === "ENOENT" ? "not found" : r.error.message}`);
      continue;
    }
    if (r.status === 0) return { ok: true, python, env, versions: JSON.parse(r.stdout.trim().split("\n").pop()) };
    const last = (r.stderr || r.stdout).trim().split("\n").filter(Boolean).pop() ?? `exit ${r.status}`;
    reasons.push(`${python}: ${last}`);
  }
  const hint = process.env.SDC_BENCH_PYTHONPATH ? "" : " (SDC_BENCH_PYTHONPATH is not set: point it at the folder holding diffusers 0.24's `diffusers` package)";
  return { ok: false, reason: `${reasons.join("; ")}${hint}` };
}

/** Jobs go to children as files (a full fine-tune's signature is too long for one argument). */
function jobFile(name, job) {
  const f = path.join(work, `${name}.job.json`);
  fs.writeFileSync(f, JSON.stringify(job));
  return f;
}

function runChild(cmd, args, env) {
  const r = spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 1 << 26, env });
  if (r.status !== 0) throw new Error(`${path.basename(cmd)} ${path.basename(args[0])} failed (exit ${r.status}${r.signal ? `, ${r.signal}` : ""}):\n${r.stderr.slice(-4000)}`);
  return JSON.parse(r.stdout.trim().split("\n").pop());
}

function numel(shape) {
  return shape.reduce((a, b) => a * b, 1);
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function strip(v) {
  return { msPerStep: v.ms, peakMiB: v.peak, afterImportMiB: v.idle, runs: v.runs.map((r) => ({ setupS: r.setupS, stepTimesS: r.stepTimesS, losses: r.losses, peakMiB: r.peakMiB, trainedParameters: r.trainedParameters })) };
}

function fmtBytes(n) {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(2)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return `${n} B`;
}

function rssMiB() {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync("/proc/self/status", "utf8"));
  return m ? Number(m[1]) / 1024 : null;
}

function peakMiB() {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync("/proc/self/status", "utf8"));
    if (m) return Number(m[1]) / 1024;
  } catch {}
  return process.resourceUsage().maxRSS / 1024;
}

/** A seeded uniform [0, 1) generator (xorshift32). */
function random(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}

function normal(rng, n, scale) {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - rng()));
    const a = 2 * Math.PI * rng();
    out[i] = r * Math.cos(a) * scale;
    if (i + 1 < n) out[i + 1] = r * Math.sin(a) * scale;
  }
  return out;
}

/** PyTorch-like initial values: weights U(±1/√fan_in), biases small, norms near (1, 0). */
function initWeight(name, shape, rng) {
  const n = numel(shape);
  const out = new Float32Array(n);
  const isNorm = /norm/.test(name.split(".").at(-2) ?? "");
  let bound;
  if (isNorm) bound = 0.1;
  else if (shape.length === 1) bound = 0.05;
  else bound = 1 / Math.sqrt(n / shape[0]);
  for (let i = 0; i < n; i++) out[i] = (2 * rng() - 1) * bound + (isNorm && name.endsWith(".weight") ? 1 : 0);
  return out;
}

function f32bytes(a) {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}
