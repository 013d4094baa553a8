/**
 * A loaded pipeline, from its config to images: compile when the compiled folder is stale, then run
 * the plan with the run settings taken from the same config.
 *
 * The data flows one way: config → compiler → plan → runtime. The compiler never sees run settings
 * and the runtime never sees the config; this module (used by the CLI, the library API and
 * `sdc watch`) is where the two meet. `runSettings` derives what one run is asked for (prompts,
 * guidance, size, seed, init image, latents, output) from a config; those settings never reach
 * plan.json, so `sdc run --prompt ...` on an up-to-date pipeline writes nothing under compiled/.
 */
import * as fs from "node:fs";
import { compile, defaultCompiledDir } from "./compiler/compile.js";
import type { LoadedPipeline } from "./config/load.js";
import { publishCaches } from "./runtime/ort-cache.js";
import { runPlan, type RunPlanOptions, type RunResult } from "./runtime/run.js";
import { preflight } from "./preflight.js";
import type { RunSettings } from "./runtime/settings.js";
import { UserError } from "./util/errors.js";
import { snapshotDir, withDirLock } from "./util/lock.js";
import { fileIdentity, hashValue } from "./util/hash.js";

export interface RunOptions extends RunPlanOptions {
  /** Recompile even when the compiled folder is up to date. */
  recompile?: boolean;
  /** Compiled folder (default compiled/<name> under cwd). */
  compiledDir?: string;
  cwd?: string;
}

/** What one run of this pipeline is asked for: everything in the config that is not compiled. */
export function runSettings(p: LoadedPipeline): RunSettings {
  const c = p.config;
  const list = (v: string | string[]) => (Array.isArray(v) ? [...v] : [v]);
  return {
    prompts: list(c.sample.prompt),
    negativePrompts: list(c.guidance.negative_prompt),
    guidanceScale: c.guidance.scale,
    guidanceRescale: c.guidance.rescale,
    width: c.sample.width,
    height: c.sample.height,
    batch: c.sample.batch,
    seed: c.sample.seed,
    initImage: c.sample.init_image ?? null,
    strength: c.sample.strength,
    latents: c.sample.latents ?? null,
    outputDir: c.output.dir,
    grid: c.output.grid,
    threads: c.runtime.threads,
    deepcache: c.sample.deepcache ? { interval: c.sample.deepcache.interval, fullSteps: c.sample.deepcache.full_steps ? [...c.sample.deepcache.full_steps] : null } : null,
    tome: c.sample.tome ? { random: c.sample.tome.random } : null,
    vaeTiling: vaeTiling(p),
  };
}

/** sample.vae_tiling with its tile defaulted to the VAE's sample_size (diffusers' tile_sample_min_size), or null when off. */
function vaeTiling(p: LoadedPipeline): RunSettings["vaeTiling"] {
  const t = p.config.sample.vae_tiling;
  if (!t?.enabled) return null;
  const ss = p.model.vae.sample_size;
  return { tile: t.tile ?? (Array.isArray(ss) ? ss[0] : ss), overlap: t.overlap };
}

/**
 * What a run's result depends on besides the plan: its settings and the identity (size, mtime) of
 * the files it reads. `sdc watch --run` re-runs when this or the plan changes.
 */
export function runSettingsKey(p: LoadedPipeline): string {
  const s = runSettings(p);
  const inputs = [s.initImage, s.latents].map((f) => (f && fs.existsSync(f) ? fileIdentity(f) : f));
  return hashValue({ settings: s, inputs });
}

/** Compile the pipeline when its compiled folder is stale, then run it. */
export async function run(p: LoadedPipeline, opts: RunOptions = {}): Promise<RunResult> {
  const cwd = opts.cwd ?? process.cwd();
  checkRunnable(p);
  for (const note of await preflight(p, { cwd, ...(opts.compiledDir !== undefined ? { compiledDir: opts.compiledDir } : {}) })) opts.log?.(`note: ${note}`);
  // holding the folder's lock, compile when stale and take a private view of what was compiled: another
  // process may compile a different pipeline into the folder while this one samples (src/util/lock.ts)
  const dir = opts.compiledDir ?? defaultCompiledDir(p, cwd);
  const { c, view } = await withDirLock(
    dir,
    async () => {
      const c = await compile(p, { outDir: dir, cwd, force: opts.recompile, log: opts.log });
      return { c, view: snapshotDir(c.dir) };
    },
    { log: opts.log ?? (() => {}) },
  );
  if (!c.upToDate) opts.log?.(c.summary);
  try {
    return await runPlan(view.dir, runSettings(p), { ...opts, expectPipelineHash: c.plan.pipelineHash });
  } catch (e) {
    throw namingFolder(e, view.dir, dir);
  } finally {
    await keepCaches(view.dir, dir, opts);
    view.remove();
  }
}

/** Optimised-graph caches the run built in its view go to the compiled folder (src/runtime/ort-cache.ts). */
async function keepCaches(viewDir: string, dir: string, opts: RunOptions): Promise<void> {
  try {
    await withDirLock(dir, () => publishCaches(viewDir, dir), { log: opts.log ?? (() => {}) });
  } catch {
    // the lock could not be had: the next run builds the cache again
  }
}

/** A problem found in the run's private view names the compiled folder it was taken of. */
function namingFolder(e: unknown, viewDir: string, dir: string): unknown {
  if (!(e instanceof UserError)) return e;
  const fix = (t: string) => t.split(viewDir).join(dir);
  return new UserError(e.problems.map((p) => ({ ...p, message: fix(p.message), ...(p.subject ? { subject: fix(p.subject) } : {}), ...(p.hint ? { hint: fix(p.hint) } : {}) })));
}

/**
 * Run the pipeline's compiled folder as it is, without compiling: for a caller that has just
 * compiled it (`sdc watch --run`).
 */
export async function runCompiled(p: LoadedPipeline, opts: RunOptions = {}): Promise<RunResult> {
  checkRunnable(p);
  const dir = opts.compiledDir ?? defaultCompiledDir(p, opts.cwd);
  if (!fs.existsSync(dir)) return runPlan(dir, runSettings(p), opts); // which says what is missing
  const view = await withDirLock(dir, () => snapshotDir(dir), { log: opts.log ?? (() => {}) });
  try {
    return await runPlan(view.dir, runSettings(p), opts);
  } catch (e) {
    throw namingFolder(e, view.dir, dir);
  } finally {
    await keepCaches(view.dir, dir, opts);
    view.remove();
  }
}

/** Refusals that need the config's locations: a train section, a CUDA device that cannot start. */
function checkRunnable(p: LoadedPipeline): void {
  if (p.config.train)
    throw new UserError({
      message: "this pipeline has a train section: it trains, it does not sample",
      ...p.where(["train"], "key"),
      hint: "train it with trainPipeline() (what `sdc run` does for such a pipeline), or remove the train section to sample",
    });
}
