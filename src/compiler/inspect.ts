/**
 * `sdc inspect`: what a compiled pipeline holds, for a person. The target is a compiled folder, its
 * plan.json, or a pipeline YAML (then its compiled folder, and whether the plan is stale against
 * the file). Per graph: file, nodes, parameters, weights linked from the checkpoint vs written by
 * the compiler, inputs and outputs with symbolic shapes, divisibility requirements, fusion notes;
 * then the scheduler, the image sizes the graphs accept, VAE and tokenizer. Given a pipeline file,
 * also the run settings it gives the runner (prompts, guidance, size, seed, output), which are not
 * part of the plan. Nothing is written; a missing or damaged plan is a located UserError that says
 * to run `sdc compile` (the plan module's reader, which `sdc run` uses too).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { displayPath, loadPipeline } from "../config/load.js";
import type { PipelineConfig } from "../config/schema.js";
import { readPlan, readPlanFile } from "../plan/read.js";
import { GRAPH_NAMES, imageSideMultiple, PLAN_FILE, type GraphName, type GraphSpecT, type Plan } from "../plan/schema.js";
import { UserError } from "../util/errors.js";
import { sha256File } from "../util/hash.js";
import { compileKeys, defaultCompiledDir } from "./compile.js";

export interface InspectOptions {
  /** Working directory for a relative target and for the paths shown (default: process.cwd()). */
  cwd?: string;
}

export interface Staleness {
  /** Graphs whose build hash differs from what the pipeline file asks for now (rebuilt by the next compile). */
  graphs: GraphName[];
  /** What the plan holds besides the graphs (scheduler, device, ...) differs: the next compile rewrites plan.json. Run settings never make it stale. */
  plan: boolean;
}

export interface InspectResult {
  /** The plan as data (plan.json). */
  plan: Plan;
  /** The compiled folder, absolute. */
  dir: string;
  /** Graphs, parameter counts and sizes, settings, for a person. */
  summary: string;
  /** Given a pipeline file: what the next compile would redo; null for a folder or plan.json target. */
  stale: Staleness | null;
  /** Sources (pipeline, model configs, weights) whose size or mtime changed since the compile. */
  changedSources: string[];
  /** Files of the folder that are missing or differ from the plan's sha256. */
  damaged: string[];
}

/** Describe a compiled pipeline (a compiled folder, its plan.json, or a pipeline file). */
export async function inspect(target: string, opts: InspectOptions = {}): Promise<InspectResult> {
  const cwd = opts.cwd ?? process.cwd();
  const abs = path.resolve(cwd, target);
  const show = (p: string) => displayPath(p, cwd);
  const st = fs.statSync(abs, { throwIfNoEntry: false });
  if (!st) {
    throw new UserError({
      message: "does not exist",
      subject: show(abs),
      hint: "give a compiled folder (compiled/<name>), its plan.json, or the pipeline YAML file it was compiled from",
    });
  }

  let dir: string;
  let plan: Plan;
  let pipeline: Awaited<ReturnType<typeof loadPipeline>> | null = null;
  if (st.isDirectory()) {
    dir = abs;
    plan = readPlan(dir, { cwd });
  } else if (/\.ya?ml$/i.test(abs)) {
    pipeline = await loadPipeline(abs, { cwd });
    dir = defaultCompiledDir(pipeline, cwd);
    const planFile = path.join(dir, PLAN_FILE);
    if (!fs.existsSync(planFile)) {
      throw new UserError({ message: `has not been compiled: ${show(planFile)} does not exist`, subject: show(abs), hint: `run \`sdc compile ${show(abs)}\`` });
    }
    plan = readPlanFile(planFile, { cwd });
  } else if (/\.json$/i.test(abs)) {
    dir = path.dirname(abs);
    plan = readPlanFile(abs, { cwd });
  } else {
    throw new UserError({ message: "is neither a compiled folder, a plan.json nor a pipeline YAML file", subject: show(abs), hint: "e.g. sdc inspect compiled/<name>, or sdc inspect pipelines/<name>.yaml" });
  }

  let stale: Staleness | null = null;
  if (pipeline) {
    const keys = compileKeys(pipeline);
    stale = { graphs: GRAPH_NAMES.filter((g) => plan.graphs[g].buildHash !== keys.graphs[g]), plan: plan.pipelineHash !== keys.pipelineHash };
  }
  const from = pipeline ? show(pipeline.file) : null;
  const runSettings = pipeline ? runSettingsLines(pipeline.config, show) : null;
  const changedSources = plan.sources.filter((s) => !sameIdentity(path.resolve(dir, s.path), s)).map((s) => show(path.resolve(dir, s.path)));
  const damaged = damagedFiles(dir, plan).map((f) => show(f));
  const summary = describe(plan, {
    dir: show(dir),
    from,
    stale,
    changedSources,
    damaged,
    runSettings,
    onnxSize: (g) => fs.statSync(path.join(dir, g === "unet_shallow" ? plan.deepcache!.shallow.file : plan.graphs[g].file), { throwIfNoEntry: false })?.size ?? 0,
  });
  return { plan, dir, summary, stale, changedSources, damaged };
}

