// Shared helpers for benchmarks: timing, peak memory, tables.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawnSync } from "node:child_process";

/** Median and min of `repeat` timed runs of an async function, in seconds. */
export async function timeIt(fn, { repeat = 3, warmup = 0 } = {}) {
  for (let i = 0; i < warmup; i++) await fn();
  const times = [];
  for (let i = 0; i < repeat; i++) {
    const t = performance.now();
    await fn();
    times.push((performance.now() - t) / 1000);
  }
  times.sort((a, b) => a - b);
  return { median: times[Math.floor(times.length / 2)], min: times[0], runs: times };
}

/** Peak resident memory of this process so far (Linux: VmHWM), in MiB. */
export function peakRssMiB() {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync("/proc/self/status", "utf8"));
    if (m) return Number(m[1]) / 1024;
  } catch {}
  return process.resourceUsage().maxRSS / 1024;
}

export function tempDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function table(rows) {
  const cols = Object.keys(rows[0]);
  const w = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c]).length)));
  const line = (cells) => cells.map((c, i) => String(c).padEnd(w[i])).join("  ");
  console.log(line(cols));
  console.log(line(w.map((n) => "-".repeat(n))));
  for (const r of rows) console.log(line(cols.map((c) => r[c])));
}

export const machine = () => `${os.cpus()[0]?.model ?? "cpu"} × ${os.availableParallelism()}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}`;

// ---------------------------------------------------------------------------------------------
// Results file: every benchmark appends its figures, so a later run (or a machine without the
// baseline's tools) can compare against them.

const here = path.dirname(new URL(import.meta.url).pathname);
/** bench/results.json, or SDC_BENCH_RESULTS. */
export const resultsFile = () => process.env.SDC_BENCH_RESULTS ?? path.join(here, "results.json");

function gitCommit() {
  try {
    const head = fs.readFileSync(path.join(here, "..", ".git"), "utf8");
    // a worktree's .git is a file naming its git dir
    const dir = head.startsWith("gitdir:") ? head.slice(7).trim() : path.join(here, "..", ".git");
    const ref = fs.readFileSync(path.join(dir, "HEAD"), "utf8").trim();
    if (!ref.startsWith("ref:")) return ref.slice(0, 12);
    const name = ref.slice(4).trim();
    for (const d of [dir, path.join(dir, fs.existsSync(path.join(dir, "commondir")) ? fs.readFileSync(path.join(dir, "commondir"), "utf8").trim() : ".")]) {
      const f = path.join(d, name);
      if (fs.existsSync(f)) return fs.readFileSync(f, "utf8").trim().slice(0, 12);
      const packed = path.join(d, "packed-refs");
      if (fs.existsSync(packed)) {
        const m = fs.readFileSync(packed, "utf8").split("\n").find((l) => l.endsWith(` ${name}`));
        if (m) return m.slice(0, 12);
      }
    }
  } catch {}
  return null;
}

/**
 * Append one benchmark's figures to the results file (a JSON array; created when missing).
 * `rows`: one object per figure, e.g. { figure: "VAE decoder 64²", sdc: 8.1, baseline: 8.4,
 * baselineKind: "torch.onnx.export", unit: "s", sdcPeakMiB: ..., baselinePeakMiB: ... }.
 */
export function record(bench, rows, extra = {}) {
  const file = resultsFile();
  let all = [];
  try {
    all = JSON.parse(fs.readFileSync(file, "utf8"));
    if (!Array.isArray(all)) all = [];
  } catch {}
  all.push({ bench, date: new Date().toISOString(), commit: gitCommit(), machine: machine(), loadavg: os.loadavg().map((x) => Number(x.toFixed(2))), ...extra, rows });
  fs.writeFileSync(file, JSON.stringify(all, null, 1) + "\n");
  console.log(`results appended to ${path.relative(process.cwd(), file) || file}`);
}

/** The latest recorded row of `bench` whose figure is `figure` (and its run's date), or null. */
export function previous(bench, figure) {
  try {
    const all = JSON.parse(fs.readFileSync(resultsFile(), "utf8"));
    for (let i = all.length - 1; i >= 0; i--) {
      if (all[i].bench !== bench) continue;
      const row = all[i].rows.find((r) => r.figure === figure);
      if (row) return { ...row, date: all[i].date, commit: all[i].commit };
    }
  } catch {}
  return null;
}

