/**
 * `sdc inspect`: the plan of a compiled folder, its plan.json, or a pipeline file's compiled folder,
 * described for a person (numbers taken from the plan, shapes symbolic), staleness against the
 * pipeline file and the run settings it gives (not part of the plan), changed sources, damaged graph files; `--json` prints the plan itself; a missing
 * or damaged plan is a located user error (exit 2) that says to run `sdc compile`.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { beforeEach, describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { compile } from "../../src/compiler/compile.js";
import { inspect } from "../../src/compiler/inspect.js";
import { GRAPH_NAMES, type Plan } from "../../src/plan/schema.js";
import { copyFixture, pipelineIn, tmp } from "./helpers.js";

let work: string;
let plan: Plan;
const P = "p.yaml";

async function compileHere(extra = ""): Promise<Plan> {
  const p = await pipelineIn(work, path.join(work, "tiny-sd1"), extra, { file: P });
  return (await compile(p, { cwd: work })).plan;
}

/** Rewrite p.yaml (as compileHere wrote it) with other settings, without compiling. */
function editYaml(extra: string): void {
  fs.writeFileSync(path.join(work, P), `version: 1\nname: p\nmodel:\n  from: ${JSON.stringify(path.join(work, "tiny-sd1"))}\n${extra}`);
}

async function sdc(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const code = await main(argv, { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t), cwd: work });
  return { code, stdout, stderr };
}

beforeEach(async () => {
  work = tmp();
  copyFixture("tiny-sd1", work);
  plan = await compileHere("sample:\n  prompt: a lighthouse at dusk\n  seed: 7\nguidance:\n  scale: 5\n");
});

