/**
 * DeepCache (sample.deepcache): the compiled pair of U-Nets and the loop that alternates them.
 *
 * Closed-form checks on every cut of three test models (one, two and three down blocks; one and
 * two resnet layers per block): the full U-Net with the feature as an extra output equals the
 * plain U-Net, and the shallow U-Net fed the feature of the same call reproduces its output. Then
 * the loop: interval 1 gives the plain run's latents exactly, interval N runs ⌈steps/N⌉ full calls
 * and stays close to the full computation, a full_steps schedule runs the calls it lists; and the
 * refusals (a branch the U-Net does not have, a schedule without call 0, a folder without the
 * shallow graph). And against DeepCache written in PyTorch from diffusers' modules, with the
 * feature of one call fed to the next (test/fixtures/gen/deepcache.py).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { compile } from "../../src/compiler/compile.js";
import { buildAndWrite, deepCacheJob, graphJobs, type GraphJob } from "../../src/compiler/graphs.js";
import { openModelWeights, providerFor } from "../../src/compiler/weights.js";
import { deepCacheCut } from "../../src/models/unet.js";
import { loadPipeline } from "../../src/config/load.js";
import { run, runSettings } from "../../src/pipeline.js";
import { isFullCall } from "../../src/runtime/deepcache.js";
import { TorchGenerator } from "../../src/runtime/rng.js";
import { runPlan } from "../../src/runtime/run.js";
import { isUserError } from "../../src/util/errors.js";
import { MODEL_FIXTURES, REPO, tempDir } from "../helpers/repo.js";
import { readSafetensors } from "./helpers.js";

const EMOJI = path.join(REPO, "models", "emoji");

async function pipeline(model: string, deepcache: string | null, extra = "") {
  const dir = tempDir("sdc-dc-");
  const dc = deepcache === null ? "" : `  deepcache:\n${deepcache.split("\n").map((l) => `    ${l}`).join("\n")}\n`;
  fs.writeFileSync(
    path.join(dir, "p.yaml"),
    `version: 1\nname: t\nmodel:\n  from: ${JSON.stringify(model)}\nscheduler:\n  type: dpm-solver++\n  steps: 20\nguidance:\n  scale: 4\nsample:\n  prompt: a red heart\n  seed: 42\n${dc}${extra}runtime:\n  device: cpu\n  threads: 1\n`,
  );
  return { dir, load: () => loadPipeline(path.join(dir, "p.yaml"), { cwd: dir }) };
}

function maxAbs(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe("the compiled DeepCache U-Nets", () => {
  const models = [
    { name: "emoji", dir: EMOJI, cuts: [[0], [1], [2]] },
    { name: "tiny-sd2 (2 layers per block)", dir: path.join(MODEL_FIXTURES, "tiny-sd2"), cuts: [[0, 0], [0], [1, 0], [1], [2, 0], [2]] },
    { name: "tiny-x (DownBlock2D first)", dir: path.join(MODEL_FIXTURES, "tiny-x"), cuts: [[0, 0], [0], [1]] },
  ];
  for (const m of models)
    it(`${m.name}: full = plain U-Net, shallow(feature of the same call) = full, at every cut`, async () => {
      const loaded = await (await pipeline(m.dir, null)).load();
      const weights = providerFor(openModelWeights(loaded.model), "unet");
      const out = tempDir("sdc-dc-graphs-");
      // only the U-Net graphs, as the compiler builds them
      const build = (job: GraphJob<string>, name: string) => {
        const built = buildAndWrite({ ...job, name }, weights, "float32", { ep: "cpu", training: false }, out);
        return { file: path.join(out, name, "model.onnx"), graph: built.graph };
      };
      const unetJob = (dc?: { branch: number; layer?: number }) => graphJobs(loaded.model, "fp32", { ep: "cpu", training: false }, dc).find((j) => j.name === "unet")!;
      const plain = build(unetJob(), "plain");
      expect(plain.graph.outputs.map((o) => o.name)).toEqual(["out_sample"]);
      const plainUnet = await ort.InferenceSession.create(plain.file);
      const width = loaded.model.unet.cross_attention_dim as number;
      const ch = loaded.model.unet.in_channels;
      // batch 2 as with guidance, a latent size that is not square
      const g = new TorchGenerator(7);
      const feeds = {
        sample: new ort.Tensor("float32", g.randn(2 * ch * 8 * 16), [2, ch, 8, 16]),
        timestep: new ort.Tensor("float32", new Float32Array([421, 421]), [2]),
        encoder_hidden_states: new ort.Tensor("float32", g.randn(2 * 77 * width), [2, 77, width]),
      };
      const want = (await plainUnet.run(feeds)).out_sample!.data as Float32Array;
      const skips: number[] = [];
      for (const [branch, layer] of m.cuts) {
        const opts = { branch, ...(layer === undefined ? {} : { layer }) };
        const tag = `${branch}-${layer ?? "all"}`;
        const fullG = build(unetJob(opts), `full-${tag}`);
        const shallowG = build(deepCacheJob(loaded.model, "fp32", { ep: "cpu", training: false }, opts), `shallow-${tag}`);
        expect(fullG.graph.outputs.map((o) => o.name)).toEqual(["out_sample", "deepcache_feature"]);
        expect(shallowG.graph.inputs.map((i) => i.name)).toEqual(["sample", "timestep", "encoder_hidden_states", "deepcache_feature"]);
        expect(shallowG.graph.paramCount()).toBeLessThan(fullG.graph.paramCount());
        skips.push(deepCacheCut(loaded.model.unet, branch!, layer).skips);
        const full = await ort.InferenceSession.create(fullG.file);
        const shallow = await ort.InferenceSession.create(shallowG.file);
        const res = await full.run(feeds);
        const got = res.out_sample!.data as Float32Array;
        expect(maxAbs(got, want)).toBeLessThanOrEqual(1e-6);
        const again = (await shallow.run({ ...feeds, deepcache_feature: res.deepcache_feature! })).out_sample!.data as Float32Array;
        const scale = Math.max(...Array.from(want, Math.abs));
        expect(maxAbs(again, got)).toBeLessThanOrEqual(1e-5 * scale);
        // and the feature matters: another one gives another output
        const other = new ort.Tensor("float32", new Float32Array(res.deepcache_feature!.data as Float32Array).map((x) => x * 0.5), res.deepcache_feature!.dims);
        expect(maxAbs((await shallow.run({ ...feeds, deepcache_feature: other })).out_sample!.data as Float32Array, got)).toBeGreaterThan(1e-3 * scale);
        await Promise.all([full.release(), shallow.release()]);
      }
      // deeper cuts keep more skips in the shallow part
      expect([...skips].sort((a, b) => a - b)).toEqual(skips);
      expect(new Set(skips).size).toBe(skips.length);
      await plainUnet.release();
    }, 60_000);
});

describe("against DeepCache written in PyTorch from diffusers' modules (test/fixtures/gen/deepcache.py)", () => {
  it("tiny-sd2: the feature of call 1 and the shallow U-Net on call 2 with it, at three cuts", async () => {
    const ref = readSafetensors(path.join(MODEL_FIXTURES, "deepcache.reference.safetensors"));
    const t = (k: string) => ref.get(k)!.data as Float32Array;
    const tensor = (k: string) => new ort.Tensor("float32", t(k), ref.get(k)!.shape);
    const loaded = await (await pipeline(path.join(MODEL_FIXTURES, "tiny-sd2"), null)).load();
    const weights = providerFor(openModelWeights(loaded.model), "unet");
    const out = tempDir("sdc-dc-ref-");
    const target = { ep: "cpu" as const, training: false };
    const cuts = [
      { name: "b0l0", branch: 0, layer: 0 },
      { name: "b0", branch: 0 },
      { name: "b1l0", branch: 1, layer: 0 },
    ];
    const rel = (a: Float32Array, b: Float32Array) => maxAbs(a, b) / Math.max(...Array.from(b, Math.abs));
    for (const c of cuts) {
      const opts = { branch: c.branch, ...(c.layer === undefined ? {} : { layer: c.layer }) };
      const fullJob = graphJobs(loaded.model, "fp32", target, opts).find((j) => j.name === "unet")!;
      buildAndWrite({ ...fullJob, name: `full-${c.name}` }, weights, "float32", target, out);
      buildAndWrite({ ...deepCacheJob(loaded.model, "fp32", target, opts), name: `shallow-${c.name}` }, weights, "float32", target, out);
      const full = await ort.InferenceSession.create(path.join(out, `full-${c.name}`, "model.onnx"));
      const shallow = await ort.InferenceSession.create(path.join(out, `shallow-${c.name}`, "model.onnx"));
      const ctx = tensor("encoder_hidden_states");
      const one = await full.run({ sample: tensor("sample1"), timestep: tensor("timestep1"), encoder_hidden_states: ctx });
      expect(one.deepcache_feature!.dims).toEqual(ref.get(`${c.name}.feature1`)!.shape);
      expect(rel(one.deepcache_feature!.data as Float32Array, t(`${c.name}.feature1`))).toBeLessThan(1e-5);
      const two = await shallow.run({ sample: tensor("sample2"), timestep: tensor("timestep2"), encoder_hidden_states: ctx, deepcache_feature: one.deepcache_feature! });
      const got = two.out_sample!.data as Float32Array;
      expect(rel(got, t(`${c.name}.out_shallow2`))).toBeLessThan(1e-5);
      // and the cached call is an approximation of the full one, not the full one itself
      expect(rel(got, t("out_full2"))).toBeGreaterThan(1e-3);
      await Promise.all([full.release(), shallow.release()]);
    }
  }, 60_000);
});

describe("the DeepCache loop", () => {
  it("alternates full and shallow calls: interval 1 is the plain run exactly, interval 3 runs 7 of 20 full and stays close", async () => {
    const latents = async (deepcache: string | null) => {
      const p = await pipeline(EMOJI, deepcache);
      let last: Float32Array | null = null;
      const r = await run(await p.load(), { cwd: p.dir, progress: false, trace: (stage, data) => void (stage === "latents" && (last = new Float32Array(data))) });
      expect(r.cancelled).toBe(false);
      return { latents: last! as Float32Array, r };
    };
    const plain = await latents(null);
    expect(plain.r.deepcache).toBeUndefined();
    const one = await latents("interval: 1");
    expect(one.r.deepcache).toEqual({ full: 20, shallow: 0 });
    expect(maxAbs(one.latents, plain.latents)).toBeLessThanOrEqual(1e-6);
    const three = await latents("interval: 3");
    expect(three.r.deepcache).toEqual({ full: 7, shallow: 13 });
    expect(three.r.summary).toContain("DeepCache: 7 full and 13 shallow U-Net calls");
    const d = maxAbs(three.latents, plain.latents);
    const rms = Math.sqrt(plain.latents.reduce((a, x) => a + x * x, 0) / plain.latents.length);
    // a cached call is an approximation: different from the plain run, but by a small fraction of it
    expect(d).toBeGreaterThan(1e-4);
    expect(d).toBeLessThan(0.5 * rms);
    // the image remembers how it was made
    const { parseParameters, readPngText } = await import("../../src/image/image.js");
    expect(parseParameters(readPngText(three.r.outputs[0]!).parameters!).params.DeepCache).toBe("interval 3, branch 0");
  }, 60_000);

  it("counts full calls per schedule", () => {
    const full = (s: Parameters<typeof isFullCall>[0], n: number) => Array.from({ length: n }, (_, i) => i).filter((i) => isFullCall(s, i));
    expect(full({ interval: 3, fullSteps: null }, 20)).toEqual([0, 3, 6, 9, 12, 15, 18]);
    expect(full({ interval: 1, fullSteps: null }, 4)).toEqual([0, 1, 2, 3]);
    expect(full({ interval: 3, fullSteps: [0, 1, 2, 6, 12] }, 20)).toEqual([0, 1, 2, 6, 12]);
  });

  it("runs the full_steps schedule's calls in full: listing every call is the plain run", async () => {
    const p = await pipeline(EMOJI, `full_steps: [${Array.from({ length: 20 }, (_, i) => i).join(", ")}]`);
    const q = await pipeline(EMOJI, null);
    const grab = async (x: typeof p) => {
      let last: Float32Array | null = null;
      await run(await x.load(), { cwd: x.dir, progress: false, trace: (stage, data) => void (stage === "latents" && (last = new Float32Array(data))) });
      return last! as Float32Array;
    };
    expect(maxAbs(await grab(p), await grab(q))).toBeLessThanOrEqual(1e-6);
  }, 60_000);
});

describe("compiling DeepCache", () => {
  it("rebuilds what the cut changes, nothing for the schedule, and inspect shows the shallow U-Net", async () => {
    const p = await pipeline(EMOJI, "interval: 3\nbranch: 0");
    const out = path.join(p.dir, "c");
    const first = await compile(await p.load(), { outDir: out });
    expect(first.rebuilt).toEqual(["text_encoder", "unet", "vae_decoder", "vae_encoder", "unet_shallow"]);
    const edit = (deepcache: string | null) => {
      const yaml = fs.readFileSync(path.join(p.dir, "p.yaml"), "utf8").replace(/  deepcache:\n(    .*\n)*/, deepcache === null ? "" : `  deepcache:\n${deepcache.split("\n").map((l) => `    ${l}\n`).join("")}`);
      fs.writeFileSync(path.join(p.dir, "p.yaml"), yaml);
    };
    edit("interval: 5\nbranch: 0");
    expect(await compile(await p.load(), { outDir: out })).toMatchObject({ upToDate: true });
    edit("interval: 5\nbranch: 1");
    const moved = await compile(await p.load(), { outDir: out });
    expect(moved.rebuilt).toEqual(["unet", "unet_shallow"]);
    expect(moved.plan.deepcache).toMatchObject({ branch: 1, layer: null, skips: 4 });
    const { inspect } = await import("../../src/compiler/inspect.js");
    const shown = await inspect(out, { cwd: p.dir });
    expect(shown.summary).toContain("deepcache  unet_shallow/model.onnx: the U-Net's shallow part, cut after down block 1 (4 skip features); unet outputs deepcache_feature for it");
    fs.rmSync(path.join(out, "unet_shallow", "model.onnx"));
    expect((await inspect(out, { cwd: p.dir })).summary).toMatch(/damaged .*unet_shallow/);
    edit(null);
    const off = await compile(await p.load(), { outDir: out });
    expect(off.rebuilt).toEqual(["unet"]);
    expect(off.plan.deepcache).toBeUndefined();
    expect(off.plan.graphs.unet.outputs.map((o) => o.name)).toEqual(["out_sample"]);
    expect(fs.existsSync(path.join(out, "unet_shallow"))).toBe(false);
  }, 60_000);
});

