/**
 * `watch --run` compiles exactly once per save, with the real runner: the run gets the folder the
 * watcher just compiled and does not compile (or hash the pipeline for staleness) again. The
 * compiler module is wrapped to count its calls from the outside.
 */
import * as path from "node:path";
import { describe, expect, it, vi } from "vitest";
import type * as CompileModule from "../../src/compiler/compile.js";
import { startWatch } from "../../src/watch/watch.js";
import { snapshot } from "../compiler/helpers.js";
import { modelPipeline, Recorder, tempProject, watchSessions, write } from "./helpers.js";

const calls = vi.hoisted(() => ({ compile: 0, compileKeys: 0 }));

vi.mock("../../src/compiler/compile.js", async (importOriginal) => {
  const m = await importOriginal<typeof CompileModule>();
  return {
    ...m,
    compile: (...args: Parameters<typeof m.compile>) => (calls.compile++, m.compile(...args)),
    compileKeys: (...args: Parameters<typeof m.compileKeys>) => (calls.compileKeys++, m.compileKeys(...args)),
  };
});

const pipe = (extra = "") => modelPipeline(2, extra);

const sessions = watchSessions();

describe("watch --run compiles once per save", () => {
  it("first compile, a plan edit, a prompt edit, a comment: one compile each, no other staleness check", async () => {
    const dir = tempProject({ "p.yaml": pipe("sample:\n  prompt: a cat\n") });
    const compiled = path.join(dir, "compiled");
    const rec = new Recorder();
    const s = await startWatch("p.yaml", { cwd: dir, outDir: "compiled", run: true, onEvent: rec.push });
    sessions.push(s);
    await rec.next("run-finished", 0, (e) => e.index === 1);
    expect(calls).toEqual({ compile: 1, compileKeys: 0 });

    // a plan edit: the plan is rewritten once and the new plan runs
    let m = rec.mark();
    write(dir, "p.yaml", pipe("sample:\n  prompt: a cat\n").replace("steps: 2", "steps: 3"));
    await rec.next("run-finished", m, (e) => e.index === 2);
    expect((await rec.next("compiled", m)).result.upToDate).toBe(false);
    expect(calls).toEqual({ compile: 2, compileKeys: 0 });

    // a prompt edit: one (up-to-date) compile that writes nothing, and a run with the new prompt
    const before = snapshot(compiled);
    m = rec.mark();
    write(dir, "p.yaml", pipe("sample:\n  prompt: a dog\n").replace("steps: 2", "steps: 3"));
    const run3 = await rec.next("run-finished", m, (e) => e.index === 3);
    expect((await rec.next("compiled", m)).result.upToDate).toBe(true);
    expect(calls).toEqual({ compile: 3, compileKeys: 0 });
    expect(snapshot(compiled)).toEqual(before);
    expect(run3.result.outputs.map((f) => path.relative(dir, f))).toEqual(["out/run003-00002-0.png"]);

    // a comment: one compile, nothing to run
    m = rec.mark();
    write(dir, "p.yaml", `# note\n${pipe("sample:\n  prompt: a dog\n").replace("steps: 2", "steps: 3")}`);
    await rec.next("compiled", m);
    expect(rec.typesSince(m)).toEqual(["change", "compiled"]);
    expect(calls).toEqual({ compile: 4, compileKeys: 0 });
  });
});
