/** Learning-rate schedules against diffusers' get_scheduler (test/fixtures/train/lr-schedules.json). */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { learningRate, type LrScheduleType } from "../../src/training/lr.js";

interface Case {
  schedule: LrScheduleType;
  options: { num_warmup_steps: number; num_cycles?: number; power?: number };
  total_steps: number;
  base_lr: number;
  lr_per_step: number[];
}

const file = path.join(path.dirname(new URL(import.meta.url).pathname), "..", "fixtures", "train", "lr-schedules.json");
const cases = (JSON.parse(fs.readFileSync(file, "utf8")) as { cases: Case[] }).cases;

describe("learning-rate schedules = diffusers' get_scheduler", () => {
  it.each(cases.map((c) => [`${c.schedule} ${JSON.stringify(c.options)}`, c] as const))("%s", (_, c) => {
    const got = c.lr_per_step.map((_, i) =>
      learningRate({ type: c.schedule, warmupSteps: c.options.num_warmup_steps, totalSteps: c.total_steps, numCycles: c.options.num_cycles, power: c.options.power }, c.base_lr, i + 1),
    );
    got.forEach((lr, i) => expect(Math.abs(lr - c.lr_per_step[i]!), `step ${i + 1}`).toBeLessThanOrEqual(1e-15));
  });
});
