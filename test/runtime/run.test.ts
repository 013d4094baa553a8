/**
 * The runner's behaviour around the numbers (those are in pipeline-parity.test.ts): batches and
 * prompt order, files and their parameters, reproducible seeds, cancellation between steps,
 * errors for bad latents and a missing plan, execution-provider messages.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it, vi } from "vitest";
import { loadPipeline } from "../../src/config/load.js";
import { writeSafetensors } from "../../src/models/weights/safetensors.js";
import { parseParameters, readPngText } from "../../src/image/image.js";
import { run, runSettings } from "../../src/pipeline.js";
import { runPlan } from "../../src/runtime/run.js";
import { cudaUnavailableReason, openSession, ortBinDir } from "../../src/runtime/session.js";
import { isUserError } from "../../src/util/errors.js";
import { REPO, tempDir } from "../helpers/repo.js";

const MODEL = path.join(REPO, "models", "tiny-sd");

// The CUDA provider library may or may not be installed here: a test can say it is missing.
vi.mock("../../src/runtime/session.js", async (importOriginal) => {
  const actual = await importOriginal<typeof import("../../src/runtime/session.js")>();
  return { ...actual, cudaUnavailableReason: vi.fn(actual.cudaUnavailableReason) };
});

async function pipeline(sample: string, extra = "") {
  const dir = tempDir("sdc-run-");
  fs.writeFileSync(
    path.join(dir, "p.yaml"),
    `version: 1\nname: t\nmodel:\n  from: ${JSON.stringify(MODEL)}\nscheduler:\n  type: euler-ancestral\n  steps: 4\nguidance:\n  negative_prompt: ugly\nsample:\n${sample}${extra}runtime:\n  device: cpu\n`,
  );
  return { dir, load: (o: object = {}) => loadPipeline(path.join(dir, "p.yaml"), { cwd: dir, ...o }) };
}

describe("run", () => {
  it("writes batch × prompts images in diffusers' order, with their parameters, and a grid", async () => {
    const { dir, load } = await pipeline("  prompt: [a red cube, a blue sphere]\n  batch: 2\n  seed: 5\n", "output:\n  grid: true\n");
    const lines: string[] = [];
    const r = await run(await load(), { cwd: dir, progress: false, log: (l) => lines.push(l) });
    expect(r.outputs.map((f) => path.basename(f))).toEqual(["00000-5.png", "00001-5.png", "00002-5.png", "00003-5.png", "grid-00000.png"]);
    expect(r.summary).toMatch(/^wrote 4 images and a grid to .* on CPU\)$/);
    const params = r.outputs.slice(0, 4).map((f) => parseParameters(readPngText(f).parameters!));
    expect(params.map((p) => p.prompt)).toEqual(["a red cube", "a red cube", "a blue sphere", "a blue sphere"]);
    expect(params.map((p) => p.params["Batch pos"])).toEqual(["0", "1", "2", "3"]);
    expect(params[0]).toMatchObject({ negativePrompt: "ugly", params: { Steps: "4", Sampler: "Euler a", Seed: "5", Size: "16x16", "CFG scale": "7.5", Model: "tiny-sd" } });
    const bytes = r.outputs.slice(0, 4).map((f) => fs.readFileSync(f).toString("base64"));
    expect(new Set(bytes).size).toBe(4);
    expect(lines.some((l) => l.startsWith("running on CPU"))).toBe(true);
    // the grid is 2 × 2 images of 16 px
    const { default: sharp } = await import("sharp");
    expect(await sharp(r.outputs[4]!).metadata()).toMatchObject({ width: 32, height: 32 });
  });

  it("gives the same image for the same seed, another for another seed, and never overwrites", async () => {
    const { dir, load } = await pipeline("  prompt: a cat\n  seed: 1\n");
    const a = await run(await load(), { cwd: dir, progress: false });
    const b = await run(await load(), { cwd: dir, progress: false });
    const c = await run(await load({ seed: 2 }), { cwd: dir, progress: false });
    expect(path.basename(b.outputs[0]!)).toBe("00001-1.png");
    const px = async (f: string) => {
      const { default: sharp } = await import("sharp");
      return (await sharp(f).raw().toBuffer()).toString("base64");
    };
    expect(await px(a.outputs[0]!)).toBe(await px(b.outputs[0]!));
    expect(await px(c.outputs[0]!)).not.toBe(await px(a.outputs[0]!));
  });

  it("stops between steps when its signal aborts", async () => {
    const { dir, load } = await pipeline("  prompt: a cat\n");
    const ac = new AbortController();
    let steps = 0;
    const r = await run(await load(), {
      cwd: dir,
      progress: false,
      signal: ac.signal,
      trace: (stage) => {
        if (stage === "latents" && ++steps === 2) ac.abort();
      },
    });
    expect(r).toMatchObject({ cancelled: true, outputs: [], summary: "cancelled after step 2 of 4" });
    expect(fs.existsSync(path.join(dir, "out", "t"))).toBe(false);
  });

  it("checks a latents file's shape against the run", async () => {
    const { dir, load } = await pipeline("  prompt: a cat\n  batch: 2\n  latents: l.safetensors\n");
    writeSafetensors(path.join(dir, "l.safetensors"), [{ name: "latents", dtype: "F32", shape: [1, 4, 8, 8], data: new Uint8Array(4 * 256) }]);
    const e = await run(await load(), { cwd: dir, progress: false }).catch((x: unknown) => x);
    expect(isUserError(e)).toBe(true);
    expect((e as Error).message).toContain("tensor latents has shape 1×4×8×8, the run needs 2×4×8×8");
  });

  it("needs a compiled plan to run one", async () => {
    const { load } = await pipeline("  prompt: a cat\n");
    const dir = tempDir("sdc-noplan-");
    const e = await runPlan(dir, runSettings(await load())).catch((x: unknown) => x);
    expect(isUserError(e) && e.problems[0]).toMatchObject({
      message: "no plan.json: this is not a compiled pipeline folder (or its compile never finished)",
      hint: "run `sdc compile <pipeline.yaml>` to (re)build it",
    });
  });

  it("device cuda without the CUDA provider is a user error naming what is missing", async () => {
    // this machine: a reason exactly when the library is not next to the binding
    const lib = process.platform === "win32" ? "onnxruntime_providers_cuda.dll" : "libonnxruntime_providers_cuda.so";
    const reason = `the CUDA provider library ${lib} is not installed next to onnxruntime-node's binding`;
    expect(cudaUnavailableReason()).toBe(fs.existsSync(path.join(ortBinDir(), lib)) ? null : reason);
    // the refusal, on any machine: the run is told the library is missing
    vi.mocked(cudaUnavailableReason).mockClear().mockReturnValueOnce(reason);
    const { dir, load } = await pipeline("  prompt: a cat\n");
    const p = await load({ overrides: ["runtime.device=cuda"] });
    await run(p, { cwd: dir, progress: false }).then(
      () => expect.unreachable(),
      (e: unknown) => {
        expect(isUserError(e)).toBe(true);
        const pr = (e as { problems: { message: string; hint?: string }[] }).problems[0]!;
        expect(pr.message).toBe(`runtime.device is cuda, but ${reason}`);
        expect(pr.hint).toContain("npx sdc setup cuda");
      },
    );
    expect(vi.mocked(cudaUnavailableReason)).toHaveBeenCalledTimes(1);
    await expect(openSession(path.join(dir, "missing.onnx"), { device: "cpu" })).rejects.toThrow(/compiled graph .*missing\.onnx is missing/);
  });
});
