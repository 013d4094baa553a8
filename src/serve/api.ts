/**
 * The HTTP API of `sdc serve`: every request and response body as a zod schema, and the types the
 * server, the worker and the web page share. `/openapi.json` is generated from these schemas, so
 * the document and the server cannot disagree.
 *
 * Routes (all JSON unless said; a token, when set, goes as `Authorization: Bearer T` or `?token=T`):
 *
 *   GET  /api/pipelines            → PipelineInfo[]
 *   GET  /api/schema               → the pipeline JSON Schema (what editors use)
 *   GET  /openapi.json             → OpenAPI 3.1 document of this API
 *   POST /api/validate             ValidateRequest → ValidateResponse
 *   POST /api/jobs                 SubmitRequest → 201 SubmitResponse | 400 ProblemsResponse
 *   GET  /api/jobs                 → Job[] (newest first)
 *   GET  /api/jobs/:id             → Job | 404
 *   POST /api/jobs/:id/cancel      → 202 Job | 404
 *   GET  /api/jobs/:id/events      → text/event-stream of JobEvent (replays what happened so far)
 *   GET  /results/<job id>/<file>  → a result file (PNG with its `parameters` text chunk)
 *   GET  /  and  /static/...       → the web page
 *
 * Errors are `{ problems: ApiProblem[] }` with status 400 (bad input), 401 (token), 404 or 500.
 * Cancelling a job that is already over is a no-op (202 with the job as it is).
 */
import { z } from "zod";

/** One located problem, as `sdc validate` prints it. `line`/`col` are 1-based; `path` is the config key path. */
export const ApiProblem = z
  .object({
    message: z.string(),
    hint: z.string().optional(),
    /** The file the problem is in (as shown by the CLI, relative to the server's working directory). */
    file: z.string().optional(),
    line: z.number().int().optional(),
    col: z.number().int().optional(),
    endCol: z.number().int().optional(),
    /** Where, when not a file position: a flag, an override key (`sample.prompt`), a tensor name. */
    subject: z.string().optional(),
    /** The caret snippet the CLI prints (two lines: source, carets). */
    snippet: z.string().optional(),
    /** The whole problem as the CLI renders it (`file:line:col: message`, snippet, hint). */
    text: z.string(),
  })
  .meta({ id: "Problem" });
export type ApiProblem = z.infer<typeof ApiProblem>;

export const ProblemsResponse = z.object({ problems: z.array(ApiProblem) }).meta({ id: "ProblemsResponse" });
export type ProblemsResponse = z.infer<typeof ProblemsResponse>;

export const JobKind = z.enum(["txt2img", "img2img", "train"]).meta({ id: "JobKind" });
export type JobKind = z.infer<typeof JobKind>;

export const JobState = z.enum(["queued", "running", "done", "failed", "cancelled"]).meta({ id: "JobState" });
export type JobState = z.infer<typeof JobState>;

/** The settings a person tweaks, from the loaded pipeline (after extends and overrides). */
export const Settings = z
  .looseObject({
    prompt: z.union([z.string(), z.array(z.string())]),
    negative_prompt: z.union([z.string(), z.array(z.string())]),
    steps: z.number().int(),
    guidance: z.number(),
    seed: z.number().int(),
    width: z.number().int(),
    height: z.number().int(),
    scheduler: z.string(),
    batch: z.number().int(),
    /** img2img only. */
    strength: z.number().optional(),
    init_image: z.string().optional(),
    /** Training only. */
    train_steps: z.number().int().optional(),
  })
  .meta({ id: "Settings" });
export type Settings = z.infer<typeof Settings>;

export const PipelineInfo = z
  .object({
    /** The pipeline's name (its `name:`, or the file name); what `SubmitRequest.pipeline` takes. */
    name: z.string(),
    /** The file, relative to the server's working directory. */
    file: z.string(),
    kind: JobKind,
    /** The file's text, for the YAML editor. */
    yaml: z.string(),
    settings: Settings,
  })
  .meta({ id: "PipelineInfo" });
export type PipelineInfo = z.infer<typeof PipelineInfo>;

export const ValidateRequest = z
  .object({
    yaml: z.string(),
    /** The pipeline this text edits: relative paths (model, extends, init_image) resolve from its folder. */
    name: z.string().optional(),
  })
  .meta({ id: "ValidateRequest" });
export type ValidateRequest = z.infer<typeof ValidateRequest>;

export const ValidateResponse = z.object({ ok: z.boolean(), problems: z.array(ApiProblem) }).meta({ id: "ValidateResponse" });
export type ValidateResponse = z.infer<typeof ValidateResponse>;

