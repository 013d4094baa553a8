/**
 * kill -9 at random moments of `sdc compile` and of sampling, 20 trials each (times drawn from a
 * seeded generator over the command's own measured duration). After every kill the compiled folder
 * is the old or the new version, never a mix: its plan.json reads and every graph file matches the
 * plan's sha256 (or, before the first compile ever finished, there is no folder); every image
 * written is a whole PNG. The next command then succeeds by itself and leaves no temporary folders.
 * Also `recoverDir` itself, on the states a kill between the two renames of a swap leaves.
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { beforeAll, describe, expect, it } from "vitest";
import { readPlan } from "../../src/plan/read.js";
import { TorchGenerator } from "../../src/runtime/rng.js";
import { checkGraphFiles } from "../../src/runtime/verify.js";
import { recoverDir } from "../../src/util/fs.js";
import { buildPackage, tempDir } from "../helpers/repo.js";
import { twoPrecisionProject } from "./project.js";
import { SCALE } from "./scale.js";

const TRIALS = 20 * SCALE;

/** Kill times from sdc's own seeded generator (PyTorch's Mersenne Twister). */
function rng(seed: number) {
  const g = new TorchGenerator(seed);
  return () => g.random() / 2 ** 32;
}

/** Run sdc; SIGKILL it after `killMs` when given. Resolves with the exit code (null: killed) and the time it ran. */
function sdc(bin: string, cwd: string, args: string[], killMs?: number): Promise<{ code: number | null; ms: number }> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [bin, ...args], { cwd, stdio: "ignore" });
    const timer = killMs === undefined ? null : setTimeout(() => child.kill("SIGKILL"), killMs);
    child.on("exit", (code) => {
      if (timer) clearTimeout(timer);
      resolve({ code, ms: performance.now() - t0 });
    });
  });
}

function project(): string {
  return twoPrecisionProject("sdc-kill9-", 4);
}

/** The compiled folder is whole: its plan reads and every graph file matches it. Returns its pipeline hash, or null when there is none. */
function wholeOrAbsent(compiled: string): string | null {
  if (!fs.existsSync(compiled)) return null;
  const plan = readPlan(compiled);
  for (const g of Object.values(plan.graphs)) checkGraphFiles(compiled, g);
  return plan.pipelineHash;
}

const leftovers = (dir: string) => fs.readdirSync(dir).filter((n) => n.startsWith(".sdc-tmp-"));

