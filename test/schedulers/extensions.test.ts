/**
 * Options sdc implements beyond diffusers 0.24, following later diffusers (there are no 0.24 fixtures for
 * them): `final_sigmas_type` for DPM-Solver multistep and Euler, `rescale_betas_zero_snr` for DDPM.
 * Each is checked against a closed form computed here in float64 (tolerance 1e-6·max(1,|x|), far below
 * what a wrong formula would give) and against the unchanged steps of the 0.24 behaviour.
 */
import { describe, expect, it } from "vitest";

import { createScheduler, type NoiseSource, type Scheduler } from "../../src/schedulers/index.js";
import { noiseSchedule } from "../../src/schedulers/schedule.js";
import { tensor } from "./fixtures.js";

const f32 = Math.fround;
/** σ at t = 0 as torch computes it in float32: β_0 = (√0.00085)², ᾱ_0 = 1 − β_0, σ = sqrt((1 − ᾱ_0)/ᾱ_0). */
const ac0 = f32(1 - f32(f32(Math.sqrt(0.00085)) ** 2));
const SIGMA_MIN = f32(Math.sqrt(f32(f32(1 - ac0) / ac0)));
const SD = { beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear", steps_offset: 1 };
const N_LATENT = 16;
const x0Latents = Float32Array.from({ length: N_LATENT }, (_, i) => Math.sin(i * 1.7) * 1.3);
const model = (x: Float32Array, t: number) => x.map((v, i) => Math.fround(v * 0.8 + 0.05 * Math.cos(i + t / 100)));

class Gaussianish implements NoiseSource {
  private k = 0;
  draws = 0;
  randn(n: number): Float32Array {
    this.draws++;
    return Float32Array.from({ length: n }, () => Math.fround(Math.sin(++this.k * 12.9898) * 1.5));
  }
}

/** Run the sampling loop; returns every latent. */
function run(s: Scheduler, steps: number, noise?: NoiseSource): Float32Array[] {
  s.setTimesteps(steps);
  let x: Float32Array = x0Latents.map((v) => Math.fround(v * s.initNoiseSigma));
  const out = [x];
  for (const t of s.timesteps) {
    const xin = s.scaleModelInput(x, t);
    x = s.step(model(xin, t), t, x, noise, 1).prevSample;
    out.push(x);
  }
  return out;
}

function expectNear(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 1e-6): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++)
    expect(Math.abs(actual[i]! - expected[i]!), `element ${i}: ${actual[i]} vs ${expected[i]}`).toBeLessThanOrEqual(
      tol * Math.max(1, Math.abs(expected[i]!)),
    );
}

describe("DPM-Solver multistep: final_sigmas_type (later diffusers)", () => {
  for (const [alg, steps, extra] of [
    ["dpmsolver++", 10, {}],
    ["dpmsolver++", 20, {}],
    ["dpmsolver++", 20, { use_karras_sigmas: true, solver_order: 3 }],
    ["sde-dpmsolver++", 8, {}],
  ] as const)
    it(`"zero" ends at σ = 0 with x_N = x̂_0 of the last step (${alg}, ${steps} steps, ${JSON.stringify(extra)})`, () => {
      const sigmaMin = createScheduler("dpm-solver++", SD, { algorithm_type: alg, ...extra, ...(extra.solver_order === 3 ? { final_sigmas_type: "zero" } : {}) });
      const zero = createScheduler("dpm-solver++", SD, { algorithm_type: alg, ...extra, final_sigmas_type: "zero" });
      const noiseA = new Gaussianish();
      const noiseB = new Gaussianish();
      const a = extra.solver_order === 3 ? null : run(sigmaMin, steps, noiseA);
      const b = run(zero, steps, noiseB);
      expect(zero.sigmas[steps]).toBe(0);
      if (a) {
        // same schedule up to the last σ; identical steps until the last one
        expect(Array.from(zero.sigmas.subarray(0, steps))).toEqual(Array.from(sigmaMin.sigmas.subarray(0, steps)));
        expect(sigmaMin.sigmas[steps]).toBeGreaterThan(0);
        for (let i = 0; i < steps; i++) expect(Array.from(b[i]!)).toEqual(Array.from(a[i]!));
        expect(noiseB.draws).toBe(noiseA.draws); // the SDE variant still draws its noise on the last step
      }
      // last step by hand: α = 1/sqrt(σ²+1), σ_t = σα; x̂_0 = (x − σ_t·ε)/α; at σ_next = 0 the update returns x̂_0
      const sigma = zero.sigmas[steps - 1]!;
      const t = zero.timesteps[steps - 1]!;
      const x = b[steps - 1]!;
      const eps = model(x, t);
      const alpha = 1 / Math.sqrt(sigma * sigma + 1);
      const x0 = Array.from(x, (v, i) => (v - sigma * alpha * eps[i]!) / alpha);
      expectNear(b[steps]!, x0);
      for (const v of b[steps]!) expect(Number.isFinite(v)).toBe(true);
    });

  it("the default, sigma_min, is diffusers 0.24's schedule end: the smallest training σ", () => {
    const s = createScheduler("dpm-solver++", SD);
    s.setTimesteps(10);
    expect(s.sigmas[10]).toBe(SIGMA_MIN);
    expect(s.config.final_sigmas_type).toBe("sigma_min");
  });
});

