// Shared helpers for benchmarks: timing, peak memory, tables.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

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
