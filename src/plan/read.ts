/**
 * Reading plan.json: the one reader that everything holding a compiled folder uses (`sdc run`,
 * `sdc inspect`, the compiler when it looks at its previous output). Every problem is a located
 * UserError: the file, the line and column of the JSON path, what was expected there, and a hint
 * to run `sdc compile`.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { issuesToProblems } from "../config/issues.js";
import { whereInSource } from "../config/origins.js";
import { parseSource } from "../config/source.js";
import { isUserError, UserError, type Problem } from "../util/errors.js";
import { recoverDir } from "../util/fs.js";
import { displayPath } from "../util/paths.js";
import { PLAN_FILE, PLAN_FORMAT, PlanSchema, type Plan } from "./schema.js";

export interface ReadPlanOptions {
  /** Paths in messages are shown relative to this folder (default: process.cwd()). */
  cwd?: string;
}

export const RECOMPILE_HINT = "run `sdc compile <pipeline.yaml>` to (re)build it";

/** The plan of a compiled folder. */
export function readPlan(dir: string, opts: ReadPlanOptions = {}): Plan {
  const show = shower(opts);
  // a compile killed between its two renames left the folder beside its place: put it back
  recoverDir(dir);
  const file = path.join(dir, PLAN_FILE);
  if (!fs.existsSync(file)) {
    const what = fs.existsSync(dir) ? "no plan.json: this is not a compiled pipeline folder (or its compile never finished)" : "no compiled pipeline here: the folder does not exist";
    throw new UserError({ message: what, subject: show(dir), hint: RECOMPILE_HINT });
  }
  return readPlanFile(file, opts);
}

/** plan.json, parsed and validated; every problem located in the file. */
export function readPlanFile(file: string, opts: ReadPlanOptions = {}): Plan {
  const show = shower(opts);
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new UserError({ message: `cannot read plan.json (${(e as NodeJS.ErrnoException).code ?? String(e)})`, subject: show(file), hint: RECOMPILE_HINT });
  }
  const parsed = parseSource(file, show(file), text);
  const withHint = (p: Problem): Problem => ({ ...p, hint: p.hint ? `${p.hint}; or ${RECOMPILE_HINT}` : RECOMPILE_HINT });
  if (parsed.problems.length) throw new UserError(parsed.problems.map(withHint));
  const value = parsed.value as Record<string, unknown> | undefined;
  if (value && typeof value === "object" && "format" in value && value.format !== PLAN_FORMAT) {
    throw new UserError({
      message: `plan.json has format ${JSON.stringify(value.format)}; this sdc reads ${PLAN_FORMAT}`,
      ...whereInSource(parsed.source, ["format"], "value"),
      hint: `it was written by another version of sdc; ${RECOMPILE_HINT}`,
    });
  }
  const r = PlanSchema.safeParse(value);
  if (!r.success) {
    const problems = issuesToProblems(PlanSchema, value, r.error.issues, (p, mode) => whereInSource(parsed.source, p, mode));
    throw new UserError(problems.map((p) => withHint({ ...p, message: `plan.json is damaged: ${p.message}` })));
  }
  return r.data;
}

/**
 * The plan of a compiled folder when there is a valid one, else null: for the compiler, which
 * rebuilds a missing, older or damaged plan rather than trusting it.
 */
export function readPlanIfValid(dir: string): Plan | null {
  try {
    return readPlan(dir);
  } catch (e) {
    if (isUserError(e)) return null;
    throw e;
  }
}

function shower(opts: ReadPlanOptions): (p: string) => string {
  const cwd = opts.cwd ?? process.cwd();
  return (p) => displayPath(p, cwd);
}
