/**
 * Learning-rate schedules, as diffusers' get_scheduler defines them (optimization.py): a
 * multiplier of the base rate as a function of how many optimizer steps came before, with a
 * linear warm-up from 0. The host computes the rate and feeds it to the step graph's `lr` input,
 * so resuming needs only the step count.
 */
export type LrScheduleType = "constant" | "constant_with_warmup" | "linear" | "cosine" | "cosine_with_restarts" | "polynomial";

export interface LrSchedule {
  type: LrScheduleType;
  warmupSteps: number;
  /** Optimizer steps of the whole run (decaying schedules end there). */
  totalSteps: number;
  /** cosine: 0.5 (half a wave to 0); cosine_with_restarts: the number of restarts. */
  numCycles?: number;
  /** polynomial */
  power?: number;
  lrEnd?: number;
}

/** The learning rate of optimizer step `step` (1 for the first), for base rate `base`. */
export function learningRate(s: LrSchedule, base: number, step: number): number {
  const k = step - 1; // schedulers count the steps already taken
  const warm = s.warmupSteps;
  if (s.type === "constant") return base;
  if (k < warm) return base * (k / Math.max(1, warm));
  const progress = (k - warm) / Math.max(1, s.totalSteps - warm);
  switch (s.type) {
    case "constant_with_warmup":
      return base;
    case "linear":
      return base * Math.max(0, (s.totalSteps - k) / Math.max(1, s.totalSteps - warm));
    case "cosine":
      return base * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * (s.numCycles ?? 0.5) * 2 * progress)));
    case "cosine_with_restarts":
      if (progress >= 1) return 0;
      return base * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * (((s.numCycles ?? 1) * progress) % 1))));
    case "polynomial": {
      const end = s.lrEnd ?? 1e-7;
      if (end > base) throw new Error(`lr_end (${end}) must be at most the learning rate (${base})`);
      if (k > s.totalSteps) return end;
      const remaining = 1 - (k - warm) / (s.totalSteps - warm);
      return (base - end) * remaining ** (s.power ?? 1) + end;
    }
  }
}
