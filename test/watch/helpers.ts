/**
 * Watch-test helpers: a pipeline project in a temp folder (over the tiny-sd1 fixture model), an
 * event recorder to wait on ("the compile after this save"), graph-file fingerprints (inode +
 * mtime) to tell rewritten graphs from kept ones, and a fake runner that takes steps and honours
 * its abort signal between them, as the real runner does.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { RunOptions } from "../../src/pipeline.js";
import type { RunResult } from "../../src/runtime/run.js";
import type { LoadedPipeline } from "../../src/config/load.js";
import { GRAPH_NAMES, type GraphName } from "../../src/plan/schema.js";
import { renderProblems } from "../../src/util/errors.js";
import type { WatchEvent, WatchEventType } from "../../src/watch/events.js";
import type { WatchSession } from "../../src/watch/watch.js";
import { afterEach } from "vitest";
import { MODEL_FIXTURES, tempDir } from "../helpers/repo.js";

export { REPO } from "../helpers/repo.js";
export const MODEL = path.join(MODEL_FIXTURES, "tiny-sd1");
export const LORA = path.join(MODEL_FIXTURES, "lora", "tiny-sd1.diffusers.safetensors");

/** A pipeline over the tiny model writing to out/, with `extra` YAML appended. */
export function modelPipeline(steps: number, extra = ""): string {
  return `version: 1\nname: p\nmodel:\n  from: ${JSON.stringify(MODEL)}\nscheduler:\n  steps: ${steps}\noutput:\n  dir: out\n${extra}`;
}

/** The watch sessions a test file starts, closed after each test. */
export function watchSessions(): WatchSession[] {
  const sessions: WatchSession[] = [];
  afterEach(async () => {
    await Promise.all(sessions.splice(0).map((s) => s.close()));
  });
  return sessions;
}

export function tempProject(files: Record<string, string | Buffer>): string {
  const dir = tempDir("sdc-watch-");
  for (const [rel, text] of Object.entries(files)) write(dir, rel, text);
  return dir;
}

export function write(dir: string, rel: string, text: string | Buffer): void {
  fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
  fs.writeFileSync(path.join(dir, rel), text);
}

/** An editor's atomic save: write a temporary sibling, rename it over the file. */
export function renameSave(dir: string, rel: string, text: string): void {
  const tmp = path.join(dir, `${rel}.tmp-${process.pid}`);
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, path.join(dir, rel));
}

type Of<T extends WatchEventType> = Extract<WatchEvent, { type: T }>;

/** Every event in order; `next` waits for the first event of a type at or after a mark. */
export class Recorder {
  readonly events: WatchEvent[] = [];
  private waiters: (() => void)[] = [];

  readonly push = (e: WatchEvent): void => {
    this.events.push(e);
    for (const w of this.waiters.splice(0)) w();
  };

  mark(): number {
    return this.events.length;
  }

  since(mark: number): WatchEvent[] {
    return this.events.slice(mark);
  }

  /** Types of the events since a mark, logs left out (for order assertions). */
  typesSince(mark: number): string[] {
    return this.since(mark)
      .filter((e) => e.type !== "log")
      .map((e) => ("index" in e ? `${e.type} #${e.index}` : e.type));
  }

  async next<T extends WatchEventType>(types: T | T[], from: number, where: (e: Of<T>) => boolean = () => true, timeoutMs = 60_000): Promise<Of<T>> {
    const wanted = Array.isArray(types) ? types : [types];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.events.slice(from).find((e): e is Of<T> => (wanted as string[]).includes(e.type) && where(e as Of<T>));
      if (hit) return hit;
      // waiting for a compile that an error has already ruled out: say what it was
      const err = wanted.length === 1 && wanted[0] === "compiled" ? this.events.slice(from).find((e) => e.type === "error") : undefined;
      if (err?.type === "error") throw new Error(`expected ${wanted.join("/")}, got an error:\n${renderProblems(err.problems)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${wanted.join("/")} event within ${timeoutMs} ms; got: ${this.typesSince(from).join(", ")}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** The compile (or error) that follows a save made after `mark`. */
  settled(mark: number): Promise<Of<"compiled" | "error">> {
    return this.next(["compiled", "error"], mark);
  }
}

export interface Fingerprint {
  ino: number;
  mtimeMs: number;
}

/** Inode and mtime of each graph's model.onnx: a kept graph keeps both (it is hard-linked). */
export function graphPrints(compiled: string): Record<GraphName, Fingerprint> {
  return Object.fromEntries(
    GRAPH_NAMES.map((g) => {
      const st = fs.statSync(path.join(compiled, g, "model.onnx"));
      return [g, { ino: st.ino, mtimeMs: st.mtimeMs }];
    }),
  ) as Record<GraphName, Fingerprint>;
}

/** The graphs whose file was rewritten between two fingerprints. */
export function rewritten(before: Record<GraphName, Fingerprint>, after: Record<GraphName, Fingerprint>): GraphName[] {
  return GRAPH_NAMES.filter((g) => before[g].ino !== after[g].ino || before[g].mtimeMs !== after[g].mtimeMs);
}

export function readPlanJson(compiled: string): Record<string, any> {
  return JSON.parse(fs.readFileSync(path.join(compiled, "plan.json"), "utf8"));
}

export interface FakeRunCall {
  index: number;
  compiledDir: string;
  steps: number;
  /** Steps completed when the run saw its signal aborted (undefined: ran to the end). */
  stoppedAt?: number;
  outputs: string[];
}

/**
 * A runner that takes `steps(index)` steps of `stepMs` each, checks its signal between steps like
 * the real sampling loop, and writes one file per run into the pipeline's output folder, named by
 * the run counter. `hold(index)`: the run keeps stepping until that promise resolves (so a test
 * decides when it ends); `fail(index)` makes a run throw that error instead.
 */
export function fakeRunner(opts: {
  steps: (index: number) => number;
  stepMs?: number;
  hold?: (index: number) => Promise<void> | undefined;
  fail?: (index: number) => Error | undefined;
}) {
  const calls: FakeRunCall[] = [];
  const runner = async (p: LoadedPipeline, o: RunOptions = {}): Promise<RunResult> => {
    const index = o.runIndex ?? 0;
    const call: FakeRunCall = { index, compiledDir: o.compiledDir ?? "", steps: opts.steps(index), outputs: [] };
    calls.push(call);
    const t0 = performance.now();
    const err = opts.fail?.(index);
    if (err) throw err;
    const hold = opts.hold?.(index);
    let released = hold === undefined;
    void hold?.then(() => (released = true));
    for (let i = 0; i < call.steps || !released; i++) {
      if (o.signal?.aborted) {
        call.stoppedAt = i;
        return { outputs: [], summary: "cancelled", cancelled: true, ep: "cpu", seconds: (performance.now() - t0) / 1000, itPerSec: 0 };
      }
      await new Promise((r) => setTimeout(r, opts.stepMs ?? 10));
    }
    const out = path.join(p.config.output.dir, `${String(index).padStart(5, "0")}.png`);
    write(path.dirname(out), path.basename(out), `run ${index}`);
    call.outputs.push(out);
    const seconds = (performance.now() - t0) / 1000;
    return { outputs: [out], summary: `wrote ${out}`, cancelled: false, ep: "cpu", seconds, itPerSec: call.steps / seconds };
  };
  return { runner, calls };
}
