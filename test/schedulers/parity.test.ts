/**
 * Step-by-step parity with diffusers 0.24 (fixtures from test/fixtures/gen/schedulers.py): for every
 * case the TS scheduler runs its own loop with the same dummy model, and its timesteps, sigmas,
 * init_noise_sigma, scale_model_input factors, model inputs, every intermediate latent and
 * pred_original_sample must match diffusers'.
 *
 * Tolerance: |ts − ref| ≤ 1e-5·max(1, |ref|), i.e. absolute below magnitude 1 and relative above
 * (Euler-family latents reach |x| ≈ 40 at σ_max ≈ 14.6). Integer timesteps must be equal.
 */
import { afterAll, describe, expect, it } from "vitest";

import { createScheduler, img2imgTimesteps, type NoiseSource } from "../../src/schedulers/index.js";
import { LCMScheduler } from "../../src/schedulers/lcm.js";
import { loadIndex, row, tensor, type FixtureCase } from "./fixtures.js";

const TOL = 1e-5;
const f32 = Math.fround;

/** The fixtures' dummy model: out = x_in·a(t) + pattern·b(t), in float32 as torch computes it. */
function dummyModel(xIn: Float32Array, t: number, pattern: Float32Array): Float32Array {
  const a = f32(0.9 - 0.3 * (t / 1000.0));
  const b = f32(0.02 + 0.05 * (t / 1000.0));
  return xIn.map((x, i) => f32(f32(x * a) + f32(pattern[i]! * b)));
}

/** Replays the noise diffusers drew, checking each request's size. */
class ReplayNoise implements NoiseSource {
  used = 0;
  constructor(private readonly draws: Float32Array[]) {}
  randn(n: number): Float32Array {
    const d = this.draws[this.used];
    if (!d) throw new Error(`scheduler drew noise #${this.used + 1}, diffusers drew only ${this.draws.length}`);
    if (d.length !== n) throw new Error(`noise draw #${this.used + 1}: size ${n}, diffusers drew ${d.length}`);
    this.used++;
    return d.slice();
  }
}

const worst: Record<string, { err: number; abs: number; where: string }> = {};

function record(kind: string, err: number, abs: number, where: string): void {
  const w = (worst[kind] ??= { err: 0, abs: 0, where: "" });
  if (err > w.err) Object.assign(w, { err, where });
  w.abs = Math.max(w.abs, abs);
}

/** Throws naming the worst element when |a − r| > TOL·max(1, |r|). */
function expectClose(kind: string, where: string, actual: ArrayLike<number>, ref: ArrayLike<number>): void {
  expect(actual.length, `${where}: ${kind} length`).toBe(ref.length);
  let err = 0;
  let abs = 0;
  let at = -1;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(actual[i]! - ref[i]!);
    const e = d / Math.max(1, Math.abs(ref[i]!));
    if (!(e <= err)) [err, at] = [e, i]; // NaN counts as worst
    abs = Math.max(abs, d);
  }
  record(kind, err, abs, where);
  if (!(err <= TOL))
    throw new Error(`${where}: ${kind}[${at}] = ${actual[at]}, diffusers ${ref[at]} (error ${err.toExponential(2)} > ${TOL})`);
}

