// Compile benchmark: an SD 1.5-size diffusers folder of random fp16 weights (SD 1.5's real configs
// and tensor names, ~2.1 GB) is generated into a temp folder and compiled with the built library
// (dist/): in fp32 (every weight converted fp16 → fp32 and written once) and in fp16 (every weight
// linked zero-copy), then recompiled unchanged ("up to date") and with a settings-only edit (plan
// only). Baseline, measured in the same run: reading every weight byte once. Each measurement runs
// in its own process so its peak RSS is its own. The temp folder is removed at the end.
//
//   npm run build && node bench/compile.bench.mjs        (or: npm run bench compile)
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { machine, peakRssMiB, table, tempDir } from "./util.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const dist = (p) => pathToFileURL(path.join(root, "dist", p)).href;
const GB = 1e9;

if (process.argv[2] === "child") {
  const job = JSON.parse(process.argv[3]);
  const out = await child(job);
  process.stdout.write(`${JSON.stringify({ ...out, peakMiB: peakRssMiB() })}\n`);
  process.exit(0);
}

if (!fs.existsSync(path.join(root, "dist", "index.js"))) {
  console.error("dist/ is missing: run `npm run build` first");
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// The checkpoint: SD 1.5's tensor names and shapes, random fp16 values

const keys = JSON.parse(fs.readFileSync(path.join(root, "test", "fixtures", "models", "sd15.keys.json"), "utf8"));
const COMPONENTS = { unet: "diffusion_pytorch_model", vae: "diffusion_pytorch_model", text_encoder: "model" };
const numel = (shape) => shape.reduce((a, b) => a * b, 1);
const tensorsOf = (c) => Object.entries(keys.components[c].diffusers).map(([name, shape]) => ({ name, shape }));
const isInt = (name) => name.endsWith("position_ids"); // transformers' int64 buffer, as real files carry it
const weightBytes = Object.keys(COMPONENTS).reduce((n, c) => n + tensorsOf(c).reduce((m, t) => m + numel(t.shape) * (isInt(t.name) ? 8 : 2), 0), 0);

const tmpRoot = os.tmpdir();
const free = fs.statfsSync(tmpRoot).bavail * fs.statfsSync(tmpRoot).bsize;
// the checkpoint, the fp32 compile's converted copy (2×), and slack
const need = weightBytes * 3 + 0.5 * GB;
console.log(`machine: ${machine()}`);
console.log(`temp: ${tmpRoot}, ${(free / GB).toFixed(1)} GB free; this benchmark needs ${(need / GB).toFixed(1)} GB (checkpoint ${(weightBytes / GB).toFixed(2)} GB + fp32 compile ${((2 * weightBytes) / GB).toFixed(2)} GB)`);
if (free < need) {
  console.error(`too little free disk in ${tmpRoot}: ${(free / GB).toFixed(1)} GB < ${(need / GB).toFixed(1)} GB needed; set TMPDIR to a larger disk`);
  process.exit(1);
}

const work = tempDir("sdc-bench-compile-");
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    fs.rmSync(work, { recursive: true, force: true }); // gigabytes: never leave them behind
    process.exit(130);
  });
}
try {
  await main(work);
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}

