/**
 * Scheduler options: what must fail (unknown scheduler, bad values, options a scheduler or diffusers
 * 0.24 does not support, impossible step counts) with a message naming the option and scheduler, and
 * what must be accepted as diffusers' from_config accepts it (configs written for other classes).
 */
import { describe, expect, it } from "vitest";

import { createScheduler, img2imgTimesteps } from "../../src/schedulers/index.js";
import { isUserError, type UserError } from "../../src/util/errors.js";

function userError(f: () => unknown): UserError {
  try {
    f();
  } catch (e) {
    if (isUserError(e)) return e;
    throw e;
  }
  throw new Error("expected a UserError, nothing was thrown");
}

describe("refused, with a message naming the option and what is allowed", () => {
  const cases: [string, () => unknown, RegExp[]][] = [
    ["unknown scheduler", () => createScheduler("eulr"), [/unknown scheduler "eulr"/, /euler, euler-ancestral/, /EulerDiscreteScheduler/]],
    ["bad enum value", () => createScheduler("ddim", {}, { beta_schedule: "cosine" }), [/DDIMScheduler: option "beta_schedule"/, /"linear", "scaled_linear", "squaredcos_cap_v2", got "cosine"/]],
    ["wrong type", () => createScheduler("euler", {}, { use_karras_sigmas: "yes" }), [/option "use_karras_sigmas": expected boolean, got "yes"/]],
    ["another scheduler's option set by the user", () => createScheduler("ddim", {}, { use_karras_sigmas: true }), [/DDIMScheduler has no option "use_karras_sigmas"/, /options: num_train_timesteps/]],
    ["misspelt option", () => createScheduler("ddim", {}, { beta_shedule: "linear" }), [/no option "beta_shedule"/, /did you mean "beta_schedule"/]],
    ["later-diffusers option, non-neutral", () => createScheduler("euler", {}, { rescale_betas_zero_snr: true }), [/"rescale_betas_zero_snr": true is not supported: diffusers 0.24 has no such option for EulerDiscreteScheduler/]],
    ["later-diffusers option in a config file", () => createScheduler("lms", { _class_name: "LMSDiscreteScheduler", use_beta_sigmas: true }), [/LMSDiscreteScheduler: option "use_beta_sigmas"/]],
    ["prediction_type diffusers 0.24 does not implement", () => createScheduler("euler-ancestral", {}, { prediction_type: "sample" }), [/expected one of "epsilon", "v_prediction", got "sample"/, /NotImplementedError/]],
    ["PNDM with sample prediction", () => createScheduler("pndm", {}, { prediction_type: "sample" }), [/PNDMScheduler: option "prediction_type"/]],
    ["Euler log_linear (broken in 0.24)", () => createScheduler("euler", {}, { interpolation_type: "log_linear" }), [/"interpolation_type": expected one of "linear"/, /log_linear/]],
    ["DPM-Solver order 4", () => createScheduler("dpm-solver++", {}, { solver_order: 4 }), [/"solver_order": expected number to be <=3, got 4/]],
    ["DPM-Solver 3rd order SDE", () => createScheduler("dpm-solver++", {}, { solver_order: 3, algorithm_type: "sde-dpmsolver++" }), [/third order is not defined for sde-dpmsolver\+\+/]],
    ["final_sigmas_type zero with dpmsolver", () => createScheduler("dpm-solver++", {}, { final_sigmas_type: "zero", algorithm_type: "dpmsolver" }), [/"final_sigmas_type": "zero" needs a data-prediction solver/]],
    ["final_sigmas_type on UniPC", () => createScheduler("unipc", {}, { final_sigmas_type: "zero" }), [/UniPCMultistepScheduler: option "final_sigmas_type"/, /"sigma_min"/]],
    ["learned variance (DPM-Solver)", () => createScheduler("dpm-solver++", {}, { variance_type: "learned_range" }), [/"variance_type": "learned_range" is for pixel-space models that predict their variance/]],
    ["learned variance (DDPM)", () => createScheduler("ddpm", {}, { variance_type: "learned" }), [/"variance_type": expected one of "fixed_small", "fixed_small_log", "fixed_large"/]],
    ["trained_betas of the wrong length", () => createScheduler("ddim", {}, { trained_betas: [0.1, 0.2] }), [/"trained_betas": has 2 values but num_train_timesteps is 1000/]],
    ["UniPC solver_p", () => createScheduler("unipc", {}, { solver_p: {} }), [/"solver_p": expected null/]],
    ["several problems at once", () => createScheduler("lms", {}, { beta_start: -1, timestep_spacing: "uniform", steps_offset: 0.5 }), [/"beta_start": expected number to be >0, got -1/, /"timestep_spacing": expected one of "leading", "trailing", "linspace", got "uniform"/, /"steps_offset": expected int, got 0.5/]],
    ["PRK with fewer than 4 steps", () => createScheduler("pndm").setTimesteps(3), [/PNDMScheduler: the Runge–Kutta warm-up .* needs at least 4 steps, got 3/, /skip_prk_steps: true/]],
    ["zero steps", () => createScheduler("euler").setTimesteps(0), [/num_inference_steps must be an integer from 1 to num_train_timesteps \(1000\), got 0/]],
    ["more steps than training timesteps", () => createScheduler("ddim", {}, { num_train_timesteps: 100, trained_betas: Array(100).fill(0.01) }).setTimesteps(101), [/from 1 to num_train_timesteps \(100\), got 101/]],
    ["trailing spacing that yields t = -1", () => createScheduler("ddim", {}, { timestep_spacing: "trailing" }).setTimesteps(61), [/61 steps .* negative timestep \(-1\)/]],
    ["trailing spacing that yields t = -1 (Euler)", () => createScheduler("euler", {}, { timestep_spacing: "trailing" }).setTimesteps(103), [/negative timestep/]],
    ["DPM++ 3rd order Karras at ≥ 15 steps (NaN in 0.24)", () => createScheduler("dpm-solver++", {}, { solver_order: 3, use_karras_sigmas: true }).setTimesteps(20), [/NaN in diffusers 0.24/, /final_sigmas_type: "zero"/]],
    ["strength above 1", () => img2imgTimesteps(createScheduler("ddim"), 10, 1.5), [/strength: must be between 0 and 1, got 1.5/]],
    ["strength that leaves no step", () => img2imgTimesteps(createScheduler("ddim"), 10, 0.05), [/leaves no denoising step/, /at least 0.1/]],
    ["add_noise at a duplicated timestep", () => {
      const s = createScheduler("dpm-solver++", {}, { beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012, use_karras_sigmas: true });
      s.setTimesteps(50);
      const dup = s.timesteps.find((t, i) => s.timesteps.indexOf(t) !== i)!;
      return s.addNoise(new Float32Array(4), new Float32Array(4), dup);
    }, [/occurs 2 times in the schedule/]],
  ];
  for (const [name, f, patterns] of cases)
    it(name, () => {
      const e = userError(f);
      for (const p of patterns) expect(e.message).toMatch(p);
      expect(e.problems.length).toBeGreaterThan(0);
      for (const p of e.problems) expect(p.subject ?? p.at).toBeTruthy();
    });

  it("the CLI's exit code for these is 2", () => {
    expect(userError(() => createScheduler("nope")).exitCode).toBe(2);
  });
});