function runCase(c: FixtureCase): void {
  const idx = loadIndex();
  const file = c.file;
  const t = (k: string) => tensor(file, `${c.name}/${k}`);
  const common = (k: string) => Float32Array.from(tensor("common.safetensors", k).data);
  const pattern = common("pattern");
  const batch = idx.shape[0]!;

  const overrides = { ...c.config, ...(c.eta !== null ? { eta: c.eta } : {}) };
  const s = createScheduler(c.className, {}, overrides);
  expect(s.className).toBe(c.className);
  expect(s.order).toBe(c.order);

  // config: every key diffusers has, with diffusers' value (sdc may hold more: eta, final_sigmas_type, ...)
  for (const [k, v] of Object.entries(c.fullConfig)) expect(s.config[k], `${c.name}: config.${k}`).toEqual(v);

  let loopTs: Float64Array;
  let latents: Float32Array;
  if (c.lcmStrength !== undefined) {
    // LatentConsistencyModelImg2ImgPipeline: set_timesteps(n, strength=s), noised to the first timestep
    if (!(s instanceof LCMScheduler)) throw new Error(`${c.name}: lcmStrength on ${c.className}`);
    s.setTimestepsWithStrength(c.steps, c.lcmStrength);
    loopTs = s.timesteps;
  } else if (c.strength === null) {
    s.setTimesteps(c.steps);
    loopTs = s.timesteps;
  } else {
    const r = img2imgTimesteps(s, c.steps, c.strength);
    expect(r.tStart).toBe(c.tStart);
    expect(r.numInferenceSteps).toBe(c.numInferenceSteps);
    expectClose("timesteps", `${c.name} start`, [r.startTimestep], [c.startTimestep!]);
    loopTs = r.timesteps;
  }

  // schedule
  const refTs = t("timesteps").data;
  if (c.timestepsDtype === "int64") expect(Array.from(s.timesteps)).toEqual(Array.from(refTs));
  else {
    if (c.timestepsDtype === "float32") for (const v of s.timesteps) expect(f32(v)).toBe(v);
    expectClose("timesteps", c.name, s.timesteps, refTs);
  }
  expectClose("timesteps", c.name, loopTs, t("loop_timesteps").data);
  const refSigmas = loadTensorIfAny(file, `${c.name}/sigmas`);
  if (refSigmas) expectClose("sigmas", c.name, s.sigmas, refSigmas.data);
  else expect(s.sigmas.length).toBe(0);
  expectClose("init_noise_sigma", c.name, [s.initNoiseSigma], [c.initNoiseSigma]);

  // initial latents
  if (c.lcmStrength !== undefined) latents = s.addNoise(common("x_0"), common("img_noise"), loopTs[0]!);
  else if (c.strength === null) latents = common("x_T").map((x) => f32(x * s.initNoiseSigma));
  else latents = s.addNoise(common("x_0"), common("img_noise"), loopTs[0]!);
  const refLatents = t("latents");
  expectClose("latents", `${c.name} initial`, latents, row(refLatents, 0));

  const noiseT = c.draws ? t("noise") : undefined;
  const noise = new ReplayNoise(noiseT ? Array.from({ length: c.draws }, (_, i) => row(noiseT, i)) : []);
  const factors = t("factors").data;
  const modelInputs = loopTs.length ? t("model_inputs") : undefined;
  const predOriginal = loadTensorIfAny(file, `${c.name}/pred_original`);

  loopTs.forEach((ts, i) => {
    const where = `${c.name} step ${i} (t=${ts})`;
    expectClose("scale factor", where, [s.scaleModelInput(new Float32Array([1]), ts)[0]!], [factors[i]!]);
    const xIn = s.scaleModelInput(latents, ts);
    expectClose("model input", where, xIn, row(modelInputs!, i));
    const out = s.step(dummyModel(xIn, ts, pattern), ts, latents, noise, batch);
    latents = out.prevSample;
    expectClose("latents", where, latents, row(refLatents, i + 1));
    if (predOriginal) {
      expect(out.predOriginalSample, `${where}: predOriginalSample`).toBeDefined();
      expectClose("pred_original_sample", where, out.predOriginalSample!, row(predOriginal, i));
    }
  });
  expect(noise.used, `${c.name}: noise draws`).toBe(c.draws);
}

function loadTensorIfAny(file: string, name: string) {
  try {
    return tensor(file, name);
  } catch {
    return undefined;
  }
}

const cases = loadIndex().cases;
const byClass = new Map<string, FixtureCase[]>();
for (const c of cases) byClass.set(c.className, [...(byClass.get(c.className) ?? []), c]);

for (const [className, list] of byClass)
  describe(className, () => {
    it.each(list.map((c) => [c.name, c] as const))("%s", (_name, c) => runCase(c));
  });

afterAll(() => {
  const lines = Object.entries(worst).map(
    ([k, w]) => `  ${k.padEnd(22)} max err ${w.err.toExponential(2)} (max abs ${w.abs.toExponential(2)}) at ${w.where}`,
  );
  console.log(`scheduler parity over ${cases.length} cases (err = |Δ|/max(1,|ref|)):\n${lines.join("\n")}`);
});
