/**
 * `watch --run` with a fake runner (the real one is `runCompiled`; its contract is the same: take
 * steps, stop between steps when the signal aborts, name outputs by the run counter). A save that
 * changes the plan or the run settings cancels the run in progress and runs the new ones; edits
 * that leave both as they were, and invalid edits, leave a run alone; failed runs are reported and
 * retried on the next save.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { UserError } from "../../src/util/errors.js";
import { startWatch } from "../../src/watch/watch.js";
import { fakeRunner, modelPipeline, readPlanJson, Recorder, REPO, tempProject, watchSessions, write } from "./helpers.js";

const pipe = (extra = "") => modelPipeline(20, extra);

const sessions = watchSessions();

async function start(runner: ReturnType<typeof fakeRunner>["runner"], files: Record<string, string | Buffer> = {}) {
  const dir = tempProject({ "p.yaml": pipe(), ...files });
  const rec = new Recorder();
  const s = await startWatch("p.yaml", { cwd: dir, outDir: "compiled", run: true, runner, onEvent: rec.push });
  sessions.push(s);
  return { dir, rec, s, compiled: path.join(dir, "compiled") };
}

/** A promise the test resolves when it wants a held run to end. */
function gate() {
  let open!: () => void;
  const p = new Promise<void>((r) => (open = r));
  return { p, open };
}

