// One onnxruntime session in its own process (so its peak memory is its own), timed: the graph
// benchmarks' child. Argument: a JSON job
//   { model, feeds: { name: { dims, dtype?: "float32" | "int32" | "int64", fill?: number } }, repeat, warmup, threads, profile?: prefix,
//     tiled?: { tile, overlap, scaleFactor, dir: "decode" | "encode", input, output },
//     optimizedModel?: path (write onnxruntime's optimised graph there, and count its nodes),
//     sessionOptions?: more onnxruntime session options }
// Prints one JSON line: { sessionS, runS: [...] (wall), cpuS: [...] (this process's CPU time), peakMiB, optimizedNodes? }.
import * as fs from "node:fs";
import * as path from "node:path";
import * as ort from "onnxruntime-node";

const job = JSON.parse(process.argv[2]);
const rnd = (n) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898) * 0.5);
const feeds = {};
for (const [name, f] of Object.entries(job.feeds)) {
  const n = f.dims.reduce((a, b) => a * b, 1);
  // integer inputs (token ids): 0, 1, 2, ... modulo `fill` (default 1000)
  if (f.dtype === "int32") feeds[name] = new ort.Tensor("int32", Int32Array.from({ length: n }, (_, i) => i % (f.fill ?? 1000)), f.dims);
  else if (f.dtype === "int64") feeds[name] = new ort.Tensor("int64", BigInt64Array.from({ length: n }, (_, i) => BigInt(i % (f.fill ?? 1000))), f.dims);
  else feeds[name] = new ort.Tensor("float32", f.fill !== undefined ? new Float32Array(n).fill(f.fill) : rnd(n), f.dims);
}
let t = performance.now();
const s = await ort.InferenceSession.create(job.model, {
  executionProviders: ["cpu"],
  graphOptimizationLevel: "all",
  intraOpNumThreads: job.threads ?? 2,
  interOpNumThreads: 1,
  logSeverityLevel: 3,
  ...(job.optimizedModel ? { optimizedModelFilePath: job.optimizedModel } : {}),
  ...(job.profile ? { enableProfiling: true, profileFilePrefix: job.profile } : {}),
  // SDC_BENCH_SPIN=0: idle threads sleep instead of spinning (CPU seconds then count work only)
  ...(process.env.SDC_BENCH_SPIN === "0" ? { extra: { session: { intra_op: { allow_spinning: "0" } } } } : {}),
  // session options to measure (e.g. { enableCpuMemArena: false })
  ...(job.sessionOptions ?? {}),
});
const sessionS = (performance.now() - t) / 1000;

let run = () => s.run(feeds);
if (job.tiled) {
  const { runTiled, tilingGeometry, needsTiling } = await import("../dist/runtime/stages/vae-tiling.js");
  const g = tilingGeometry({ tile: job.tiled.tile, overlap: job.tiled.overlap }, job.tiled.scaleFactor, job.tiled.dir);
  const x = feeds[job.tiled.input];
  if (!needsTiling(x.dims[2], x.dims[3], g)) throw new Error("input fits one tile");
  const graph = async (tile) => {
    const o = (await s.run({ [job.tiled.input]: new ort.Tensor("float32", tile.data, tile.dims) }))[job.tiled.output];
    return { data: o.data, dims: o.dims };
  };
  run = () => runTiled(graph, { data: x.data, dims: x.dims }, g);
}
for (let i = 0; i < (job.warmup ?? 1); i++) await run();
const runS = [];
const cpuS = [];
for (let i = 0; i < (job.repeat ?? 2); i++) {
  t = performance.now();
  const c = process.cpuUsage();
  await run();
  runS.push((performance.now() - t) / 1000);
  const d = process.cpuUsage(c);
  cpuS.push((d.user + d.system) / 1e6);
}
const hwm = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync("/proc/self/status", "utf8"));
const out = { sessionS, runS, cpuS, peakMiB: hwm ? Number(hwm[1]) / 1024 : null };
if (job.profile) {
  // onnxruntime writes <prefix>_<date>.json
  const ret = s.endProfiling();
  const dir = path.dirname(job.profile);
  out.profile = typeof ret === "string" && ret ? ret : fs.readdirSync(dir).filter((f) => f.startsWith(path.basename(job.profile)) && f.endsWith(".json")).map((f) => path.join(dir, f)).pop();
}
await s.release();
if (job.optimizedModel) {
  const { onnx } = (await import("onnx-proto")).default;
  const m = onnx.ModelProto.decode(fs.readFileSync(job.optimizedModel));
  out.optimizedNodes = m.graph.node.length;
  const ops = {};
  for (const n of m.graph.node) ops[n.opType] = (ops[n.opType] ?? 0) + 1;
  out.optimizedOps = ops;
  fs.rmSync(job.optimizedModel, { force: true });
}
console.log(JSON.stringify(out));
