// Seconds to the first step: from process start (node launched, sdc imported) to the first U-Net
// step of a txt2img run with guidance, for an SD 1.5-size compiled folder (fp32, sparse zero weights
// linked from a made-up checkpoint, see sd15-sparse.mjs: no download, no disk cost; kernels do not
// care about values). Each run is its own process, so its peak memory is its own.
//
//   baseline   sessions opened one after the other when first needed, no optimised-graph cache
//              (what sdc did before): level-`all` optimisation of every graph on every start
//   cold       the first run after compiling: the cache is made (the U-Net is still optimised)
//   warm       the second run: every graph loaded from the cache with optimisation off
//   warm, sequential / warm, no prepacking: the warm run without the worker-thread U-Net, and with
//              onnxruntime's weight prepacking off (memory against speed)
//   warm, through the pipeline file: what `sdc run p.yaml` adds (config load and checks, the
//              staleness check, the folder's lock and private view)
//
// "to step 1" is when the first U-Net evaluation begins; "step 1 done" when it has finished; "CPU s"
// is the process's CPU time (all threads) by then, which other load on the machine inflates less
// than wall time (on an idle 2-core machine wall time lies between CPU/2 and CPU). The
// phases of the warm run show where its time goes (they overlap: the U-Net's session opens in a
// worker thread while the main thread tokenizes and encodes).
//
//   npm run build && node bench/start.bench.mjs     (SDC_BENCH_SIZE=512 for 512² images; default 256)
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { makeSd15Sparse } from "./sd15-sparse.mjs";
import { machine, table, tempDir } from "./util.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const dist = (p) => pathToFileURL(path.join(root, "dist", p)).href;
const SIZE = Number(process.env.SDC_BENCH_SIZE ?? 256);

if (process.argv[2] === "child") {
  // one run, stopped after its first step; times from process start (performance.timeOrigin)
  const job = JSON.parse(process.argv[3]);
  const { runPlan, loadPipeline, run } = await import(dist("index.js"));
  const imported = performance.now();
  const phases = [];
  const ac = new AbortController();
  let stepDone = 0;
  // process CPU seconds (all threads) when the first step can begin: the initial latents are ready
  // and the U-Net's session is open, whichever comes later
  const cpuNow = () => {
    const u = process.cpuUsage();
    return { t: performance.now(), s: (u.user + u.system) / 1e6 };
  };
  let latentsReady = null;
  let unetReady = null;
  const settings = { prompts: ["a photograph of an astronaut riding a horse"], negativePrompts: [""], guidanceScale: 7.5, guidanceRescale: 0, width: SIZE, height: SIZE, batch: 1, seed: 1, initImage: null, strength: 0.8, latents: null, outputDir: job.out, grid: false, threads: 0 };
  // job.pipeline: what `sdc run p.yaml` does (load and check the config, the staleness check, the
  // compiled folder's lock and private view) instead of running the compiled folder directly
  const go = job.pipeline ? (o) => loadPipeline(job.pipeline, { cwd: path.dirname(job.pipeline) }).then((p) => run(p, { ...o, cwd: path.dirname(job.pipeline) })) : (o) => runPlan(job.dir, settings, o);
  await go(
    {
      signal: ac.signal,
      progress: false,
      sessions: job.sessions,
      onPhase: (p) => {
        phases.push(p);
        if (p.phase === "create unet session") unetReady = cpuNow();
      },
      trace: (stage) => {
        if (stage === "latents_init") latentsReady = cpuNow();
      },
      onStep: (step) => {
        if (step === 1) {
          stepDone = performance.now();
          ac.abort();
        }
      },
    },
  );
  const hwm = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync("/proc/self/status", "utf8"));
  const cpu = process.cpuUsage();
  const firstRun = phases.find((p) => p.phase === "first unet run");
  const ready = latentsReady.t > unetReady.t ? latentsReady : unetReady;
  process.stdout.write(`${JSON.stringify({ imported, stepStart: firstRun.start, stepDone, phases, peakMiB: hwm ? Number(hwm[1]) / 1024 : NaN, cpuS: (cpu.user + cpu.system) / 1e6, cpuToStep: ready.s })}\n`);
  process.exit(0);
}

if (!fs.existsSync(path.join(root, "dist", "index.js"))) {
  console.error("dist/ is missing: run `npm run build` first");
  process.exit(2);
}
console.log(`machine: ${machine()}; load average ${os.loadavg().map((x) => x.toFixed(1)).join(" ")} (other work on this machine slows every figure)`);
const work = tempDir("sdc-bench-start-");
const cleanup = () => fs.rmSync(work, { recursive: true, force: true }); // gigabytes of cache: never leave them behind
process.on("exit", cleanup);
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(130));

