/**
 * sdc's library API: everything the `sdc` command does, callable from code.
 *
 *   import { loadPipeline, compile, run } from "sdc";
 *   const p = await loadPipeline("pipelines/txt2img.yaml", { seed: 42 });
 *   await run(p);
 *
 * `run` compiles when the compiled folder is stale, then runs its plan with the run settings of the
 * pipeline (`runSettings(p)`); `runPlan(dir, settings)` runs a compiled folder with any settings.
 * The CLI (src/cli/main.ts) only parses arguments, calls these functions and prints their results.
 */

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
export { compile, compileKeys, resolvePrecision, COMPILER_VERSION, SDC_VERSION } from "./compiler/compile.js";
export type { CompileOptions, CompileResult } from "./compiler/compile.js";
export { inspect } from "./compiler/inspect.js";
export type { InspectOptions, InspectResult, Staleness } from "./compiler/inspect.js";
export { run, runCompiled, runSettings, runSettingsKey } from "./pipeline.js";
export { preflight } from "./preflight.js";
export type { PreflightOptions } from "./preflight.js";
export { trainPipeline } from "./train-pipeline.js";
export { doctor, formatDoctor } from "./gpu/doctor.js";
export type { DoctorOptions, DoctorReport } from "./gpu/doctor.js";
export { CUDA_PACKAGE, ORT_VERSION } from "./gpu/cuda.js";
export type { LibCheck, LibEnv, ProviderStatus } from "./gpu/cuda.js";
export { setupCuda } from "./gpu/setup.js";
export type { SetupCudaOptions, SetupCudaResult } from "./gpu/setup.js";
export type { TrainRunOptions, TrainRunResult } from "./train-pipeline.js";
export type { RunOptions } from "./pipeline.js";
export { runPlan } from "./runtime/run.js";
export type { RunPlanOptions, RunResult } from "./runtime/run.js";
export { checkRunSettings, imageCount } from "./runtime/settings.js";
export type { RunSettings } from "./runtime/settings.js";
export { openPlanGraphs } from "./runtime/graphs.js";
export { ORT_CACHE_FORMAT, ortCacheEnabled } from "./runtime/ort-cache.js";
export type { CacheUse } from "./runtime/ort-cache.js";
export type { Feed, FloatTensor, GraphRunner, OpenedGraphs, OpenGraphsOptions, Phase, PipelineGraphs } from "./runtime/graphs.js";
export * from "./runtime/stages/index.js";
export { readPlan, readPlanFile, readPlanIfValid } from "./plan/read.js";
export type { ReadPlanOptions } from "./plan/read.js";
export { writePlan } from "./plan/write.js";
export { imageSideMultiple, PlanSchema, PLAN_FILE, PLAN_FORMAT, GRAPH_NAMES, PLAN_SCHEMA_FILE, planJsonSchemaText } from "./plan/schema.js";
export type { Plan, GraphName } from "./plan/schema.js";
export { DEFAULT_DEBOUNCE_MS, startWatch, watch, watchedFiles } from "./watch/watch.js";
export type { WatchOptions, WatchSession } from "./watch/watch.js";
export { eventJson, formatEvent } from "./watch/events.js";
export type { CancelReason, FileChange, WatchEvent, WatchEventType } from "./watch/events.js";
export { fail, isUserError, renderProblem, renderProblems, UserError } from "./util/errors.js";
export type { Problem, SourcePosition } from "./util/errors.js";
export { saveValidationGrid } from "./trainer/validation-grid.js";
export type { ValidationGridOptions, ValidationSample } from "./trainer/validation-grid.js";
export { SafetensorsFile, writeSafetensors, toFloat32, fromFloat32, isFloatDtype } from "./models/weights/safetensors.js";
export type { TensorEntry, TensorInfo, StDtype } from "./models/weights/safetensors.js";
