import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { SafetensorsFile } from "../../src/models/weights/safetensors.js";
import {
  checkpointName,
  latestCheckpoint,
  listCheckpoints,
  loadCheckpoint,
  saveCheckpoint,
  type CheckpointContent,
  type Manifest,
  type StatFs,
} from "../../src/trainer/checkpoint.js";
import { sha256File } from "../../src/util/hash.js";
import { tempDir } from "../helpers/repo.js";
import { transpileForNode } from "../helpers/transpile.js";
import { killContent, killContentMismatch } from "./checkpoint-kill-content.js";
import { userError } from "../helpers/errors.js";

/** A small checkpoint whose every value depends on `step`. */
function content(step: number): CheckpointContent {
  return {
    tensors: {
      weights: {
        "unet.mid_block.attentions.0.to_q.lora_A.weight": { dtype: "F32", shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, step]) },
        "unet.mid_block.attentions.0.to_q.lora_B.weight": { dtype: "F32", shape: [3, 2], data: new Float32Array(6).fill(-step) },
      },
      optimizer: {
        "exp_avg.unet.mid_block.attentions.0.to_q.lora_A.weight": { dtype: "F32", shape: [2, 3], data: new Float32Array(6).fill(0.5) },
        step: { dtype: "I64", shape: [], data: BigInt64Array.of(BigInt(step)) },
      },
      ema: { "unet.mid_block.attentions.0.to_q.lora_A.weight": { dtype: "F16", shape: [4], data: Uint16Array.of(0x3c00, 0xbc00, 0, 0x7bff) } },
    },
    state: { step, epoch: 1, batchInEpoch: step % 5, rng: { seed: "42", offsets: [step, 2 * step] }, lr: { scheduler: "cosine", last: 1e-4 }, lossScale: null },
  };
}

const steps = (root: string) => listCheckpoints(root).checkpoints.map((c) => c.step);
const scratch = (root: string) => fs.readdirSync(root).filter((f) => f.startsWith("."));


/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ["-e", ""]);
  return r.pid!;
}

