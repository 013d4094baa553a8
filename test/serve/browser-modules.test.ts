/**
 * The web page's pure modules, run in Node against the real parts they stand beside: the form
 * generated from the committed pipeline schema sends overrides that `loadPipeline` accepts and that
 * give back the values typed; the page's reading of a result's parameters text agrees with the
 * library's (src/image/image.ts); the loss curve's path maps the points onto the box; the page's
 * files resolve for the server, and nothing outside them does.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { loadPipeline } from "../../src/config/load.js";
import { pipelineJsonSchema } from "../../src/config/json-schema.js";
import { formatParameters, parseParameters as libraryParse } from "../../src/image/image.js";
import { settingsOf } from "../../src/serve/execute.js";
import { webAsset, WEB_DIR } from "../../src/serve/web/assets.js";
// @ts-expect-error: the page's modules are plain browser JavaScript (no types, no build step)
import * as parametersJs from "../../src/serve/web/parameters.js";
// @ts-expect-error: as above
import * as schemaFormJs from "../../src/serve/web/schema-form.js";
// @ts-expect-error: as above
import * as viewsJs from "../../src/serve/web/views.js";
import { REPO } from "../helpers/repo.js";

type Field = { key: string; path: string; label: string; input: string; options?: string[]; min?: number; max?: number; step?: number | string };
const schemaForm = schemaFormJs as {
  formFields(schema: unknown, pipeline: { kind: string }): Field[];
  initialValues(fields: Field[], settings: Record<string, unknown>): Record<string, string>;
  toOverrides(fields: Field[], values: Record<string, string>): { overrides: Record<string, unknown>; problems: { key: string; message: string }[] };
  toSweep(prompts: string, seeds: string): { sweep?: { prompts?: string[]; seeds?: number[] }; problems: { key: string; message: string }[] };
};
const parameters = parametersJs as {
  parseParameters(text: string): { prompt: string; negativePrompt: string; params: Record<string, string> };
  settingsFromResult(text: string, settings: Record<string, unknown>): Record<string, unknown>;
};
const views = viewsJs as { lossPath(points: { step: number; loss: number }[], w: number, h: number, pad?: number): { d: string; min: number; max: number } };

const TXT2IMG = path.join(REPO, "pipelines", "txt2img.yaml");

describe("the form generated from the pipeline schema", () => {
  const schema = pipelineJsonSchema();

  it("takes each field's input, bounds and choices from the schema", () => {
    const fields = schemaForm.formFields(schema, { kind: "txt2img" });
    const by = Object.fromEntries(fields.map((f) => [f.key, f]));
    expect(fields.map((f) => f.key)).toEqual(["prompt", "negative_prompt", "scheduler", "steps", "guidance", "seed", "width", "height", "batch"]);
    expect(by.prompt!.input).toBe("textarea");
    expect(by.scheduler!.input).toBe("select");
    const s = schema as { properties: { scheduler: { properties: { type: { enum: string[] }; steps: { minimum: number; maximum: number } } } } };
    expect(by.scheduler!.options).toEqual(s.properties.scheduler.properties.type.enum);
    expect(by.steps).toMatchObject({ input: "number", step: 1, min: s.properties.scheduler.properties.steps.minimum, max: s.properties.scheduler.properties.steps.maximum });
    expect(by.guidance).toMatchObject({ input: "number", step: "any", min: 0 });
    expect(by.seed!.max).toBeUndefined(); // 2^53−1 is no bound a person types against
    expect(schemaForm.formFields(schema, { kind: "img2img" }).map((f) => f.key)).toContain("strength");
    expect(schemaForm.formFields(schema, { kind: "train" }).map((f) => f.key)).toEqual(["seed", "train_steps"]);
  });

  it("sends overrides that the pipeline loader accepts and that come back as the values typed", async () => {
    const p0 = await loadPipeline(TXT2IMG, { cwd: REPO });
    const fields = schemaForm.formFields(schema, { kind: "txt2img" });
    const values = schemaForm.initialValues(fields, settingsOf(p0));
    expect(values).toMatchObject({ prompt: "smiling face", steps: "20", guidance: "4", seed: "42", scheduler: "dpm-solver++", width: "32" });
    Object.assign(values, { prompt: "a green frog", negative_prompt: "blurry", scheduler: "euler-ancestral", steps: "12", guidance: "6.5", seed: "9", width: "48", height: "40", batch: "2" });
    const { overrides, problems } = schemaForm.toOverrides(fields, values);
    expect(problems).toEqual([]);
    const p = await loadPipeline(TXT2IMG, { cwd: REPO, overrides: Object.entries(overrides).map(([k, v]) => `${k}=${JSON.stringify(v)}`) });
    expect(settingsOf(p)).toMatchObject({ prompt: "a green frog", negative_prompt: "blurry", scheduler: "euler-ancestral", steps: 12, guidance: 6.5, seed: 9, width: 48, height: 40, batch: 2 });
  });

  it("says in place what a field expects instead of sending what the schema refuses", () => {
    const fields = schemaForm.formFields(schema, { kind: "txt2img" });
    const { overrides, problems } = schemaForm.toOverrides(fields, { prompt: "x", steps: "0", guidance: "abc", seed: "1.5", scheduler: "nope", width: "" });
    expect(problems).toEqual([
      { key: "scheduler", message: expect.stringMatching(/^Scheduler: one of ddpm, ddim, /) },
      { key: "steps", message: "Steps: at least 1" },
      { key: "guidance", message: 'Guidance: expected a number, got "abc"' },
      { key: "seed", message: 'Seed: expected a whole number, got "1.5"' },
    ]);
    // an empty width keeps the pipeline's; an empty negative prompt is an empty negative prompt
    expect(overrides).toEqual({ "sample.prompt": "x", "guidance.negative_prompt": "" });
  });

  it("reads a sweep's prompts and seeds (lists and ranges), and refuses what is not a seed", () => {
    expect(schemaForm.toSweep("a cat\n\n a dog \n", "1, 2 5-7")).toEqual({ sweep: { prompts: ["a cat", "a dog"], seeds: [1, 2, 5, 6, 7] }, problems: [] });
    expect(schemaForm.toSweep("", "")).toEqual({ sweep: undefined, problems: [] });
    expect(schemaForm.toSweep("", "3, x, 9-2").problems.map((p) => p.message)).toEqual([
      'seeds: "x" is not a seed (a whole number, or a range like 1-8)',
      "seeds: 9-2 is not a range of at most 1000 seeds",
    ]);
  });
});

describe("reading a result's parameters back", () => {
  const cases = [
    { prompt: "a red heart", steps: 20, sampler: "DPM++ 2M", cfgScale: 4, seed: 7, width: 32, height: 32, modelHash: "989187fb64", modelName: "emoji" },
    { prompt: "a cat, sitting: on a mat", negativePrompt: "blurry,\nlow quality", steps: 5, sampler: "Euler a", cfgScale: 7.5, seed: 123456789, width: 64, height: 48, denoisingStrength: 0.6 },
    { prompt: "line one\nline two", steps: 1, sampler: 'odd "name", here', cfgScale: 1, seed: 0, width: 8, height: 8, extra: { Generator: "sdc (PyTorch CPU)" } },
  ];

  it("agrees with the library's reader on the texts sdc writes", () => {
    for (const c of cases) {
      const text = formatParameters(c);
      expect(parameters.parseParameters(text)).toEqual(libraryParse(text));
    }
  });

  it("gives the form the image's own prompt, seed, steps, guidance and size, and the job's scheduler", () => {
    const text = formatParameters(cases[1]!);
    const s = parameters.settingsFromResult(text, { scheduler: "euler-ancestral", prompt: ["a", "b"], seed: 1, batch: 2 });
    expect(s).toEqual({
      scheduler: "euler-ancestral",
      batch: 2,
      prompt: "a cat, sitting: on a mat",
      negative_prompt: "blurry,\nlow quality",
      steps: 5,
      guidance: 7.5,
      seed: 123456789,
      width: 64,
      height: 48,
      strength: 0.6,
    });
  });
});

describe("the loss curve", () => {
  it("maps the first and last step to the box's sides and the largest and smallest loss to its top and bottom", () => {
    const { d, min, max } = views.lossPath(
      [
        { step: 10, loss: 0.5 },
        { step: 0, loss: 1 },
        { step: 20, loss: 0.25 },
      ].sort((a, b) => a.step - b.step),
      200,
      100,
      0,
    );
    expect([min, max]).toEqual([0.25, 1]);
    // x = step/20·200; y = (1 − loss)/0.75·100
    expect(d).toBe("M0.0,0.0 L100.0,66.7 L200.0,100.0");
    expect(views.lossPath([], 200, 100).d).toBe("");
    expect(views.lossPath([{ step: 3, loss: 2 }], 200, 100, 0).d).toBe("M100.0,50.0");
  });
});

describe("the page's files", () => {
  it("resolves the page, its modules and the UI library from node_modules, and nothing else", () => {
    expect(webAsset("/")).toEqual({ file: path.join(WEB_DIR, "index.html"), contentType: "text/html; charset=utf-8" });
    for (const f of fs.readdirSync(WEB_DIR).filter((f) => /\.(js|css)$/.test(f))) expect(webAsset(`/static/${f}`)?.file).toBe(path.join(WEB_DIR, f));
    const html = fs.readFileSync(path.join(WEB_DIR, "index.html"), "utf8");
    const imports = (JSON.parse(/<script type="importmap">([\s\S]*?)<\/script>/.exec(html)![1]!) as { imports: Record<string, string> }).imports;
    expect(Object.keys(imports).sort()).toEqual(["htm", "preact", "preact/hooks"]);
    for (const url of Object.values(imports)) {
      const a = webAsset(url.replace(/^\./, ""));
      expect(a?.contentType).toBe("text/javascript; charset=utf-8");
      expect(a!.file).toContain(`${path.sep}node_modules${path.sep}`);
    }
    for (const bad of ["/static/assets.ts", "/static/../server.ts", "/static/%2e%2e/server.ts", "/static/vendor/typescript.js", "/static/vendor/", "/api/jobs", "/static/nope.js", "/static/%E0%A4%A"])
      expect(webAsset(bad)).toBeUndefined();
  });
});
