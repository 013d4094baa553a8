/**
 * A compile racing a run on the same compiled folder: `sdc run a.yaml` and `sdc compile b.yaml`
 * (another pipeline with the same name, so the same compiled/p) started together, 20 times, the
 * compile after a delay drawn from a seeded generator (up to half a run's time). Both exit 0 every time, and the run's image
 * is pixel for pixel the one pipeline a gives alone (b gives another): the run sampled the plan it
 * compiled, whichever process swapped the folder when. Nothing is left beside the folder.
 * Also the lock itself: one holder at a time across processes, a dead owner's lock taken over.
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { beforeAll, describe, expect, it } from "vitest";
import { readPlan } from "../../src/plan/read.js";
import { TorchGenerator } from "../../src/runtime/rng.js";
import { lockFile, snapshotDir, sweepSnapshots, withDirLock } from "../../src/util/lock.js";
import { buildPackage, REPO, tempDir } from "../helpers/repo.js";
import { transpileForNode } from "../helpers/transpile.js";
import { SCALE } from "./scale.js";

const TRIALS = 20 * SCALE;

function sdc(bin: string, cwd: string, args: string[], delayMs = 0): Promise<{ code: number | null; stderr: string; start: number; end: number }> {
  return new Promise((resolve) => {
    setTimeout(() => {
      const start = performance.now();
      const child = spawn(process.execPath, [bin, ...args], { cwd, stdio: ["ignore", "ignore", "pipe"] });
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => void (stderr += d.toString()));
      child.on("exit", (code) => resolve({ code, stderr, start, end: performance.now() }));
    }, delayMs);
  });
}

function project(): string {
  const dir = tempDir("sdc-race-");
  const model = JSON.stringify(path.join(REPO, "models", "tiny-sd"));
  // same name (so the same compiled/p), different schedules and precisions: different plans, different
  // graph files (fp16 weights), different images; a run that opened one of b's graphs would not give a's image
  const yaml = (scheduler: string, precision: string, out: string) =>
    `version: 1\nname: p\nmodel:\n  from: ${model}\nscheduler:\n  type: ${scheduler}\n  steps: 3\nsample:\n  prompt: a red fox\n  width: 32\n  height: 32\noutput:\n  dir: ${out}\nruntime:\n  device: cpu\n  precision: ${precision}\n  threads: 1\n`;
  fs.writeFileSync(path.join(dir, "a.yaml"), yaml("euler", "fp32", "out-a"));
  fs.writeFileSync(path.join(dir, "b.yaml"), yaml("ddim", "fp16", "out-b"));
  return dir;
}

async function pixels(file: string): Promise<Buffer> {
  return sharp(file).raw().toBuffer();
}

/** The newest image in a folder (names are numbered). */
function newest(dir: string): string {
  const pngs = fs.readdirSync(dir).filter((f) => /^\d{5}-\d+\.png$/.test(f)).sort();
  return path.join(dir, pngs.at(-1)!);
}

describe("compile racing a run on the same folder", () => {
  let bin: string;
  beforeAll(() => {
    bin = buildPackage();
  });

  it(`${TRIALS} races: both exit 0, and the run's image is pipeline a's`, async () => {
    const cwd = project();
    const compiled = path.join(cwd, "compiled", "p");
    // references, one at a time: a's image, b's image (different), and how long a run takes
    const ra = await sdc(bin, cwd, ["run", "a.yaml"]);
    expect(ra.code, ra.stderr).toBe(0);
    const refA = await pixels(newest(path.join(cwd, "out-a")));
    const hashA = readPlan(compiled).pipelineHash;
    const rb = await sdc(bin, cwd, ["run", "b.yaml"]);
    expect(rb.code, rb.stderr).toBe(0);
    const refB = await pixels(newest(path.join(cwd, "out-b")));
    expect(refB.equals(refA)).toBe(false);
    expect(readPlan(compiled).pipelineHash).not.toBe(hashA);
    const runMs = ra.end - ra.start;

    const g = new TorchGenerator(5);
    let overlapped = 0;
    let recompiledByRun = 0;
    for (let i = 0; i < TRIALS; i++) {
      const delay = (g.random() / 2 ** 32) * runMs * 0.5;
      const [run, comp] = await Promise.all([sdc(bin, cwd, ["run", "a.yaml"]), sdc(bin, cwd, ["compile", "b.yaml"], delay)]);
      expect(run.code, `trial ${i}: run\n${run.stderr}`).toBe(0);
      expect(comp.code, `trial ${i}: compile\n${comp.stderr}`).toBe(0);
      if (comp.start < run.end && run.start < comp.end) overlapped++;
      if (/compiled .* in /.test(run.stderr)) recompiledByRun++;
      const img = await pixels(newest(path.join(cwd, "out-a")));
      expect(img.equals(refA), `trial ${i}: the run's image is not pipeline a's`).toBe(true);
    }
    // process start-up varies: most, not all, pairs run at the same time
    expect(overlapped).toBeGreaterThanOrEqual(TRIALS / 2);
    // the folder held b's plan before most runs, so most runs compiled a into it themselves
    expect(recompiledByRun).toBeGreaterThan(0);
    expect(fs.readdirSync(path.join(cwd, "compiled")).sort()).toEqual(["p"]);
    console.log(`compile-vs-run races: ${TRIALS} trials, ${overlapped} overlapping in time, ${recompiledByRun} runs recompiled a; every run exited 0 with a's image`);
  }, 300_000 * SCALE);
});

