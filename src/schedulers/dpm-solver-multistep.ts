/**
 * DPM-Solver multistep: Lu et al. 2022, "DPM-Solver" (arXiv:2206.00927) and "DPM-Solver++"
 * (arXiv:2211.01095), as diffusers 0.24's DPMSolverMultistepScheduler. The diffusion ODE is solved in
 * λ = log(α_t/σ_t) with exact exponential integrators: first order (= DDIM), and multistep second/third
 * order from the previous model outputs. "dpmsolver++" integrates the data prediction x̂_0 (Stable
 * Diffusion's "DPM++ 2M" with solver_order 2), "dpmsolver" the noise prediction; the sde- variants add
 * fresh noise each step. `lower_order_final` drops to lower order for the last steps when there are
 * fewer than 15, which keeps few-step sampling stable.
 *
 * `final_sigmas_type` is implemented as later diffusers (0.26+) does. Its default here, "sigma_min", is
 * diffusers 0.24's behaviour (the schedule ends at the smallest training σ, and with Karras sigmas the
 * last step is a no-op); "zero" ends at σ = 0 with a first-order last step (later diffusers' default).
 */
import { z } from "zod";

import { UserError } from "../util/errors.js";
import { MultistepScheduler } from "./base.js";
import { defineScheduler, lambdaMinClipped, optionProblem, type OptionsOf, thresholdingOptions, VARIANCE_TYPES } from "./options.js";
import { limitX0, predictEpsilon, predictX0 } from "./sample-ops.js";
import { alphaSigma, f32, lambdaOf } from "./schedule.js";
import type { NoiseSource, StepOutput } from "./types.js";

const CLASS = "DPMSolverMultistepScheduler";

export const dpmSolverMultistepDefinition = defineScheduler({
  className: CLASS,
  shortName: "dpm-solver++",
  uiName: "DPM++ 2M",
  uiKarrasName: "DPM++ 2M Karras",
  timestepSpacing: "linspace",
  options: {
    solver_order: z.int().min(1).max(3).default(2),
    ...thresholdingOptions,
    algorithm_type: z.enum(["dpmsolver", "dpmsolver++", "sde-dpmsolver", "sde-dpmsolver++"]).default("dpmsolver++"),
    solver_type: z.enum(["midpoint", "heun"]).default("midpoint"),
    lower_order_final: z.boolean().default(true),
    euler_at_final: z.boolean().default(false),
    use_karras_sigmas: z.boolean().default(false),
    use_lu_lambdas: z.boolean().default(false),
    final_sigmas_type: z.enum(["sigma_min", "zero"]).default("sigma_min"),
    lambda_min_clipped: lambdaMinClipped,
    // only "learned"/"learned_range" change anything (and need a variance-predicting model); DDPM's values pass through
    variance_type: z.enum(VARIANCE_TYPES).nullable().default(null),
  },
  extensions: ["final_sigmas_type"],
  later: {
    use_exponential_sigmas: [false],
    use_beta_sigmas: [false],
    use_flow_sigmas: [false],
    flow_shift: [1.0],
    rescale_betas_zero_snr: [false],
    use_dynamic_shifting: [false],
    time_shift_type: ["exponential", "linear"],
  },
  // diffusers rewrites these at construction (configs written for DEIS or UniPC load into DPM-Solver)
  normalize: (raw) => {
    if (raw.algorithm_type === "deis") raw.algorithm_type = "dpmsolver++";
    if (raw.solver_type === "logrho" || raw.solver_type === "bh1" || raw.solver_type === "bh2") raw.solver_type = "midpoint";
  },
  check: (c) => [
    ...(c.variance_type === "learned" || c.variance_type === "learned_range"
      ? [optionProblem(CLASS, "variance_type", `${JSON.stringify(c.variance_type)} is for pixel-space models that predict their variance; SD's UNet does not`, "leave variance_type unset (null)")]
      : []),
    ...(c.solver_order === 3 && c.algorithm_type.startsWith("sde-")
      ? [optionProblem(CLASS, "solver_order", `third order is not defined for ${c.algorithm_type} (diffusers 0.24 fails)`, "use solver_order 1 or 2")]
      : []),
    ...(c.final_sigmas_type === "zero" && !c.algorithm_type.endsWith("dpmsolver++")
      ? [optionProblem(CLASS, "final_sigmas_type", `"zero" needs a data-prediction solver (dpmsolver++ or sde-dpmsolver++), got ${c.algorithm_type}`, 'use final_sigmas_type "sigma_min"')]
      : []),
  ],
});
type DPMSolverMultistepConfig = OptionsOf<typeof dpmSolverMultistepDefinition>;

