/**
 * The watcher with a real chokidar in a temp folder, over the tiny-sd1 fixture: which saves rebuild
 * which graphs (told by each graph file's inode and mtime, and the plan's build hashes), invalid
 * edits and their fix, editor-style saves (rename over, delete and write again), bursts, edits to
 * an extends base, a LoRA joining the watched set. Waits are on events with generous timeouts,
 * never fixed sleeps.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { GRAPH_NAMES } from "../../src/plan/schema.js";
import { startWatch, type WatchOptions, type WatchSession } from "../../src/watch/watch.js";
import { graphPrints, LORA, MODEL, readPlanJson, Recorder, renameSave, rewritten, tempProject, write } from "./helpers.js";

const BASE = `version: 1
model:
  from: ${JSON.stringify(MODEL)}
scheduler:
  type: pndm
  steps: 20
guidance:
  scale: 7.5
`;

/** The pipeline file: extends base.yaml; `extra` is appended (top-level YAML). */
const pipe = (extra = "") => `version: 1
name: p
extends: base.yaml
sample:
  prompt: a cat
${extra}`;

const sessions: WatchSession[] = [];
afterEach(async () => {
  await Promise.all(sessions.splice(0).map((s) => s.close()));
});

async function start(files: Record<string, string | Buffer> = {}, opts: WatchOptions = {}) {
  const dir = tempProject({ "base.yaml": BASE, "p.yaml": pipe(), ...files });
  const rec = new Recorder();
  const compiled = path.join(dir, "compiled");
  const s = await startWatch("p.yaml", { cwd: dir, outDir: "compiled", onEvent: rec.push, ...opts });
  sessions.push(s);
  return { dir, rec, compiled, s };
}

describe("watch: start", () => {
  it("compiles once and watches the pipeline, its base, the model's configs and weights: nothing in compiled/", async () => {
    const { dir, rec, compiled, s } = await start();
    const compiledEvents = rec.events.filter((e) => e.type === "compiled");
    expect(compiledEvents).toHaveLength(1);
    const first = await rec.next("compiled", 0);
    expect([...first.result.rebuilt].sort()).toEqual([...GRAPH_NAMES].sort());
    expect(first.changed).toEqual([]);
    expect(first.result.dir).toBe(compiled);

    const rel = (f: string) => (f.startsWith(MODEL) ? `model:${path.relative(MODEL, f)}` : path.relative(dir, f));
    expect(s.watched().map(rel).sort()).toEqual(
      [
        "p.yaml",
        "base.yaml",
        "model:model_index.json",
        "model:scheduler/scheduler_config.json",
        "model:unet/config.json",
        "model:unet/diffusion_pytorch_model.safetensors",
        "model:vae/config.json",
        "model:vae/diffusion_pytorch_model.safetensors",
        "model:text_encoder/config.json",
        "model:text_encoder/model.safetensors",
      ].sort(),
    );
    const watching = await rec.next("watching", 0);
    expect(watching.first).toBe(true);
    expect(s.watched().some((f) => f.startsWith(compiled))).toBe(false);
    // the watching event comes before the compile, so a save right after "compiled" is seen
    expect(rec.typesSince(0)).toEqual(["watching", "compiled"]);
  });

  it("a pipeline that fails at start is reported, watched, and compiled once fixed", async () => {
    const { dir, rec, compiled, s } = await start({ "p.yaml": pipe("guidance:\n  scale: -1\n") });
    const err = await rec.next("error", 0);
    expect(err.internal).toBe(false);
    expect(err.kept).toBeNull();
    expect(err.problems).toHaveLength(1);
    expect(err.problems[0]).toMatchObject({ message: "guidance.scale: -1 is too small", at: { file: "p.yaml", line: 7, col: 10 } });
    expect(fs.existsSync(compiled)).toBe(false);
    expect(s.watched()).toContain(path.join(dir, "p.yaml"));
    const m = rec.mark();
    write(dir, "p.yaml", pipe());
    const ok = await rec.settled(m);
    expect(ok.type).toBe("compiled");
    expect(readPlanJson(compiled).name).toBe("p");
  });
});

