/**
 * What a watch session reports, as data, and its two renderings: lines for a person and one JSON
 * object per line for tools (`sdc watch --json`).
 *
 * Events are the only way the session talks: the CLI prints them, tests wait for them, and a
 * library user can react to them, so nothing the user should see is hidden in a log string alone.
 */
import * as path from "node:path";
import type { CompileResult } from "../compiler/compile.js";
import { displayPath } from "../config/load.js";
import type { RunResult } from "../runtime/run.js";
import { type Problem, renderProblems } from "../util/errors.js";

/** One file that changed on disk, as chokidar saw it. */
export interface FileChange {
  file: string;
  kind: "add" | "change" | "unlink";
}

export type WatchEvent =
  /**
   * The watched set changed (first: the initial set). `pipeline`: the YAML chain; `model`: the
   * model folder or file, when loaded; `skipped`: named files left out, and why.
   */
  | {
      type: "watching";
      files: string[];
      added: string[];
      removed: string[];
      skipped: { file: string; reason: string }[];
      first: boolean;
      pipeline: string[];
      model?: string;
    }
  /** Saves settled (debounced): a rebuild starts. */
  | { type: "change"; files: FileChange[] }
  /**
   * A compile finished: the plan in `result.dir` is ready. `seconds` runs from the first file event
   * of the batch (the save, debounce included) to now; `result.seconds` is the compile alone.
   */
  | { type: "compiled"; changed: FileChange[]; result: CompileResult; seconds: number }
  /** A load or compile failed; the last good plan (`kept`, if any) stays as it was. */
  | { type: "error"; changed: FileChange[]; problems: Problem[]; internal: boolean; kept: string | null; stack?: string }
  /** A progress line of the compiler or the runner. */
  | { type: "log"; line: string }
  | { type: "run-started"; index: number; dir: string }
  | { type: "run-finished"; index: number; result: RunResult }
  /** A run stopped early: superseded by a newer plan, or the watcher closed. */
  | { type: "run-cancelled"; index: number; reason: CancelReason; result?: RunResult }
  | { type: "run-failed"; index: number; problems: Problem[]; internal: boolean; stack?: string }
  | { type: "closed" };

export type CancelReason = "superseded" | "closed";

export type WatchEventType = WatchEvent["type"];

const secs = (s: number) => `${s.toFixed(2)} s`;
const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** Lines for a person; null for events not worth a line. */
export function formatEvent(e: WatchEvent, cwd: string): string | null {
  const show = (f: string) => displayPath(f, cwd);
  const list = (files: string[], max = 4) =>
    files.length <= max ? files.map(show).join(", ") : `${files.slice(0, max).map(show).join(", ")} and ${files.length - max} more`;
  switch (e.type) {
    case "watching": {
      const skipped = e.skipped.map((s) => `\n  not watching ${show(s.file)}: ${s.reason}`).join("");
      if (e.first) {
        const model = e.model;
        const ofModel = model ? e.files.filter((f) => f === model || f.startsWith(model + path.sep)) : [];
        const others = e.files.filter((f) => !e.pipeline.includes(f) && !ofModel.includes(f));
        const modelPart = ofModel.length ? ` and ${plural(ofModel.length, "model file")} in ${show(model!)}` : "";
        return `watching ${list(e.pipeline)}${modelPart}${others.length ? `; also ${list(others)}` : ""}${skipped}`;
      }
      const parts = [...(e.added.length ? [`now also watching ${list(e.added)}`] : []), ...(e.removed.length ? [`stopped watching ${list(e.removed)}`] : [])];
      return parts.length || skipped ? `${parts.join("; ")}${skipped}` : null;
    }
    case "change":
      return `changed: ${e.files.map((c) => `${show(c.file)}${c.kind === "unlink" ? " (deleted)" : c.kind === "add" ? " (created)" : ""}`).join(", ")}`;
    case "compiled": {
      const r = e.result;
      if (r.upToDate) return `plan unchanged (${secs(e.seconds)}): ${show(r.dir)} is up to date`;
      const what = r.rebuilt.length === 0 ? "plan only, no graph rebuilt" : `rebuilt ${r.rebuilt.join(", ")}${r.reused.length ? `; kept ${r.reused.join(", ")}` : ""}`;
      const timing = e.changed.length ? `${secs(e.seconds)} after the save, compile ${secs(r.seconds)}` : secs(r.seconds);
      return `plan ready (${timing}): ${what} → ${show(r.dir)}`;
    }
    case "error": {
      const n = e.problems.length;
      const kept = e.kept ? `keeping the last good plan in ${show(e.kept)}` : "no plan compiled yet";
      const head = e.internal ? renderProblems(e.problems) + (e.stack ? `\n${e.stack}` : "") : renderProblems(e.problems);
      return `${head}\n${e.internal ? "internal error" : plural(n, "problem")}; ${kept}. Save again to retry.`;
    }
    case "log":
      return e.line;
    case "run-started":
      return `run #${e.index} started`;
    case "run-finished": {
      const r = e.result;
      const outs = r.outputs.length ? `: ${list(r.outputs)}` : "";
      return `run #${e.index} finished in ${secs(r.seconds)} (${r.itPerSec.toFixed(1)} it/s, ${r.ep})${outs}`;
    }
    case "run-cancelled":
      return `run #${e.index} cancelled${e.reason === "superseded" ? " (a newer plan replaces it)" : ""}`;
    case "run-failed":
      return `run #${e.index} failed:\n${renderProblems(e.problems)}${e.stack ? `\n${e.stack}` : ""}`;
    case "closed":
      return "stopped watching";
  }
}

/** One JSON object (one line) per event; file paths as shown to a person, the plan left out. */
export function eventJson(e: WatchEvent, cwd: string): string {
  const show = (f: string) => displayPath(f, cwd);
  const changes = (cs: FileChange[]) => cs.map((c) => ({ file: show(c.file), kind: c.kind }));
  const body = ((): Record<string, unknown> => {
    switch (e.type) {
      case "watching":
        return {
          ...e,
          files: e.files.map(show),
          added: e.added.map(show),
          removed: e.removed.map(show),
          skipped: e.skipped.map((s) => ({ ...s, file: show(s.file) })),
          pipeline: e.pipeline.map(show),
          ...(e.model ? { model: show(e.model) } : {}),
        };
      case "change":
        return { type: e.type, files: changes(e.files) };
      case "compiled": {
        const r = e.result;
        return { type: e.type, changed: changes(e.changed), dir: show(r.dir), rebuilt: r.rebuilt, reused: r.reused, upToDate: r.upToDate, seconds: e.seconds, compileSeconds: r.seconds };
      }
      case "error":
        return { ...e, changed: changes(e.changed), kept: e.kept && show(e.kept) };
      case "run-started":
        return { ...e, dir: show(e.dir) };
      case "run-finished":
        return { type: e.type, index: e.index, outputs: e.result.outputs.map(show), seconds: e.result.seconds, itPerSec: e.result.itPerSec, ep: e.result.ep };
      case "run-cancelled":
        return { type: e.type, index: e.index, reason: e.reason };
      default:
        return { ...e };
    }
  })();
  return JSON.stringify(body);
}