describe("DeepCache refusals", () => {
  const problem = async (deepcache: string) => {
    const p = await pipeline(EMOJI, deepcache);
    const e = await p.load().then(
      () => null,
      (e: unknown) => e,
    );
    expect(isUserError(e)).toBe(true);
    return isUserError(e) ? e.problems[0]! : null;
  };

  it("names a branch or layer the U-Net does not have, where it is written", async () => {
    expect(await problem("branch: 3")).toMatchObject({ message: "sample.deepcache.branch 3 is not a down block of this U-Net", at: { line: 14 }, hint: expect.stringContaining("use 0 to 2") });
    expect(await problem("branch: 1\nlayer: 1")).toMatchObject({ message: "sample.deepcache.layer 1 is not a resnet layer of down block 1", at: { line: 15 } });
  });

  it("refuses a full_steps schedule without the first call", async () => {
    expect(await problem("full_steps: [2, 4]")).toMatchObject({ message: expect.stringContaining("must include 0"), at: { line: 14 } });
  });

  it("refuses to run DeepCache on a folder compiled without it", async () => {
    const p = await pipeline(EMOJI, null);
    const loaded = await p.load();
    const c = await compile(loaded, { outDir: path.join(p.dir, "c") });
    const e = await runPlan(c.dir, { ...runSettings(loaded), deepcache: { interval: 3, fullSteps: null } }, { progress: false }).catch((x: unknown) => x);
    expect(isUserError(e) && e.problems[0]).toMatchObject({ message: "sample.deepcache is set but this compiled folder has no shallow U-Net" });
  });
});
