#!/usr/bin/env node
// `npm run bench`: runs every bench/*.bench.mjs (or those named on the command line) one after the
// other, each in its own process so peak memory is its own. Each benchmark measures its baseline in
// the same run and prints ratios against it. Benchmarks import the built library (dist/).
// Those that record their figures (record() in util.mjs, appending to bench/results.json) are
// summed up at the end in one table: every figure beside its baseline from the same run.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const only = process.argv.slice(2);
const files = fs
  .readdirSync(here)
  .filter((f) => f.endsWith(".bench.mjs"))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort();
if (files.length === 0) {
  console.error(`no benchmark matches ${only.join(", ")}`);
  process.exit(2);
}
const started = new Date().toISOString();
let failed = 0;
for (const f of files) {
  console.log(`\n=== ${f}`);
  const r = spawnSync(process.execPath, ["--expose-gc", path.join(here, f)], { stdio: "inherit" });
  if (r.status !== 0) {
    failed++;
    console.log(`${f} failed (exit ${r.status})`);
  }
}
summary();
process.exit(failed ? 1 : 0);

/** One table of every figure recorded since this run started. */
function summary() {
  const file = process.env.SDC_BENCH_RESULTS ?? path.join(here, "results.json");
  let all = [];
  try {
    all = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch {
    return;
  }
  const rows = all.filter((r) => r.date >= started).flatMap((r) => r.rows.map((row) => ({ bench: r.bench, ...row })));
  if (rows.length === 0) return;
  const num = (x, d = 3) => (typeof x === "number" ? x.toFixed(d) : "–");
  const rat = (a, b) => (typeof a === "number" && typeof b === "number" && b > 0 ? `${(a / b).toFixed(2)}×` : "–");
  const cells = rows.map((r) => ({
    figure: r.figure,
    sdc: `${num(r.sdc)} ${r.unit ?? ""}`.trim(),
    baseline: `${num(r.baseline)} ${r.unit ?? ""}`.trim(),
    "baseline is": r.baselineKind ?? "",
    ratio: rat(r.sdc, r.baseline),
    "fastest runs": rat(r.sdcMin, r.baselineMin),
    "CPU s ratio": rat(r.sdcCpu, r.baselineCpu),
    "peak MiB sdc / baseline": `${r.sdcPeakMiB ?? "–"} / ${r.baselinePeakMiB ?? "–"}`,
    memory: rat(r.sdcPeakMiB, r.baselinePeakMiB),
  }));
  const cols = Object.keys(cells[0]);
  const w = cols.map((c) => Math.max(c.length, ...cells.map((r) => String(r[c]).length)));
  const line = (xs) => xs.map((x, i) => String(x).padEnd(w[i])).join("  ");
  console.log(`\n=== summary (appended to ${path.relative(process.cwd(), file) || file})`);
  console.log(line(cols));
  console.log(line(w.map((n) => "-".repeat(n))));
  for (const c of cells) console.log(line(cols.map((k) => c[k])));
}
