/**
 * The committed JSON Schema and the pipeline files that name it.
 * Regenerate a stale schema with `npx sdc schema --out schemas/pipeline.schema.json`
 * (or run this test with SDC_UPDATE_SCHEMAS=1).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { PIPELINE_SCHEMA_FILE, pipelineJsonSchema, pipelineJsonSchemaText } from "../../src/config/json-schema.js";
import { PipelineSchema, SCHEDULER_CLASS_NAMES, SCHEDULER_TYPES, schedulerClassName } from "../../src/config/schema.js";
import { PLAN_SCHEMA_FILE, planJsonSchemaText } from "../../src/plan/schema.js";
import { SCHEDULER_DEFINITIONS } from "../../src/schedulers/registry.js";
import { REPO } from "./helpers.js";

describe("schemas/plan.schema.json", () => {
  it("is what the plan's zod schema generates (not stale)", () => {
    const file = path.join(REPO, PLAN_SCHEMA_FILE);
    const want = planJsonSchemaText();
    if (process.env.SDC_UPDATE_SCHEMAS === "1") fs.writeFileSync(file, want);
    const have = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "";
    expect(have === want, `${PLAN_SCHEMA_FILE} is stale: run npx sdc schema --plan --out ${PLAN_SCHEMA_FILE}`).toBe(true);
  });
});

describe("schemas/pipeline.schema.json", () => {
  it("is what the zod schema generates (not stale)", () => {
    const file = path.join(REPO, PIPELINE_SCHEMA_FILE);
    const want = pipelineJsonSchemaText();
    if (process.env.SDC_UPDATE_SCHEMAS === "1") fs.writeFileSync(file, want);
    const have = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "";
    expect(have === want, `${PIPELINE_SCHEMA_FILE} is stale: run npx sdc schema --out ${PIPELINE_SCHEMA_FILE}`).toBe(true);
  });

  it("has the contract's top-level sections, and no object accepts unknown keys", () => {
    const s = pipelineJsonSchema() as { properties: Record<string, unknown>; required: string[] };
    expect(Object.keys(s.properties)).toEqual(["$schema", "version", "name", "extends", "model", "scheduler", "guidance", "sample", "train", "output", "runtime"]);
    expect(s.required).toEqual(["version", "model"]);
    const loose: string[] = [];
    const walk = (node: unknown, at: string): void => {
      if (Array.isArray(node)) return node.forEach((n, i) => walk(n, `${at}[${i}]`));
      if (node === null || typeof node !== "object") return;
      const o = node as Record<string, unknown>;
      if (o.type === "object" && o.additionalProperties !== false) loose.push(at);
      for (const [k, v] of Object.entries(o)) walk(v, `${at}/${k}`);
    };
    walk(s, "#");
    expect(loose).toEqual([]);
  });

  it("keeps editors' input view: defaulted keys are optional", () => {
    const s = pipelineJsonSchema() as { properties: { scheduler: { required?: string[]; properties: { steps: { default: number } } } } };
    expect(s.properties.scheduler.required ?? []).toEqual([]);
    expect(s.properties.scheduler.properties.steps.default).toBe(50);
  });
});

describe("README", () => {
  it("documents every key of the sections (scheduler options and architecture keys by reference)", () => {
    const readme = fs.readFileSync(path.join(REPO, "README.md"), "utf8");
    const s = pipelineJsonSchema() as { properties: Record<string, { properties?: Record<string, { properties?: Record<string, unknown> }> }> };
    const undocumented: string[] = [];
    for (const [section, sub] of Object.entries(s.properties)) {
      if (section === "$schema") continue;
      if (!readme.includes(`\`${section}\``)) undocumented.push(section);
      const keys = section === "scheduler" ? ["type", "steps", "eta"] : Object.keys(sub.properties ?? {});
      for (const k of keys) {
        if (!readme.includes(`\`${k}\``)) undocumented.push(`${section}.${k}`);
        if (section === "train") for (const kk of Object.keys(sub.properties?.[k]?.properties ?? {})) if (!readme.includes(`\`${kk}\``)) undocumented.push(`${section}.${k}.${kk}`);
      }
    }
    expect(undocumented).toEqual([]);
  });
});

describe("pipeline files", () => {
  const files = ["pipelines", "examples"].flatMap((d) =>
    fs.readdirSync(path.join(REPO, d)).filter((f) => f.endsWith(".yaml")).map((f) => path.join(d, f)),
  );
  it("exist, and each starts with the yaml-language-server $schema modeline", () => {
    expect(files).toContain(path.join("pipelines", "txt2img.yaml"));
    expect(files).toContain(path.join("pipelines", "img2img.yaml"));
    for (const f of files) {
      const first = fs.readFileSync(path.join(REPO, f), "utf8").split("\n")[0]!;
      const m = /^# yaml-language-server: \$schema=(.+)$/.exec(first);
      expect(m, `${f} must start with the $schema modeline`).not.toBeNull();
      expect(path.resolve(REPO, path.dirname(f), m![1]!)).toBe(path.join(REPO, PIPELINE_SCHEMA_FILE));
    }
  });
});

describe("scheduler names", () => {
  it("map every short name and class name, and nothing else", () => {
    expect(Object.keys(SCHEDULER_TYPES)).toEqual(["ddpm", "ddim", "pndm", "lms", "euler", "euler-ancestral", "heun", "dpm-solver++", "unipc", "lcm"]);
    for (const [short, cls] of Object.entries(SCHEDULER_TYPES)) {
      expect(schedulerClassName(short)).toBe(cls);
      expect(schedulerClassName(cls)).toBe(cls);
    }
    expect(SCHEDULER_CLASS_NAMES).toHaveLength(10);
    expect(schedulerClassName("DEISMultistepScheduler")).toBeUndefined();
    expect(schedulerClassName("toString")).toBeUndefined();
    expect(PipelineSchema.shape.scheduler.safeParse({ type: "UniPCMultistepScheduler" }).success).toBe(true);
  });

  it("options: every option of every registered scheduler, as that scheduler accepts it", () => {
    const section = PipelineSchema.shape.scheduler;
    for (const d of SCHEDULER_DEFINITIONS) {
      const defaults = Object.entries(d.schema.parse({}) as Record<string, unknown>).filter(([, v]) => typeof v !== "number" || Number.isFinite(v));
      expect(section.safeParse({ type: d.shortName, ...Object.fromEntries(defaults) }).error, d.className).toBeUndefined();
    }
    // values only some schedulers take: Heun's exp betas, Euler's original_sample, UniPC's higher orders
    expect(section.safeParse({ type: "heun", beta_schedule: "exp", prediction_type: "original_sample", solver_order: 4 }).success).toBe(true);
    expect(section.safeParse({ type: "ddim", beta_schedule: "cosine" }).success).toBe(false);
  });
});
