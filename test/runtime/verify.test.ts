/**
 * A compiled folder that does not match its plan.json is refused before a graph runs, naming the
 * file: a graph edited after compiling (its sha256 differs from the plan's), and a graph whose
 * external weights file is gone (a half-copied folder).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { compile } from "../../src/compiler/compile.js";
import { loadPipeline } from "../../src/config/load.js";
import { run, runSettings } from "../../src/pipeline.js";
import { runPlan } from "../../src/runtime/run.js";
import { isUserError } from "../../src/util/errors.js";
import { REPO, tempDir } from "../helpers/repo.js";

async function compiled() {
  const cwd = tempDir("sdc-verify-");
  fs.writeFileSync(path.join(cwd, "p.yaml"), `version: 1\nname: t\nmodel:\n  from: ${JSON.stringify(path.join(REPO, "models", "tiny-sd"))}\nscheduler:\n  type: ddim\n  steps: 2\nruntime:\n  device: cpu\n`);
  const p = await loadPipeline("p.yaml", { cwd });
  const c = await compile(p, { cwd });
  return { cwd, p, dir: c.dir, plan: c.plan };
}

async function refusal(f: () => Promise<unknown>) {
  const e = await f().then(
    () => null,
    (x: unknown) => x,
  );
  expect(isUserError(e), String(e)).toBe(true);
  return (e as Error).message;
}

describe("a compiled folder is checked against plan.json before it runs", () => {
  it("an edited graph file is refused, named, with the recompile hint; a recompile mends it", async () => {
    const { cwd, p, dir, plan } = await compiled();
    const unet = path.join(dir, plan.graphs.unet.file);
    fs.appendFileSync(unet, Buffer.from([0]));
    const msg = await refusal(() => run(p, { cwd, progress: false }));
    expect(msg).toContain(unet);
    expect(msg).toMatch(/does not match plan\.json \(sha256 [0-9a-f]{12}…, the plan says [0-9a-f]{12}…\)/);
    expect(msg).toMatch(/sdc compile --force/);
    expect(fs.existsSync(path.join(cwd, "out", "t")), "no image written").toBe(false);
    const ok = await run(p, { cwd, progress: false, recompile: true });
    expect(ok.outputs).toHaveLength(1);
  });

  it("a missing external weights file is refused, named", async () => {
    const { p, dir, plan } = await compiled();
    const spec = Object.values(plan.graphs).find((g) => g.externalData.length > 0)!;
    expect(spec, "a graph with external data").toBeDefined();
    const data = path.join(dir, path.dirname(spec.file), spec.externalData[0]!);
    fs.rmSync(data);
    const msg = await refusal(() => runPlan(dir, { ...runSettings(p), initImage: null }, { progress: false }));
    expect(msg).toContain(data);
    expect(msg).toMatch(/the compiled folder is incomplete/);
  });

  it("a weights file that is a link leading outside the folder, or a plan naming one outside, is refused", async () => {
    const { p, dir, plan } = await compiled();
    const [name, spec] = Object.entries(plan.graphs).find(([, g]) => g.externalData.length > 0)!;
    const data = path.join(dir, path.dirname(spec.file), spec.externalData[0]!);
    const outside = path.join(tempDir("sdc-outside-"), "weights.bin");
    fs.copyFileSync(data, outside);
    fs.rmSync(data);
    fs.symlinkSync(outside, data);
    const msg = await refusal(() => runPlan(dir, { ...runSettings(p), initImage: null }, { progress: false }));
    expect(msg).toContain(data);
    expect(msg).toMatch(/a link that leads outside it/);
    // a plan.json that names ../ for the weights
    const planFile = path.join(dir, "plan.json");
    const json = JSON.parse(fs.readFileSync(planFile, "utf8"));
    json.graphs[name].externalData = ["../../outside.bin"];
    fs.writeFileSync(planFile, JSON.stringify(json));
    const msg2 = await refusal(() => runPlan(dir, { ...runSettings(p), initImage: null }, { progress: false }));
    expect(msg2).toMatch(/plan\.json names a weights file outside the compiled folder \(\.\.\/\.\.\/outside\.bin\)/);
  });

  it("a plan.json that another process compiled in between (another pipeline into the same folder) is refused, not run with these settings", async () => {
    const { cwd, p, dir, plan } = await compiled();
    // a second pipeline (another scheduler) compiled into the same folder after ours
    fs.writeFileSync(path.join(cwd, "q.yaml"), fs.readFileSync(path.join(cwd, "p.yaml"), "utf8").replace("type: ddim", "type: euler"));
    const other = await compile(await loadPipeline("q.yaml", { cwd }), { cwd, outDir: dir });
    expect(other.plan.pipelineHash).not.toBe(plan.pipelineHash);
    const msg = await refusal(() => runPlan(dir, runSettings(p), { progress: false, expectPipelineHash: plan.pipelineHash }));
    expect(msg).toMatch(/the compiled folder changed between compiling and running/);
    expect(fs.existsSync(path.join(cwd, "out"))).toBe(false);
  });
});
