/**
 * A watch soak: 200 scripted saves of a pipeline and its base, about a quarter of them invalid (broken
 * YAML, unknown keys, out-of-range values, a base that goes missing), with editors' rename-saves,
 * deletions and re-creations, in bursts faster than the debounce and in pauses longer than it. The
 * watcher survives all of it (no internal error, still watching both files), the final compiled
 * plan equals a fresh compile of the final files, and the heap does not grow with the edits.
 * The edit script comes from sdc's seeded generator, so a failure replays.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as v8 from "node:v8";
import * as vm from "node:vm";
import { afterEach, describe, expect, it } from "vitest";
import { compile } from "../../src/compiler/compile.js";
import { loadPipeline } from "../../src/config/load.js";
import { TorchGenerator } from "../../src/runtime/rng.js";
import type { WatchEvent } from "../../src/watch/events.js";
import { startWatch, type WatchSession } from "../../src/watch/watch.js";
import { MODEL, Recorder, renameSave, tempProject, write } from "../watch/helpers.js";
import { SCALE } from "./scale.js";

const EDITS = 200 * SCALE;

/** The heap that survives a full garbage collection (retained, not garbage not yet collected). */
function retainedHeap(): number {
  v8.setFlagsFromString("--expose-gc");
  (vm.runInNewContext("gc") as () => void)();
  return process.memoryUsage().heapUsed;
}

const base = (steps: number, scale: number) => `version: 1\nmodel:\n  from: ${JSON.stringify(MODEL)}\nscheduler:\n  type: ddim\n  steps: ${steps}\nguidance:\n  scale: ${scale}\n`;
const pipe = (prompt: string, extra = "") => `version: 1\nname: p\nextends: base.yaml\nsample:\n  prompt: ${prompt}\n${extra}`;

/** A quarter of the saves: each breaks the pipeline in a different way. */
const INVALID: ((dir: string) => void)[] = [
  (d) => write(d, "p.yaml", "version: 1\nname: p\nextends: base.yaml\nsample:\n  prompt: [unclosed\n"),
  (d) => write(d, "p.yaml", pipe("a cat", "guidance:\n  scael: 3\n")),
  (d) => write(d, "p.yaml", pipe("a cat", "guidance:\n  scale: -2\n")),
  (d) => write(d, "base.yaml", base(0, 7.5)),
  (d) => fs.rmSync(path.join(d, "base.yaml"), { force: true }),
  (d) => write(d, "p.yaml", "\t\u0000 not yaml at all ::: \n"),
];

const sessions: WatchSession[] = [];
afterEach(async () => {
  await Promise.all(sessions.splice(0).map((s) => s.close()));
});

describe("watch soak", () => {
  it(`survives ${EDITS} saves, about a quarter invalid, and ends on the plan a fresh compile makes`, async () => {
    const dir = tempProject({ "base.yaml": base(20, 7.5), "p.yaml": pipe("a cat") });
    const rec = new Recorder();
    // the recorder keeps every event: keep them slim, so the heap measured is the watcher's, not the test's
    const slim = (e: WatchEvent): WatchEvent =>
      e.type === "compiled" ? ({ ...e, changed: [], result: { ...e.result, plan: { scheduler: e.result.plan.scheduler, pipelineHash: e.result.plan.pipelineHash } } } as unknown as WatchEvent) : e.type === "watching" ? ({ type: "watching" } as WatchEvent) : e;
    const s = await startWatch("p.yaml", { cwd: dir, outDir: "compiled", onEvent: (e) => rec.push(slim(e)), debounceMs: 40 });
    sessions.push(s);
    await rec.next("compiled", 0);

    const g = new TorchGenerator(2026);
    const u = () => g.random() / 2 ** 32;
    let invalid = 0, renames = 0, deletions = 0;
    let heapAt50 = 0;
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    for (let i = 0; i < EDITS; i++) {
      const r = u();
      if (r < 0.25) {
        INVALID[Math.floor(u() * INVALID.length)]!(dir);
        invalid++;
      } else {
        // a valid save; the base comes back if an invalid one removed or broke it
        if (!fs.existsSync(path.join(dir, "base.yaml")) || u() < 0.3) write(dir, "base.yaml", base(5 + Math.floor(u() * 40), 1 + Math.round(u() * 90) / 10));
        const text = pipe(`a cat number ${i}`);
        if (u() < 0.3) {
          renameSave(dir, "p.yaml", text);
          renames++;
        } else if (u() < 0.15) {
          fs.rmSync(path.join(dir, "p.yaml"));
          deletions++;
          await sleep(u() * 60);
          write(dir, "p.yaml", text);
        } else write(dir, "p.yaml", text);
      }
      // bursts inside the debounce, and pauses long enough for a compile
      await sleep(u() < 0.5 ? u() * 20 : 40 + u() * 160);
      if (i === 50) heapAt50 = retainedHeap();
    }

    // the final save: valid, and the watcher settles on it
    write(dir, "base.yaml", base(33, 6.5));
    const m = rec.mark();
    write(dir, "p.yaml", pipe("the final cat"));
    const last = await rec.next("compiled", m, (e) => e.result.plan.scheduler.steps === 33, 60_000);
    await sleep(300); // nothing else is pending
    const heapAtEnd = retainedHeap();

    // it survived: no internal error, still watching both files
    const errors = rec.events.filter((e) => e.type === "error");
    expect(errors.filter((e) => e.type === "error" && e.internal)).toEqual([]);
    expect(errors.length).toBeGreaterThan(0);
    expect(s.watched()).toEqual(expect.arrayContaining([path.join(dir, "p.yaml"), path.join(dir, "base.yaml")]));

    // the final plan is what a fresh compile of the final files gives
    const fresh = await compile(await loadPipeline("p.yaml", { cwd: dir }), { cwd: dir, outDir: path.join(dir, "fresh") });
    const strip = (p: Record<string, unknown>) => JSON.parse(JSON.stringify(p, (k, v) => (k === "compiledAt" || k === "seconds" ? undefined : v)));
    const watched = JSON.parse(fs.readFileSync(path.join(dir, "compiled", "plan.json"), "utf8"));
    const freshPlan = JSON.parse(fs.readFileSync(path.join(fresh.dir, "plan.json"), "utf8"));
    expect(strip(watched)).toEqual(strip(freshPlan));
    expect(last.result.plan.pipelineHash).toBe(fresh.plan.pipelineHash);

    // flat memory: the edits after the 50th left less than 10 MB more retained heap
    expect(heapAtEnd - heapAt50).toBeLessThan(10 * 2 ** 20);
    const compiles = rec.events.filter((e) => e.type === "compiled").length;
    console.log(
      `watch soak: ${EDITS} saves (${invalid} invalid, ${renames} rename-saves, ${deletions} delete-and-recreate), ${compiles} compiles, ${errors.length} errors reported, retained heap ${((heapAtEnd - heapAt50) / 2 ** 20).toFixed(2)} MB more after the last ${EDITS - 50}`,
    );
  }, 240_000 * SCALE);
});
