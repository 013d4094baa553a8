/**
 * A full disk, for real: a small tmpfs (mounting needs root; skipped where it is refused), filled
 * to a few kilobytes with a filler file. Compiling onto it, rewriting only its plan.json, saving an
 * image onto it and saving a training checkpoint onto it each exit 2 with "no space left on the
 * device (ENOSPC)" naming the user's path (not a hidden temporary) and a hint, never an internal
 * error; the previous compiled folder, image or checkpoint is intact and no temporary is left.
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readPlan } from "../../src/plan/read.js";
import { checkGraphFiles } from "../../src/runtime/verify.js";
import { buildPackage, REPO, tempDir } from "../helpers/repo.js";
import { twoPrecisionProject } from "./project.js";

const mounted: string[] = [];

/** A fresh tmpfs of `size` (e.g. "16m"), or null where mounting is not allowed. */
function tmpfs(size: string): string | null {
  const dir = tempDir("sdc-tmpfs-");
  const r = spawnSync("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir], { encoding: "utf8" });
  if (r.status !== 0) return null;
  mounted.push(dir);
  return dir;
}

const canMount = process.platform === "linux" && typeof process.getuid === "function" && process.getuid() === 0 && (() => {
  const d = tmpfs("1m");
  if (d) spawnSync("umount", [d]) && mounted.pop();
  return d !== null;
})();

afterAll(() => {
  for (const d of mounted.splice(0)) spawnSync("umount", ["-l", d]);
});

/** Fill the file system of `dir` until only about `leave` bytes are free. */
function fill(dir: string, leave = 8192): void {
  const s = fs.statfsSync(dir);
  const free = s.bavail * s.bsize;
  const fd = fs.openSync(path.join(dir, "filler"), "a");
  try {
    const chunk = Buffer.alloc(1 << 16);
    let left = free - leave;
    while (left > 0) {
      const n = Math.min(left, chunk.length);
      try {
        fs.writeSync(fd, chunk, 0, n);
      } catch {
        break;
      }
      left -= n;
    }
  } finally {
    fs.closeSync(fd);
  }
}

const leftovers = (dir: string) => fs.readdirSync(dir).filter((n) => n.startsWith(".sdc-") || n.includes(".tmp"));

function tree(dir: string): Record<string, number> {
  const out: Record<string, number> = {};
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[path.relative(dir, p)] = fs.statSync(p).size;
    }
  };
  walk(dir);
  return out;
}

function project(): string {
  return twoPrecisionProject("sdc-full-", 2);
}

describe.skipIf(!canMount)("a full disk", () => {
  let bin: string;
  beforeAll(() => {
    bin = buildPackage();
  });
  // async: a blocking spawnSync of a minute-long training would stall vitest's worker
  const sdc = (cwd: string, args: string[]) =>
    new Promise<{ status: number | null; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [bin, ...args], { cwd, stdio: ["ignore", "ignore", "pipe"] });
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => void (stderr += d.toString()));
      child.on("exit", (status) => resolve({ status, stderr }));
    });
  const expectFull = (r: { status: number | null; stderr: string }, shown: RegExp) => {
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).not.toMatch(/internal error/);
    expect(r.stderr).toMatch(/no space left on the device \(ENOSPC\)/);
    expect(r.stderr).toMatch(/hint: free some space on that disk, or choose another folder/);
    expect(r.stderr).toMatch(shown);
    expect(r.stderr).not.toMatch(/\.sdc-tmp-/);
  };

  it("compile, and a plan-only rewrite: exit 2 naming the compiled folder; the old folder is whole, nothing left beside it", async () => {
    const cwd = project();
    const disk = tmpfs("24m")!;
    const compiled = path.join(disk, "c");
    expect((await sdc(cwd, ["compile", "a.yaml", "--out", compiled])).status).toBe(0);
    const before = tree(compiled);
    const hash = readPlan(compiled).pipelineHash;
    fill(disk);

    // fp16 rebuilds every graph
    const named = new RegExp(`^${compiled.replace(/[/.]/g, "\\$&")}(/\\S*)?: no space left`, "m");
    expectFull(await sdc(cwd, ["compile", "b.yaml", "--out", compiled]), named);
    // another step count rewrites only plan.json (the graphs are linked)
    expectFull(await sdc(cwd, ["compile", "a.yaml", "--out", compiled, "--steps", "3"]), named);

    const plan = readPlan(compiled);
    expect(plan.pipelineHash).toBe(hash);
    for (const g of Object.values(plan.graphs)) checkGraphFiles(compiled, g);
    expect(tree(compiled)).toEqual(before);
    expect(leftovers(disk)).toEqual([]);
    // with the space back, the same compile succeeds
    fs.rmSync(path.join(disk, "filler"));
    expect((await sdc(cwd, ["compile", "b.yaml", "--out", compiled])).status).toBe(0);
    expect(leftovers(disk)).toEqual([]);
  });

  it("an image: exit 2 naming the image file; the images already there are intact, no temporary left", async () => {
    const cwd = project();
    const disk = tmpfs("4m")!;
    const out = path.join(disk, "out");
    expect((await sdc(cwd, ["run", "a.yaml", "--out", out])).status).toBe(0);
    const before = Object.fromEntries(fs.readdirSync(out).map((f) => [f, fs.readFileSync(path.join(out, f))]));
    expect(Object.keys(before)).toEqual(["00000-0.png"]);
    fill(disk, 0);
    expectFull(await sdc(cwd, ["run", "a.yaml", "--out", out]), /^.*out\/00001-0\.png: no space left/m);
    expect(Object.fromEntries(fs.readdirSync(out).map((f) => [f, fs.readFileSync(path.join(out, f))]))).toEqual(before);
  });

  it("a training checkpoint: exit 2 saying there is not enough space; the previous checkpoint is intact, no temporary left", async () => {
    const cwd = tempDir("sdc-full-train-");
    const disk = tmpfs("64m")!;
    const ckpt = path.join(disk, "ckpt");
    const args = (steps: number) => [
      "run",
      path.join(REPO, "examples", "train-lora-tiny.yaml"),
      "--out", path.join(cwd, "out"),
      "--compiled", path.join(cwd, "compiled"),
      "--set", `train.steps=${steps}`,
      "--set", "train.batch=1",
      "--set", "train.checkpointing.every=1",
      "--set", "train.checkpointing.keep=0",
      "--set", `train.checkpointing.dir=${ckpt}`,
      "--set", "train.validation.every=1000",
    ];
    const first = await sdc(cwd, args(1));
    expect(first.status, first.stderr).toBe(0);
    const saved = fs.readdirSync(ckpt).sort();
    expect(saved.length).toBeGreaterThan(0);
    const before = Object.fromEntries(saved.map((d) => [d, tree(path.join(ckpt, d))]));
    fill(disk, 0);
    // the same training again: its checkpoint-000001 would replace the one saved
    const r = await sdc(cwd, args(1));
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).not.toMatch(/internal error/);
    // the trainer measures the free space first (else: "the disk filled up while saving", or ENOSPC)
    expect(r.stderr).toMatch(new RegExp(`^${ckpt.replace(/[/.]/g, "\\$&")}: (not enough free space to save checkpoint-000001|the disk filled up while saving)`, "m"));
    expect(r.stderr).toMatch(/hint: free space on that disk/);
    expect(fs.readdirSync(ckpt).sort()).toEqual(saved);
    expect(Object.fromEntries(saved.map((d) => [d, tree(path.join(ckpt, d))]))).toEqual(before);
    expect(leftovers(ckpt)).toEqual([]);
  }, 300_000);
});
