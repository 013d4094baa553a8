/**
 * `sdc watch`: keep a pipeline compiled (and, with `run`, re-run) while its files are edited.
 *
 * chokidar watches exactly the files the last good load read: the pipeline, its extends chain, the
 * model's config and weight files, its LoRA files (and with `run`, the init image and latents).
 * It never watches folders, and a named file inside the compiled or output folder is left out, so
 * sdc's own writes cannot trigger a rebuild. Saves are debounced into one rebuild; a file that
 * disappears (an editor's delete-then-write) is watched for its return. The compiler's per-graph
 * build hashes decide what is rewritten: a scheduler edit rewrites plan.json alone. A rejected
 * edit is reported with its located problems and leaves the last good compiled folder as it was.
 *
 * Runs: each save compiles once; the run then gets the compiled folder as it is, with the run
 * settings of the same config (it does not compile again). A run in progress is cancelled (between
 * denoising steps) before a compile replaces the folder it reads, or when the run settings it was
 * given changed; then the new plan runs, numbered. A save that leaves the plan, the run settings
 * and the run's input files as they were neither cancels nor re-runs. Everything observable is a
 * WatchEvent (events.ts).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { watch as chokidar, type FSWatcher } from "chokidar";
import { compile, type CompileResult, defaultCompiledDir } from "../compiler/compile.js";
import { type LoadedPipeline, loadPipeline, type LoadOptions } from "../config/load.js";
import { runCompiled, runSettingsKey } from "../pipeline.js";
import type { RunResult } from "../runtime/run.js";
import { isUserError, type Problem } from "../util/errors.js";
import { hashValue } from "../util/hash.js";
import { type CancelReason, eventJson, type FileChange, formatEvent, type WatchEvent } from "./events.js";

export interface WatchOptions extends LoadOptions {
  /** Re-run the pipeline after a save that changed the plan, the run settings or the run's input files. */
  run?: boolean;
  /** Called with a line to show the user (`watch()` only). */
  log?: (line: string) => void;
  /** Lines are JSON events, one per line (`watch()` only). */
  json?: boolean;
  /** Stops watching when aborted. */
  signal?: AbortSignal;
  /** Every event, as data. */
  onEvent?: (e: WatchEvent) => void;
  /** Compiled folder (default: compiled/<name> under cwd). */
  outDir?: string;
  /** Quiet time after the last file event before rebuilding (default 150 ms). */
  debounceMs?: number;
  /** What runs the compiled folder, without compiling (default: `runCompiled`); tests inject a fake. */
  runner?: typeof runCompiled;
}

export interface WatchSession {
  /** The pipeline file, absolute. */
  readonly file: string;
  /** Files watched now, absolute. */
  watched(): string[];
  /** The last successful compile, or null. */
  lastGood(): CompileResult | null;
  /** Stop: finish a compile in progress, cancel a run, close the watcher. Idempotent. */
  close(): Promise<void>;
}

export const DEFAULT_DEBOUNCE_MS = 150;

/**
 * Watch a pipeline until `opts.signal` aborts, printing each event through `opts.log` (a line for a
 * person, or with `json` one JSON object). A user error never ends it: it is printed and watching
 * goes on.
 */
export async function watch(file: string, opts: WatchOptions = {}): Promise<void> {
  const cwd = opts.cwd ?? process.cwd();
  const log = opts.log ?? ((line: string) => void process.stdout.write(`${line}\n`));
  const print = (e: WatchEvent) => {
    if (opts.json) return log(eventJson(e, cwd));
    const text = formatEvent(e, cwd);
    if (text !== null) log(e.type === "log" ? text : `[${new Date().toTimeString().slice(0, 8)}] ${text}`);
  };
  const session = await startWatch(file, {
    ...opts,
    onEvent: (e) => {
      print(e);
      opts.onEvent?.(e);
    },
  });
  await new Promise<void>((resolve) => {
    if (!opts.signal || opts.signal.aborted) return resolve(); // no signal: until the process ends (the CLI always passes one)
    opts.signal.addEventListener("abort", () => resolve(), { once: true });
  });
  await session.close();
}