const e32 = (x: number): number => f32(Math.exp(x));

export class DPMSolverMultistepScheduler extends MultistepScheduler<DPMSolverMultistepConfig> {
  /** λ_t of every training timestep (for lambda_min_clipped). */
  private readonly lambdaT: Float32Array;

  constructor(config: Record<string, unknown> = {}, overrides: Record<string, unknown> = {}) {
    super(dpmSolverMultistepDefinition, config, overrides);
    this.lambdaT = this.alphasCumprod.map((a) =>
      lambdaOf(f32(Math.sqrt(a)), f32(Math.sqrt(f32(1 - a)))),
    );
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    const T = c.num_train_timesteps;

    // clip the schedule where λ(t) drops below lambda_min_clipped (for the cosine schedule)
    const clip = f32(c.lambda_min_clipped);
    let clippedIdx = 0;
    for (let i = T - 1; i >= 0 && this.lambdaT[i]! < clip; i--) clippedIdx++;

    const { timesteps, sigmas, sigmaLast } = this.schedule(numInferenceSteps, T - clippedIdx, c.use_lu_lambdas);
    if (c.use_karras_sigmas && c.solver_order === 3 && c.final_sigmas_type === "sigma_min" && timesteps.length >= 15 && !c.euler_at_final)
      throw new UserError(
        optionProblem(
          CLASS,
          "solver_order",
          `third order with Karras sigmas and ${timesteps.length} steps ends on a zero-length step that is NaN in diffusers 0.24`,
          'set final_sigmas_type: "zero" (later diffusers\' fix), or use fewer than 15 steps or solver_order 2',
        ),
      );
    this.setSchedule(timesteps, sigmas, c.final_sigmas_type === "zero" ? 0 : sigmaLast);
  }

  /** The model output as the algorithm integrates it: x̂_0 for dpmsolver++, ε̂ for dpmsolver. */
  private convertModelOutput(m: Float32Array, x: Float32Array, batchSize: number | undefined): Float32Array {
    const c = this.config;
    const [alphaT, sigmaT] = alphaSigma(this.sigmas[this.stepIndex!]!);
    if (c.algorithm_type === "dpmsolver++" || c.algorithm_type === "sde-dpmsolver++")
      return limitX0(predictX0(c.prediction_type, alphaT, sigmaT, m, x), c, batchSize);
    const eps = predictEpsilon(c.prediction_type, alphaT, sigmaT, m, x);
    if (!c.thresholding) return eps;
    // thresholding acts on x̂_0: threshold the x̂_0 this ε implies, and take the ε of that
    const x0 = limitX0(predictX0("epsilon", alphaT, sigmaT, eps, x), c, batchSize);
    return predictEpsilon("sample", alphaT, sigmaT, x0, x);
  }

  /** First order (DPM-Solver-1 = DDIM), from σ_s = σ_i to σ_t = σ_{i+1}. */
  private firstOrderUpdate(m: Float32Array, x: Float32Array, z: Float32Array | null): Float32Array {
    const i = this.stepIndex!;
    const [alphaT, sigmaT] = alphaSigma(this.sigmas[i + 1]!);
    const [alphaS, sigmaS] = alphaSigma(this.sigmas[i]!);
    const h = f32(lambdaOf(alphaT, sigmaT) - lambdaOf(alphaS, sigmaS));
    switch (this.config.algorithm_type) {
      case "dpmsolver++": {
        // x_t = (σ_t/σ_s)·x − α_t(e^{−h} − 1)·x̂_0
        const c1 = f32(sigmaT / sigmaS);
        const c2 = f32(alphaT * f32(e32(-h) - 1));
        return x.map((v, k) => f32(f32(c1 * v) - f32(c2 * m[k]!)));
      }
      case "dpmsolver": {
        // x_t = (α_t/α_s)·x − σ_t(e^{h} − 1)·ε̂
        const c1 = f32(alphaT / alphaS);
        const c2 = f32(sigmaT * f32(e32(h) - 1));
        return x.map((v, k) => f32(f32(c1 * v) - f32(c2 * m[k]!)));
      }
      case "sde-dpmsolver++": {
        const em2h = e32(f32(-2 * h));
        const c1 = f32(f32(sigmaT / sigmaS) * e32(-h));
        const c2 = f32(alphaT * f32(1 - em2h));
        const c3 = f32(sigmaT * f32(Math.sqrt(f32(1 - em2h))));
        return x.map((v, k) => f32(f32(f32(c1 * v) + f32(c2 * m[k]!)) + f32(c3 * z![k]!)));
      }
      case "sde-dpmsolver": {
        const c1 = f32(alphaT / alphaS);
        const c2 = f32(2 * f32(sigmaT * f32(e32(h) - 1)));
        const c3 = f32(sigmaT * f32(Math.sqrt(f32(e32(f32(2 * h)) - 1))));
        return x.map((v, k) => f32(f32(f32(c1 * v) - f32(c2 * m[k]!)) + f32(c3 * z![k]!)));
      }
    }
  }