describe("saveCheckpoint / loadCheckpoint", () => {
  it("round-trips several tensor groups and the state, in the documented layout", () => {
    const root = path.join(tempDir("sdc-ckpt-"), "run", "checkpoints"); // made on demand
    const saved = saveCheckpoint(root, 500, content(500));
    expect(saved.dir).toBe(path.join(root, "checkpoint-000500"));
    expect(fs.readdirSync(root)).toEqual(["checkpoint-000500"]);
    expect(fs.readdirSync(saved.dir).sort()).toEqual(["ema.safetensors", "manifest.json", "optimizer.safetensors", "state.json", "weights.safetensors"]);

    const manifest = JSON.parse(fs.readFileSync(path.join(saved.dir, "manifest.json"), "utf8")) as Manifest;
    expect(manifest).toMatchObject({ format: "sdc-checkpoint", version: 1, step: 500, groups: ["weights", "optimizer", "ema"] });
    expect(Date.parse(manifest.created)).toBeGreaterThan(Date.now() - 60_000);
    for (const [file, { bytes, sha256 }] of Object.entries(manifest.files)) {
      expect(fs.statSync(path.join(saved.dir, file)).size).toBe(bytes);
      expect(sha256File(path.join(saved.dir, file))).toBe(sha256);
    }
    expect(saved.bytes).toBe(Object.values(manifest.files).reduce((a, f) => a + f.bytes, 0));
    // Plain safetensors files: any reader (diffusers, PEFT, safetensors) opens them.
    const w = SafetensorsFile.open(path.join(saved.dir, "weights.safetensors"));
    expect([...w.tensors.keys()].sort()).toEqual(["unet.mid_block.attentions.0.to_q.lora_A.weight", "unet.mid_block.attentions.0.to_q.lora_B.weight"]);
    expect(w.readFloat32("unet.mid_block.attentions.0.to_q.lora_A.weight")).toEqual(Float32Array.from([1, 2, 3, 4, 5, 500]));

    const loaded = loadCheckpoint(saved.dir);
    expect(loaded.step).toBe(500);
    expect(loaded.created).toBe(manifest.created);
    expect(loaded.state).toEqual(content(500).state);
    expect(loaded.groups).toEqual(["weights", "optimizer", "ema"]);
    for (const group of loaded.groups) expect(loaded.readGroup(group)).toEqual(content(500).tensors[group]);
    const opt = loaded.readGroup("optimizer");
    expect(opt.step!.data).toBeInstanceOf(BigInt64Array);
    expect(opt.step!.shape).toEqual([]);
    expect(loaded.readGroup("ema")["unet.mid_block.attentions.0.to_q.lora_A.weight"]!.data).toBeInstanceOf(Uint16Array);
    expect(() => loaded.readGroup("vae")).toThrow(/no tensor group "vae".*\n.*"weights", "optimizer", "ema"/);
  });

  it("lists complete checkpoints by step and finds the latest", () => {
    const root = tempDir("sdc-ckpt-");
    expect(latestCheckpoint(path.join(root, "absent"))).toBeNull();
    expect(listCheckpoints(path.join(root, "absent"))).toEqual({ checkpoints: [], incomplete: [] });
    expect(latestCheckpoint(root)).toBeNull();
    for (const s of [20, 1_000_000, 3, 999_999]) saveCheckpoint(root, s, content(s));
    fs.mkdirSync(path.join(root, "logs")); // not a checkpoint name: not listed either way
    expect(steps(root)).toEqual([3, 20, 999_999, 1_000_000]);
    expect(fs.readdirSync(root).sort()).toEqual(["checkpoint-000003", "checkpoint-000020", "checkpoint-1000000", "checkpoint-999999", "logs"]);
    expect(latestCheckpoint(root)).toMatchObject({ step: 1_000_000, dir: path.join(root, "checkpoint-1000000") });
    expect(checkpointName(0)).toBe("checkpoint-000000");
  });

  it("keeps the newest `keep` checkpoints, all with keep 0, and never the one just written", () => {
    const root = tempDir("sdc-ckpt-");
    const pruned: string[] = [];
    for (let s = 1; s <= 5; s++) pruned.push(...saveCheckpoint(root, s * 100, content(s), { keep: 2 }).pruned);
    expect(steps(root)).toEqual([400, 500]);
    expect(pruned).toEqual([100, 200, 300].map((s) => path.join(root, checkpointName(s))));
    expect(scratch(root)).toEqual([]);

    const all = tempDir("sdc-ckpt-");
    for (let s = 1; s <= 5; s++) saveCheckpoint(all, s, content(s), { keep: 0 });
    expect(steps(all)).toEqual([1, 2, 3, 4, 5]);

    // A run resumed from step 100 writes 150 while 200 and 300 (from before) are newer: 150 stays.
    const resumed = tempDir("sdc-ckpt-");
    for (const s of [100, 200, 300]) saveCheckpoint(resumed, s, content(s));
    saveCheckpoint(resumed, 150, content(150), { keep: 1 });
    expect(steps(resumed)).toEqual([150, 300]);
  });

  it("replaces a checkpoint of the same step", () => {
    const root = tempDir("sdc-ckpt-");
    saveCheckpoint(root, 7, content(7));
    const again = content(7);
    (again.state as { batchInEpoch: number }).batchInEpoch = 99;
    saveCheckpoint(root, 7, again, { keep: 1 });
    expect(fs.readdirSync(root)).toEqual(["checkpoint-000007"]);
    expect((loadCheckpoint(path.join(root, "checkpoint-000007")).state as { batchInEpoch: number }).batchInEpoch).toBe(99);
  });
});

