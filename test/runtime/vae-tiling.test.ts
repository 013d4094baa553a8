/**
 * Tiled VAE decoding and encoding against diffusers' tiled_decode / tiled_encode (v0.24,
 * test/fixtures/gen/vae_tiling.py) on the tiny-sd1 fixture's VAE, with partial tiles in the last
 * row and column: sdc's tiled output must match diffusers' tiled output within 1e-5 of its scale
 * (max |Δ| / max |ref|; the untiled graphs' parity tolerance: blending adds float32 rounding only),
 * while the untiled output differs from it by the seams (0.16 to 0.54 of the scale on this tiny
 * random VAE with 16–24 pixel tiles), so a run that skipped tiling could not pass.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SafetensorsFile } from "../../src/models/weights/safetensors.js";
import { runSettings } from "../../src/pipeline.js";
import type { FloatTensor } from "../../src/runtime/graphs.js";
import { checkRunSettings } from "../../src/runtime/settings.js";
import { decodeImage, initialLatents, needsTiling, prepareSchedule, runTiled, tilingGeometry } from "../../src/runtime/stages/index.js";
import { TorchGenerator } from "../../src/runtime/rng.js";
import { savePng } from "../../src/image/image.js";
import type { Plan } from "../../src/plan/schema.js";
import { userError } from "../helpers/errors.js";
import { maxErrOverMaxRef } from "../helpers/ort.js";
import { compileFixture, fixturePipeline, session } from "../helpers/pipeline.js";
import { MODEL_FIXTURES, tempDir } from "../helpers/repo.js";

const TOL = 1e-5;
interface Case {
  model: "vae_decoder" | "vae_encoder";
  case: string;
  tile: number;
  overlap: number;
  input: string;
  tiled: string;
  whole: string;
  seam_effect: number;
}
const refJson = JSON.parse(fs.readFileSync(path.join(MODEL_FIXTURES, "vae-tiling.reference.json"), "utf8")) as { cases: Case[] };
const ref = SafetensorsFile.open(path.join(MODEL_FIXTURES, "vae-tiling.reference.safetensors"));
const tensor = (name: string): FloatTensor => ({ data: ref.readFloat32(name), dims: ref.tensors.get(name)!.shape });

let dir = "";
const sessions: ort.InferenceSession[] = [];
beforeAll(async () => {
  dir = (await compileFixture("tiny-sd1")).r.dir;
}, 60_000);
afterAll(async () => {
  for (const s of sessions) await s.release();
});

/** A graph's session as a function of its one input, returning `output`. */
async function graphFn(graph: string, input: string, output: string): Promise<(t: FloatTensor) => Promise<FloatTensor>> {
  const s = await session(dir, graph);
  sessions.push(s);
  const { Tensor } = await import("onnxruntime-node");
  return async (t) => {
    const out = (await s.run({ [input]: new Tensor("float32", t.data, t.dims) }))[output]!;
    return { data: out.data as Float32Array, dims: out.dims };
  };
}

describe("tiled VAE against diffusers' tiled_decode / tiled_encode", () => {
  it.each(refJson.cases.map((c) => [c.case, c] as const))("%s", async (_, c) => {
    const x = tensor(c.input);
    const want = ref.readFloat32(c.tiled);
    const whole = ref.readFloat32(c.whole);
    const g = tilingGeometry({ tile: c.tile, overlap: c.overlap }, 2, c.model === "vae_decoder" ? "decode" : "encode");
    expect(needsTiling(x.dims[2]!, x.dims[3]!, g)).toBe(true);
    const run = c.model === "vae_decoder" ? await graphFn("vae_decoder", "latent_sample", "sample") : await graphFn("vae_encoder", "sample", "latent_parameters");
    const got = await runTiled(run, x, g);
    expect(got.dims).toEqual(ref.tensors.get(c.tiled)!.shape);
    if (c.model === "vae_encoder") {
      // the reference's logvar is clamped to [-30, 20] as DiagonalGaussianDistribution does
      const half = got.data.length / 2;
      for (let i = half; i < got.data.length; i++) got.data[i] = Math.min(Math.max(got.data[i]!, -30), 20);
    }
    const e = maxErrOverMaxRef(got.data, want);
    console.log(`${c.case}: tiled vs diffusers tiled ${e.toExponential(2)}; untiled vs diffusers tiled ${maxErrOverMaxRef(whole, want).toExponential(2)}`);
    expect(e).toBeLessThan(TOL);
    // tiling did something: the whole-image output is far from the tiled reference
    expect(maxErrOverMaxRef(whole, want)).toBeGreaterThan(100 * TOL);
  });

  it("decodeImage tiles with its tiling and not without; inputs within one tile are decoded whole", async () => {
    const c = refJson.cases.find((x) => x.case === "decode_t16")!;
    const z = tensor(c.input);
    const dec = await graphFn("vae_decoder", "latent_sample", "sample");
    const runner = { run: async (f: Record<string, FloatTensor>) => ({ sample: await dec(f.latent_sample!) }) };
    const shape = { images: 1, channels: 4, height: z.dims[2]!, width: z.dims[3]! };
    const tiled = await decodeImage(runner, z.data, shape, 1, { tile: c.tile, overlap: c.overlap, scaleFactor: 2 });
    expect(maxErrOverMaxRef(tiled.decoded, ref.readFloat32(c.tiled))).toBeLessThan(TOL);
    const whole = await decodeImage(runner, z.data, shape, 1, null);
    expect(maxErrOverMaxRef(whole.decoded, ref.readFloat32(c.whole))).toBeLessThan(TOL);
    // a tile as large as the latents: one whole decode, bit for bit
    const big = await decodeImage(runner, z.data, shape, 1, { tile: 48, overlap: 0.25, scaleFactor: 2 });
    expect(big.decoded).toEqual(whole.decoded);
  });
});