describe("withDirLock", () => {
  it("one holder at a time across processes: four processes each append enter/leave pairs that never interleave", async () => {
    const dir = tempDir("sdc-lock-");
    const target = path.join(dir, "p");
    const log = path.join(dir, "log");
    const lockModule = transpileForNode(path.join(REPO, "src", "util", "lock.ts"), path.join(dir, "js"));
    // each child takes the lock 5 times and writes enter/leave with a pause in between
    const script = `
      const { withDirLock } = await import(${JSON.stringify(lockModule)});
      const fs = await import("node:fs");
      for (let i = 0; i < 5; i++)
        await withDirLock(${JSON.stringify(target)}, async () => {
          fs.appendFileSync(${JSON.stringify(log)}, "enter " + process.pid + "\\n");
          await new Promise((r) => setTimeout(r, 15));
          fs.appendFileSync(${JSON.stringify(log)}, "leave " + process.pid + "\\n");
        });`;
    const run = () =>
      new Promise<number | null>((resolve) => {
        const f = path.join(dir, `child-${Math.random().toString(16).slice(2)}.mjs`);
        fs.writeFileSync(f, script);
        spawn(process.execPath, [f], { cwd: REPO, stdio: "ignore" }).on("exit", resolve);
      });
    const codes = await Promise.all([run(), run(), run(), run()]);
    expect(codes).toEqual([0, 0, 0, 0]);
    const lines = fs.readFileSync(log, "utf8").trim().split("\n");
    expect(lines).toHaveLength(40);
    for (let i = 0; i < lines.length; i += 2) {
      const [a, pa] = lines[i]!.split(" ");
      const [b, pb] = lines[i + 1]!.split(" ");
      expect([a, b, pa]).toEqual(["enter", "leave", pb]);
    }
    expect(fs.existsSync(lockFile(target))).toBe(false);
    expect(fs.readdirSync(dir).filter((n) => n.startsWith(".sdc-"))).toEqual([]);
  }, 60_000);

  it("takes over the lock of a dead process, is re-entrant in one call chain, and sweeps dead runs' views", async () => {
    const dir = tempDir("sdc-lock-");
    const target = path.join(dir, "p");
    fs.mkdirSync(target);
    fs.writeFileSync(path.join(target, "plan.json"), "{}");
    const dead = Number(spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]).stdout.toString());
    fs.writeFileSync(lockFile(target), JSON.stringify({ pid: dead, started: null, host: (await import("node:os")).hostname(), token: "x" }));
    const deadView = path.join(dir, `.sdc-run-p-${dead}-0000abcd`);
    fs.mkdirSync(deadView);
    let inner = false;
    await withDirLock(target, async () => {
      expect(JSON.parse(fs.readFileSync(lockFile(target), "utf8")).pid).toBe(process.pid);
      await withDirLock(target, () => {
        inner = true;
      });
      expect(fs.existsSync(lockFile(target))).toBe(true); // the inner call did not release it
    });
    expect(inner).toBe(true);
    expect(fs.existsSync(lockFile(target))).toBe(false);
    expect(fs.existsSync(deadView)).toBe(false);
    // a view keeps its files when the folder is replaced
    const view = snapshotDir(target);
    fs.rmSync(target, { recursive: true });
    expect(fs.readFileSync(path.join(view.dir, "plan.json"), "utf8")).toBe("{}");
    sweepSnapshots(target); // a live process's view stays
    expect(fs.existsSync(view.dir)).toBe(true);
    view.remove();
    expect(fs.readdirSync(dir)).toEqual([]);
  });
});