describe("watch: what a save rebuilds", () => {
  it("a scheduler edit rewrites plan.json and no graph", async () => {
    const { dir, rec, compiled } = await start();
    const before = graphPrints(compiled);
    const hashes = readPlanJson(compiled).graphs;
    const m = rec.mark();
    write(dir, "p.yaml", pipe("scheduler:\n  type: ddim\n  steps: 12\n"));
    const e = await rec.next("compiled", m);
    expect(e.changed).toEqual([{ file: path.join(dir, "p.yaml"), kind: "change" }]);
    expect(e.result.rebuilt).toEqual([]);
    expect(e.result.upToDate).toBe(false);
    expect(rewritten(before, graphPrints(compiled))).toEqual([]);
    const plan = readPlanJson(compiled);
    expect(plan.scheduler).toMatchObject({ className: "DDIMScheduler", steps: 12 });
    expect(plan.graphs).toEqual(hashes);
    expect(rec.typesSince(m)).toEqual(["change", "compiled"]);
  });

  it("a U-Net architecture edit rebuilds the unet alone", async () => {
    const { dir, rec, compiled } = await start();
    const before = graphPrints(compiled);
    const oldPlan = readPlanJson(compiled);
    const m = rec.mark();
    // 4 heads of 4 instead of 2 of 8: same weights, another attention split
    write(dir, "p.yaml", pipe("model:\n  unet:\n    attention_head_dim: 4\n"));
    const e = await rec.next("compiled", m);
    expect(e.result.rebuilt).toEqual(["unet"]);
    expect(rewritten(before, graphPrints(compiled))).toEqual(["unet"]);
    const plan = readPlanJson(compiled);
    expect(plan.graphs.unet.buildHash).not.toBe(oldPlan.graphs.unet.buildHash);
    for (const g of ["text_encoder", "vae_decoder", "vae_encoder"]) expect(plan.graphs[g]).toEqual(oldPlan.graphs[g]);
  });

  it("clip_skip rebuilds the text encoder alone", async () => {
    const { dir, rec, compiled } = await start();
    const before = graphPrints(compiled);
    const m = rec.mark();
    write(dir, "p.yaml", pipe("model:\n  text_encoder:\n    clip_skip: 1\n"));
    const e = await rec.next("compiled", m);
    expect(e.result.rebuilt).toEqual(["text_encoder"]);
    expect(rewritten(before, graphPrints(compiled))).toEqual(["text_encoder"]);
  });

  it("an edit that leaves the config as it was (a comment) changes nothing", async () => {
    const { dir, rec, compiled } = await start();
    const plan = fs.statSync(path.join(compiled, "plan.json"));
    const m = rec.mark();
    write(dir, "p.yaml", `# a comment\n${pipe()}`);
    const e = await rec.next("compiled", m);
    expect(e.result.upToDate).toBe(true);
    const after = fs.statSync(path.join(compiled, "plan.json"));
    expect([after.ino, after.mtimeMs]).toEqual([plan.ino, plan.mtimeMs]);
  });

  it("an edit to the extends base is seen and rebuilds what it touches", async () => {
    const { dir, rec, compiled } = await start();
    const before = graphPrints(compiled);
    let m = rec.mark();
    write(dir, "base.yaml", BASE.replace("steps: 20", "steps: 15"));
    const e = await rec.next("compiled", m);
    expect(e.changed).toEqual([{ file: path.join(dir, "base.yaml"), kind: "change" }]);
    expect(e.result.rebuilt).toEqual([]);
    expect(readPlanJson(compiled).scheduler.steps).toBe(15);

    m = rec.mark();
    // a VAE architecture edit in the base (GroupNorm with 2 groups instead of 4: same weights): both VAE graphs
    write(dir, "base.yaml", BASE.replace("steps: 20", "steps: 15").replace("model:\n", "model:\n  vae:\n    norm_num_groups: 2\n"));
    const f = await rec.next("compiled", m);
    expect([...f.result.rebuilt].sort()).toEqual(["vae_decoder", "vae_encoder"]);
    expect(rewritten(before, graphPrints(compiled)).sort()).toEqual(["vae_decoder", "vae_encoder"]);

    // a broken base is located in the base file
    m = rec.mark();
    write(dir, "base.yaml", BASE.replace("steps: 20", "steps: twenty"));
    const err = await rec.next("error", m);
    expect(err.problems[0]!.at).toMatchObject({ file: "base.yaml", line: 6 });
  });
});