describe("accepted as diffusers' from_config accepts it", () => {
  // Stable Diffusion 1.5's scheduler/scheduler_config.json
  const sd15 = {
    _class_name: "PNDMScheduler",
    _diffusers_version: "0.6.0",
    beta_end: 0.012,
    beta_schedule: "scaled_linear",
    beta_start: 0.00085,
    num_train_timesteps: 1000,
    set_alpha_to_one: false,
    skip_prk_steps: true,
    steps_offset: 1,
    trained_betas: null,
    clip_sample: false,
  };

  it("loads SD 1.5's PNDM config into every scheduler, ignoring the other classes' keys", () => {
    for (const type of ["ddpm", "ddim", "pndm", "lms", "euler", "euler-ancestral", "heun", "dpm-solver++", "unipc", "lcm"]) {
      const s = createScheduler(type, sd15);
      expect(s.config.beta_schedule).toBe("scaled_linear");
      expect(s.config.beta_start).toBe(0.00085);
      expect(s.config.steps_offset).toBe(1);
      expect("skip_prk_steps" in s.config).toBe(type === "pndm");
    }
    expect(createScheduler("ddim", sd15).config.set_alpha_to_one).toBe(false);
    expect(createScheduler("lcm", sd15).config.set_alpha_to_one).toBe(false); // LCMScheduler.from_config(pipe.scheduler.config), as LCM-LoRA is used
    expect(createScheduler("euler", sd15).config.timestep_spacing).toBe("linspace"); // Euler's default
  });

  it("drops the keys listed in _use_default_values, so the target class's defaults apply", () => {
    const fromEuler = { _class_name: "EulerDiscreteScheduler", timestep_spacing: "linspace", steps_offset: 1, _use_default_values: ["timestep_spacing"] };
    expect(createScheduler("ddim", fromEuler).config.timestep_spacing).toBe("leading");
    expect(createScheduler("ddim", { ...fromEuler, _use_default_values: [] }).config.timestep_spacing).toBe("linspace");
  });

  it("rewrites solver types and algorithm types as diffusers does across DPM-Solver / UniPC / DEIS configs", () => {
    expect(createScheduler("dpm-solver++", { solver_type: "bh2" }).config.solver_type).toBe("midpoint");
    expect(createScheduler("dpm-solver++", { algorithm_type: "deis", solver_type: "logrho" }).config).toMatchObject({ algorithm_type: "dpmsolver++", solver_type: "midpoint" });
    expect(createScheduler("unipc", { solver_type: "midpoint" }).config.solver_type).toBe("bh2");
  });

  it("accepts later-diffusers options at their diffusers-0.24 value", () => {
    const s = createScheduler("unipc", { _class_name: "UniPCMultistepScheduler", final_sigmas_type: "sigma_min", use_beta_sigmas: false, rescale_betas_zero_snr: false });
    expect("use_beta_sigmas" in s.config).toBe(false);
  });

  it("takes sdc's extension options only from a config written for the same class (or from the user)", () => {
    const dpm = { _class_name: "DPMSolverMultistepScheduler", final_sigmas_type: "sigma_min" };
    expect(createScheduler("euler", dpm).config.final_sigmas_type).toBe("zero"); // 0.24's Euler has no such key
    expect(createScheduler("dpm-solver++", { ...dpm, final_sigmas_type: "zero" }).config.final_sigmas_type).toBe("zero");
    expect(createScheduler("euler", dpm, { final_sigmas_type: "sigma_min" }).config.final_sigmas_type).toBe("sigma_min");
    const ddim = { _class_name: "DDIMScheduler", rescale_betas_zero_snr: true, eta: 0.5 };
    expect(createScheduler("ddpm", ddim).config.rescale_betas_zero_snr).toBe(false);
    expect(createScheduler("ddim", ddim).config).toMatchObject({ rescale_betas_zero_snr: true, eta: 0.5 });
  });

  it("passes DDPM's variance_type through DPM-Solver, where it has no effect", () => {
    expect(createScheduler("dpm-solver++", { _class_name: "DDPMScheduler", variance_type: "fixed_small" }).config.variance_type).toBe("fixed_small");
  });

  it("lets overrides win over the config file", () => {
    expect(createScheduler("euler", sd15, { beta_schedule: "linear" }).config.beta_schedule).toBe("linear");
  });

  it("accepts lambda_min_clipped = -Infinity (as diffusers writes it)", () => {
    expect(createScheduler("dpm-solver++", { lambda_min_clipped: -Infinity }).config.lambda_min_clipped).toBe(-Infinity);
  });
});