  /** Multistep second order from the last two outputs (D1 = (m0 − m1)/r0, "midpoint" or "heun" weighting). */
  private secondOrderUpdate(x: Float32Array, z: Float32Array | null): Float32Array {
    const i = this.stepIndex!;
    const mo = this.modelOutputs;
    const [m0, m1] = [mo[mo.length - 1]!, mo[mo.length - 2]!];
    const [alphaT, sigmaT] = alphaSigma(this.sigmas[i + 1]!);
    const [alphaS0, sigmaS0] = alphaSigma(this.sigmas[i]!);
    const [alphaS1, sigmaS1] = alphaSigma(this.sigmas[i - 1]!);
    const lambdaT = lambdaOf(alphaT, sigmaT);
    const lambdaS0 = lambdaOf(alphaS0, sigmaS0);
    const lambdaS1 = lambdaOf(alphaS1, sigmaS1);
    const h = f32(lambdaT - lambdaS0);
    const h0 = f32(lambdaS0 - lambdaS1);
    const r0 = f32(h0 / h);
    const invR0 = f32(1 / r0);
    const D1 = m0.map((v, k) => f32(invR0 * f32(v - m1[k]!)));
    const { algorithm_type: alg, solver_type: solver } = this.config;

    if (alg === "dpmsolver++" || alg === "dpmsolver") {
      const pp = alg === "dpmsolver++";
      const c1 = pp ? f32(sigmaT / sigmaS0) : f32(alphaT / alphaS0);
      const eh = pp ? e32(-h) : e32(h);
      const c2 = pp ? f32(alphaT * f32(eh - 1)) : f32(sigmaT * f32(eh - 1));
      if (solver === "midpoint") {
        const c3 = f32(0.5 * c2);
        return x.map((v, k) => f32(f32(f32(c1 * v) - f32(c2 * m0[k]!)) - f32(c3 * D1[k]!)));
      }
      if (pp) {
        const c3 = f32(alphaT * f32(f32(f32(eh - 1) / h) + 1));
        return x.map((v, k) => f32(f32(f32(c1 * v) - f32(c2 * m0[k]!)) + f32(c3 * D1[k]!)));
      }
      const c3 = f32(sigmaT * f32(f32(f32(eh - 1) / h) - 1));
      return x.map((v, k) => f32(f32(f32(c1 * v) - f32(c2 * m0[k]!)) - f32(c3 * D1[k]!)));
    }
    if (alg === "sde-dpmsolver++") {
      const em2h = e32(f32(-2 * h));
      const c1 = f32(f32(sigmaT / sigmaS0) * e32(-h));
      const c2 = f32(alphaT * f32(1 - em2h));
      const c3 = solver === "midpoint" ? f32(0.5 * c2) : f32(alphaT * f32(f32(f32(1 - em2h) / f32(-2 * h)) + 1));
      const c4 = f32(sigmaT * f32(Math.sqrt(f32(1 - em2h))));
      return x.map((v, k) => f32(f32(f32(f32(c1 * v) + f32(c2 * m0[k]!)) + f32(c3 * D1[k]!)) + f32(c4 * z![k]!)));
    }
    // sde-dpmsolver
    const c1 = f32(alphaT / alphaS0);
    const eh = e32(h);
    const c2 = f32(sigmaT * f32(eh - 1));
    const c3 = solver === "midpoint" ? c2 : f32(2 * f32(sigmaT * f32(f32(f32(eh - 1) / h) - 1)));
    const c4 = f32(sigmaT * f32(Math.sqrt(f32(e32(f32(2 * h)) - 1))));
    const c2x2 = f32(2 * c2);
    return x.map((v, k) => f32(f32(f32(f32(c1 * v) - f32(c2x2 * m0[k]!)) - f32(c3 * D1[k]!)) + f32(c4 * z![k]!)));
  }