describe("watch: invalid edits and editor saves", () => {
  it("an invalid edit is reported with its location, keeps the last good plan, and the fix recompiles", async () => {
    const { dir, rec, compiled, s } = await start();
    const dirStat = fs.statSync(compiled);
    const planStat = fs.statSync(path.join(compiled, "plan.json"));
    const prints = graphPrints(compiled);

    let m = rec.mark();
    write(dir, "p.yaml", pipe("scheduler:\n  stpes: 25\n"));
    const err = await rec.settled(m);
    expect(err.type).toBe("error");
    if (err.type !== "error") return;
    expect(err.internal).toBe(false);
    expect(err.kept).toBe(compiled);
    expect(err.problems).toHaveLength(1);
    expect(err.problems[0]).toMatchObject({ message: 'unknown key "stpes" in scheduler', at: { file: "p.yaml", line: 7, col: 3 }, hint: 'did you mean "steps"?' });

    // a YAML syntax error next: still reported, still the same compiled folder
    m = rec.mark();
    write(dir, "p.yaml", pipe("scheduler: [unclosed\n"));
    const syntax = await rec.next("error", m);
    expect(syntax.problems[0]!.at?.file).toBe("p.yaml");

    for (const [a, b] of [
      [fs.statSync(compiled), dirStat],
      [fs.statSync(path.join(compiled, "plan.json")), planStat],
    ] as const)
      expect([a.ino, a.mtimeMs]).toEqual([b.ino, b.mtimeMs]);
    expect(rewritten(prints, graphPrints(compiled))).toEqual([]);
    expect(s.lastGood()?.plan.scheduler.steps).toBe(20);

    m = rec.mark();
    write(dir, "p.yaml", pipe("scheduler:\n  steps: 25\n"));
    const ok = await rec.settled(m);
    expect(ok.type).toBe("compiled");
    expect(readPlanJson(compiled).scheduler.steps).toBe(25);
    expect(rewritten(prints, graphPrints(compiled))).toEqual([]);
  });

  it("rename-saves (write a temp file, rename it over) are seen, again and again", async () => {
    const { dir, rec, compiled } = await start();
    for (const steps of [11, 12, 13]) {
      const m = rec.mark();
      renameSave(dir, "p.yaml", pipe(`scheduler:\n  steps: ${steps}\n`));
      const e = await rec.settled(m);
      expect(e.type).toBe("compiled");
      expect(readPlanJson(compiled).scheduler.steps).toBe(steps);
    }
    // the base too
    const m = rec.mark();
    renameSave(dir, "base.yaml", BASE.replace("type: pndm", "type: ddim"));
    await rec.next("compiled", m);
    expect(readPlanJson(compiled).scheduler.className).toBe("DDIMScheduler");
  });

  it("a deleted pipeline file is an error until it is written again", async () => {
    const { dir, rec, compiled } = await start();
    let m = rec.mark();
    fs.rmSync(path.join(dir, "p.yaml"));
    const err = await rec.next("error", m);
    expect(err.problems[0]).toMatchObject({ message: "cannot read the pipeline file: no such file", subject: "p.yaml" });
    expect(err.changed).toEqual([{ file: path.join(dir, "p.yaml"), kind: "unlink" }]);
    m = rec.mark();
    write(dir, "p.yaml", pipe("scheduler:\n  steps: 9\n"));
    await rec.next("compiled", m);
    expect(readPlanJson(compiled).scheduler.steps).toBe(9);
  });

  it("a burst of saves is one rebuild, of the last version", async () => {
    const { dir, rec, compiled } = await start();
    const m = rec.mark();
    // synchronous writes: the watcher sees them only after they are all done
    for (const steps of [31, 32, 33, 34]) write(dir, "p.yaml", pipe(`scheduler:\n  steps: ${steps}\n`));
    write(dir, "base.yaml", BASE.replace("scale: 7.5", "scale: 5"));
    const e = await rec.next("compiled", m);
    expect(e.changed.map((c) => path.basename(c.file)).sort()).toEqual(["base.yaml", "p.yaml"]);
    expect(readPlanJson(compiled).scheduler.steps).toBe(34);
    // a later save, to see that no second rebuild came from the burst
    const m2 = rec.mark();
    write(dir, "p.yaml", pipe("scheduler:\n  steps: 35\n"));
    await rec.next("compiled", m2);
    expect(rec.typesSince(m)).toEqual(["change", "compiled", "change", "compiled"]);
  });

  it("an internal error is reported and the watcher goes on", async () => {
    // the compiled folder's parent is a file: creating the folder fails (not a user error)
    const { dir, rec, s } = await start({ blocker: "not a folder" }, { outDir: "blocker/compiled" });
    const err = await rec.next("error", 0);
    expect(err.internal).toBe(true);
    expect(err.problems[0]!.message).toMatch(/^internal error: E[A-Z]+: .*blocker/);
    expect(err.stack).toBeDefined();
    fs.rmSync(path.join(dir, "blocker"));
    const m = rec.mark();
    write(dir, "p.yaml", pipe("scheduler:\n  steps: 8\n"));
    const ok = await rec.next("compiled", m);
    expect(ok.result.dir).toBe(path.join(dir, "blocker", "compiled"));
    expect(s.lastGood()?.plan.scheduler.steps).toBe(8);
  });
});