const model = path.join(work, "sd15");
makeSd15Sparse(root, model);
const yaml = path.join(work, "p.yaml");
fs.writeFileSync(yaml, `version: 1\nname: sd15\nmodel:\n  from: ${JSON.stringify(model)}\nsample:\n  prompt: a photograph of an astronaut riding a horse\n  width: ${SIZE}\n  height: ${SIZE}\n  seed: 1\nruntime:\n  precision: fp32\n  device: cpu\n`);
const { loadPipeline, compile } = await import(dist("index.js"));
const c = await compile(await loadPipeline(yaml, { cwd: work }), { cwd: work });
console.log(`compiled an SD 1.5-size folder (fp32, U-Net ${(c.plan.graphs.unet.parameters / 1e6).toFixed(0)} M parameters) in ${c.seconds.toFixed(1)} s; images ${SIZE}², batch 2 (guidance)`);

const clearCache = () => {
  for (const g of Object.values(c.plan.graphs)) {
    const gdir = path.join(c.dir, path.dirname(g.file));
    for (const f of fs.readdirSync(gdir)) if (f.includes(".ort")) fs.rmSync(path.join(gdir, f));
  }
};
const cacheBytes = () =>
  Object.values(c.plan.graphs).reduce((n, g) => {
    const gdir = path.join(c.dir, path.dirname(g.file));
    return n + fs.readdirSync(gdir).filter((f) => f.includes(".ort")).reduce((m, f) => m + fs.statSync(path.join(gdir, f)).size, 0);
  }, 0);

const rows = [];
const run = (what, sessions, pipeline) => {
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), "child", JSON.stringify({ dir: c.dir, out: path.join(work, "out"), sessions, ...(pipeline ? { pipeline } : {}) })], { encoding: "utf8", maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status}):\n${r.stderr}`);
  const res = { what, ...JSON.parse(r.stdout.trim().split("\n").pop()) };
  rows.push(res);
  console.log(`  ${what}: step 1 begins at ${(res.stepStart / 1000).toFixed(2)} s`);
  return res;
};

clearCache();
const base = run("baseline: sequential, no cache (cold)", { sequential: true, cache: false });
run("baseline: sequential, no cache (warm)", { sequential: true, cache: false });
const cold = run("sdc cold (first run: makes the cache)", {});
const bytes = cacheBytes();
const warm = run("sdc warm (second run: cache)", {});
run("sdc warm, sequential (no worker thread)", { sequential: true });
run("sdc warm, prepacking off", { prepacking: false });
run("sdc warm, through the pipeline file", {}, yaml);

const s = (ms) => (ms / 1000).toFixed(2);
const create = (r, g) => r.phases.find((p) => p.phase === `create ${g} session`);
console.log("");
table(
  rows.map((r) => ({
    run: r.what,
    "import s": s(r.imported),
    "to step 1 s": s(r.stepStart),
    "× baseline": `${(r.stepStart / base.stepStart).toFixed(2)}×`,
    "step 1 done s": s(r.stepDone),
    "U-Net session s": s(create(r, "unet").end - create(r, "unet").start),
    "peak RSS MiB": r.peakMiB.toFixed(0),
    "CPU s to step 1": r.cpuToStep.toFixed(1),
    "CPU s, step 1 done": r.cpuS.toFixed(1),
  })),
);
console.log(`\ncache written by the cold run: ${(bytes / 1e9).toFixed(2)} GB beside the compiled graphs (the optimised graphs' weights)`);
console.log(`\nwhere the warm run's time goes (seconds from process start; phases overlap):`);
table(
  [{ phase: "node start + import sdc", start: 0, end: warm.imported }, ...warm.phases]
    .filter((p) => !p.phase.startsWith("first ") || p.phase === "first unet run")
    .map((p) => ({ phase: p.phase, from: s(p.start), to: s(p.end), seconds: s(p.end - p.start), note: p.detail ?? "" })),
);
console.log(
  `\nsummary: to the first U-Net step, ${SIZE}² SD 1.5 fp32 on the CPU: baseline ${s(base.stepStart)} s, cold ${s(cold.stepStart)} s (${(cold.stepStart / base.stepStart).toFixed(2)}×), ` +
    `warm ${s(warm.stepStart)} s (${(warm.stepStart / base.stepStart).toFixed(2)}×, ${(base.stepStart / warm.stepStart).toFixed(1)}× faster)`,
);
