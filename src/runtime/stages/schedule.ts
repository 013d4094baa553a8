/**
 * The schedule of a run: the plan's scheduler, set to its steps, and the timesteps to denoise over.
 * img2img (a strength) starts part-way, as StableDiffusionImg2ImgPipeline.get_timesteps does; the
 * initial latents are then noised to `startTimestep`.
 */
import { decodeNonFinite, type Plan } from "../../plan/schema.js";
import { createScheduler, img2imgTimesteps, type Scheduler } from "../../schedulers/index.js";

export interface Schedule {
  scheduler: Scheduler;
  /** The timesteps the denoising loop runs, in order. */
  timesteps: Float64Array;
  /** img2img: the timestep the init image's latents are noised to; null for txt2img. */
  startTimestep: number | null;
  /**
   * Denoising steps the timesteps make (num_inference_steps, after img2img's strength). The loop runs
   * one U-Net call per timestep, which can be more: PNDM's warm-up visits one timestep twice, Heun
   * evaluates twice per step.
   */
  steps: number;
}

export interface ScheduleOptions {
  /** Denoising steps (default: the plan's). */
  steps?: number;
  /** img2img strength in (0, 1]; leave out for txt2img. */
  strength?: number;
}

export function prepareSchedule(plan: Pick<Plan, "scheduler">, o: ScheduleOptions = {}): Schedule {
  // the plan's config is what runs: the compiler applied diffusers' pipeline fix-ups to inherited values
  // already, and re-applying them here would undo a value the pipeline wrote (clip_sample: true)
  const scheduler = createScheduler(plan.scheduler.className, decodeNonFinite(plan.scheduler.config));
  const steps = o.steps ?? plan.scheduler.steps;
  if (o.strength === undefined) {
    scheduler.setTimesteps(steps);
    return { scheduler, timesteps: scheduler.timesteps, startTimestep: null, steps };
  }
  const t = img2imgTimesteps(scheduler, steps, o.strength);
  return { scheduler, timesteps: t.timesteps, startTimestep: t.startTimestep, steps: t.numInferenceSteps };
}
