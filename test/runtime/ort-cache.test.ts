/**
 * The optimised-graph cache (src/runtime/ort-cache.ts) and the concurrent start (src/runtime/graphs.ts,
 * run.ts) on tiny-sd: a run through the cache, built or loaded, and with the U-Net's session in a
 * worker thread, gives the same tensors bit for bit as the sequential run without it; a damaged,
 * stale or foreign cache (another onnxruntime, another provider, changed weights) is rebuilt,
 * never used; a plan-only recompile keeps it.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import { afterEach, describe, expect, it } from "vitest";
import { compile } from "../../src/compiler/compile.js";
import { loadPipeline } from "../../src/config/load.js";
import { runSettings } from "../../src/pipeline.js";
import type { Plan } from "../../src/plan/schema.js";
import type { Phase } from "../../src/runtime/graphs.js";
import { cacheKey, createCachedSession, sidecarPath } from "../../src/runtime/ort-cache.js";
import { runPlan } from "../../src/runtime/run.js";
import { REPO, tempDir } from "../helpers/repo.js";

async function compiled(overrides: string[] = [], cwd = tempDir("sdc-ortcache-")) {
  fs.writeFileSync(
    path.join(cwd, "p.yaml"),
    `version: 1\nname: t\nmodel:\n  from: ${JSON.stringify(path.join(REPO, "models", "tiny-sd"))}\nscheduler:\n  type: euler-ancestral\n  steps: 3\nsample:\n  prompt: a red cube\n  seed: 7\nruntime:\n  device: cpu\n`,
  );
  const p = await loadPipeline("p.yaml", { cwd, overrides });
  const c = await compile(p, { cwd });
  return { cwd, p, dir: c.dir, plan: c.plan };
}

/** Every traced tensor of a run (embeddings, latents of each step, decoded image), and its start phases. */
async function traced(dir: string, s: ReturnType<typeof runSettings>, sessions?: { sequential?: boolean; cache?: boolean }) {
  const tensors: string[] = [];
  const phases: Phase[] = [];
  await runPlan(dir, s, {
    progress: false,
    ...(sessions ? { sessions } : {}),
    onPhase: (p) => phases.push(p),
    trace: (stage, data, step) => tensors.push(`${stage}:${step ?? ""}:${Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("base64")}`),
  });
  const detail = (graph: string) => phases.find((p) => p.phase === `create ${graph} session`)?.detail ?? "";
  return { tensors, detail };
}

/** The text encoder's output for fixed ids, through a session made as `open` says. */
async function encode(plan: Plan, session: { run(f: Record<string, ort.Tensor>): Promise<ort.InferenceSession.OnnxValueMapType> }) {
  const spec = plan.graphs.text_encoder.inputs.find((i) => i.name === "input_ids")!;
  const ids = Array.from({ length: 77 }, (_, i) => (i * 37) % 1000);
  const t = spec.dtype === "int64" ? new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), [1, 77]) : new ort.Tensor("int32", Int32Array.from(ids), [1, 77]);
  const out = await session.run({ input_ids: t });
  return Buffer.from((out.last_hidden_state!.data as Float32Array).buffer).toString("base64");
}

const OPTIONS: ort.InferenceSession.SessionOptions = { executionProviders: ["cpu"], graphOptimizationLevel: "all", intraOpNumThreads: 1, logSeverityLevel: 3 };
const here = (file: string, o: ort.InferenceSession.SessionOptions) => ort.InferenceSession.create(file, o);

async function openTE(dir: string, plan: Plan) {
  const file = path.join(dir, plan.graphs.text_encoder.file);
  return createCachedSession(file, plan.graphs.text_encoder, OPTIONS, here);
}

function cacheFiles(dir: string, plan: Plan): string[] {
  const gdir = path.dirname(path.join(dir, plan.graphs.text_encoder.file));
  return fs.readdirSync(gdir).filter((n) => n.includes(".ort")).sort();
}

afterEach(() => {
  delete process.env.SDC_ORT_CACHE;
});