async function main(work) {
  const model = path.join(work, "sd15-random-fp16");
  const tGen = performance.now();
  await generate(model);
  const genSeconds = (performance.now() - tGen) / 1000;
  const files = Object.entries(COMPONENTS).map(([c, base]) => path.join(model, c, `${base}.safetensors`));
  const bytes = files.reduce((n, f) => n + fs.statSync(f).size, 0);
  console.log(`generated ${model}: ${(bytes / GB).toFixed(2)} GB of safetensors in ${genSeconds.toFixed(1)} s`);

  const yaml = (name, precision) => {
    const f = path.join(work, `${name}.yaml`);
    fs.writeFileSync(f, `version: 1\nname: ${name}\nmodel:\n  from: ${JSON.stringify(model)}\nruntime:\n  precision: ${precision}\n`);
    return f;
  };
  const p32 = yaml("sd15-fp32", "fp32");
  const p16 = yaml("sd15-fp16", "fp16");

  const rows = [];
  const run = (what, job) => {
    const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), "child", JSON.stringify(job)], { encoding: "utf8", maxBuffer: 1 << 24 });
    if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status}):\n${r.stderr}`);
    const res = JSON.parse(r.stdout.trim().split("\n").pop());
    rows.push({ what, ...res });
    return res;
  };

  const idle = run("node + import sdc (no work)", { kind: "import" });
  const read = run("baseline: read every weight byte once", { kind: "read", files });
  const write = run("baseline: write the fp32 size once", { kind: "write", file: path.join(work, "write-baseline.bin"), bytes: 2 * weightBytes });
  const c32 = run("compile fp32 (convert fp16→fp32, write)", { kind: "compile", yaml: p32, cwd: work });
  const c16 = run("compile fp16 (link zero-copy)", { kind: "compile", yaml: p16, cwd: work, hash: true });
  const up = run("recompile fp16, unchanged (up to date)", { kind: "compile", yaml: p16, cwd: work });
  const plan = run("recompile fp16, scheduler.steps edit (plan only)", { kind: "compile", yaml: p16, cwd: work, overrides: ["scheduler.steps=20"] });

  const ratio = (s) => (s / read.seconds).toFixed(2);
  console.log("");
  table(
    rows.map((r) => ({
      step: r.what,
      seconds: r.seconds.toFixed(2),
      "× read": r.kind === "import" ? "" : ratio(r.seconds),
      "peak RSS MiB": r.peakMiB.toFixed(0),
      "over idle MiB": (r.peakMiB - idle.peakMiB).toFixed(0),
      "linked GB": r.bytesLinked === undefined ? "" : (r.bytesLinked / GB).toFixed(2),
      "written GB": r.bytesWritten !== undefined ? (r.bytesWritten / GB).toFixed(2) : r.kind === "read" ? `(read ${(r.bytes / GB).toFixed(2)})` : r.kind === "write" ? (r.bytes / GB).toFixed(2) : "",
      result: r.result ?? "",
    })),
  );
  for (const r of [c32, c16]) console.log(`  ${r.yamlName}: ${r.graphs}`);
  console.log(`  model hash (sha256 of the U-Net file): ${c16.hashSeconds.toFixed(2)} s of each full compile`);
  console.log(
    `\nsummary: SD1.5-size fp16 checkpoint (${(bytes / GB).toFixed(2)} GB, warm page cache): read once ${read.seconds.toFixed(2)} s; ` +
      `compile fp32 ${c32.seconds.toFixed(2)} s (${ratio(c32.seconds)}× read, ${(c32.seconds / (read.seconds + write.seconds)).toFixed(2)}× read+write, peak ${c32.peakMiB.toFixed(0)} MiB), ` +
      `fp16 ${c16.seconds.toFixed(2)} s (${ratio(c16.seconds)}× read, of which ${c16.hashSeconds.toFixed(2)} s model hash; peak ${c16.peakMiB.toFixed(0)} MiB), ` +
      `up to date ${up.seconds.toFixed(3)} s, plan only ${plan.seconds.toFixed(3)} s`,
  );
}

/** A diffusers folder with SD 1.5's configs and random fp16 tensors (int64 position_ids). */
async function generate(dir) {
  const { PRESETS } = await import(dist("models/presets.js"));
  const { writeSafetensors } = await import(dist("models/weights/safetensors.js"));
  const sd15 = PRESETS["sd1.5"];
  const json = (f, v) => {
    fs.mkdirSync(path.dirname(f), { recursive: true });
    fs.writeFileSync(f, `${JSON.stringify(v, null, 2)}\n`);
  };
  json(path.join(dir, "model_index.json"), {
    _class_name: "StableDiffusionPipeline",
    _diffusers_version: "0.24.0",
    feature_extractor: [null, null],
    requires_safety_checker: false,
    safety_checker: [null, null],
    scheduler: ["diffusers", sd15.scheduler._class_name],
    text_encoder: ["transformers", "CLIPTextModel"],
    tokenizer: ["transformers", "CLIPTokenizer"],
    unet: ["diffusers", "UNet2DConditionModel"],
    vae: ["diffusers", "AutoencoderKL"],
  });
  json(path.join(dir, "unet", "config.json"), { _class_name: "UNet2DConditionModel", _diffusers_version: "0.24.0", ...sd15.unet });
  json(path.join(dir, "vae", "config.json"), { _class_name: "AutoencoderKL", _diffusers_version: "0.24.0", ...sd15.vae });
  json(path.join(dir, "text_encoder", "config.json"), { architectures: ["CLIPTextModel"], model_type: "clip_text_model", torch_dtype: "float16", ...sd15.textEncoder });
  json(path.join(dir, "scheduler", "scheduler_config.json"), { _diffusers_version: "0.24.0", ...sd15.scheduler });
  fs.cpSync(path.join(root, "models", "clip-tokenizer", "sd1"), path.join(dir, "tokenizer"), { recursive: true });

  // One block of random halfs, |x| in [2^-10, 2^-3), sign random; each tensor takes a slice at its own offset.
  const block = new Uint16Array(48 * 2 ** 20);
  let s = 0x9e3779b9;
  for (let i = 0; i < block.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    block[i] = (s & 0x8000) | ((5 + (s % 7)) << 10) | ((s >>> 8) & 0x3ff);
  }
  let cursor = 0;
  const slice = (n) => {
    const out = new Uint16Array(n);
    for (let done = 0; done < n; ) {
      const take = Math.min(n - done, block.length - cursor);
      out.set(block.subarray(cursor, cursor + take), done);
      done += take;
      cursor = (cursor + take) % block.length;
    }
    cursor = (cursor + 12345) % block.length;
    return new Uint8Array(out.buffer);
  };
  for (const [c, base] of Object.entries(COMPONENTS)) {
    const entries = tensorsOf(c).map(({ name, shape }) =>
      isInt(name)
        ? { name, dtype: "I64", shape, data: new Uint8Array(BigInt64Array.from({ length: numel(shape) }, (_, i) => BigInt(i)).buffer) }
        : { name, dtype: "F16", shape, data: () => slice(numel(shape)) },
    );
    writeSafetensors(path.join(dir, c, `${base}.safetensors`), entries, { format: "pt" });
  }
}

// ---------------------------------------------------------------------------------------------
// Measurements, one per process

async function child(job) {
  if (job.kind === "import") {
    const t = performance.now();
    await import(dist("index.js"));
    return { kind: "import", seconds: (performance.now() - t) / 1000 };
  }
  if (job.kind === "read") {
    await import(dist("index.js")); // same resident baseline as the compiles
    const buf = Buffer.allocUnsafe(16 << 20);
    const t = performance.now();
    let bytes = 0;
    for (const f of job.files) {
      const fd = fs.openSync(f, "r");
      for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0; ) bytes += n;
      fs.closeSync(fd);
    }
    return { kind: "read", seconds: (performance.now() - t) / 1000, bytes };
  }
  if (job.kind === "write") {
    // what the fp32 compile must write at least (no fsync, like the ONNX writer), from one reused buffer
    await import(dist("index.js"));
    const buf = Buffer.alloc(16 << 20, 0x3c);
    const t = performance.now();
    const fd = fs.openSync(job.file, "w");
    for (let done = 0; done < job.bytes; ) done += fs.writeSync(fd, buf, 0, Math.min(buf.length, job.bytes - done));
    fs.closeSync(fd);
    const seconds = (performance.now() - t) / 1000;
    fs.rmSync(job.file);
    return { kind: "write", seconds, bytes: job.bytes };
  }
  const { loadPipeline, compile } = await import(dist("index.js"));
  const { sha256File } = await import(dist("util/hash.js"));
  const lines = [];
  const t = performance.now();
  const p = await loadPipeline(job.yaml, { cwd: job.cwd, overrides: job.overrides ?? [] });
  const r = await compile(p, { cwd: job.cwd, log: (l) => lines.push(l.trim()) });
  const seconds = (performance.now() - t) / 1000;
  // after the measurement, alone: the plan's model hash (part of a full compile) reads the whole U-Net file
  let hashSeconds;
  if (job.hash) {
    const th = performance.now();
    sha256File(p.model.weights.unet.files[0]);
    hashSeconds = (performance.now() - th) / 1000;
  }
  const specs = Object.values(r.plan.graphs);
  return {
    kind: "compile",
    seconds,
    hashSeconds,
    yamlName: path.basename(job.yaml),
    result: r.upToDate ? "up to date" : r.rebuilt.length ? `rebuilt ${r.rebuilt.length} graphs` : "plan rewritten",
    bytesLinked: r.upToDate || !r.rebuilt.length ? 0 : specs.reduce((n, s) => n + s.bytesLinked, 0),
    bytesWritten: r.upToDate || !r.rebuilt.length ? 0 : specs.reduce((n, s) => n + s.bytesWritten, 0),
    graphs: lines.filter((l) => l.startsWith("built")).join("; "),
  };
}