function sameIdentity(file: string, id: { size: number; mtimeMs: number }): boolean {
  const st = fs.statSync(file, { throwIfNoEntry: false });
  return !!st && st.size === id.size && Math.floor(st.mtimeMs) === id.mtimeMs;
}

/** Graph files that are missing or whose content differs from the plan (model.onnx is small: hashing it is cheap). */
function damagedFiles(dir: string, plan: Plan): string[] {
  const out: string[] = [];
  const specs = [
    ...GRAPH_NAMES.map((g) => plan.graphs[g]),
    ...Object.values(plan.training?.graphs ?? {}).filter((g): g is GraphSpecT => !!g),
    ...(plan.deepcache ? [plan.deepcache.shallow] : []),
  ];
  for (const spec of specs) {
    const file = path.join(dir, spec.file);
    if (!fs.existsSync(file) || sha256File(file) !== spec.sha256) out.push(file);
    for (const f of spec.externalData) {
      const ext = path.join(path.dirname(file), f);
      if (!fs.existsSync(ext)) out.push(ext);
    }
  }
  return out;
}

interface DescribeContext {
  dir: string;
  from: string | null;
  stale: Staleness | null;
  changedSources: string[];
  damaged: string[];
  /** Given a pipeline file: its run settings, as [label, text] rows. */
  runSettings: [string, string][] | null;
  onnxSize: (g: GraphName | "unet_shallow") => number;
}

function describe(plan: Plan, c: DescribeContext): string {
  const lines: string[] = [];
  const row = (label: string, text: string, indent = "  ") => lines.push(`${indent}${label.padEnd(11)}${text}`);
  lines.push(`${c.dir}: ${plan.name} (${plan.format}, sdc ${plan.sdcVersion})`);
  row("model", `${plan.model.kind} ${plan.model.name} [${plan.model.hash}]`);
  row("precision", `${plan.runtime.precision}, device ${plan.runtime.device}`);
  if (c.stale) {
    const what = [...(c.stale.graphs.length ? [`rebuilds ${c.stale.graphs.join(", ")}`] : []), ...(c.stale.plan ? ["rewrites plan.json"] : [])];
    row("status", what.length ? `stale against ${c.from}: the next compile ${what.join(" and ")}` : `up to date with ${c.from}`);
  }
  if (c.changedSources.length) row("changed", `since the compile: ${c.changedSources.join(", ")}`);
  if (c.damaged.length) row("damaged", `missing or modified: ${c.damaged.join(", ")} (sdc compile --force rebuilds them)`);

  const s = plan.scheduler;
  row("scheduler", `${s.className}${s.type !== s.className ? ` (${s.type})` : ""}, ${s.steps} steps, ${String(s.config.prediction_type ?? "epsilon")}, ${String(s.config.timestep_spacing ?? "leading")} spacing`);
  const side = imageSideMultiple(plan);
  row("images", `any size whose sides are multiples of ${side} pixels, any batch`);
  row("vae", `scaling factor ${plan.vae.scalingFactor}, ${plan.vae.scaleFactor} pixels per latent, ${plan.vae.latentChannels} latent channels`);
  row("tokenizer", `${plan.tokenizer.dir}/, ${plan.tokenizer.modelMaxLength} tokens, pad ${JSON.stringify(plan.tokenizer.padToken)}`);
  if (c.runSettings) {
    lines.push("", `  run settings from ${c.from} (given to the runner with each run, not part of the plan)`);
    c.runSettings.forEach(([label, text]) => row(label, text, "    "));
  }

  let params = 0;
  let linked = 0;
  let written = 0;
  for (const name of GRAPH_NAMES) {
    const spec = plan.graphs[name];
    params += spec.parameters;
    linked += spec.bytesLinked;
    written += spec.bytesWritten;
    lines.push("", `  ${name}  ${spec.file}`);
    graphLines(spec, c.onnxSize(name)).forEach(([label, text]) => row(label, text, "    "));
  }
  lines.push(
    "",
    `  ${GRAPH_NAMES.length} graphs, ${millions(params)} parameters; weights ${bytes(linked)} linked from the checkpoint, ${bytes(written)} written by the compiler`,
  );
  if (plan.deepcache) {
    const d = plan.deepcache;
    lines.push("", `  deepcache  ${d.shallow.file}: the U-Net's shallow part, cut after down block ${d.branch}${d.layer !== null ? ` layer ${d.layer}` : ""} (${d.skips} skip features); unet outputs ${d.feature} for it`);
    graphLines(d.shallow, c.onnxSize("unet_shallow")).forEach(([label, text]) => row(label, text, "    "));
  }
  if (plan.training) lines.push("", ...trainingLines(plan.training));
  return lines.join("\n");
}