describe("damaged and incomplete checkpoints", () => {
  it("names the damaged file (a flipped byte, a truncation, a missing file) and the older checkpoint", () => {
    const root = tempDir("sdc-ckpt-");
    saveCheckpoint(root, 100, content(100));
    const dir = saveCheckpoint(root, 200, content(200)).dir;
    const file = path.join(dir, "optimizer.safetensors");
    const original = fs.readFileSync(file);

    const flipped = Buffer.from(original);
    flipped[flipped.length - 3]! ^= 0x01;
    fs.writeFileSync(file, flipped);
    let e = userError(() => loadCheckpoint(dir));
    expect(e.problems).toHaveLength(1);
    expect(e.problems[0]).toMatchObject({ subject: file, message: expect.stringMatching(/sha256.*the checkpoint is damaged/) });
    expect(e.problems[0]!.hint).toContain(`${path.join(root, "checkpoint-000100")} (step 100)`);

    fs.writeFileSync(file, original.subarray(0, original.length - 10));
    e = userError(() => loadCheckpoint(dir));
    expect(e.problems[0]).toMatchObject({ subject: file, message: expect.stringMatching(/is \d+ bytes long, the manifest says \d+: the checkpoint is damaged/) });

    fs.writeFileSync(file, original);
    expect(loadCheckpoint(dir).step).toBe(200);
    fs.rmSync(path.join(dir, "state.json"));
    e = userError(() => loadCheckpoint(dir));
    expect(e.problems[0]).toMatchObject({ subject: path.join(dir, "state.json"), message: "the file is missing: the checkpoint is damaged" });

    // The oldest one damaged: nothing older to name.
    const first = path.join(root, "checkpoint-000100", "weights.safetensors");
    fs.appendFileSync(first, "x");
    expect(userError(() => loadCheckpoint(path.dirname(first))).problems[0]!.hint).toMatch(/no older complete checkpoint exists in/);
  });

  it("ignores a folder without a manifest (reported as incomplete) and refuses to load it", () => {
    const root = tempDir("sdc-ckpt-");
    saveCheckpoint(root, 1, content(1));
    const dir = saveCheckpoint(root, 2, content(2)).dir;
    fs.rmSync(path.join(dir, "manifest.json"));
    const bad = path.join(root, "checkpoint-000003");
    fs.mkdirSync(bad);
    fs.writeFileSync(path.join(bad, "manifest.json"), "{ not json");
    const listing = listCheckpoints(root);
    expect(listing.checkpoints.map((c) => c.step)).toEqual([1]);
    expect(listing.incomplete).toEqual([
      { dir, reason: "no manifest.json (the save did not finish)" },
      { dir: bad, reason: "manifest.json is not valid JSON" },
    ]);
    expect(latestCheckpoint(root)!.step).toBe(1);
    const e = userError(() => loadCheckpoint(dir));
    expect(e.problems[0]).toMatchObject({ subject: dir, message: "not a complete checkpoint: no manifest.json (the save did not finish)" });
    expect(e.problems[0]!.hint).toContain("checkpoint-000001 (step 1)");
    // Pruning leaves what it does not recognise as a checkpoint alone.
    saveCheckpoint(root, 4, content(4), { keep: 1 });
    expect(fs.readdirSync(root).sort()).toEqual(["checkpoint-000002", "checkpoint-000003", "checkpoint-000004"]);
  });
});