describe("kill -9 during compile and sampling", () => {
  let bin: string;
  beforeAll(() => {
    bin = buildPackage();
  });

  it(`compile killed ${TRIALS} times: the compiled folder is always the old or the new version, and the next command mends everything`, async () => {
    const cwd = project();
    const compiled = path.join(cwd, "compiled", "p");
    // the duration of a compile of each version, to draw the kill times from
    const a = await sdc(bin, cwd, ["compile", "a.yaml"]);
    expect(a.code).toBe(0);
    const hashA = wholeOrAbsent(compiled);
    const b = await sdc(bin, cwd, ["compile", "b.yaml"]);
    expect(b.code).toBe(0);
    const hashB = wholeOrAbsent(compiled);
    expect(hashA).not.toBe(hashB);
    const rand = rng(7);
    let killed = 0;
    for (let i = 0; i < TRIALS; i++) {
      const file = i % 2 === 0 ? "a.yaml" : "b.yaml";
      const r = await sdc(bin, cwd, ["compile", file], rand() * Math.max(a.ms, b.ms) * 1.1);
      if (r.code === null) killed++;
      // recovery is what any reader does first; then the folder must be one of the two versions
      recoverDir(compiled);
      expect([hashA, hashB], `trial ${i}`).toContain(wholeOrAbsent(compiled));
    }
    expect(killed).toBeGreaterThanOrEqual(TRIALS / 2);
    const last = await sdc(bin, cwd, ["run", "a.yaml"]);
    expect(last.code).toBe(0);
    expect(wholeOrAbsent(compiled)).toBe(hashA);
    expect(leftovers(path.join(cwd, "compiled"))).toEqual([]);
    console.log(`compile kill -9 trials: ${TRIALS} runs, ${killed} killed before they finished; the folder was whole after each`);
  }, 240_000 * SCALE);

  it(`sampling killed ${TRIALS} times: every image on disk is a whole PNG, and the next run succeeds`, async () => {
    const cwd = project();
    const first = await sdc(bin, cwd, ["run", "a.yaml"]);
    expect(first.code).toBe(0);
    const timed = await sdc(bin, cwd, ["run", "a.yaml"]);
    const rand = rng(11);
    let killed = 0;
    for (let i = 0; i < TRIALS; i++) {
      const r = await sdc(bin, cwd, ["run", "a.yaml"], rand() * timed.ms * 1.1);
      if (r.code === null) killed++;
      const out = path.join(cwd, "out");
      for (const f of fs.readdirSync(out)) {
        expect(f, `trial ${i}: a temporary file left among the images`).toMatch(/^\d{5}-\d+\.png$|^\.sdc-tmp-/);
        if (!f.endsWith(".png") || f.startsWith(".sdc-tmp-")) continue;
        const m = await sharp(path.join(out, f)).metadata();
        expect([m.width, m.height], `trial ${i}: ${f}`).toEqual([32, 32]);
      }
    }
    expect(killed).toBeGreaterThanOrEqual(TRIALS / 2);
    expect((await sdc(bin, cwd, ["run", "a.yaml"])).code).toBe(0);
    console.log(`sampling kill -9 trials: ${TRIALS} runs, ${killed} killed before they finished; every image on disk decoded`);
  }, 240_000 * SCALE);

  it("recoverDir puts back the newest finished version after a kill between the swap's renames, and removes dead siblings", () => {
    const root = tempDir("sdc-recover-");
    const target = path.join(root, "p");
    const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]).stdout.toString();
    const sib = (tag: string, files: Record<string, string>) => {
      const d = path.join(root, `.sdc-tmp-p-${dead}-${tag}`);
      expect(tag).toMatch(/^[0-9a-f]{8}$/);
      fs.mkdirSync(d);
      for (const [f, c] of Object.entries(files)) fs.writeFileSync(path.join(d, f), c);
      return d;
    };
    // killed after `target → old` and before `new → target`: the new one (marked complete) wins
    sib("0000000a", { "plan.json": "old" });
    sib("0000000b", { "plan.json": "new", ".sdc-complete": "" });
    sib("0000000c", { ".sdc-building": "", "plan.json": "partial" });
    expect(recoverDir(target)).toBe(true);
    expect(fs.readFileSync(path.join(target, "plan.json"), "utf8")).toBe("new");
    expect(fs.readdirSync(target)).toEqual(["plan.json"]);
    expect(leftovers(root)).toEqual([]);
    // only the old one is finished (the new one was still being built): the old one comes back
    fs.rmSync(target, { recursive: true });
    sib("0000000a", { "plan.json": "old" });
    sib("0000000c", { ".sdc-building": "" });
    expect(recoverDir(target)).toBe(true);
    expect(fs.readFileSync(path.join(target, "plan.json"), "utf8")).toBe("old");
    // a live process's folder is never touched
    const live = path.join(root, `.sdc-tmp-p-${process.pid}-0000000d`);
    fs.mkdirSync(live);
    // nor is a temporary of a sibling folder whose name extends this one's ("p-7" beside "p")
    const other = path.join(root, `.sdc-tmp-p-7-${dead}-0000000e`);
    fs.mkdirSync(other);
    expect(recoverDir(target)).toBe(false);
    expect(fs.existsSync(live)).toBe(true);
    expect(fs.existsSync(other)).toBe(true);
  });
});
