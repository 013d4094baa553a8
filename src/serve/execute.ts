/**
 * Running one job where it is taken (in the server's process, or in an `sdc worker`): load the
 * pipeline from the job's text, compile into this machine's cache (one folder per build hash),
 * sample or train, and report everything as job events.
 *
 * Results are written atomically and exactly once: images are drawn into a private attempt folder,
 * then the attempt claims the job's end (`claimFinish`: one winner, ever) and only the winner moves
 * its files to `<results>/<job id>/` and reports them. An attempt that lost its job (its worker
 * stalled, and another took the job over and finished it) throws its files away and reports nothing.
 * Training writes into the job's folder directly, so a job taken over resumes from its latest checkpoint.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { compileKeys } from "../compiler/compile.js";
import { loadPipeline, type LoadedPipeline } from "../config/load.js";
import { encodePng, readPngText } from "../image/image.js";
import { run } from "../pipeline.js";
import { trainPipeline } from "../train-pipeline.js";
import { isUserError, renderProblems } from "../util/errors.js";
import { hashValue } from "../util/hash.js";
import type { JobEvent, JobKind, Settings } from "./api.js";
import type { JobSpec } from "./jobs.js";
import type { JobStore } from "./store.js";

export interface ExecuteOptions {
  store: JobStore;
  /** host:pid, or "in-process". */
  worker: string;
  /** The project folder: the job's file and its relative paths resolve from here. */
  cwd: string;
  /** Results root: a job's files go to <results>/<job id>/. */
  resultsDir: string;
  /** Compiled folders of this worker, one per build hash. */
  cacheDir: string;
  signal?: AbortSignal;
  /** Preview every N denoising steps (0: none). */
  previewEvery?: number;
  log?: (line: string) => void;
}

export type Outcome = "done" | "failed" | "cancelled" | "lost";

/** The settings a person tweaks, from a loaded pipeline. */
export function settingsOf(p: LoadedPipeline): Settings {
  const c = p.config;
  const s: Settings = {
    prompt: c.sample.prompt,
    negative_prompt: c.guidance.negative_prompt,
    steps: c.scheduler.steps,
    guidance: c.guidance.scale,
    seed: c.sample.seed,
    width: c.sample.width,
    height: c.sample.height,
    scheduler: c.scheduler.type ?? "default",
    batch: c.sample.batch,
  };
  if (c.sample.init_image) {
    s.init_image = c.sample.init_image;
    s.strength = c.sample.strength;
  }
  if (c.train?.steps !== undefined) s.train_steps = c.train.steps;
  return s;
}

export function kindOf(p: LoadedPipeline): JobKind {
  return p.config.train ? "train" : p.config.sample.init_image ? "img2img" : "txt2img";
}

/** Where a job's compiled folder is in this worker's cache: the pipeline's name and its build hash. */
export function compiledDirFor(p: LoadedPipeline, spec: JobSpec, cacheDir: string): string {
  let key: string;
  try {
    key = compileKeys(p).pipelineHash;
  } catch {
    key = hashValue({ file: spec.file, yaml: spec.yaml, overrides: spec.overrides }); // an inline model: nothing to hash before its weights exist
  }
  return path.join(cacheDir, `${p.name}-${key.slice(0, 16)}`);
}

const urlOf = (id: string, rel: string) => `/results/${encodeURIComponent(id)}/${rel.split(path.sep).map(encodeURIComponent).join("/")}`;