describe("the optimised-graph cache", () => {
  it("gives the same tensors bit for bit as a run without it, built and loaded, with the U-Net opened in a worker concurrently", async () => {
    const { cwd, p, dir } = await compiled();
    const s = runSettings(p);
    const base = await traced(dir, { ...s, outputDir: path.join(cwd, "a") }, { sequential: true, cache: false });
    expect(base.detail("unet")).toBe("");
    const built = await traced(dir, { ...s, outputDir: path.join(cwd, "b") });
    expect(built.detail("unet")).toBe("in a worker thread; cache built: there is no cache yet");
    expect(built.detail("text_encoder")).toBe("cache built: there is no cache yet");
    const hit = await traced(dir, { ...s, outputDir: path.join(cwd, "c") });
    expect(hit.detail("unet")).toBe("in a worker thread; cache hit");
    expect(hit.detail("vae_decoder")).toBe("cache hit");
    expect(base.tensors.length).toBe(1 + 1 + 1 + 3 + 1); // text, uncond, init, 3 steps, decoded
    expect(built.tensors).toEqual(base.tensors);
    expect(hit.tensors).toEqual(base.tensors);
    // the cached graph is the optimised one, its weights in its own file
    const side = JSON.parse(fs.readFileSync(sidecarPath(path.join(dir, "unet", "model.onnx")), "utf8"));
    expect(side).toMatchObject({ key: { ep: "cpu", level: "all", format: "sdc-ort-cache/1" }, onnx: expect.stringMatching(/^model\.ort-\d+-[0-9a-f]{8}\.onnx$/) });
    expect(fs.statSync(path.join(dir, "unet", side.data)).size).toBeGreaterThan(0.9 * fs.statSync(path.join(dir, "unet", "diffusion_pytorch_model.safetensors")).size);
  });

  it("is rebuilt, never used, when damaged: an edited graph file, a changed weights file, missing files, an unreadable or misdirected sidecar", async () => {
    const { dir, plan } = await compiled();
    const want = await encode(plan, await ort.InferenceSession.create(path.join(dir, plan.graphs.text_encoder.file), OPTIONS));
    const first = await openTE(dir, plan);
    expect(first.cache).toEqual({ status: "built", reason: "there is no cache yet" });
    expect(await encode(plan, first.session)).toBe(want);
    const side = sidecarPath(path.join(dir, plan.graphs.text_encoder.file));
    const gdir = path.dirname(side);
    const named = () => JSON.parse(fs.readFileSync(side, "utf8")) as { onnx: string; data: string };

    const damage: [string, () => void][] = [
      ["its optimised graph file was changed", () => fs.appendFileSync(path.join(gdir, named().onnx), Buffer.from([0]))],
      ["its weights file was changed since it was written", () => {
        const f = path.join(gdir, named().data);
        const b = fs.readFileSync(f);
        b[b.length - 1] ^= 1;
        fs.writeFileSync(f, b);
        fs.utimesSync(f, new Date(), new Date(Date.now() + 5000));
      }],
      ["its files are missing", () => fs.rmSync(path.join(gdir, named().data))],
      ["model.ort.json is unreadable", () => fs.writeFileSync(side, "{ not json")],
      ["model.ort.json names files outside the graph's folder", () => fs.writeFileSync(side, JSON.stringify({ ...named(), onnx: "../unet/model.onnx" }))],
    ];
    for (const [reason, hurt] of damage) {
      hurt();
      const again = await openTE(dir, plan);
      expect(again.cache, reason).toEqual({ status: "built", reason });
      expect(await encode(plan, again.session)).toBe(want);
      // the damaged files are gone; the new cache is one graph and its weights
      expect(cacheFiles(dir, plan)).toEqual([named().onnx, named().data, "model.ort.json"].sort());
      const hit = await openTE(dir, plan);
      expect(hit.cache).toEqual({ status: "hit" });
      expect(await encode(plan, hit.session)).toBe(want);
    }

    // weights replaced under the graph (a new file: new inode and mtime): the key no longer matches
    const weights = path.join(gdir, plan.graphs.text_encoder.externalData[0]!);
    const copy = `${weights}.copy`;
    fs.copyFileSync(weights, copy);
    fs.renameSync(copy, weights);
    expect((await openTE(dir, plan)).cache).toEqual({ status: "built", reason: "the graph's weights files changed since" });
  });

  it("made by another onnxruntime, for another provider, level or CPU, is not used", async () => {
    const { dir, plan } = await compiled();
    const want = await encode(plan, await ort.InferenceSession.create(path.join(dir, plan.graphs.text_encoder.file), OPTIONS));
    await openTE(dir, plan);
    const side = sidecarPath(path.join(dir, plan.graphs.text_encoder.file));
    const foreign: [Record<string, string>, string][] = [
      [{ ort: "1.28.0" }, `it was made by onnxruntime 1.28.0, this is ${ort.env.versions.node}`],
      [{ ep: "cuda" }, "it was made for the CUDA provider, not the CPU one"],
      [{ level: "extended" }, "it was optimised at level extended, not all"],
      [{ cpu: "0123456789abcdef" }, "it was made on another CPU or platform"],
      [{ graph: "0".repeat(64) }, "the compiled graph changed since"],
      [{ format: "sdc-ort-cache/0" }, "it has another cache format (sdc-ort-cache/0)"],
    ];
    for (const [edit, reason] of foreign) {
      const s = JSON.parse(fs.readFileSync(side, "utf8"));
      fs.writeFileSync(side, JSON.stringify({ ...s, key: { ...s.key, ...edit } }));
      const r = await openTE(dir, plan);
      expect(r.cache).toEqual({ status: "built", reason });
      expect(await encode(plan, r.session)).toBe(want);
    }
    // the key a CUDA session would need is never the CPU cache's
    const file = path.join(dir, plan.graphs.text_encoder.file);
    expect(cacheKey(file, plan.graphs.text_encoder, "cuda", "all")).not.toEqual(cacheKey(file, plan.graphs.text_encoder, "cpu", "all"));
  });

  it("removes what writers that died left behind, and leaves a live writer's files alone", async () => {
    const { dir, plan } = await compiled();
    await openTE(dir, plan);
    const gdir = path.dirname(path.join(dir, plan.graphs.text_encoder.file));
    const dead = spawnSync(process.execPath, ["-e", ""]).pid!; // exited: its pid is free
    const left = [`model.ort-${dead}-0badc0de.onnx`, `model.ort-${dead}-0badc0de.onnx.data`];
    const live = [`model.ort-${process.ppid}-0000c0de.onnx`, `model.ort-${process.ppid}-0000c0de.onnx.data`];
    for (const f of [...left, ...live]) fs.writeFileSync(path.join(gdir, f), "x");
    expect((await openTE(dir, plan)).cache).toEqual({ status: "hit" });
    const names = fs.readdirSync(gdir);
    for (const f of left) expect(names).not.toContain(f);
    for (const f of live) expect(names).toContain(f);
  });

  it("is off with SDC_ORT_CACHE=off or optimisation off, and survives a plan-only recompile", async () => {
    const cwd = tempDir("sdc-ortcache-");
    const { dir, plan, p } = await compiled([], cwd);
    process.env.SDC_ORT_CACHE = "off";
    expect((await openTE(dir, plan)).cache).toEqual({ status: "off", reason: "SDC_ORT_CACHE is off" });
    expect(cacheFiles(dir, plan)).toEqual([]);
    delete process.env.SDC_ORT_CACHE;
    const file = path.join(dir, plan.graphs.text_encoder.file);
    expect((await createCachedSession(file, plan.graphs.text_encoder, { ...OPTIONS, graphOptimizationLevel: "disabled" }, here)).cache).toEqual({ status: "off", reason: "optimisation is off" });
    expect(cacheFiles(dir, plan)).toEqual([]);

    const first = await traced(dir, { ...runSettings(p), outputDir: path.join(cwd, "a") });
    expect(first.detail("unet")).toMatch(/cache built/);
    // a settings-only edit rewrites the plan and links the graph folders, cache files included
    const re = await compiled(["scheduler.steps=2"], cwd);
    expect(re.dir).toBe(dir);
    const after = await traced(dir, { ...runSettings(re.p), outputDir: path.join(cwd, "b") });
    expect(after.detail("unet")).toBe("in a worker thread; cache hit");
    expect(after.detail("text_encoder")).toBe("cache hit");
  });
});
