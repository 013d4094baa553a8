/**
 * The sampling stages run any GraphRunner, not only a compiled folder's sessions: here, graphs
 * written as plain functions (as the trainer's in-memory weights will be). Prompt order and
 * repetition, guidance only when asked, seeded and file latents, cancellation between steps,
 * file naming, parameters and the grid.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { parseParameters, readPngText } from "../../src/image/image.js";
import { writeSafetensors } from "../../src/models/weights/safetensors.js";
import type { Plan } from "../../src/plan/schema.js";
import type { FloatTensor, GraphRunner } from "../../src/runtime/graphs.js";
import { TorchGenerator } from "../../src/runtime/rng.js";
import type { RunSettings } from "../../src/runtime/settings.js";
import { decodeAndSave, denoiseLoop, encodePrompts, imageParameters, initialLatents, type LatentShape, prepareSchedule } from "../../src/runtime/stages/index.js";
import { breakProgressLine, progressBar } from "../../src/runtime/progress.js";
import { ClipTokenizer } from "../../src/tokenizer/clip.js";
import { tempDir } from "../helpers/repo.js";
import { FIXTURES } from "../helpers/repo.js";

/** A graph as a function; counts its calls. */
function graph(f: (feeds: Record<string, { data: Float32Array | Int32Array; dims: readonly number[] }>) => Record<string, FloatTensor>): GraphRunner & { calls: number } {
  const g = {
    calls: 0,
    run: async (feeds: Parameters<GraphRunner["run"]>[0]) => {
      g.calls++;
      return f(feeds);
    },
  };
  return g;
}

const tokenizer = ClipTokenizer.fromFolder(path.join(FIXTURES, "models", "tiny-sd1", "tokenizer"));
/** A text encoder whose embedding of a prompt is its first token after <|startoftext|>, everywhere ([n, 77, 2]). */
const textEncoder = () =>
  graph(({ input_ids }) => {
    const [n, len] = input_ids!.dims as [number, number];
    const out = new Float32Array(n * len * 2);
    for (let i = 0; i < n; i++) out.fill(input_ids!.data[i * len + 1]!, i * len * 2, (i + 1) * len * 2);
    return { last_hidden_state: { data: out, dims: [n, len, 2] } };
  });