/**
 * A Python interpreter that runs `script probe` (printing a JSON line of versions), with diffusers
 * from SDC_BENCH_PYTHONPATH and the fixture generators' safetensors stand-in on PYTHONPATH; or why
 * there is none. SDC_BENCH_PYTHON picks the interpreter (default: python3, then /usr/bin/python3).
 */
export function probePython(script, { threads = 2 } = {}) {
  const root = path.join(here, "..");
  const extra = [process.env.SDC_BENCH_PYTHONPATH, path.join(root, "test", "fixtures", "gen", "pyshim"), process.env.PYTHONPATH].filter(Boolean).join(path.delimiter);
  const env = { ...process.env, PYTHONPATH: extra, PYTHONDONTWRITEBYTECODE: "1", OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads) };
  const candidates = process.env.SDC_BENCH_PYTHON ? [process.env.SDC_BENCH_PYTHON] : ["python3", "/usr/bin/python3"];
  const reasons = [];
  for (const python of candidates) {
    const r = spawnSync(python, [script, "probe"], { env, encoding: "utf8" });
    if (r.error) {
      reasons.push(`${python}: ${r.error.code === "ENOENT" ? "not found" : r.error.message}`);
      continue;
    }
    if (r.status === 0) return { ok: true, python, env, versions: JSON.parse(r.stdout.trim().split("\n").pop()) };
    reasons.push(`${python}: ${(r.stderr || r.stdout).trim().split("\n").filter(Boolean).pop() ?? `exit ${r.status}`}`);
  }
  const hint = process.env.SDC_BENCH_PYTHONPATH ? "" : " (SDC_BENCH_PYTHONPATH is not set: point it at the folder holding diffusers 0.24's `diffusers` package)";
  return { ok: false, reason: `${reasons.join("; ")}${hint}` };
}

/** Run `node file args…` and parse the last line of its stdout as JSON; exits on failure. */
export function runNodeChild(file, args, { env = process.env } = {}) {
  const r = spawnSync(process.execPath, ["--expose-gc", file, ...args], { encoding: "utf8", maxBuffer: 1 << 26, env });
  if (r.status !== 0) {
    console.error(`${path.basename(file)} ${args.join(" ")} failed (exit ${r.status}):\n${r.stderr}`);
    process.exit(1);
  }
  return JSON.parse(r.stdout.trim().split("\n").pop());
}

export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
/** "0.93×" */
export const ratio = (a, b) => (a && b ? `${(a / b).toFixed(2)}×` : "–");

/** A safetensors file's header: { tensors: { name: { dtype, shape, data_offsets } }, base: byte offset of the data }. */
export function safetensorsHeader(file) {
  const fd = fs.openSync(file, "r");
  const len = Buffer.alloc(8);
  fs.readSync(fd, len, 0, 8, 0);
  const n = Number(len.readBigUInt64LE());
  const json = Buffer.alloc(n);
  fs.readSync(fd, json, 0, n, 8);
  fs.closeSync(fd);
  const tensors = JSON.parse(json.toString("utf8"));
  delete tensors.__metadata__;
  return { tensors, base: 8 + n };
}

/** A sparse safetensors file of F32 zeros with these tensors (weights whose values a timing does not depend on); its header and where the data starts. */
export function sparseZeros(file, shapes) {
  const header = {};
  let offset = 0;
  for (const [name, shape] of shapes) {
    const n = shape.reduce((a, b) => a * b, 4);
    header[name] = { dtype: "F32", shape, data_offsets: [offset, offset + n] };
    offset += n;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const fd = fs.openSync(file, "w");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeSync(fd, len);
  fs.writeSync(fd, json);
  fs.ftruncateSync(fd, 8 + json.length + offset);
  fs.closeSync(fd);
  return { header, base: 8 + json.length };
}

/** Nodes of an ONNX file (weights may be external: only the graph is read). */
export async function onnxNodeCount(file) {
  const { onnx } = (await import("onnx-proto")).default;
  return onnx.ModelProto.decode(fs.readFileSync(file)).graph.node.length;
}