/** The training graphs: what they bake in, and their inputs and outputs grouped by role. */
function trainingLines(t: NonNullable<Plan["training"]>): string[] {
  const o = t.optimizer;
  const what = t.lora ? `LoRA rank ${t.lora.rank}, alpha ${t.lora.alpha} on ${t.lora.targets.join(", ")}` : `every ${t.component} parameter`;
  const opt = o.type === "adamw" ? `AdamW betas (${o.betas.join(", ")}), eps ${o.eps}, weight decay ${o.weightDecay}` : `SGD momentum ${o.momentum}, weight decay ${o.weightDecay}`;
  const lines = [
    `  training   ${t.target}: ${what}; ${t.predictionType} objective over ${t.numTrainTimesteps} timesteps`,
    `             ${opt}${t.maxGradNorm !== null ? `, clipped to norm ${t.maxGradNorm}` : ""}${t.ema ? ", EMA" : ""}${t.microBatches > 1 ? `, ${t.microBatches} micro-batches per step` : ""}${t.gradientCheckpointing ? ", gradient checkpointing" : ""}`,
  ];
  for (const [name, spec] of Object.entries(t.graphs)) {
    if (!spec) continue;
    lines.push("", `  ${name}  ${spec.file}  (${spec.nodes} nodes)`);
    for (const [label, list] of [["inputs", spec.inputs], ["outputs", spec.outputs]] as const) {
      const groups = new Map<string, string[]>();
      for (const v of list) {
        const role = v.role ?? "other";
        const many = ["parameter", "optimizer_state", "ema", "grad_accumulator", "updated_parameter", "updated_optimizer_state", "updated_ema", "updated_grad_accumulator", "gradient"].includes(role);
        const g = groups.get(role) ?? [];
        g.push(many ? v.name : `${v.name} ${v.dtype}[${v.shape.join(", ")}]`);
        groups.set(role, g);
      }
      let first = true;
      for (const [role, names] of groups) {
        const text = names.length > 3 ? `${names.length} tensors (${names.slice(0, 2).join(", ")}, …)` : names.join(", ");
        lines.push(`    ${(first ? label : "").padEnd(11)}${role}: ${text}`);
        first = false;
      }
    }
  }
  return lines;
}

/** A pipeline's run settings for a person: what `sdc run` would pass to the runner. */
function runSettingsLines(c: PipelineConfig, show: (p: string) => string): [string, string][] {
  const list = (v: string | string[]) => (Array.isArray(v) ? v : [v]);
  const g = c.guidance;
  const negatives = list(g.negative_prompt);
  const s = c.sample;
  return [
    ["guidance", `scale ${g.scale}${g.rescale ? `, rescale ${g.rescale}` : ""}${negatives.some((n) => n) ? `, negative ${negatives.map((n) => JSON.stringify(n)).join(", ")}` : ""}`],
    ["sample", `${s.width}×${s.height}, batch ${s.batch}, seed ${s.seed}${s.init_image ? `, img2img from ${show(s.init_image)} (strength ${s.strength})` : ""}${s.latents ? `, latents ${show(s.latents)}` : ""}`],
    ["prompt", list(s.prompt).map((x) => JSON.stringify(x)).join(", ")],
    ["output", `${show(c.output.dir)} (${c.output.format}${c.output.grid ? ", grid" : ""})`],
    ...(c.runtime.threads ? [["threads", String(c.runtime.threads)] as [string, string]] : []),
  ];
}

function graphLines(spec: GraphSpecT, onnxSize: number): [string, string][] {
  const io = (v: GraphSpecT["inputs"][number]) => `${v.name} ${v.dtype}[${v.shape.join(", ")}]`;
  const out: [string, string][] = [
    ["graph", `${spec.nodes} nodes, ${millions(spec.parameters)} parameters, ${spec.precision}`],
    ["on disk", `model.onnx ${bytes(onnxSize)}; weights ${bytes(spec.bytesLinked)} linked (in the checkpoint), ${bytes(spec.bytesWritten)} written${spec.externalData.length ? ` (${spec.externalData.join(", ")})` : ""}`],
  ];
  spec.inputs.forEach((v, i) => out.push([i === 0 ? "inputs" : "", io(v)]));
  spec.outputs.forEach((v, i) => out.push([i === 0 ? "outputs" : "", io(v)]));
  if (spec.requirements.length) out.push(["requires", spec.requirements.map((r) => `${r.dim} a multiple of ${r.multipleOf}`).join(", ")]);
  spec.notes.forEach((n, i) => out.push([i === 0 ? "notes" : "", n]));
  return out;
}

function millions(n: number): string {
  return `${(n / 1e6).toFixed(n < 1e7 ? 2 : 1)} M`;
}

function bytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let v = n;
  let u = -1;
  while (v >= 1000 && u < units.length - 1) [v, u] = [v / 1000, u + 1];
  return `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${units[u]}`;
}