  /** Multistep third order from the last three outputs. */
  private thirdOrderUpdate(x: Float32Array): Float32Array {
    const i = this.stepIndex!;
    const mo = this.modelOutputs;
    const [m0, m1, m2] = [mo[mo.length - 1]!, mo[mo.length - 2]!, mo[mo.length - 3]!];
    const [alphaT, sigmaT] = alphaSigma(this.sigmas[i + 1]!);
    const [alphaS0, sigmaS0] = alphaSigma(this.sigmas[i]!);
    const [alphaS1, sigmaS1] = alphaSigma(this.sigmas[i - 1]!);
    const [alphaS2, sigmaS2] = alphaSigma(this.sigmas[i - 2]!);
    const lambdaT = lambdaOf(alphaT, sigmaT);
    const lambdaS0 = lambdaOf(alphaS0, sigmaS0);
    const lambdaS1 = lambdaOf(alphaS1, sigmaS1);
    const lambdaS2 = lambdaOf(alphaS2, sigmaS2);
    const h = f32(lambdaT - lambdaS0);
    const h0 = f32(lambdaS0 - lambdaS1);
    const h1 = f32(lambdaS1 - lambdaS2);
    const r0 = f32(h0 / h);
    const r1 = f32(h1 / h);
    const [invR0, invR1] = [f32(1 / r0), f32(1 / r1)];
    const r01 = f32(r0 + r1);
    const w1 = f32(r0 / r01);
    const w2 = f32(1 / r01);
    const D1 = new Float32Array(x.length);
    const D2 = new Float32Array(x.length);
    for (let k = 0; k < x.length; k++) {
      const d10 = f32(invR0 * f32(m0[k]! - m1[k]!));
      const d11 = f32(invR1 * f32(m1[k]! - m2[k]!));
      const dd = f32(d10 - d11);
      D1[k] = f32(d10 + f32(w1 * dd));
      D2[k] = f32(w2 * dd);
    }
    const hh = f32(h * h);
    if (this.config.algorithm_type === "dpmsolver++") {
      const e = e32(-h);
      const c1 = f32(sigmaT / sigmaS0);
      const c2 = f32(alphaT * f32(e - 1));
      const c3 = f32(alphaT * f32(f32(f32(e - 1) / h) + 1));
      const c4 = f32(alphaT * f32(f32(f32(f32(e - 1) + h) / hh) - 0.5));
      return x.map((v, k) => f32(f32(f32(f32(c1 * v) - f32(c2 * m0[k]!)) + f32(c3 * D1[k]!)) - f32(c4 * D2[k]!)));
    }
    const e = e32(h);
    const c1 = f32(alphaT / alphaS0);
    const c2 = f32(sigmaT * f32(e - 1));
    const c3 = f32(sigmaT * f32(f32(f32(e - 1) / h) - 1));
    const c4 = f32(sigmaT * f32(f32(f32(f32(e - 1) - h) / hh) - 0.5));
    return x.map((v, k) => f32(f32(f32(f32(c1 * v) - f32(c2 * m0[k]!)) - f32(c3 * D1[k]!)) - f32(c4 * D2[k]!)));
  }

  step(modelOutput: Float32Array, timestep: number, sample: Float32Array, noise?: NoiseSource, batchSize?: number): StepOutput {
    const c = this.config;
    const i = this.beginStep(timestep);
    const n = this.timesteps.length;
    // lower order near the end: numerically stabler for few steps
    const lowerOrderFinal =
      i === n - 1 && (c.euler_at_final || (c.lower_order_final && n < 15) || c.final_sigmas_type === "zero");
    const lowerOrderSecond = i === n - 2 && c.lower_order_final && n < 15;

    const converted = this.convertModelOutput(modelOutput, sample, batchSize);
    this.pushOutput(converted);

    let z: Float32Array | null = null;
    if (c.algorithm_type.startsWith("sde-")) {
      if (!noise) throw new Error(`${CLASS}.step with ${c.algorithm_type} needs a NoiseSource`);
      z = noise.randn(sample.length);
    }

    let prev: Float32Array;
    if (c.solver_order === 1 || this.lowerOrderNums < 1 || lowerOrderFinal) prev = this.firstOrderUpdate(converted, sample, z);
    else if (c.solver_order === 2 || this.lowerOrderNums < 2 || lowerOrderSecond) prev = this.secondOrderUpdate(sample, z);
    else prev = this.thirdOrderUpdate(sample);

    this.endStep(i);
    return { prevSample: prev };
  }
}
