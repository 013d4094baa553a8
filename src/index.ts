/**
 * sdc's library API: everything the `sdc` command does, callable from code.
 *
 *   import { loadPipeline, compile, run } from "sdc";
 *   const p = await loadPipeline("pipelines/txt2img.yaml", { seed: 42 });
 *   await run(p);
 *
 * The CLI (src/cli/main.ts) only parses arguments, calls these functions and prints their results.
 * `run` and `watch` belong to the runtime and watcher modules; until they are merged, the functions
 * here say so instead of pretending to work.
 */
import type { LoadedPipeline, LoadOptions } from "./config/load.js";

export { DEFAULT_PIPELINE, deepMerge, displayPath, loadPipeline, validate } from "./config/load.js";
export type { LoadedPipeline, LoadOptions, ValidationResult } from "./config/load.js";
export { archWhere, COMPONENTS } from "./config/model.js";
export type { ComponentName, ResolvedModel, WeightsRef } from "./config/model.js";
export { missingTargets, textEncoderModules, unetModules } from "./config/modules.js";
export type { LoraComponent, MissingTarget, ModuleKind, ModuleMap } from "./config/modules.js";
export { PIPELINE_SCHEMA_FILE, pipelineJsonSchema, pipelineJsonSchemaText } from "./config/json-schema.js";
export { PipelineSchema, SCHEDULER_CLASS_NAMES, SCHEDULER_TYPES, schedulerClassName } from "./config/schema.js";
export type {
  ParsedPipelineConfig,
  PipelineConfig,
  PipelineConfigInput,
  SchedulerClassName,
  SchedulerShortName,
  TrainConfig,
} from "./config/schema.js";
export type { Where } from "./config/origins.js";
export type { Path } from "./config/source.js";
export * from "./models/arch.js";
export { compile, compileKeys, readPlan, resolvePrecision, COMPILER_VERSION, SDC_VERSION } from "./compiler/compile.js";
export type { CompileOptions, CompileResult } from "./compiler/compile.js";
export { inspect, readPlanFile } from "./compiler/inspect.js";
export type { InspectOptions, InspectResult, Staleness } from "./compiler/inspect.js";
export { PlanSchema, PLAN_FORMAT, GRAPH_NAMES } from "./plan/schema.js";
export type { Plan, GraphName } from "./plan/schema.js";
export { fail, isUserError, renderProblem, renderProblems, UserError } from "./util/errors.js";
export type { Problem, SourcePosition } from "./util/errors.js";

export interface RunOptions {
  /** Recompile before running even if the compiled folder is up to date. */
  recompile?: boolean;
}

export interface RunResult {
  /** Files written (images, checkpoints). */
  outputs: string[];
  summary: string;
}

export interface WatchOptions extends LoadOptions {
  /** Re-run the pipeline after each successful recompile. */
  run?: boolean;
  /** Called with a line to show the user (recompiled, errors, ...). */
  log?: (line: string) => void;
  /** Stops watching when aborted. */
  signal?: AbortSignal;
}

function notYetBuilt(what: string, issue: string): never {
  throw new Error(`${what} is not yet built (it comes with the ${issue})`);
}


/** Run a loaded pipeline (sampling or training), compiling it first when needed. */
export async function run(pipeline: LoadedPipeline, opts: RunOptions = {}): Promise<RunResult> {
  void pipeline;
  void opts;
  return notYetBuilt("run", "runtime");
}

/** Watch a pipeline file and its bases; recompile (and optionally re-run) on change. */
export async function watch(file: string, opts: WatchOptions = {}): Promise<void> {
  void file;
  void opts;
  return notYetBuilt("watch", "watcher");
}