/** Start watching: the first compile (and run) happens before this resolves; events go to `opts.onEvent`. */
export async function startWatch(file: string, opts: WatchOptions = {}): Promise<WatchSession> {
  const s = new Session(file, opts);
  await s.start();
  return s;
}

/** The files a loaded pipeline depends on (what `watch` watches), absolute, without duplicates. */
export function watchedFiles(p: LoadedPipeline, opts: { run?: boolean } = {}): string[] {
  const m = p.model;
  const weights =
    m.kind === "single-file" && m.path ? [m.path] : Object.values(m.weights).flatMap((w) => (w ? [...w.files, ...(w.index ? [w.index] : [])] : []));
  const runInputs = opts.run ? [p.config.sample.init_image, p.config.sample.latents].filter((f): f is string => typeof f === "string") : [];
  return [...new Set([...p.sources, ...m.files, ...weights, ...m.lora.map((l) => l.file), ...runInputs])];
}

interface ActiveRun {
  index: number;
  /** The plan and the run settings it runs (see runKey). */
  key: string;
  /** The run settings alone: when they change, the run is stale whatever the compile does. */
  settingsKey: string;
  ctrl: AbortController;
  done: Promise<void>;
}

const inside = (file: string, dir: string) => {
  const r = path.relative(dir, file);
  return r !== "" && !r.startsWith("..") && !path.isAbsolute(r);
};

class Session implements WatchSession {
  readonly file: string;
  private readonly cwd: string;
  private readonly debounceMs: number;
  private readonly runner: typeof runCompiled;
  private readonly fsw: FSWatcher;
  private files = new Set<string>();
  private pending = new Map<string, FileChange["kind"]>();
  private pendingSince = 0;
  private timer: NodeJS.Timeout | undefined;
  private missingTimer: NodeJS.Timeout | undefined;
  private busy: Promise<void> | null = null;
  private good: CompileResult | null = null;
  private active: ActiveRun | null = null;
  private runs = 0;
  /** Run key (plan + run settings and inputs) of the last run that finished: the same key is not run again. */
  private lastRunKey: string | null = null;
  private closing: Promise<void> | null = null;

  constructor(
    file: string,
    private readonly opts: WatchOptions,
  ) {
    this.cwd = opts.cwd ?? process.cwd();
    this.file = path.resolve(this.cwd, file);
    this.debounceMs = opts.debounceMs ?? DEFAULT_DEBOUNCE_MS;
    this.runner = opts.runner ?? runCompiled;
    // atomic: an editor's write-temp-then-rename (or unlink + add within 100 ms) arrives as one change
    this.fsw = chokidar([], { ignoreInitial: true, atomic: true, persistent: true });
    this.fsw.on("all", (kind, p) => {
      if (kind === "add" || kind === "change" || kind === "unlink") this.onFile(kind, path.resolve(p));
    });
    this.fsw.on("error", (err) => this.emit({ type: "error", changed: [], problems: [{ message: `file watcher: ${(err as Error).message}` }], internal: true, kept: this.good?.dir ?? null }));
  }

  watched(): string[] {
    return [...this.files];
  }

  lastGood(): CompileResult | null {
    return this.good;
  }