describe("img2img with tiling", () => {
  it("encodes the init image tile by tile: the same latents as an encoder that tiles itself, from tile-sized calls", async () => {
    const enc = await graphFn("vae_encoder", "sample", "latent_parameters");
    const file = path.join(tempDir("sdc-tile-"), "init.png");
    const [W, H] = [28, 40];
    await savePng(file, Uint8Array.from({ length: W * H * 3 }, (_, i) => (i * 7919) % 256), W, H);
    const g = tilingGeometry({ tile: 16, overlap: 0.25 }, 2, "encode");
    const calls: number[][] = [];
    const plain = { run: async (f: Record<string, FloatTensor>) => (calls.push([...f.sample!.dims]), { latent_parameters: await enc(f.sample!) }) };
    const selfTiling = { run: async (f: Record<string, FloatTensor>) => ({ latent_parameters: await runTiled(enc, f.sample!, g) }) };
    const scheduler: Plan["scheduler"] = { type: "ddim", className: "DDIMScheduler", steps: 4, config: { num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear" } };
    const shape = { images: 1, channels: 4, height: H / 2, width: W / 2 };
    const latents = (runner: typeof plain, tiling: { tile: number; overlap: number; scaleFactor: number } | null) =>
      initialLatents(
        { kind: "image", file, vaeEncoder: runner, scalingFactor: 0.18215, width: W, height: H, tiling },
        { shape, schedule: prepareSchedule({ scheduler }, { strength: 0.5 }), generator: new TorchGenerator(3) },
      );
    const got = await latents(plain, { tile: 16, overlap: 0.25, scaleFactor: 2 });
    expect(calls.length).toBe(12); // 4 rows (0, 12, 24, 36) × 3 columns (0, 12, 24)
    expect(Math.max(...calls.map((d) => Math.max(d[2]!, d[3]!)))).toBe(16);
    expect(got).toEqual(await latents(selfTiling, null));
    // and not what the whole image gives
    calls.length = 0;
    const whole = await latents(plain, null);
    expect(calls).toEqual([[1, 3, H, W]]);
    expect(maxErrOverMaxRef(whole, got)).toBeGreaterThan(1e-3);
  });
});

describe("tile geometry", () => {
  it("follows diffusers' sizes for SD's VAE (512-pixel tiles, overlap 0.25)", () => {
    expect(tilingGeometry({ tile: 512, overlap: 0.25 }, 8, "decode")).toEqual({ inTile: 64, step: 48, blend: 128, keep: 384, scale: 8 });
    expect(tilingGeometry({ tile: 512, overlap: 0.25 }, 8, "encode")).toEqual({ inTile: 512, step: 384, blend: 16, keep: 48, scale: 1 / 8 });
  });

  it("refuses tiles that would not tile evenly (diffusers returns another size there), naming the setting", () => {
    const e = userError(() => tilingGeometry({ tile: 20, overlap: 0.25 }, 2, "decode"));
    expect(e.message).toMatch(/does not tile evenly/);
    expect(e.problems[0]!.subject).toBe("sample.vae_tiling");
    expect(userError(() => tilingGeometry({ tile: 12, overlap: 0.25 }, 8, "decode")).problems[0]!.subject).toBe("sample.vae_tiling.tile");
  });
});

describe("sample.vae_tiling", () => {
  it("is off when absent or disabled; the tile defaults to the VAE's sample_size", async () => {
    const from = JSON.stringify(path.join(MODEL_FIXTURES, "tiny-sd1"));
    expect(runSettings((await fixturePipeline(`model:\n  from: ${from}\n`)).p).vaeTiling).toBeNull();
    expect(runSettings((await fixturePipeline(`model:\n  from: ${from}\nsample:\n  vae_tiling: { enabled: false }\n`)).p).vaeTiling).toBeNull();
    expect(runSettings((await fixturePipeline(`model:\n  from: ${from}\nsample:\n  vae_tiling: {}\n`)).p).vaeTiling).toEqual({ tile: 16, overlap: 0.25 });
    expect(runSettings((await fixturePipeline(`model:\n  from: ${from}\nsample:\n  vae_tiling: { tile: 24, overlap: 0.5 }\n`)).p).vaeTiling).toEqual({ tile: 24, overlap: 0.5 });
  });

  it("a tiling that does not tile evenly is refused before the run", async () => {
    const { p, r } = await compileFixture("tiny-sd1", "sample:\n  vae_tiling: { tile: 20 }\n");
    const e = userError(() => checkRunSettings(r.plan, runSettings(p)));
    expect(e.problems[0]!.subject).toBe("sample.vae_tiling");
  });
});