describe("watch: the watched set follows the pipeline", () => {
  it("a LoRA named by an edit is watched; rewriting it rebuilds unet and text encoder; dropping it unwatches it", async () => {
    const { dir, rec, compiled, s } = await start();
    fs.copyFileSync(LORA, path.join(dir, "style.safetensors"));
    const lora = path.join(dir, "style.safetensors");
    let m = rec.mark();
    write(dir, "p.yaml", pipe("model:\n  lora:\n    - file: style.safetensors\n      scale: 0.8\n"));
    const e = await rec.next("compiled", m);
    expect([...e.result.rebuilt].sort()).toEqual(["text_encoder", "unet"]);
    const w = await rec.next("watching", m);
    expect(w.added).toEqual([lora]);
    expect(s.watched()).toContain(lora);

    const before = graphPrints(compiled);
    m = rec.mark();
    // retrained: same size, new bytes and mtime (the compiler identifies weights by size + mtime)
    const bytes = fs.readFileSync(LORA);
    bytes[bytes.length - 1] ^= 1;
    fs.writeFileSync(lora, bytes);
    const f = await rec.next("compiled", m);
    expect(f.changed).toEqual([{ file: lora, kind: "change" }]);
    expect(rewritten(before, graphPrints(compiled)).sort()).toEqual(["text_encoder", "unet"]);

    m = rec.mark();
    write(dir, "p.yaml", pipe());
    await rec.next("compiled", m);
    expect((await rec.next("watching", m)).removed).toEqual([lora]);
    expect(s.watched()).not.toContain(lora);
  });

  it("a new extends base joins the watched set", async () => {
    const { dir, rec, compiled, s } = await start({ "more.yaml": "version: 1\nextends: base.yaml\nscheduler:\n  steps: 2\n" });
    let m = rec.mark();
    write(dir, "p.yaml", pipe().replace("extends: base.yaml", "extends: more.yaml"));
    await rec.next("compiled", m);
    expect(s.watched()).toContain(path.join(dir, "more.yaml"));
    expect(readPlanJson(compiled).scheduler.steps).toBe(2);
    m = rec.mark();
    write(dir, "more.yaml", "version: 1\nextends: base.yaml\nscheduler:\n  steps: 6\n");
    await rec.next("compiled", m);
    expect(readPlanJson(compiled).scheduler.steps).toBe(6);
  });

  it("files inside the compiled or output folder are never watched", async () => {
    // a LoRA kept in the output folder: named by the pipeline, but left out (and said so)
    const { dir, rec, s } = await start({ "p.yaml": pipe("output:\n  dir: out\nmodel:\n  lora:\n    - file: out/l.safetensors\n"), "out/l.safetensors": fs.readFileSync(LORA) });
    const w = await rec.next("watching", 0);
    expect(w.skipped).toEqual([{ file: path.join(dir, "out", "l.safetensors"), reason: "it is inside the output folder" }]);
    expect(s.watched().some((f) => f.includes(`${path.sep}out${path.sep}`))).toBe(false);
  }, 60_000);
});
