/**
 * Token merging (sample.tome): the compiled U-Net against tomesd applied to diffusers' U-Net
 * (test/fixtures/gen/tome.py), with the splits drawn by sdc's own generator from the same seed as
 * tomesd's; the split rule itself; the plan; refusals; and runs of the emoji model with it (alone and
 * with DeepCache), close to the full computation but not equal to it.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { compile } from "../../src/compiler/compile.js";
import { loadPipeline } from "../../src/config/load.js";
import { readPlan } from "../../src/plan/read.js";
import { run } from "../../src/pipeline.js";
import { tomeFeeds, tomeSplit } from "../../src/runtime/tome.js";
import { loadImage, readPngText } from "../../src/image/image.js";
import { isUserError } from "../../src/util/errors.js";
import { MODEL_FIXTURES, REPO, tempDir } from "../helpers/repo.js";
import { readSafetensors } from "./helpers.js";

const EMOJI = path.join(REPO, "models", "emoji");
const REF = JSON.parse(fs.readFileSync(path.join(MODEL_FIXTURES, "tome.reference.json"), "utf8")) as {
  latent: [number, number];
  cases: { name: string; batch: number; ratio: number; max_downsample: number; sx: number; sy: number; random: boolean; seed: number; draws: number[][] }[];
};

function pipeline(model: string, sample: string, extra = "") {
  const dir = tempDir("sdc-tome-");
  fs.writeFileSync(
    path.join(dir, "p.yaml"),
    `version: 1\nname: t\nmodel:\n  from: ${JSON.stringify(model)}\nscheduler:\n  type: dpm-solver++\n  steps: 8\nguidance:\n  scale: 4\nsample:\n${sample.split("\n").map((l) => `  ${l}`).join("\n")}\n${extra}runtime:\n  device: cpu\n  threads: 1\n`,
  );
  return { dir, load: () => loadPipeline(path.join(dir, "p.yaml"), { cwd: dir }) };
}

const tomeYaml = (c: (typeof REF.cases)[number]) => `tome:\n  ratio: ${c.ratio}\n  max_downsample: ${c.max_downsample}\n  sx: ${c.sx}\n  sy: ${c.sy}\n  random: ${c.random}`;

async function expectUserError(p: Promise<unknown>, subject: RegExp, message: RegExp) {
  const e = await p.then(
    () => null,
    (x: unknown) => x,
  );
  expect(isUserError(e), String(e)).toBe(true);
  const u = e as { subject?: string; message: string; hint?: string };
  expect(`${u.subject ?? ""} ${u.message}`).toMatch(subject);
  expect(u.message).toMatch(message);
}

describe("tomeSplit: one dst token per whole sx × sy cell, the rest src", () => {
  it("a 3 × 5 grid, 2 × 2 cells: the cell choice picks the dst, the last row and column stay src", () => {
    // cells (0,0) and (0,1); choices 3 (bottom right) and 0 (top left)
    const s = tomeSplit(3, 5, 2, 2, [3, 0]);
    expect(Array.from(s.dst)).toEqual([2, 6]);
    expect(Array.from(s.src)).toEqual([0, 1, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14]);
    // no choices: the top-left of each cell
    expect(Array.from(tomeSplit(3, 5, 2, 2, null).dst)).toEqual([0, 2]);
    // within a cell choices are row-major: 1 is the top-right token, 2 the bottom-left one
    expect(Array.from(tomeSplit(3, 5, 2, 2, [1, 2]).dst)).toEqual([1, 7]);
    // sx 3, sy 1: choice c is column c of the cell
    expect(Array.from(tomeSplit(2, 6, 3, 1, [2, 1, 0, 0]).dst)).toEqual([2, 4, 6, 9]);
  });
});

describe("against tomesd on diffusers' U-Net (test/fixtures/gen/tome.py, tiny-sd2, latents 10 × 14)", () => {
  const ref = readSafetensors(path.join(MODEL_FIXTURES, "tome.reference.safetensors"));
  const t = (k: string) => ref.get(k)!.data as Float32Array;
  for (const c of REF.cases)
    it(`${c.name}: batch ${c.batch}, ratio ${c.ratio}, max_downsample ${c.max_downsample}, cells ${c.sx}×${c.sy}, ${c.random ? "random" : "top-left"} dst`, async () => {
      const [h, w] = REF.latent;
      // tiny-sd2's VAE downsamples 4×
      const p = pipeline(path.join(MODEL_FIXTURES, "tiny-sd2"), `prompt: x\nwidth: ${w * 4}\nheight: ${h * 4}\nseed: ${c.seed}\n${tomeYaml(c)}`);
      const loaded = await p.load();
      const out = path.join(p.dir, "compiled");
      await compile(loaded, { outDir: out, log: () => {} });
      const plan = readPlan(out);
      const tome = plan.tome!;
      expect(tome.latentHeight).toBe(h);
      expect(tome.latentWidth).toBe(w);
      // level 0 (10 × 14 tokens) and, with max_downsample 2, level 1 (5 × 7): 2 down and 3 up blocks each
      expect(tome.levels.map((l) => [l.level, l.downsample, l.height, l.width, l.blocks.down + l.blocks.mid + l.blocks.up])).toEqual(
        c.max_downsample >= 2 ? [[0, 1, 10, 14, 5], [1, 2, 5, 7, 5]] : [[0, 1, 10, 14, 5]],
      );
      for (const l of tome.levels) expect(l.merged).toBe(Math.min(l.src, Math.floor(l.tokens * c.ratio)));
      const unetInputs = plan.graphs.unet.inputs.map((i) => i.name);
      for (const l of tome.levels) expect(unetInputs).toEqual(expect.arrayContaining([l.srcInput, l.dstInput]));

      // sdc's draws are tomesd's: same generator, same order of blocks
      const feeds = tomeFeeds(tome, c.seed, { random: c.random }).next(c.batch);
      const dstOf = (choices: number[], l: (typeof tome.levels)[number]) => Array.from(tomeSplit(l.height, l.width, c.sx, c.sy, choices).dst);
      const drawOrder = tome.levels.flatMap((l) => Array.from({ length: l.blocks.down }, (_, r) => ({ l, r }))).concat(
        [...tome.levels].reverse().flatMap((l) => Array.from({ length: l.blocks.up }, (_, r) => ({ l, r: l.blocks.down + l.blocks.mid + r }))),
      );
      const random = c.random && c.batch % 2 === 0;
      expect(c.draws.length).toBe(random ? drawOrder.length : 0);
      drawOrder.forEach(({ l, r }, k) => {
        const fed = Array.from((feeds[l.dstInput]!.data as Int32Array).subarray(r * l.dst, (r + 1) * l.dst));
        expect(fed).toEqual(dstOf(random ? c.draws[k]! : new Array(l.dst).fill(0), l));
      });

      const session = await ort.InferenceSession.create(path.join(out, plan.graphs.unet.file));
      const slice = (k: string, n: number) => {
        const v = ref.get(k)!;
        const per = v.shape.slice(1).reduce((a, b) => a * b, 1);
        return new ort.Tensor("float32", t(k).slice(0, n * per), [n, ...v.shape.slice(1)]);
      };
      const input: Record<string, ort.Tensor> = {
        sample: slice("sample", c.batch),
        timestep: slice("timestep", c.batch),
        encoder_hidden_states: slice("encoder_hidden_states", c.batch),
      };
      for (const [k, v] of Object.entries(feeds)) input[k] = new ort.Tensor("int64", BigInt64Array.from(v.data, (x) => BigInt(x)), v.dims);
      const got = (await session.run(input)).out_sample!.data as Float32Array;
      const want = t(`${c.name}.out`);
      const plain = t("out_plain").subarray(0, want.length);
      const scale = Math.max(...Array.from(want, Math.abs));
      let err = 0;
      let vsPlain = 0;
      for (let i = 0; i < want.length; i++) {
        err = Math.max(err, Math.abs(got[i]! - want[i]!));
        vsPlain = Math.max(vsPlain, Math.abs(want[i]! - plain[i]!));
      }
      expect(err / scale).toBeLessThan(1e-5);
      // and merging changes the output far more than that: the check can tell
      expect(vsPlain / scale).toBeGreaterThan(1e-3);
      await session.release();
    }, 60_000);
});

describe("runs with sample.tome (emoji model)", () => {
  it("merges tokens: close to the plain image, not equal; with DeepCache too; refuses what it cannot run", async () => {
    const base = "prompt: a red heart\nseed: 3";
    const images: Record<string, Uint8Array> = {};
    const calls: Record<string, unknown> = {};
    for (const [name, sample] of [
      ["plain", base],
      ["tome", `${base}\ntome:\n  ratio: 0.5`],
      ["tome+deepcache", `${base}\ntome:\n  ratio: 0.5\ndeepcache:\n  interval: 2`],
    ] as const) {
      const p = pipeline(EMOJI, sample, `output:\n  dir: out-${name}\n`);
      const res = await run(await p.load(), { cwd: p.dir, progress: false, log: () => {} });
      expect(res.outputs.length).toBe(1);
      images[name] = (await loadImage(res.outputs[0]!)).data;
      calls[name] = res.deepcache;
      const params = readPngText(res.outputs[0]!).parameters ?? "";
      if (name !== "plain") {
        expect(readPlan(path.join(p.dir, "compiled", "t")).tome?.levels.length).toBeGreaterThan(0);
        expect(params).toContain(`Token merging ratio: 0.5, ToMe: "max_downsample 1, cells 2x2, random dst"`);
      } else expect(params).not.toContain("Token merging");
    }
    expect(calls["tome+deepcache"]).toEqual({ full: 4, shallow: 4 });
    const psnr = (a: Uint8Array, b: Uint8Array) => {
      let se = 0;
      for (let i = 0; i < a.length; i++) se += ((a[i]! - b[i]!) / 255) ** 2;
      return 10 * Math.log10(1 / Math.max(se / a.length, 1e-12));
    };
    const q = psnr(images.tome!, images.plain!);
    expect(q).toBeGreaterThan(20);
    expect(q).toBeLessThan(80);
    expect(psnr(images["tome+deepcache"]!, images.plain!)).toBeGreaterThan(15);

    // a compiled ToMe U-Net is for one size; ratio rounding to nothing is refused at its key
    const p = pipeline(EMOJI, `${base}\ntome:\n  ratio: 0.5`);
    const loaded = await p.load();
    const out = path.join(p.dir, "c");
    await compile(loaded, { outDir: out, log: () => {} });
    const { runPlan } = await import("../../src/runtime/run.js");
    const { runSettings } = await import("../../src/pipeline.js");
    await expectUserError(runPlan(out, { ...runSettings(loaded), width: 64, height: 64, outputDir: path.join(p.dir, "o") }, { progress: false, log: () => {} }), /sample.width/, /merges tokens.*for 32×32 images, not 64×64/);
    const plainDir = path.join(p.dir, "plain");
    const plainLoaded = await pipeline(EMOJI, base).load();
    await compile(plainLoaded, { outDir: plainDir, log: () => {} });
    await expectUserError(runPlan(plainDir, { ...runSettings(loaded), outputDir: path.join(p.dir, "o") }, { progress: false, log: () => {} }), /sample.tome/, /does not merge tokens/);
    await expectUserError(compile(await pipeline(EMOJI, `${base}\ntome:\n  ratio: 0.01`).load(), { outDir: path.join(p.dir, "x"), log: () => {} }), /sample.tome/, /merges no tokens/);
  }, 240_000);
});