describe("sdc inspect describes the plan", () => {
  it("per graph: file, nodes, parameters, bytes linked vs written, typed symbolic inputs/outputs, requirements, notes", async () => {
    const r = await inspect("compiled/p", { cwd: work });
    expect(r.plan).toEqual(plan);
    expect(r.dir).toBe(path.join(work, "compiled", "p"));
    expect(r).toMatchObject({ stale: null, changedSources: [], damaged: [] });
    const s = r.summary;
    expect(s.split("\n")[0]).toBe("compiled/p: p (sdc-plan/2, sdc 0.1.0)");
    expect(s).toContain(`  model      diffusers tiny-sd1 [${plan.model.hash}]\n  precision  fp32, device auto\n`);
    expect(s).toContain("  scheduler  PNDMScheduler, 50 steps, epsilon, leading spacing\n  images     any size whose sides are multiples of 2 pixels, any batch\n");
    expect(s).toContain("  vae        scaling factor 0.18215, 2 pixels per latent, 4 latent channels\n");
    expect(s).toContain('  tokenizer  tokenizer/, 77 tokens, pad "<|endoftext|>"\n');
    // run settings are not in the plan: a folder has none to show
    expect(s).not.toContain("lighthouse");
    expect(s).not.toContain("guidance");
    for (const g of GRAPH_NAMES) {
      const spec = plan.graphs[g];
      const block = s.slice(s.indexOf(`\n  ${g}  ${g}/model.onnx\n`));
      expect(block, g).toContain(`    graph      ${spec.nodes} nodes, ${(spec.parameters / 1e6).toFixed(2)} M parameters, fp32\n`);
      for (const v of [...spec.inputs, ...spec.outputs]) expect(block).toContain(`${v.name} ${v.dtype}[${v.shape.join(", ")}]`);
      expect(block).toContain(spec.notes[0]!);
    }
    expect(s).toContain("    inputs     sample float32[batch, 4, height, width]\n               timestep float32[batch]\n               encoder_hidden_states float32[batch, sequence, 32]\n");
    expect(s).toContain("    outputs    sample float32[batch, 3, 2*height, 2*width]\n"); // the VAE decoder
    // an SD U-Net takes any latent size (odd ones round up and upsample to the skips): no requirements
    expect(plan.graphs.unet.requirements).toEqual([]);
    expect(s).not.toContain("    requires ");
    // sizes: what the plan says, split into linked (the checkpoint's bytes) and written
    expect(plan.graphs.unet.bytesLinked).toBe(773632);
    expect(s).toMatch(/\n {4}on disk {4}model\.onnx [\d.]+ kB; weights 774 kB linked \(in the checkpoint\), 0 B written \(diffusion_pytorch_model\.safetensors\)\n/);
    expect(s).toContain("weights 6.39 MB linked (in the checkpoint), 23.7 kB written (model.safetensors, model.onnx_data)");
    const total = GRAPH_NAMES.reduce((n, g) => n + plan.graphs[g].parameters, 0);
    expect(s.trimEnd().split("\n").pop()).toBe(`  4 graphs, ${(total / 1e6).toFixed(2)} M parameters; weights 7.32 MB linked from the checkpoint, 23.7 kB written by the compiler`);
  });

  it("takes the folder, its plan.json or the pipeline file alike", async () => {
    const a = await inspect("compiled/p", { cwd: work });
    const b = await inspect("compiled/p/plan.json", { cwd: work });
    const c = await inspect(P, { cwd: work });
    expect(b.plan).toEqual(a.plan);
    expect(c.plan).toEqual(a.plan);
    expect(b.summary).toBe(a.summary);
    // the pipeline file adds its status, and the run settings it gives the runner
    const runSettings = [
      "",
      "  run settings from p.yaml (given to the runner with each run, not part of the plan)",
      "    guidance   scale 5",
      "    sample     16×16, batch 1, seed 7",
      '    prompt     "a lighthouse at dusk"',
      "    output     out/p (png)",
      "",
    ].join("\n");
    expect(c.summary).toBe(
      a.summary
        .replace("  precision  fp32, device auto\n", "  precision  fp32, device auto\n  status     up to date with p.yaml\n")
        .replace('pad "<|endoftext|>"\n', `pad "<|endoftext|>"\n${runSettings}`),
    );
  });

  it("given the pipeline file, says whether the plan is stale and what the next compile would redo", async () => {
    // run settings are not compiled: another prompt, seed or guidance leaves the plan up to date
    editYaml("sample:\n  prompt: a lighthouse at dawn\n  seed: 8\nguidance:\n  scale: 6\n");
    const run = await inspect(P, { cwd: work });
    expect(run.stale).toEqual({ graphs: [], plan: false });
    expect(run.summary).toContain("  status     up to date with p.yaml\n");
    expect(run.summary).toContain('    prompt     "a lighthouse at dawn"\n');

    editYaml("scheduler:\n  steps: 20\nsample:\n  prompt: a lighthouse at dusk\n  seed: 7\nguidance:\n  scale: 5\n");
    const settings = await inspect(P, { cwd: work });
    expect(settings.stale).toEqual({ graphs: [], plan: true });
    expect(settings.summary).toContain("  status     stale against p.yaml: the next compile rewrites plan.json\n");
    expect(settings.changedSources).toEqual(["p.yaml"]);
    expect(settings.summary).toContain("  changed    since the compile: p.yaml\n");

    editYaml("  unet:\n    attention_head_dim: 4\n");
    const arch = await inspect(P, { cwd: work });
    expect(arch.stale).toEqual({ graphs: ["unet"], plan: true });
    expect(arch.summary).toContain("stale against p.yaml: the next compile rebuilds unet and rewrites plan.json");

    // and it agrees with what compile then does
    const r = await compile(await pipelineIn(work, path.join(work, "tiny-sd1"), "  unet:\n    attention_head_dim: 4\n", { file: P }), { cwd: work });
    expect(r.rebuilt).toEqual(["unet"]);
    expect((await inspect(P, { cwd: work })).stale).toEqual({ graphs: [], plan: false });
  });

  it("notices changed weights and damaged graph files", async () => {
    const weights = path.join(work, "tiny-sd1", "unet", "diffusion_pytorch_model.safetensors");
    const later = new Date(Date.now() + 60_000);
    fs.utimesSync(weights, later, later);
    fs.appendFileSync(path.join(work, "compiled", "p", "vae_decoder", "model.onnx"), "x");
    fs.rmSync(path.join(work, "compiled", "p", "vae_encoder", "diffusion_pytorch_model.safetensors"));
    const r = await inspect("compiled/p", { cwd: work });
    expect(r.changedSources).toEqual(["tiny-sd1/unet/diffusion_pytorch_model.safetensors"]);
    expect(r.damaged).toEqual(["compiled/p/vae_decoder/model.onnx", "compiled/p/vae_encoder/diffusion_pytorch_model.safetensors"]);
    expect(r.summary).toContain(
      "  damaged    missing or modified: compiled/p/vae_decoder/model.onnx, compiled/p/vae_encoder/diffusion_pytorch_model.safetensors (sdc compile --force rebuilds them)\n",
    );
    // from the pipeline file, the new weights make the unet stale
    expect((await inspect(P, { cwd: work })).stale).toEqual({ graphs: ["unet"], plan: true });
  });

  it("sdc inspect prints the summary; --json prints plan.json as data", async () => {
    const text = await sdc("inspect", "compiled/p");
    expect(text).toMatchObject({ code: 0, stderr: "" });
    expect(text.stdout).toBe(`${(await inspect("compiled/p", { cwd: work })).summary}\n`);
    const json = await sdc("inspect", P, "--json");
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual(JSON.parse(fs.readFileSync(path.join(work, "compiled", "p", "plan.json"), "utf8")));
  });
});

