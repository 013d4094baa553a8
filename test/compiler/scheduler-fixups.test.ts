/**
 * diffusers' StableDiffusionPipeline rewrites an "outdated" scheduler config (steps_offset → 1,
 * clip_sample → false). sdc reproduces that for values a model inherits (its scheduler_config.json),
 * says so in one log line, and never for what the pipeline file or --set writes: the user's word wins,
 * at compile time (plan.json, scheduler/scheduler_config.json) and when the plan runs.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { compile } from "../../src/compiler/compile.js";
import { prepareSchedule } from "../../src/runtime/stages/schedule.js";
import { copyFixture, pipelineIn, tmp } from "./helpers.js";

let work: string;
let model: string;

beforeAll(() => {
  work = tmp();
  model = copyFixture("tiny-sd1", work);
});

async function compiled(name: string, yaml: string, overrides: string[] = [], from = model) {
  const lines: string[] = [];
  const r = await compile(await pipelineIn(work, from, yaml, { file: `${name}.yaml`, overrides }), { outDir: path.join(work, name), log: (l) => lines.push(l) });
  const written = JSON.parse(fs.readFileSync(path.join(r.dir, "scheduler", "scheduler_config.json"), "utf8"));
  const runs = prepareSchedule(r.plan).scheduler.config;
  return { plan: r.plan.scheduler.config, written, runs, notes: lines.filter((l) => /scheduler/.test(l)) };
}

describe("scheduler fix-ups apply to inherited values only", () => {
  it("clip_sample: true in the pipeline stays true (plan, scheduler_config.json, the schedule that runs); no note", async () => {
    const r = await compiled("yaml", "scheduler:\n  type: ddim\n  clip_sample: true\n  steps_offset: 0\n");
    for (const c of [r.plan, r.written, r.runs]) expect(c).toMatchObject({ clip_sample: true, steps_offset: 0 });
    expect(r.notes).toEqual([]);
  });

  it("--set scheduler.clip_sample=true stays true", async () => {
    const r = await compiled("set", "scheduler:\n  type: ddim\n", ["scheduler.clip_sample=true"]);
    for (const c of [r.plan, r.written, r.runs]) expect(c).toMatchObject({ clip_sample: true, steps_offset: 1 });
    expect(r.notes).toEqual([]);
  });

  it("the model folder's outdated values are fixed as diffusers does, in one log line", async () => {
    const old = path.join(work, "old-model");
    fs.cpSync(model, old, { recursive: true });
    const f = path.join(old, "scheduler", "scheduler_config.json");
    fs.writeFileSync(f, JSON.stringify({ ...JSON.parse(fs.readFileSync(f, "utf8")), _class_name: "DDIMScheduler", clip_sample: true, steps_offset: 0 }));
    const r = await compiled("old", "", [], old);
    for (const c of [r.plan, r.written, r.runs]) expect(c).toMatchObject({ clip_sample: false, steps_offset: 1 });
    expect(r.notes).toEqual([
      "  note: scheduler steps_offset 0 → 1, clip_sample true → false (the model's value, changed as diffusers' StableDiffusionPipeline does; set it under scheduler: to keep another)",
    ]);
  });
});
