/**
 * The noise-schedule building blocks against diffusers' own tensors (betas and alphas_cumprod of every
 * schedule the parity fixtures use, bit for bit) and against numpy's documented behaviour.
 */
import { describe, expect, it } from "vitest";

import {
  karrasSigmas,
  linspaceF32,
  multistepTimesteps,
  noiseSchedule,
  npArange,
  npLinspace,
  roundHalfEven,
  sigmaToT,
  logSigmasF32,
  trainingSigmas,
  type BetaOptions,
} from "../../src/schedulers/schedule.js";
import { loadIndex, tensor } from "./fixtures.js";

const DEFAULTS: Record<string, Partial<BetaOptions>> = {
  HeunDiscreteScheduler: { beta_start: 0.00085, beta_end: 0.012 },
};

describe("betas and alphas_cumprod equal diffusers' (bit for bit; sigmoid within 2 ulp)", () => {
  for (const sch of loadIndex().schedules)
    it(`${sch.name}: ${sch.className} ${JSON.stringify({ ...sch.config, trained_betas: sch.config.trained_betas ? "[...]" : undefined })}`, () => {
      const o = {
        num_train_timesteps: 1000,
        beta_start: 0.0001,
        beta_end: 0.02,
        beta_schedule: "linear",
        trained_betas: null,
        ...DEFAULTS[sch.className],
        ...sch.config,
      } as BetaOptions & { rescale_betas_zero_snr?: boolean };
      const { betas, alphasCumprod } = noiseSchedule(o);
      const refBetas = tensor("common.safetensors", `${sch.name}/betas`).data;
      const refAc = tensor("common.safetensors", `${sch.name}/alphas_cumprod`).data;
      if (o.beta_schedule === "sigmoid") {
        // torch's vectorised sigmoid uses SLEEF's expf (≤ 1 ulp): allow 2 float32 ulps here
        for (let i = 0; i < betas.length; i++) {
          expect(Math.abs(betas[i]! - refBetas[i]!)).toBeLessThanOrEqual(2 * 2 ** -23 * refBetas[i]!);
          expect(Math.abs(alphasCumprod[i]! - refAc[i]!)).toBeLessThanOrEqual(4e-7 * refAc[i]!);
        }
        return;
      }
      expect(Array.from(betas)).toEqual(Array.from(refBetas));
      expect(Array.from(alphasCumprod)).toEqual(Array.from(refAc));
    });

  it("zero terminal SNR rescaling ends at ᾱ = 0 and keeps ᾱ_0", () => {
    const base = { num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear", trained_betas: null };
    const plain = noiseSchedule(base).alphasCumprod;
    const rescaled = noiseSchedule({ ...base, rescale_betas_zero_snr: true }).alphasCumprod;
    expect(rescaled[999]).toBe(0);
    expect(Math.abs(rescaled[0]! - plain[0]!)).toBeLessThan(1e-6);
  });
});

describe("numpy / torch emulation", () => {
  it("rounds half to even like numpy", () => {
    expect([0.5, 1.5, 2.5, -0.5, 498.5, 499.5, 2.4, 2.6].map(roundHalfEven)).toEqual([0, 2, 2, -0, 498, 500, 2, 3]);
  });

  it("np.linspace ends exactly at stop; a single point is start", () => {
    const x = npLinspace(0, 999, 7);
    expect(x[6]).toBe(999);
    expect(x[3]).toBe(499.5);
    expect(Array.from(npLinspace(0, 1, 1))).toEqual([0]);
  });

  it("np.arange's length is ceil((stop − start)/step): 1000/61 gives 62 points, the last ≈ 0", () => {
    expect(npArange(1000, 0, -1000 / 61).length).toBe(62);
    expect(npArange(1000, 0, -1000 / 60).length).toBe(60);
    expect(Math.abs(npArange(1000, 0, -1000 / 61)[61]!)).toBeLessThan(1e-9);
  });

  it("torch.linspace(float32) hits both ends exactly and is monotone", () => {
    const x = linspaceF32(0.0001, 0.02, 1000);
    expect(x[0]).toBe(Math.fround(0.0001));
    expect(x[999]).toBe(Math.fround(0.02));
    for (let i = 1; i < 1000; i++) expect(x[i]!).toBeGreaterThan(x[i - 1]!);
  });

  it("Karras sigmas run from σ_max to σ_min, evenly spaced in σ^(1/7)", () => {
    const s = karrasSigmas(0.03, 14.6, 5);
    expect(s[0]).toBeCloseTo(14.6, 12);
    expect(s[4]).toBeCloseTo(0.03, 12);
    const r = Array.from(s, (v) => v ** (1 / 7));
    for (let i = 1; i < 4; i++) expect(r[i - 1]! - r[i]!).toBeCloseTo(r[i]! - r[i + 1]!, 12);
  });

  it("sigmaToT inverts the training sigmas (integer t at their own σ, clipped at both ends)", () => {
    const ac = noiseSchedule({ num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear", trained_betas: null }).alphasCumprod;
    const train = trainingSigmas(ac);
    const logs = logSigmasF32(train);
    for (const t of [0, 1, 250, 500, 998, 999]) expect(sigmaToT(train[t]!, logs)).toBeCloseTo(t, 3);
    expect(sigmaToT(1e-6, logs)).toBe(0);
    expect(sigmaToT(1e6, logs)).toBe(999);
  });

  it("multistep spacings drop the final 0 and honour lambda clipping and steps_offset", () => {
    expect(multistepTimesteps("linspace", 1000, 1000, 4, 0)).toEqual([999, 749, 500, 250]);
    expect(multistepTimesteps("leading", 1000, 1000, 4, 1)).toEqual([801, 601, 401, 201]);
    expect(multistepTimesteps("trailing", 1000, 1000, 4, 0)).toEqual([999, 749, 499, 249]);
    expect(multistepTimesteps("linspace", 1000, 900, 4, 0)).toEqual([899, 674, 450, 225]);
  });
});
