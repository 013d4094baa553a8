/**
 * Sessions in a worker thread (src/runtime/session-worker.ts): the same numbers as a session in this
 * thread, onnxruntime's own error for a graph it refuses, and a run whose worker cannot start still
 * runs, in the main thread, to the same result.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import { describe, expect, it, vi } from "vitest";
import { compile } from "../../src/compiler/compile.js";
import { loadPipeline } from "../../src/config/load.js";
import { runSettings } from "../../src/pipeline.js";
import { runPlan } from "../../src/runtime/run.js";
import * as sw from "../../src/runtime/session-worker.js";
import { REPO, tempDir } from "../helpers/repo.js";

let breakWorkers = false;
vi.mock("../../src/runtime/session-worker.js", async (importOriginal) => {
  const actual = await importOriginal<typeof import("../../src/runtime/session-worker.js")>();
  return {
    ...actual,
    workerSessions: () => {
      const w = actual.workerSessions();
      return breakWorkers ? { create: () => Promise.reject(new Error("worker could not start")), end: w.end } : w;
    },
  };
});

async function compiled() {
  const cwd = tempDir("sdc-worker-");
  fs.writeFileSync(
    path.join(cwd, "p.yaml"),
    `version: 1\nname: t\nmodel:\n  from: ${JSON.stringify(path.join(REPO, "models", "tiny-sd"))}\nscheduler:\n  type: ddim\n  steps: 2\nsample:\n  prompt: a cat\nruntime:\n  device: cpu\n`,
  );
  const p = await loadPipeline("p.yaml", { cwd });
  const c = await compile(p, { cwd });
  return { cwd, p, dir: c.dir, plan: c.plan };
}

const OPTIONS: ort.InferenceSession.SessionOptions = { executionProviders: ["cpu"], graphOptimizationLevel: "all", intraOpNumThreads: 1, logSeverityLevel: 3 };

describe("a session in a worker thread", () => {
  it("computes what a session in this thread computes, and reports onnxruntime's errors", async () => {
    const { dir, plan } = await compiled();
    const file = path.join(dir, plan.graphs.vae_decoder.file);
    const latents = Float32Array.from({ length: 4 * 4 * 4 }, (_, i) => Math.sin(i));
    const feeds = () => ({ latent_sample: new ort.Tensor("float32", latents.slice(), [1, 4, 4, 4]) });
    const here = await sw.createHere(file, OPTIONS);
    const want = (await here.run(feeds())).sample!;
    const w = sw.workerSessions();
    const there = await w.create(file, OPTIONS);
    const got = (await there.run(feeds())).sample!;
    expect(got.dims).toEqual(want.dims);
    expect(Buffer.from((got.data as Float32Array).buffer).equals(Buffer.from((want.data as Float32Array).buffer))).toBe(true);
    await there.release();
    await here.release();
    // after release the worker is gone
    await expect(there.run(feeds())).rejects.toThrow(/worker thread exited/);

    const v = sw.workerSessions();
    await expect(v.create(path.join(dir, "no-such.onnx"), OPTIONS)).rejects.toThrow(/no-such\.onnx/);
    await v.end();
  });

  it("a run whose worker cannot start opens the U-Net in the main thread, with the same result", async () => {
    const { cwd, p, dir } = await compiled();
    const run = async (out: string) => {
      const tensors: string[] = [];
      const details: string[] = [];
      await runPlan(dir, { ...runSettings(p), outputDir: path.join(cwd, out) }, {
        progress: false,
        onPhase: (ph) => ph.phase === "create unet session" && details.push(ph.detail ?? ""),
        trace: (stage, d) => tensors.push(`${stage}:${Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString("base64")}`),
      });
      return { tensors, detail: details[0] };
    };
    const good = await run("a");
    expect(good.detail).toMatch(/^in a worker thread; cache /);
    breakWorkers = true;
    try {
      const fallback = await run("b");
      expect(fallback.detail).toBe("cache hit");
      expect(fallback.tensors).toEqual(good.tensors);
    } finally {
      breakWorkers = false;
    }
  });
});