export async function executeJob(spec: JobSpec, o: ExecuteOptions): Promise<Outcome> {
  const { store, worker } = o;
  const jobDir = path.join(o.resultsDir, spec.id);
  const attempt = path.join(jobDir, `.attempt-${worker.replace(/[^A-Za-z0-9.-]+/g, "_")}-${Date.now()}`);
  // events in order, without making the job wait for each write
  let chain: Promise<unknown> = Promise.resolve();
  let emitError: unknown;
  const emit = (ev: JobEvent) => {
    chain = chain.then(() => store.append(spec.id, ev, worker)).catch((e) => (emitError ??= e));
  };
  const flush = async () => {
    await chain;
    if (emitError !== undefined) throw emitError;
  };
  const finish = async (state: "done" | "failed" | "cancelled", before: () => Promise<void> | void = () => {}): Promise<Outcome> => {
    await flush();
    if (!(await store.claimFinish(spec.id, worker))) return "lost";
    // attempts of workers that died in this job left their folders: the job is over, so they go
    if (fs.existsSync(jobDir)) for (const f of fs.readdirSync(jobDir)) if (f.startsWith(".attempt-") && path.join(jobDir, f) !== attempt) fs.rmSync(path.join(jobDir, f), { recursive: true, force: true });
    await before();
    emit({ type: "state", state });
    emit({ type: "done", state });
    await flush();
    return state;
  };

  // handed out again after it ended (its worker's lock lapsed just before it finished): nothing to do
  if (await store.isFinished(spec.id)) return "lost";
  if (await store.cancelRequested(spec.id)) return finish("cancelled");
  emit({ type: "state", state: "running" });
  try {
    const p = await loadPipeline(path.resolve(o.cwd, spec.file), { text: spec.yaml, overrides: spec.overrides, cwd: o.cwd, out: spec.kind === "train" ? jobDir : attempt });
    const compiledDir = compiledDirFor(p, spec, o.cacheDir);
    const log = o.log ?? (() => {});

    if (spec.kind === "train") {
      const resume = fs.existsSync(path.join(jobDir, "checkpoints")) ? "latest" : null;
      const r = await trainPipeline(p, {
        cwd: o.cwd,
        compiledDir,
        signal: o.signal,
        log,
        resume,
        loadOptions: { text: spec.yaml, overrides: spec.overrides, cwd: o.cwd, out: jobDir },
        onStep: (s) => {
          emit({ type: "progress", step: s.step, total: s.total, unit: "train-step" });
          emit({ type: "loss", step: s.step, loss: s.loss });
        },
        onEvent: (ev) => {
          if (ev.event === "validation" && ev.grid) emit({ type: "grid", url: urlOf(spec.id, path.relative(jobDir, path.resolve(ev.grid))) });
          if (ev.event === "checkpoint") emit({ type: "checkpoint", url: urlOf(spec.id, path.relative(jobDir, path.resolve(ev.path))) });
        },
      });
      if (r.stopped && o.signal?.aborted) return await finish("cancelled");
      return await finish("done", () => {
        for (const f of r.exported.filter((f) => f.endsWith(".safetensors")))
          emit({ type: "result", url: urlOf(spec.id, path.relative(jobDir, f)), file: path.relative(jobDir, f), parameters: "" });
      });
    }

    const every = o.previewEvery ?? 0;
    const r = await run(p, {
      cwd: o.cwd,
      compiledDir,
      signal: o.signal,
      progress: false,
      log,
      onStep: (step, total) => emit({ type: "progress", step, total, unit: "step" }),
      ...(every > 0
        ? {
            preview: {
              every,
              onImage: async (step, _total, image) => {
                const rel = path.join("previews", `step-${String(step).padStart(4, "0")}.png`);
                const file = path.join(jobDir, rel);
                fs.mkdirSync(path.dirname(file), { recursive: true });
                fs.writeFileSync(file, await encodePng(image.data, image.width, image.height));
                emit({ type: "preview", step, url: urlOf(spec.id, rel) });
              },
            },
          }
        : {}),
    });
    if (r.cancelled) return await finish("cancelled");
    return await finish("done", () => {
      for (const f of r.outputs) {
        const name = path.basename(f);
        fs.renameSync(f, path.join(jobDir, name)); // same folder tree: atomic
        emit({ type: "result", url: urlOf(spec.id, name), file: name, parameters: readPngText(path.join(jobDir, name)).parameters ?? "" });
      }
    });
  } catch (e) {
    if (o.signal?.aborted) return finish("cancelled");
    // a UserError as the CLI prints it (every problem, located), its first hint apart
    const message = isUserError(e) ? renderProblems(e.problems.map(({ hint: _h, ...rest }) => rest)) : e instanceof Error ? e.message : String(e);
    const hint = isUserError(e) ? e.problems.find((q) => q.hint)?.hint : undefined;
    o.log?.(`job ${spec.id} failed: ${isUserError(e) ? e.message : e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return finish("failed", () => emit({ type: "error", message, ...(hint ? { hint } : {}) }));
  } finally {
    fs.rmSync(attempt, { recursive: true, force: true });
  }
}