describe("Euler: final_sigmas_type (later diffusers)", () => {
  it('"sigma_min" ends at the smallest training σ; all other steps are the default ("zero") ones', () => {
    const steps = 12;
    const zero = createScheduler("euler", SD);
    const min = createScheduler("euler", SD, { final_sigmas_type: "sigma_min" });
    const a = run(zero, steps);
    const b = run(min, steps);
    expect(zero.sigmas[steps]).toBe(0);
    expect(min.sigmas[steps]).toBe(SIGMA_MIN);
    expect(min.initNoiseSigma).toBe(zero.initNoiseSigma);
    for (let i = 0; i < steps; i++) expect(Array.from(b[i]!)).toEqual(Array.from(a[i]!));
    // last step by hand: x_N = x + (x − x̂_0)/σ·(σ_min − σ), x̂_0 = x − σ·ε, ε = model(x/sqrt(σ²+1))
    const sigma = min.sigmas[steps - 1]!;
    const x = b[steps - 1]!;
    const eps = model(x.map((v) => Math.fround(v / Math.fround(Math.sqrt(Math.fround(sigma * sigma) + 1)))), min.timesteps[steps - 1]!);
    const expected = Array.from(x, (v, i) => v + eps[i]! * (min.sigmas[steps]! - sigma));
    expectNear(b[steps]!, expected);
  });
});

describe("DDPM: rescale_betas_zero_snr (later diffusers)", () => {
  it("uses exactly DDIM's rescaled schedule (parity-tested against diffusers) and steps by the posterior formula", () => {
    const cfg = { ...SD, rescale_betas_zero_snr: true, prediction_type: "v_prediction", timestep_spacing: "trailing", clip_sample: false };
    const ddpm = createScheduler("ddpm", {}, cfg) as unknown as { alphasCumprod: Float32Array } & Scheduler;
    // fixture schedule s5: diffusers' DDIMScheduler with these betas and rescale_betas_zero_snr
    expect(Array.from(ddpm.alphasCumprod)).toEqual(Array.from(tensor("common.safetensors", "s5/alphas_cumprod").data));
    expect(ddpm.alphasCumprod[999]).toBe(0);
    const plain = noiseSchedule({ ...SD, num_train_timesteps: 1000, trained_betas: null }).alphasCumprod;
    expect(ddpm.alphasCumprod[500]).not.toBe(plain[500]);

    // first step at t = 999 (ᾱ_t = 0: pure noise) with v-prediction, by hand (Ho et al. eq. 7)
    ddpm.setTimesteps(4);
    expect(Array.from(ddpm.timesteps)).toEqual([999, 749, 499, 249]);
    const t = 999;
    const tPrev = 749;
    const v = model(x0Latents, t);
    const noise = new Gaussianish();
    const out = ddpm.step(v, t, x0Latents, noise, 1);
    const z = new Gaussianish().randn(N_LATENT);
    const a = ddpm.alphasCumprod[t]!;
    const ap = ddpm.alphasCumprod[tPrev]!;
    const x0 = Array.from(x0Latents, (x, i) => Math.sqrt(a) * x - Math.sqrt(1 - a) * v[i]!);
    const betaT = 1 - a / ap;
    const mean = x0.map((p, i) => ((Math.sqrt(ap) * betaT) / (1 - a)) * p + ((Math.sqrt(a / ap) * (1 - ap)) / (1 - a)) * x0Latents[i]!);
    const std = Math.sqrt(((1 - ap) / (1 - a)) * betaT);
    expectNear(out.predOriginalSample!, x0);
    expectNear(out.prevSample, mean.map((m, i) => m + std * z[i]!));
    expect(noise.draws).toBe(1);
  });
});
