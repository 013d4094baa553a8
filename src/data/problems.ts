/**
 * Located problems about dataset files and config options.
 *
 * A problem in a metadata file points at its line and column with a caret snippet (the format of
 * the config errors); a problem about an option points where the pipeline wrote it (through the
 * loaded pipeline's `where`), or names the option when there is no file to point at.
 */
import * as path from "node:path";
import type { Where } from "../config/origins.js";
import { formatPath, type Path } from "../config/source.js";
import type { Problem } from "../util/errors.js";

/** Where a config path was written (LoadedPipeline.where). */
export type WhereFn = (path: Path, mode?: "key" | "value") => Where;

/** Where-function used without a loaded pipeline: the option's name. */
export const nameOnly: WhereFn = (p) => ({ subject: formatPath(p) });

/** A path as shown in messages: relative to `base` when inside it, with forward slashes. */
export function relativeDisplay(base: string): (abs: string) => string {
  return (abs) => {
    const rel = path.relative(base, abs);
    return rel && !rel.startsWith("..") && !path.isAbsolute(rel) ? rel.split(path.sep).join("/") : rel === "" ? "." : abs;
  };
}

const MAX_SNIPPET = 100;

/** A problem at line:col (1-based; col in UTF-16 units) of a text file, with a caret snippet. */
export function lineProblem(
  file: string,
  line: number,
  lineText: string,
  col: number,
  width: number,
  message: string,
  hint?: string,
): Problem {
  const text = lineText.replace(/\r$/, "");
  let shown = text;
  let caretCol = col;
  // Long rows (JSON lines can be kilobytes): a window around the column.
  if (text.length > MAX_SNIPPET) {
    const from = Math.max(0, Math.min(col - 1 - 30, text.length - MAX_SNIPPET));
    const to = Math.min(text.length, from + MAX_SNIPPET);
    shown = `${from > 0 ? "…" : ""}${text.slice(from, to)}${to < text.length ? "…" : ""}`;
    caretCol = col - from + (from > 0 ? 1 : 0);
  }
  const w = Math.max(1, Math.min(width, shown.length - caretCol + 1));
  const gutter = String(line);
  const pad = " ".repeat(gutter.length);
  const prefix = shown.slice(0, caretCol - 1).replace(/[^\t]/g, " ");
  const snippet = `  ${gutter} | ${shown}\n  ${pad} | ${prefix}${"^".repeat(w)}`;
  return { message, at: { file, line, col, endCol: col + Math.max(1, width) }, snippet, ...(hint ? { hint } : {}) };
}

/** Keep the first `max` problems and say how many more there were. */
export function capProblems(problems: Problem[], max = 10, what = "problems"): Problem[] {
  if (problems.length <= max) return problems;
  const rest = problems.length - max;
  return [...problems.slice(0, max), { message: `… and ${rest} more ${what}`, subject: "data" }];
}

/** " (set at file:line)" for a config value a message mentions. */
export function setAt(w: Where): string {
  return w.at ? ` (set at ${w.at.file}:${w.at.line})` : w.subject && !w.subject.startsWith("train.") ? ` (set by ${w.subject})` : "";
}