  async start(): Promise<void> {
    const first = this.cycle([], performance.now());
    this.busy = first;
    await first;
    this.busy = null;
    if (this.pending.size) this.schedule();
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      clearTimeout(this.timer);
      clearInterval(this.missingTimer);
      await this.busy; // a compile cannot be interrupted; its folder swap is atomic either way
      await this.cancelRun("closed");
      await this.fsw.close();
      this.emit({ type: "closed" });
    })();
    return this.closing;
  }

  private emit(e: WatchEvent): void {
    try {
      this.opts.onEvent?.(e);
    } catch {
      // a listener's bug must not stop the watcher
    }
  }

  private onFile(kind: FileChange["kind"], file: string): void {
    if (this.closing || !this.files.has(file)) return;
    if (this.pending.size === 0) this.pendingSince = performance.now();
    this.pending.set(file, kind);
    // chokidar forgets a deleted file; adding it again watches its folder until it returns
    if (kind === "unlink") this.fsw.add(file);
    this.schedule();
  }

  private schedule(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.flush(), this.debounceMs);
  }

  private flush(): void {
    if (this.closing || this.busy || this.pending.size === 0) return;
    const changes = [...this.pending].map(([file, kind]) => ({ file, kind }));
    const since = this.pendingSince;
    this.pending.clear();
    this.busy = this.cycle(changes, since).finally(() => {
      this.busy = null;
      if (this.pending.size && !this.closing) this.schedule();
    });
  }

  /** Load → (cancel a stale run) → compile, once → (run). Never throws: failures become events. */
  private async cycle(changed: FileChange[], since: number): Promise<void> {
    if (changed.length) this.emit({ type: "change", files: changed });
    let p: LoadedPipeline;
    try {
      p = await loadPipeline(this.file, loadOptions(this.opts));
    } catch (e) {
      this.failed(e, changed);
      // keep the last good set, plus whatever the problems point at (a base file that broke)
      const named = isUserError(e) ? e.problems.flatMap((q) => (q.at ? [path.resolve(this.cwd, q.at.file)] : [])) : [];
      // (a file that went missing, such as a deleted base, stays watched, so its return is seen)
      await this.watch([...this.files, this.file, ...named.filter((f) => fs.existsSync(f))], null);
      return;
    }
    try {
      const dir = this.opts.outDir ? path.resolve(this.cwd, this.opts.outDir) : defaultCompiledDir(p, this.cwd);
      await this.watch(watchedFiles(p, { run: this.opts.run }), { p, dir });
      const settingsKey = this.opts.run ? runSettingsKey(p) : null;
      // a run asked for other settings is stale whatever the compile does
      if (this.active && this.active.settingsKey !== settingsKey) await this.cancelRun("superseded");
      // and the runner reads the folder a compile is about to replace: the compiler says when, before writing
      const result = await compile(p, { outDir: dir, cwd: this.cwd, log: (line) => this.emit({ type: "log", line }), beforeWrite: () => this.cancelRun("superseded") });
      this.good = result;
      this.emit({ type: "compiled", changed, result, seconds: (performance.now() - since) / 1000 });
      if (settingsKey === null || this.closing || this.active !== null) return;
      const key = runKey(result, settingsKey);
      if (key !== this.lastRunKey) this.startRun(p, result.dir, key, settingsKey);
    } catch (e) {
      this.failed(e, changed);
    }
  }

  private failed(e: unknown, changed: FileChange[]): void {
    const kept = this.good?.dir ?? null;
    if (isUserError(e)) return this.emit({ type: "error", changed, problems: e.problems, internal: false, kept });
    const err = e instanceof Error ? e : new Error(String(e));
    this.emit({ type: "error", changed, problems: [{ message: `internal error: ${err.message}` }], internal: true, kept, ...(err.stack ? { stack: err.stack } : {}) });
  }

  /**
   * Make `wanted` the watched set. With a loaded pipeline, files inside its compiled or output
   * folder are left out (its extends chain is never written by sdc, so it stays). Resolves once
   * chokidar holds a watch on every new file, so a save right after a compile event is seen.
   */
  private async watch(wanted: string[], loaded: { p: LoadedPipeline; dir: string } | null): Promise<void> {
    const skipped: { file: string; reason: string }[] = [];
    const next = new Set<string>([this.file]);
    for (const f of wanted) {
      if (loaded && !loaded.p.sources.includes(f)) {
        if (inside(f, loaded.dir)) {
          skipped.push({ file: f, reason: "it is inside the compiled folder" });
          continue;
        }
        if (inside(f, loaded.p.config.output.dir)) {
          skipped.push({ file: f, reason: "it is inside the output folder" });
          continue;
        }
      }
      next.add(f);
    }
    const first = this.files.size === 0;
    const added = [...next].filter((f) => !this.files.has(f));
    const removed = [...this.files].filter((f) => !next.has(f));
    if (removed.length) this.fsw.unwatch(removed);
    if (added.length) this.fsw.add(added);
    this.files = next;
    await this.settled(added);
    this.pollMissing();
    if (first || added.length || removed.length) {
      const pipeline = loaded ? loaded.p.sources : [this.file];
      const model = loaded?.p.model.path;
      this.emit({ type: "watching", files: [...next], added, removed, skipped, first, pipeline, ...(model ? { model } : {}) });
    }
  }

  /**
   * chokidar does not reliably report a watched file that comes back: a deleted file re-created
   * before chokidar re-watches it (it is then "already there", and ignoreInitial hides it), or one
   * that was missing when the watch began. While any watched file is missing, look for it every
   * 200 ms; when it is back, watch it afresh and treat it as added.
   */
  private pollMissing(): void {
    clearInterval(this.missingTimer);
    const missing = [...this.files].filter((f) => !fs.existsSync(f));
    if (missing.length === 0 || this.closing) return;
    this.missingTimer = setInterval(() => {
      for (const f of missing.splice(0)) {
        if (!fs.existsSync(f) || !this.files.has(f)) {
          if (this.files.has(f)) missing.push(f);
          continue;
        }
        this.fsw.unwatch(f);
        this.fsw.add(f);
        this.onFile("add", f);
      }
      if (missing.length === 0) clearInterval(this.missingTimer);
    }, 200);
    this.missingTimer.unref?.();
  }

  private async settled(files: string[]): Promise<void> {
    const deadline = performance.now() + 5000;
    const watching = (f: string) => this.fsw.getWatched()[path.dirname(f)]?.includes(path.basename(f)) ?? false;
    let missing = files.filter((f) => fs.existsSync(f));
    while (missing.length && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
      missing = missing.filter((f) => !watching(f));
    }
  }

  private startRun(p: LoadedPipeline, dir: string, key: string, settingsKey: string): void {
    const index = ++this.runs;
    const ctrl = new AbortController();
    this.emit({ type: "run-started", index, dir });
    const cancelled = (result?: RunResult) =>
      this.emit({ type: "run-cancelled", index, reason: (ctrl.signal.reason as CancelReason) ?? "superseded", ...(result ? { result } : {}) });
    const done = (async () => {
      try {
        const r = await this.runner(p, {
          compiledDir: dir,
          cwd: this.cwd,
          signal: ctrl.signal,
          runIndex: index,
          progress: false,
          log: (line) => this.emit({ type: "log", line: `  run #${index}: ${line}` }),
        });
        if (r.cancelled) cancelled(r);
        else {
          this.lastRunKey = key;
          this.emit({ type: "run-finished", index, result: r });
        }
      } catch (e) {
        if (ctrl.signal.aborted) return cancelled();
        const err = e instanceof Error ? e : new Error(String(e));
        const problems: Problem[] = isUserError(e) ? e.problems : [{ message: `internal error: ${err.message}` }];
        this.emit({ type: "run-failed", index, problems, internal: !isUserError(e), ...(!isUserError(e) && err.stack ? { stack: err.stack } : {}) });
      } finally {
        if (this.active?.index === index) this.active = null;
      }
    })();
    this.active = { index, key, settingsKey, ctrl, done };
  }

  private async cancelRun(reason: CancelReason): Promise<void> {
    const a = this.active;
    if (!a) return;
    a.ctrl.abort(reason);
    await a.done;
  }
}

function loadOptions(o: WatchOptions): LoadOptions {
  const { overrides, prompt, seed, steps, out, cwd } = o;
  return { overrides, prompt, seed, steps, out, cwd };
}

/** What a run's result depends on: the plan, the run settings and the files it reads at run time. */
function runKey(compiled: CompileResult, settingsKey: string): string {
  return hashValue({ plan: compiled.plan.pipelineHash, settings: settingsKey });
}