/** Overrides: `{"sample.prompt": "a cat"}` (the CLI's `--set`) or nested `{sample: {prompt: "a cat"}}`. */
export const Overrides = z.record(z.string(), z.unknown()).meta({ id: "Overrides" });
export type Overrides = z.infer<typeof Overrides>;

/** A sweep: one job per element of prompts × seeds × guidance (a missing list keeps the pipeline's value). */
export const Sweep = z
  .object({
    prompts: z.array(z.string()).min(1).optional(),
    seeds: z.array(z.number().int().min(0)).min(1).optional(),
    guidance: z.array(z.number()).min(1).optional(),
  })
  .meta({ id: "Sweep" });
export type Sweep = z.infer<typeof Sweep>;

export const SubmitRequest = z
  .object({
    /** A served pipeline's name. With `yaml`: the pipeline that text edits (its folder resolves paths). */
    pipeline: z.string().optional(),
    /** A whole pipeline file's text (from the YAML editor); `pipeline` or `yaml` is required. */
    yaml: z.string().optional(),
    overrides: Overrides.optional(),
    sweep: Sweep.optional(),
  })
  .meta({ id: "SubmitRequest" });
export type SubmitRequest = z.infer<typeof SubmitRequest>;

export const SubmitResponse = z.object({ jobs: z.array(z.object({ id: z.string() })) }).meta({ id: "SubmitResponse" });
export type SubmitResponse = z.infer<typeof SubmitResponse>;

export const Progress = z
  .object({ step: z.number().int(), total: z.number().int(), unit: z.enum(["step", "train-step"]) })
  .meta({ id: "Progress" });
export type Progress = z.infer<typeof Progress>;

export const Result = z
  .object({
    /** Where the server serves it (`/results/<job id>/<file>`; add `?token=` when a token is set). */
    url: z.string(),
    /** The file name. */
    file: z.string(),
    /** The PNG's `parameters` text chunk (prompt, steps, sampler, seed, ... as A1111 writes them). */
    parameters: z.string(),
  })
  .meta({ id: "Result" });
export type Result = z.infer<typeof Result>;

export const Preview = z.object({ step: z.number().int(), url: z.string() }).meta({ id: "Preview" });
export type Preview = z.infer<typeof Preview>;

export const LossPoint = z.object({ step: z.number().int(), loss: z.number() }).meta({ id: "LossPoint" });
export type LossPoint = z.infer<typeof LossPoint>;

export const JobError = z.object({ message: z.string(), hint: z.string().optional(), problems: z.array(ApiProblem).optional() }).meta({ id: "JobError" });
export type JobError = z.infer<typeof JobError>;

export const Job = z
  .object({
    id: z.string(),
    pipeline: z.string(),
    kind: JobKind,
    state: JobState,
    /** ISO 8601 times. */
    createdAt: z.string(),
    startedAt: z.string().optional(),
    finishedAt: z.string().optional(),
    progress: Progress.optional(),
    settings: Settings,
    results: z.array(Result),
    previews: z.array(Preview).optional(),
    losses: z.array(LossPoint).optional(),
    grids: z.array(z.string()).optional(),
    checkpoints: z.array(z.string()).optional(),
    error: JobError.optional(),
    /** The worker that ran it (host:pid, or "in-process"). */
    worker: z.string().optional(),
    /** The sweep this job came from: its index in the product and the product's size. */
    sweep: z.object({ index: z.number().int(), count: z.number().int() }).optional(),
  })
  .meta({ id: "Job" });
export type Job = z.infer<typeof Job>;

/**
 * Server-sent events on /api/jobs/:id/events: `event: <type>` with `data: <the event as JSON, type
 * included>` and `id: <sequence number>`. On connect the
 * stream replays what has happened so far (the current state, progress, previews, losses, results,
 * ...), then follows; `done` is the last event (after `done` the server closes the stream).
 */
export const JobEvent = z
  .discriminatedUnion("type", [
    z.object({ type: z.literal("state"), state: JobState }),
    z.object({ type: z.literal("progress"), step: z.number().int(), total: z.number().int(), unit: z.enum(["step", "train-step"]) }),
    z.object({ type: z.literal("preview"), step: z.number().int(), url: z.string() }),
    z.object({ type: z.literal("loss"), step: z.number().int(), loss: z.number() }),
    z.object({ type: z.literal("grid"), url: z.string() }),
    z.object({ type: z.literal("checkpoint"), url: z.string() }),
    z.object({ type: z.literal("result"), url: z.string(), file: z.string(), parameters: z.string() }),
    z.object({ type: z.literal("error"), message: z.string(), hint: z.string().optional() }),
    z.object({ type: z.literal("done"), state: JobState }),
  ])
  .meta({ id: "JobEvent" });
export type JobEvent = z.infer<typeof JobEvent>;
export type JobEventType = JobEvent["type"];