describe("watch --run", () => {
  it("runs after the first compile; a save during a run cancels it between steps and runs the new plan, numbered", async () => {
    const g = gate();
    const fake = fakeRunner({ steps: () => 3, hold: (i) => (i === 1 ? g.p : undefined) });
    const { dir, rec, compiled } = await start(fake.runner);
    await rec.next("run-started", 0, (e) => e.index === 1);
    const m = rec.mark();
    write(dir, "p.yaml", pipe().replace("steps: 20", "steps: 7"));
    await rec.next("run-finished", m, (e) => e.index === 2);
    expect(rec.typesSince(m)).toEqual(["change", "run-cancelled #1", "compiled", "run-started #2", "run-finished #2"]);
    expect((await rec.next("run-cancelled", m)).reason).toBe("superseded");

    expect(fake.calls.map((c) => c.index)).toEqual([1, 2]);
    // run 1 stopped at a step boundary, having seen its signal; run 2 got the new plan's folder
    expect(fake.calls[0]!.stoppedAt).toBeGreaterThanOrEqual(0);
    expect(fake.calls[1]).toMatchObject({ compiledDir: compiled, outputs: [path.join(dir, "out", "00002.png")] });
    expect(fake.calls[1]!.stoppedAt).toBeUndefined();
    expect(readPlanJson(compiled).scheduler.steps).toBe(7);
    const done = await rec.next("run-finished", m);
    expect(done.result.outputs).toEqual([path.join(dir, "out", "00002.png")]);
    expect(fs.readFileSync(path.join(dir, "out", "00002.png"), "utf8")).toBe("run 2");
    g.open();
  });

  it("an invalid edit or an edit that leaves plan and run settings as they were does not touch the run; the next change does", async () => {
    const g = gate();
    const fake = fakeRunner({ steps: () => 2, hold: (i) => (i === 2 ? g.p : undefined) });
    const { dir, rec } = await start(fake.runner);
    await rec.next("run-finished", 0, (e) => e.index === 1);

    // a comment: the plan is up to date, and the same plan is not run twice
    let m = rec.mark();
    write(dir, "p.yaml", `# tweak\n${pipe()}`);
    expect((await rec.next("compiled", m)).result.upToDate).toBe(true);
    expect(rec.typesSince(m)).toEqual(["change", "compiled"]); // a run would have started with the compile event

    // a run-settings change (guidance is not compiled): run 2 starts and is held
    write(dir, "p.yaml", pipe("guidance:\n  scale: 3\n"));
    await rec.next("run-started", m, (e) => e.index === 2);

    // while it runs: an invalid edit, then the valid text back (plan and settings unchanged): run 2 goes on
    m = rec.mark();
    write(dir, "p.yaml", pipe("guidance:\n  scale: -3\n"));
    await rec.next("error", m);
    const m2 = rec.mark();
    write(dir, "p.yaml", `# again\n${pipe("guidance:\n  scale: 3\n")}`);
    expect((await rec.next("compiled", m2)).result.upToDate).toBe(true);
    g.open();
    await rec.next("run-finished", m, (e) => e.index === 2);
    expect(rec.typesSince(m)).toEqual(["change", "error", "change", "compiled", "run-finished #2"]);
    expect(fake.calls.map((c) => [c.index, c.stoppedAt])).toEqual([
      [1, undefined],
      [2, undefined],
    ]);
  });

  it("a failed run is reported (located user error, or internal with its stack); the next save runs again", async () => {
    const fake = fakeRunner({
      steps: () => 1,
      fail: (i) => (i === 1 ? new UserError({ message: "init image is 13×7 pixels", subject: "sample.init_image", hint: "use a multiple of 8" }) : i === 2 ? new Error("boom") : undefined),
    });
    const { dir, rec } = await start(fake.runner);
    const f1 = await rec.next("run-failed", 0);
    expect(f1).toMatchObject({ index: 1, internal: false, problems: [{ message: "init image is 13×7 pixels", subject: "sample.init_image", hint: "use a multiple of 8" }] });
    expect(f1.stack).toBeUndefined();

    // the plan is unchanged, but the last run did not finish: a save retries it
    let m = rec.mark();
    write(dir, "p.yaml", `# retry\n${pipe()}`);
    const f2 = await rec.next("run-failed", m);
    expect(f2).toMatchObject({ index: 2, internal: true, problems: [{ message: "internal error: boom" }] });
    expect(f2.stack).toMatch(/^Error: boom\n\s+at /);

    m = rec.mark();
    write(dir, "p.yaml", `# retry again\n${pipe()}`);
    await rec.next("run-finished", m, (e) => e.index === 3);
  });

  it("with --run the init image is watched: replacing it re-runs without rebuilding anything", async () => {
    const png = fs.readFileSync(path.join(REPO, "examples", "init.png"));
    const fake = fakeRunner({ steps: () => 1 });
    const { dir, rec, s } = await start(fake.runner, { "p.yaml": pipe("sample:\n  init_image: init.png\n"), "init.png": png });
    await rec.next("run-finished", 0, (e) => e.index === 1);
    expect(s.watched()).toContain(path.join(dir, "init.png"));
    const m = rec.mark();
    fs.writeFileSync(path.join(dir, "init.png"), Buffer.concat([png, Buffer.from([0])]));
    await rec.next("run-finished", m, (e) => e.index === 2);
    const c = await rec.next("compiled", m);
    expect(c.result.upToDate).toBe(true);
    expect(c.changed).toEqual([{ file: path.join(dir, "init.png"), kind: "change" }]);
  });

  it("with the real runner: each plan change writes the next numbered images into the output folder", async () => {
    const dir = tempProject({ "p.yaml": pipe("sample:\n  seed: 7\n").replace("steps: 20", "steps: 3") });
    const rec = new Recorder();
    const s = await startWatch("p.yaml", { cwd: dir, outDir: "compiled", run: true, onEvent: rec.push });
    sessions.push(s);
    const r1 = await rec.next("run-finished", 0, (e) => e.index === 1);
    const m = rec.mark();
    write(dir, "p.yaml", pipe("sample:\n  seed: 7\n").replace("steps: 20", "steps: 4"));
    const r2 = await rec.next("run-finished", m, (e) => e.index === 2);
    expect([r1, r2].map((e) => e.result.outputs.map((f) => path.relative(dir, f)))).toEqual([["out/run001-00000-7.png"], ["out/run002-00001-7.png"]]);
    for (const f of [...r1.result.outputs, ...r2.result.outputs]) expect(fs.statSync(f).size).toBeGreaterThan(100);
    expect(rec.typesSince(m)).toEqual(["change", "compiled", "run-started #2", "run-finished #2"]);
  });

  it("closing cancels a run in progress, then says it stopped", async () => {
    const fake = fakeRunner({ steps: () => 1, hold: () => new Promise(() => {}) });
    const { rec, s } = await start(fake.runner);
    await rec.next("run-started", 0);
    const m = rec.mark();
    await s.close();
    expect(rec.typesSince(m)).toEqual(["run-cancelled #1", "closed"]);
    expect((await rec.next("run-cancelled", m)).reason).toBe("closed");
    expect(fake.calls[0]!.stoppedAt).toBeGreaterThanOrEqual(0);
  });
});