const scheduler: Plan["scheduler"] = { type: "euler", className: "EulerDiscreteScheduler", steps: 3, config: { num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear" } };
const shape: LatentShape = { images: 2, channels: 4, height: 2, width: 3 };

describe("encodePrompts", () => {
  it("repeats each prompt for its images in order; encodes negatives only with guidance, in the prompts' call", async () => {
    const te = textEncoder();
    const o = { prompts: ["a", "b"], negativePrompts: ["c"], perPrompt: 2 };
    const e = await encodePrompts(te, tokenizer, { ...o, guidance: true });
    expect(te.calls).toBe(1);
    expect([e.images, e.sequence, e.width]).toEqual([4, 77, 2]);
    const first = (x: Float32Array) => [0, 1, 2, 3].map((i) => x[i * 77 * 2]);
    const id = (t: string) => tokenizer.encodeBatch([t]).ids[1];
    expect(first(e.text)).toEqual([id("a"), id("a"), id("b"), id("b")]);
    expect(first(e.uncond!)).toEqual([id("c"), id("c"), id("c"), id("c")]);
    const none = await encodePrompts(textEncoder(), tokenizer, { ...o, guidance: false });
    expect(none.uncond).toBeNull();
  });
});

describe("initialLatents and denoiseLoop", () => {
  it("seeded noise is the generator's randn × init_noise_sigma; a latents file replaces it", async () => {
    const schedule = prepareSchedule({ scheduler });
    expect(schedule.timesteps).toHaveLength(3);
    const n = 2 * 4 * 2 * 3;
    const noise = await initialLatents({ kind: "noise" }, { shape, schedule, generator: new TorchGenerator(7) });
    const want = new TorchGenerator(7).randn(n).map((x) => Math.fround(x * schedule.scheduler.initNoiseSigma));
    expect(Array.from(noise)).toEqual(Array.from(want));

    const file = path.join(tempDir("sdc-stages-"), "l.safetensors");
    const ones = new Float32Array(n).fill(1);
    writeSafetensors(file, [{ name: "latents", dtype: "F32", shape: [2, 4, 2, 3], data: new Uint8Array(ones.buffer) }]);
    const fromFile = await initialLatents({ kind: "file", file }, { shape, schedule, generator: new TorchGenerator(7) });
    expect(fromFile[0]).toBeCloseTo(schedule.scheduler.initNoiseSigma, 4);
  });

  it("runs the U-Net once per step on [negative; positive], and stops between steps when aborted", async () => {
    const seen: number[] = [];
    const unet = graph(({ sample }) => ((seen.push(sample!.dims[0]!), { out_sample: { data: new Float32Array(sample!.data.length), dims: sample!.dims } })));
    const embeddings = { text: new Float32Array(2 * 77 * 2), uncond: new Float32Array(2 * 77 * 2), images: 2, sequence: 77, width: 2 };
    const base = { shape, embeddings, guidanceScale: 7.5, guidanceRescale: 0, noise: new TorchGenerator(0), latents: new Float32Array(48).fill(1) };
    const done = await denoiseLoop(unet, { ...base, schedule: prepareSchedule({ scheduler }) });
    expect(done).toMatchObject({ steps: 3, total: 3, cancelled: false });
    expect(seen).toEqual([4, 4, 4]);

    const ac = new AbortController();
    const stopped = await denoiseLoop(unet, { ...base, schedule: prepareSchedule({ scheduler }), signal: ac.signal, onStep: (i) => i === 1 && ac.abort() });
    expect(stopped).toMatchObject({ steps: 1, total: 3, cancelled: true });
    expect(unet.calls).toBe(4);
  });
});

describe("the progress bar counts what the loop runs", () => {
  const unet = graph(({ sample }) => ({ out_sample: { data: new Float32Array(sample!.data.length), dims: sample!.dims } }));
  const embeddings = { text: new Float32Array(2 * 77 * 2), uncond: null, images: 2, sequence: 77, width: 2 };
  const base = { shape, embeddings, guidanceScale: 1, guidanceRescale: 0, noise: new TorchGenerator(0), latents: new Float32Array(48).fill(1) };
  const recorder = () => {
    const calls: unknown[][] = [];
    let ticks = 0;
    return { calls, ticks: () => ticks, progress: { start: (...a: unknown[]) => void calls.push(a), tick: () => void ticks++, stop() {} } };
  };

  it("PNDM: 5 steps are 6 U-Net calls (the warm-up visits one timestep twice): the bar says so and reaches its total", async () => {
    const pndm: Plan["scheduler"] = { type: "pndm", className: "PNDMScheduler", steps: 5, config: { skip_prk_steps: true, steps_offset: 1 } };
    const r = recorder();
    const done = await denoiseLoop(unet, { ...base, schedule: prepareSchedule({ scheduler: pndm }), progress: r.progress });
    expect(r.calls).toEqual([[6, "denoise", "U-Net calls (5 steps)"]]);
    expect([r.ticks(), done.total]).toEqual([6, 6]);
  });

  it("Euler: one call per step, counted as steps", async () => {
    const r = recorder();
    await denoiseLoop(unet, { ...base, schedule: prepareSchedule({ scheduler }), progress: r.progress });
    expect(r.calls).toEqual([[3, "denoise", "steps"]]);
    expect(r.ticks()).toBe(3);
  });

  it("a line written while the bar is drawn starts on a line of its own (not glued onto the bar)", () => {
    let text = "";
    const tty = Object.assign(new Writable({ write: (c: Buffer, _e: string, cb: () => void) => void ((text += c.toString()), cb()) }), { isTTY: true, columns: 80 });
    const bar = progressBar(true, tty);
    bar.start(3, "txt2img");
    bar.tick();
    breakProgressLine(tty);
    tty.write("stopping after the current step\n");
    bar.stop();
    breakProgressLine(tty); // no bar: nothing
    const i = text.indexOf("stopping");
    expect(text.slice(0, i)).toMatch(/\d\/3 steps[^\n]*\n$/); // the bar's line, then a newline
    expect(text.endsWith("\n\n")).toBe(false);
  });
});

describe("decodeAndSave", () => {
  it("decodes each image, names files by the next free number, writes parameters and a grid", async () => {
    const vae = graph(({ latent_sample }) => {
      const [, , h, w] = latent_sample!.dims as number[];
      return { sample: { data: new Float32Array(3 * 2 * h! * 2 * w!).fill(latent_sample!.data[0]! > 0 ? 1 : -1), dims: [1, 3, 2 * h!, 2 * w!] } };
    });
    const dir = tempDir("sdc-stages-");
    fs.writeFileSync(path.join(dir, "00004-1.png"), "");
    const latents = new Float32Array(48);
    latents.fill(1, 0, 24).fill(-1, 24);
    const settings = { prompts: ["a cat"], negativePrompts: ["ugly"], guidanceScale: 5, guidanceRescale: 0, width: 6, height: 4, batch: 2, seed: 9, initImage: null, strength: 0.8, latents: null } as unknown as RunSettings;
    const plan = { scheduler, model: { kind: "diffusers", name: "m", hash: "0123456789" } } as unknown as Plan;
    const files = await decodeAndSave(vae, latents, { shape, scalingFactor: 0.5, dir, seed: 9, runIndex: 2, grid: true, parameters: (i) => imageParameters(plan, settings, i) });
    expect(files.map((f) => path.basename(f))).toEqual(["run002-00005-9.png", "run002-00006-9.png", "run002-grid-00005.png"]);
    expect(vae.calls).toBe(2);
    const p = parseParameters(readPngText(files[1]!).parameters!);
    expect(p).toMatchObject({ prompt: "a cat", negativePrompt: "ugly", params: { Steps: "3", Sampler: "Euler", "CFG scale": "5", Seed: "9", Size: "6x4", "Batch pos": "1", Model: "m" } });
    const { default: sharp } = await import("sharp");
    expect(await sharp(files[2]!).metadata()).toMatchObject({ width: 12, height: 4 });
    // the grid carries every image's parameters, in order, a blank line apart
    expect(readPngText(files[2]!).parameters).toBe([0, 1].map((i) => imageParameters(plan, settings, i)).join("\n\n"));
  });
});
