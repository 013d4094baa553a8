// The form's fields, read from the pipeline JSON Schema the server sends (GET /api/schema): each
// field names a settings key (as the API's Settings has it) and the config path an override sets;
// its input type, bounds, allowed values, default and help text all come from the schema, so the
// form follows the config language without a second copy of it. Pure functions: the browser test
// suite also runs them in Node against the real schema.

/** The settings a person tweaks, in the form's order; `kinds` limits a field to some pipelines. */
export const FORM_FIELDS = [
  { key: "prompt", path: "sample.prompt", label: "Prompt", multiline: true },
  { key: "negative_prompt", path: "guidance.negative_prompt", label: "Negative prompt", multiline: true },
  { key: "scheduler", path: "scheduler.type", label: "Scheduler" },
  { key: "steps", path: "scheduler.steps", label: "Steps" },
  { key: "guidance", path: "guidance.scale", label: "Guidance" },
  { key: "seed", path: "sample.seed", label: "Seed" },
  { key: "width", path: "sample.width", label: "Width" },
  { key: "height", path: "sample.height", label: "Height" },
  { key: "batch", path: "sample.batch", label: "Images" },
  { key: "strength", path: "sample.strength", label: "Strength", kinds: ["img2img"] },
  { key: "train_steps", path: "train.steps", label: "Training steps", kinds: ["train"] },
];

/** The schema node at a dotted config path (through `properties`), or undefined. */
export function schemaAt(schema, dotted) {
  let node = schema;
  for (const part of dotted.split(".")) {
    node = node && node.properties && node.properties[part];
    if (!node) return undefined;
  }
  return node;
}

/** The scalar variant of a node (`anyOf: [string, string[]]` → the string; `[x, null]` → x). */
function scalarOf(node) {
  if (!node.anyOf) return node;
  const scalar = node.anyOf.find((n) => n.type === "string" || n.type === "number" || n.type === "integer" || n.enum);
  return scalar ? { ...scalarOf(scalar), description: node.description, default: node.default } : node;
}

/**
 * One field's input description: `{ key, path, label, input: "text"|"textarea"|"number"|"select",
 * step?, min?, max?, options?, description?, default? }`, or undefined when the schema has no such key.
 */
export function describeField(schema, field) {
  const node = schemaAt(schema, field.path);
  if (!node) return undefined;
  const s = scalarOf(node);
  const out = { key: field.key, path: field.path, label: field.label };
  if (node.description ?? s.description) out.description = node.description ?? s.description;
  if (node.default !== undefined) out.default = node.default;
  if (Array.isArray(s.enum)) {
    out.input = "select";
    out.options = s.enum.slice();
  } else if (s.type === "integer" || s.type === "number") {
    out.input = "number";
    out.step = s.type === "integer" ? 1 : "any";
    const min = s.minimum ?? s.exclusiveMinimum;
    const max = s.maximum ?? s.exclusiveMaximum;
    if (min !== undefined) out.min = min;
    if (max !== undefined && max < 2 ** 53 - 1) out.max = max;
  } else {
    out.input = field.multiline ? "textarea" : "text";
  }
  return out;
}

/** The fields shown for a pipeline: those its kind takes, its settings carry, and the schema knows. */
export function formFields(schema, pipeline) {
  const out = [];
  for (const f of FORM_FIELDS) {
    if (f.kinds && !f.kinds.includes(pipeline.kind)) continue;
    if (!f.kinds && pipeline.kind === "train" && f.key !== "seed") continue;
    const d = describeField(schema, f);
    if (d) out.push(d);
  }
  return out;
}

/** The form's starting values: the pipeline's settings (a list of prompts shows one per line). */
export function initialValues(fields, settings) {
  const values = {};
  for (const f of fields) {
    let v = settings[f.key];
    if (Array.isArray(v)) v = v.join("\n");
    values[f.key] = v === undefined || v === null ? "" : String(v);
  }
  return values;
}

/**
 * Form values → the `overrides` of a job request (`{"sample.prompt": "a cat", "scheduler.steps": 20}`),
 * typed by the schema. Returns `{ overrides, problems }`; a problem names the field and what it expects,
 * so the form can say it in place before anything is sent.
 */
export function toOverrides(fields, values) {
  const overrides = {};
  const problems = [];
  for (const f of fields) {
    const raw = (values[f.key] ?? "").trim();
    if (raw === "") {
      if (f.key === "prompt" || f.key === "negative_prompt") overrides[f.path] = "";
      continue; // empty numeric field: the pipeline's own value stands
    }
    if (f.input === "number") {
      const n = Number(raw);
      if (!Number.isFinite(n) || (f.step === 1 && !Number.isInteger(n))) {
        problems.push({ key: f.key, message: `${f.label}: expected ${f.step === 1 ? "a whole number" : "a number"}, got "${raw}"` });
        continue;
      }
      if (f.min !== undefined && n < f.min) problems.push({ key: f.key, message: `${f.label}: at least ${f.min}` });
      else if (f.max !== undefined && n > f.max) problems.push({ key: f.key, message: `${f.label}: at most ${f.max}` });
      else overrides[f.path] = n;
    } else if (f.input === "select") {
      if (!f.options.includes(raw)) problems.push({ key: f.key, message: `${f.label}: one of ${f.options.join(", ")}` });
      else overrides[f.path] = raw;
    } else if (f.key === "prompt" && raw.includes("\n")) {
      overrides[f.path] = raw.split("\n").map((l) => l.trim()).filter((l) => l !== "");
    } else {
      overrides[f.path] = raw;
    }
  }
  return { overrides, problems };
}

/** A sweep from the form's two optional lists (prompts one per line, seeds comma-separated), or undefined. */
export function toSweep(promptsText, seedsText) {
  const sweep = {};
  const problems = [];
  const prompts = (promptsText ?? "").split("\n").map((l) => l.trim()).filter((l) => l !== "");
  if (prompts.length > 0) sweep.prompts = prompts;
  const seedParts = (seedsText ?? "").split(/[,\s]+/).filter((s) => s !== "");
  const seeds = [];
  for (const s of seedParts) {
    const range = /^(\d+)-(\d+)$/.exec(s);
    if (range) {
      const a = Number(range[1]);
      const b = Number(range[2]);
      if (b < a || b - a >= 1000) problems.push({ key: "seeds", message: `seeds: ${s} is not a range of at most 1000 seeds` });
      else for (let i = a; i <= b; i++) seeds.push(i);
    } else if (/^\d+$/.test(s)) seeds.push(Number(s));
    else problems.push({ key: "seeds", message: `seeds: "${s}" is not a seed (a whole number, or a range like 1-8)` });
  }
  if (seeds.length > 0) sweep.seeds = seeds;
  return { sweep: Object.keys(sweep).length > 0 ? sweep : undefined, problems };
}