describe("sdc inspect errors (exit 2, say to run sdc compile)", () => {
  const planFile = () => path.join(work, "compiled", "p", "plan.json");

  it("a target that does not exist", async () => {
    const r = await sdc("inspect", "compiled/q");
    expect(r).toMatchObject({ code: 2, stdout: "" });
    expect(r.stderr).toBe(
      "compiled/q: does not exist\n  hint: give a compiled folder (compiled/<name>), its plan.json, or the pipeline YAML file it was compiled from\n\n1 problem found.\n",
    );
  });

  it("a folder without plan.json", async () => {
    const r = await sdc("inspect", "tiny-sd1");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("tiny-sd1: no plan.json: this is not a compiled pipeline folder (or its compile never finished)\n  hint: run `sdc compile <pipeline.yaml>` to (re)build it\n");
  });

  it("a pipeline that was never compiled", async () => {
    fs.writeFileSync(path.join(work, "other.yaml"), `version: 1\nname: other\nmodel:\n  from: tiny-sd1\n`);
    const r = await sdc("inspect", "other.yaml");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("other.yaml: has not been compiled: compiled/other/plan.json does not exist\n  hint: run `sdc compile other.yaml`\n");
  });

  it("a plan.json that is not JSON: located", async () => {
    fs.writeFileSync(planFile(), fs.readFileSync(planFile(), "utf8").replace('"format": "sdc-plan/2",', '"format": "sdc-plan/2"'));
    const r = await sdc("inspect", "compiled/p");
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^compiled\/p\/plan\.json:3:3: /);
    expect(r.stderr).toContain("run `sdc compile <pipeline.yaml>` to (re)build it");
  });

  it("a plan.json that fails the schema: located at the bad value", async () => {
    const text = fs.readFileSync(planFile(), "utf8");
    const bad = text.replace(`"sha256": "${plan.graphs.unet.sha256}"`, '"sha256": "not-a-hash"');
    fs.writeFileSync(planFile(), bad);
    const line = bad.split("\n").findIndex((l) => l.includes("not-a-hash")) + 1;
    const r = await sdc("inspect", "compiled/p");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`compiled/p/plan.json:${line}:17: plan.json is damaged: graphs.unet.sha256`);
    expect(r.stderr).toContain('     "sha256": "not-a-hash",');
    expect(r.stderr).toContain("run `sdc compile <pipeline.yaml>` to (re)build it");
  });

  it("a plan of another format version", async () => {
    fs.writeFileSync(planFile(), fs.readFileSync(planFile(), "utf8").replace('"sdc-plan/2"', '"sdc-plan/1"'));
    const r = await sdc("inspect", "compiled/p/plan.json");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('compiled/p/plan.json:2:13: plan.json has format "sdc-plan/1"; this sdc reads sdc-plan/2\n');
    expect(r.stderr).toContain("hint: it was written by another version of sdc; run `sdc compile <pipeline.yaml>` to (re)build it");
  });

  it("neither folder, JSON nor YAML", async () => {
    const r = await sdc("inspect", "compiled/p/unet/model.onnx");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("compiled/p/unet/model.onnx: is neither a compiled folder, a plan.json nor a pipeline YAML file");
  });
});