describe("refusals", () => {
  it("refuses when the disk lacks the space, naming the folder, the bytes needed and free", () => {
    const root = tempDir("sdc-ckpt-");
    const calls: string[] = [];
    const statfs: (bavail: number) => StatFs = (bavail) => (dir) => {
      calls.push(dir);
      return { bavail, bsize: 4096 };
    };
    const e = userError(() => saveCheckpoint(root, 10, content(10), { statfs: statfs(1) }));
    expect(e.problems[0]).toMatchObject({
      subject: root,
      message: expect.stringMatching(/^not enough free space to save checkpoint-000010: it needs [\d.]+ MiB \(\d+ bytes, with a 10% margin\), 0\.0 MiB are free$/),
      hint: expect.stringContaining("keep fewer checkpoints"),
    });
    expect(calls).toEqual([root]);
    expect(fs.readdirSync(root)).toEqual([]);

    // The margin is 10% over what is written.
    const needed = Number(/\((\d+) bytes/.exec(e.problems[0]!.message)![1]);
    const written = saveCheckpoint(root, 10, content(10), { statfs: statfs(Math.ceil(needed / 4096)) }).bytes;
    expect(needed).toBeGreaterThanOrEqual(written * 1.1);
    expect(needed).toBeLessThan(written * 1.1 + 8192);
  });

  it("never writes a non-finite tensor or state value", () => {
    const root = tempDir("sdc-ckpt-");
    const c = content(1);
    c.tensors.optimizer!["exp_avg.unet.mid_block.attentions.0.to_q.lora_A.weight"]!.data[3] = NaN;
    let e = userError(() => saveCheckpoint(root, 1, c));
    expect(e.problems).toEqual([
      {
        subject: "checkpoint-000001/optimizer.safetensors: exp_avg.unet.mid_block.attentions.0.to_q.lora_A.weight",
        message: 'element 3 is NaN (tensor group "optimizer"): a non-finite checkpoint is never written',
        hint: expect.stringContaining("resume from an earlier checkpoint"),
      },
    ]);

    const h = content(1);
    h.tensors.ema!["unet.mid_block.attentions.0.to_q.lora_A.weight"]!.data[1] = 0xfc00; // −Inf in half precision
    e = userError(() => saveCheckpoint(root, 1, h));
    expect(e.problems[0]!.message).toBe('element 1 is NaN or ±Inf (tensor group "ema"): a non-finite checkpoint is never written');

    const s = content(1);
    (s.state as Record<string, unknown>).lossScale = Infinity;
    (s.state as Record<string, unknown>).seed = 5n;
    e = userError(() => saveCheckpoint(root, 1, s));
    expect(e.problems.map((p) => `${p.subject}: ${p.message}`)).toEqual([
      "checkpoint-000001/state.json: lossScale: Infinity has no JSON form: a non-finite checkpoint is never written",
      "checkpoint-000001/state.json: seed: a bigint has no exact JSON form",
    ]);
    expect(fs.readdirSync(root)).toEqual([]);
  });

  it("refuses malformed tensors and group names", () => {
    const root = tempDir("sdc-ckpt-");
    const c = content(1);
    c.tensors["../x"] = {};
    c.tensors.weights!["unet.mid_block.attentions.0.to_q.lora_A.weight"]!.shape = [4, 4];
    const e = userError(() => saveCheckpoint(root, 1, c));
    expect(e.problems.map((p) => p.message)).toEqual([
      "shape [4, 4] does not hold the 6 elements given",
      'tensor group name "../x" cannot name a file',
    ]);
  });
});

describe("interrupted saves", () => {
  it("removes what dead processes left and puts back a replaced checkpoint whose replacement never arrived", () => {
    const root = tempDir("sdc-ckpt-");
    const dead = deadPid();
    saveCheckpoint(root, 3, content(3));
    saveCheckpoint(root, 4, content(4));
    // The process died between moving checkpoint 4 aside and moving its replacement in.
    fs.renameSync(path.join(root, "checkpoint-000004"), path.join(root, `.old-checkpoint-000004-${dead}`));
    fs.mkdirSync(path.join(root, `.tmp-checkpoint-000004-${dead}`));
    fs.mkdirSync(path.join(root, `.del-checkpoint-000002-${dead}`));
    fs.mkdirSync(path.join(root, `.tmp-checkpoint-000009-${process.pid}`)); // an earlier process with our pid
    fs.mkdirSync(path.join(root, `.tmp-checkpoint-000006-${process.ppid}`)); // a live process, a later step: left alone
    fs.mkdirSync(path.join(root, `.tmp-checkpoint-000001-${process.ppid}`)); // a live process, an earlier step: stale

    expect(latestCheckpoint(root)).toMatchObject({ step: 4, dir: path.join(root, `.old-checkpoint-000004-${dead}`) });
    expect(loadCheckpoint(latestCheckpoint(root)!.dir).step).toBe(4);

    saveCheckpoint(root, 5, content(5), { keep: 2 });
    expect(fs.readdirSync(root).sort()).toEqual(["checkpoint-000004", "checkpoint-000005", `.tmp-checkpoint-000006-${process.ppid}`].sort());
    expect(loadCheckpoint(path.join(root, "checkpoint-000004")).state).toEqual(content(4).state);
  });

  it("survives SIGKILL at random moments: only complete checkpoints are listed, and they verify", async () => {
    const work = tempDir("sdc-ckpt-kill-");
    const child = transpileForNode(path.join(import.meta.dirname, "checkpoint-kill-child.ts"), path.join(work, "js"));
    const root = path.join(work, "checkpoints");
    const MIB = 64;
    const TRIALS = 20;
    let seed = 0x5dc0c4e7; // mulberry32
    const random = () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const verify = (dir: string) => {
      const c = loadCheckpoint(dir);
      expect(killContentMismatch(c.step, c.state, c.readGroup), dir).toBeNull();
      return c.step;
    };

    let saveMs = 500; // running estimate of one save, from the child's reports
    const kills = { midWrite: 0, replacingOrPruning: 0, betweenSaves: 0 };
    const savesPerTrial: number[] = [];
    for (let trial = 0; trial < TRIALS; trial++) {
      const before = latestCheckpoint(root);
      const proc = spawn(process.execPath, [child, root, String(MIB), "50"], { stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      let err = "";
      proc.stderr.on("data", (d: Buffer) => (err += d.toString()));
      const exited = new Promise<void>((resolve) => proc.on("exit", () => resolve()));
      try {
        await new Promise<void>((resolve, reject) => {
          proc.stdout.on("data", (d: Buffer) => {
            out += d.toString();
            if (out.startsWith("ready\n")) resolve();
          });
          proc.on("exit", () => reject(new Error(`the child exited before it was ready: ${err}`)));
        });
        await new Promise((r) => setTimeout(r, random() * 2.5 * saveMs));
      } finally {
        proc.kill("SIGKILL");
        await exited;
      }
      expect(err).toBe("");
      const saved = [...out.matchAll(/^saved (\d+) (\d+)$/gm)].map((m) => ({ step: Number(m[1]), ms: Number(m[2]) }));
      savesPerTrial.push(saved.length);
      for (const s of saved) saveMs = 0.8 * saveMs + 0.2 * s.ms;

      const left = scratch(root);
      if (left.some((f) => f.startsWith(".tmp-"))) kills.midWrite++;
      else if (left.length) kills.replacingOrPruning++;
      else kills.betweenSaves++;

      // Only complete checkpoints are listed; the newest holds at least what the child reported saved.
      const listing = listCheckpoints(root);
      expect(listing.incomplete).toEqual([]);
      const latest = latestCheckpoint(root);
      if (saved.length) expect(latest!.step).toBeGreaterThanOrEqual(saved.at(-1)!.step);
      if (before) expect(latest!.step).toBeGreaterThanOrEqual(before.step);
      // Every listed checkpoint (the newest, the previous one, the one the trial started from) verifies.
      for (const c of listing.checkpoints) expect(verify(c.dir)).toBe(c.step);

      // The next save removes the dead child's leftovers.
      const next = (latest?.step ?? 0) + 1;
      saveCheckpoint(root, next, killContent(next, 1024), { keep: 2 });
      expect(scratch(root)).toEqual([]);
      expect(verify(latestCheckpoint(root)!.dir)).toBe(next);
    }
    console.log(
      `checkpoint kill test: ${TRIALS} kills of a child saving ${MIB} MiB checkpoints (a save took ~${Math.round(saveMs)} ms): ` +
        `${kills.midWrite} mid-write (a temp folder was left), ${kills.replacingOrPruning} while replacing or pruning, ` +
        `${kills.betweenSaves} between saves; saves completed per trial: ${savesPerTrial.join(" ")}`,
    );
    expect(kills.midWrite).toBeGreaterThan(0);
  }, 120_000);
});
