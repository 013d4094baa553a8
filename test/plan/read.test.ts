/**
 * The plan reader (src/plan/read.ts): the one reader of plan.json, used by `sdc run`, `sdc inspect`
 * and the compiler. A missing, unparsable, other-format or damaged plan is a UserError located in
 * the file (line and column of the JSON path), saying what was expected and to run `sdc compile`;
 * the runner and inspect report the very same problems; the compiler rebuilds such a plan.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { compile } from "../../src/compiler/compile.js";
import { inspect } from "../../src/compiler/inspect.js";
import { readPlan, readPlanFile, readPlanIfValid } from "../../src/plan/read.js";
import type { LoadedPipeline } from "../../src/config/load.js";
import { runSettings } from "../../src/pipeline.js";
import { runPlan } from "../../src/runtime/run.js";
import { isUserError, type Problem } from "../../src/util/errors.js";
import { tempDir } from "../helpers/repo.js";
import { compileFixture } from "../helpers/pipeline.js";

let good: string;
let compiledDir: string;
let p: LoadedPipeline;
const HINT = "run `sdc compile <pipeline.yaml>` to (re)build it";

beforeAll(async () => {
  const c = await compileFixture("tiny-sd1");
  const r = c.r;
  p = c.p;
  compiledDir = r.dir;
  good = fs.readFileSync(path.join(r.dir, "plan.json"), "utf8");
});

/** A folder holding only a plan.json with this text; returns the folder. */
function planFolder(text: string): string {
  const dir = tempDir("sdc-plan-");
  fs.writeFileSync(path.join(dir, "plan.json"), text);
  return dir;
}

function problemsOf(f: () => unknown): Problem[] {
  try {
    f();
  } catch (e) {
    if (isUserError(e)) return e.problems;
    throw e;
  }
  throw new Error("expected a UserError");
}

async function asyncProblemsOf(p: Promise<unknown>): Promise<Problem[]> {
  try {
    await p;
  } catch (e) {
    if (isUserError(e)) return e.problems;
    throw e;
  }
  throw new Error("expected a UserError");
}

describe("readPlan", () => {
  it("reads what the compiler wrote", () => {
    const plan = readPlan(compiledDir);
    expect(plan.name).toBe("p");
    expect(readPlanFile(path.join(compiledDir, "plan.json"))).toEqual(plan);
  });

  it("a folder without plan.json, or no folder at all", () => {
    const empty = tempDir("sdc-plan-");
    expect(problemsOf(() => readPlan(empty, { cwd: path.dirname(empty) }))).toEqual([
      { message: "no plan.json: this is not a compiled pipeline folder (or its compile never finished)", subject: path.basename(empty), hint: HINT },
    ]);
    expect(problemsOf(() => readPlan(path.join(empty, "nope"), { cwd: empty }))).toEqual([{ message: "no compiled pipeline here: the folder does not exist", subject: "nope", hint: HINT }]);
  });

  it("text that is not JSON: located at the syntax error", () => {
    const dir = planFolder(good.replace('"format": "sdc-plan/2",', '"format": "sdc-plan/2"'));
    const [p] = problemsOf(() => readPlan(dir, { cwd: dir }));
    expect(p!.at).toMatchObject({ file: "plan.json", line: 3, col: 3 });
    expect(p!.hint).toContain(HINT);
  });

  it("another format version: located at the format value", () => {
    const dir = planFolder(good.replace('"sdc-plan/2"', '"sdc-plan/0"'));
    const [p] = problemsOf(() => readPlan(dir, { cwd: dir }));
    expect(p).toMatchObject({
      message: 'plan.json has format "sdc-plan/0"; this sdc reads sdc-plan/2',
      at: { file: "plan.json", line: 2, col: 13 },
      hint: `it was written by another version of sdc; ${HINT}`,
    });
  });

  it("a value of the wrong type: located at its JSON path, saying what was expected", () => {
    const text = good.replace(/"steps": \d+/, '"steps": "many"');
    const dir = planFolder(text);
    const line = text.split("\n").findIndex((l) => l.includes('"many"')) + 1;
    const problems = problemsOf(() => readPlan(dir, { cwd: dir }));
    expect(problems).toHaveLength(1);
    expect(problems[0]!.message).toMatch(/^plan\.json is damaged: scheduler\.steps: /);
    expect(problems[0]!.message).toContain("expected");
    expect(problems[0]!.at).toMatchObject({ file: "plan.json", line });
    expect(problems[0]!.hint).toContain(HINT);
  });

  it("the runner and inspect report the reader's problems, unchanged", async () => {
    const dir = planFolder(good.replace(/"steps": \d+/, '"steps": "many"'));
    const want = problemsOf(() => readPlan(dir));
    expect(await asyncProblemsOf(runPlan(dir, runSettings(p)))).toEqual(want);
    expect(await asyncProblemsOf(inspect(dir))).toEqual(want);
  });
});

describe("the compiler and an unreadable plan", () => {
  it("readPlanIfValid is null for a missing or damaged plan, and compile rebuilds it", async () => {
    const { p, r } = await compileFixture("tiny-sd1");
    expect(readPlanIfValid(r.dir)).toEqual(r.plan);
    fs.writeFileSync(path.join(r.dir, "plan.json"), "{");
    expect(readPlanIfValid(r.dir)).toBeNull();
    expect(readPlanIfValid(path.join(r.dir, "nope"))).toBeNull();
    const again = await compile(p, { outDir: r.dir });
    expect(again.upToDate).toBe(false);
    expect(readPlan(r.dir)).toEqual(again.plan);
  });
});
