/**
 * The registry and the pipeline-side helpers: names, scheduler_config.json round trips (with Python's
 * -Infinity), the Stable Diffusion pipelines' config fix-ups, img2img's timestep slicing, and the
 * contract of step() (noise draws, inputs left untouched, misuse reported).
 */
import { describe, expect, it } from "vitest";

import {
  SCHEDULER_CLASS_NAMES,
  SCHEDULER_SHORT_NAMES,
  createScheduler,
  img2imgTimesteps,
  parseSchedulerConfigJson,
  schedulerConfigJson,
  withStableDiffusionPipelineFixups,
  type NoiseSource,
} from "../../src/schedulers/index.js";
import { isUserError } from "../../src/util/errors.js";

const SD = { beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear", steps_offset: 1 };

class CountingNoise implements NoiseSource {
  sizes: number[] = [];
  randn(n: number): Float32Array {
    this.sizes.push(n);
    return new Float32Array(n).fill(0.5);
  }
}

describe("registry", () => {
  it("knows every scheduler by diffusers class name (any case) and by short name", () => {
    expect(SCHEDULER_SHORT_NAMES).toEqual(["ddpm", "ddim", "pndm", "lms", "euler", "euler-ancestral", "heun", "dpm-solver++", "unipc", "lcm"]);
    SCHEDULER_CLASS_NAMES.forEach((cls, i) => {
      expect(createScheduler(cls).className).toBe(cls);
      expect(createScheduler(cls.toLowerCase()).className).toBe(cls);
      expect(createScheduler(SCHEDULER_SHORT_NAMES[i]!).className).toBe(cls);
    });
  });

  it("reports each scheduler's order and init_noise_sigma as diffusers does", () => {
    expect(createScheduler("heun").order).toBe(2);
    const e = createScheduler("euler", SD);
    e.setTimesteps(30);
    expect(e.initNoiseSigma).toBe(e.sigmas[0]); // linspace: σ_max
    const l = createScheduler("euler", SD, { timestep_spacing: "leading" });
    l.setTimesteps(30);
    expect(l.initNoiseSigma).toBeCloseTo(Math.sqrt(l.sigmas[0]! ** 2 + 1), 5);
    expect(createScheduler("ddim").initNoiseSigma).toBe(1);
  });
});

describe("scheduler_config.json", () => {
  const variants: [string, Record<string, unknown>][] = [
    ["ddpm", { ...SD, variance_type: "fixed_large" }],
    ["ddim", { ...SD, eta: 0.3, rescale_betas_zero_snr: true }],
    ["pndm", { ...SD, skip_prk_steps: true }],
    ["lms", { ...SD, use_karras_sigmas: true }],
    ["euler", { ...SD, sigma_min: 0.1, final_sigmas_type: "sigma_min" }],
    ["euler-ancestral", { ...SD, prediction_type: "v_prediction" }],
    ["heun", { ...SD, clip_sample: true }],
    ["dpm-solver++", { ...SD, use_karras_sigmas: true, final_sigmas_type: "zero" }],
    ["unipc", { ...SD, disable_corrector: [0], solver_order: 3 }],
  ];
  for (const [type, cfg] of variants)
    it(`round-trips ${type}`, () => {
      const s = createScheduler(type, {}, cfg);
      const text = schedulerConfigJson(s);
      const parsed = parseSchedulerConfigJson(text, "scheduler_config.json");
      expect(parsed._class_name).toBe(s.className);
      expect(parsed._diffusers_version).toBe("0.24.0");
      const again = createScheduler(String(parsed._class_name), parsed);
      expect(again.config).toEqual(s.config);
    });

  it("writes -Infinity as Python's json does, and reads it back", () => {
    const text = schedulerConfigJson(createScheduler("dpm-solver++"));
    expect(text).toMatch(/"lambda_min_clipped": -Infinity,/);
    expect(() => JSON.parse(text)).toThrow(); // not strict JSON, like diffusers' own files
    expect(parseSchedulerConfigJson(text, "x.json").lambda_min_clipped).toBe(-Infinity);
  });

  it("reads NaN / Infinity tokens but leaves strings that contain them alone", () => {
    const v = parseSchedulerConfigJson('{"a": NaN, "b": Infinity, "c": "-Infinity NaN", "d": [-Infinity]}', "x.json");
    expect(v.a).toBeNaN();
    expect(v.b).toBe(Infinity);
    expect(v.c).toBe("-Infinity NaN");
    expect(v.d).toEqual([-Infinity]);
  });

  it("reports a syntax error at file:line:col", () => {
    try {
      parseSchedulerConfigJson('{\n  "a": 1,\n  "b": -Infinity\n  "c": 2\n}', "unet/../scheduler/scheduler_config.json");
      throw new Error("no error");
    } catch (e) {
      expect(isUserError(e)).toBe(true);
      if (!isUserError(e)) return;
      expect(e.problems[0]!.at).toEqual({ file: "unet/../scheduler/scheduler_config.json", line: 4, col: 3 });
      expect(e.message).toMatch(/^unet\/\.\.\/scheduler\/scheduler_config\.json:4:3: invalid JSON/);
    }
    expect(() => parseSchedulerConfigJson("[1, 2]", "s.json")).toThrow(/s.json:1:1: expected a JSON object/);
  });
});

describe("Stable Diffusion pipeline fix-ups (diffusers 0.24 rewrites outdated configs)", () => {
  it("sets steps_offset = 1 and clip_sample = false", () => {
    const s = withStableDiffusionPipelineFixups(createScheduler("ddim"));
    expect(s.config).toMatchObject({ steps_offset: 1, clip_sample: false });
    const h = withStableDiffusionPipelineFixups(createScheduler("heun", {}, { clip_sample: true }));
    expect(h.config).toMatchObject({ steps_offset: 1, clip_sample: false });
  });

  it("returns the same scheduler when nothing is outdated", () => {
    const s = createScheduler("euler", SD);
    expect(withStableDiffusionPipelineFixups(s)).toBe(s);
  });
});

describe("img2img timesteps (StableDiffusionImg2ImgPipeline.get_timesteps)", () => {
  it("keeps the last ⌊N·strength⌋ steps", () => {
    const s = createScheduler("ddim", SD);
    const r = img2imgTimesteps(s, 10, 0.75);
    expect(r).toMatchObject({ tStart: 3, numInferenceSteps: 7, startTimestep: 601 });
    expect(Array.from(r.timesteps)).toEqual([601, 501, 401, 301, 201, 101, 1]);
    expect(img2imgTimesteps(s, 10, 1).timesteps.length).toBe(10);
  });

  it("slices Heun's doubled schedule by its order, starting on a repeated timestep", () => {
    const s = createScheduler("heun", SD);
    const r = img2imgTimesteps(s, 10, 0.5);
    expect(r.tStart).toBe(5);
    expect(Array.from(r.timesteps)).toEqual(Array.from(s.timesteps.slice(10)));
    expect(r.timesteps[0]).toBe(s.timesteps[9]); // the second copy of the pair
  });
});

describe("step() contract", () => {
  const x = Float32Array.from({ length: 8 }, (_, i) => i / 4 - 1);
  const m = Float32Array.from({ length: 8 }, (_, i) => Math.cos(i) / 2);

  it("leaves its inputs untouched", () => {
    for (const type of SCHEDULER_SHORT_NAMES) {
      const s = createScheduler(type, SD);
      s.setTimesteps(type === "pndm" ? 5 : 4);
      const [xs, ms] = [x.slice(), m.slice()];
      for (const t of s.timesteps.slice(0, 3)) s.step(s.scaleModelInput(xs, t), t, xs, new CountingNoise(), 1);
      expect(Array.from(xs)).toEqual(Array.from(x));
      expect(Array.from(ms)).toEqual(Array.from(m));
    }
  });

  it("draws noise as diffusers does: DDPM at t > 0 only, DDIM only with eta > 0, Euler (unused) and Euler a every step", () => {
    const count = (type: string, cfg: Record<string, unknown>) => {
      const s = createScheduler(type, {}, cfg);
      s.setTimesteps(4);
      const noise = new CountingNoise();
      for (const t of s.timesteps) s.step(m, t, x, noise, 1);
      return noise.sizes;
    };
    expect(count("ddpm", {})).toEqual([8, 8, 8]); // timesteps 750, 500, 250, 0
    expect(count("ddim", {})).toEqual([]);
    expect(count("ddim", { eta: 1 })).toEqual([8, 8, 8, 8]);
    expect(count("euler", {})).toEqual([8, 8, 8, 8]);
    expect(count("euler-ancestral", {})).toEqual([8, 8, 8, 8]);
    expect(count("dpm-solver++", { algorithm_type: "sde-dpmsolver++" })).toEqual([8, 8, 8, 8]);
    expect(count("dpm-solver++", {})).toEqual([]);
    expect(count("lcm", {})).toEqual([8, 8, 8]); // every step but the last re-noises the estimate
  });

  it("LCM: refuses step counts its distillation schedule cannot give, naming the limit", () => {
    const s = createScheduler("lcm");
    expect(() => s.setTimesteps(51)).toThrow(/51 steps is more than original_inference_steps \(50\)/);
    const short = createScheduler("lcm", {}, { original_inference_steps: 4 });
    expect(() => short.setTimesteps(5)).toThrow(/more than original_inference_steps \(4\)/);
    expect(() => createScheduler("lcm", {}, { original_inference_steps: 2000 })).toThrow(/original_inference_steps.*more than num_train_timesteps \(1000\)/);
    const l = createScheduler("lcm") as import("../../src/schedulers/lcm.js").LCMScheduler;
    expect(() => l.setTimestepsWithStrength(4, 0.05)).toThrow(/50 × 0.05 leaves 2 timesteps, fewer than the 4 steps/);
    // the LCM paper's 4-step schedule from 50 distillation steps
    s.setTimesteps(4);
    expect(Array.from(s.timesteps)).toEqual([999, 759, 499, 259]);
  });

  it("says what is missing when used wrongly", () => {
    const a = createScheduler("euler-ancestral");
    a.setTimesteps(4);
    expect(() => a.step(m, a.timesteps[0]!, x)).toThrow(/needs a NoiseSource/);
    const th = createScheduler("ddim", {}, { thresholding: true });
    th.setTimesteps(4);
    expect(() => th.step(m, th.timesteps[0]!, x)).toThrow(/thresholding needs the batch size/);
    expect(() => createScheduler("ddim").step(m, 999, x)).toThrow(/setTimesteps/);
    const lcm = createScheduler("lcm");
    lcm.setTimesteps(4);
    expect(() => lcm.step(m, lcm.timesteps[0]!, x)).toThrow(/needs a NoiseSource/);
    const e = createScheduler("euler");
    e.setTimesteps(4);
    expect(() => e.scaleModelInput(x, 123.5)).toThrow(/timestep 123.5 is not in the schedule/);
    // Euler without a noise source is fine: its draw is unused
    expect(() => e.step(m, e.timesteps[0]!, x)).not.toThrow();
  });
});
