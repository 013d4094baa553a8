/**
 * Incremental and atomic compiles. Each graph is rebuilt only when its build hash changes (its
 * architecture, options or weight files); a scheduler edit rewrites plan.json alone, and run
 * settings (prompts, guidance, size, seed, output) are not compiled at all; reused
 * graph files keep their inode and mtime (hard-linked into the new folder, not rewritten). A compile
 * that fails midway leaves the previous folder byte-identical and no temporary folder behind.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { beforeEach, describe, expect, it } from "vitest";
import { compile, type CompileOptions, type CompileResult } from "../../src/compiler/compile.js";
import { GRAPH_NAMES, type GraphName } from "../../src/plan/schema.js";
import { isUserError, type Problem } from "../../src/util/errors.js";
import { copyFixture, graphFiles, nudged, pipelineIn, rewriteSafetensors, snapshot, tmp } from "./helpers.js";

let work: string;
let model: string;
let out: string;

beforeEach(() => {
  work = tmp();
  model = copyFixture("tiny-sd1", work);
  out = path.join(work, "compiled", "p");
});

async function compileYaml(extra = "", opts: CompileOptions = {}): Promise<CompileResult> {
  return compile(await pipelineIn(work, model, extra), { outDir: out, ...opts });
}

async function problemsOf(p: Promise<unknown>): Promise<Problem[]> {
  try {
    await p;
  } catch (e) {
    if (isUserError(e)) return e.problems;
    throw e;
  }
  throw new Error("expected a UserError, but the compile succeeded");
}

const others = (g: GraphName[]) => GRAPH_NAMES.filter((n) => !g.includes(n));

/** The graphs whose files (inode, mtime, bytes) are identical in both snapshots. */
function untouched(a: ReturnType<typeof snapshot>, b: ReturnType<typeof snapshot>): GraphName[] {
  return GRAPH_NAMES.filter((g) => JSON.stringify(graphFiles(a, g)) === JSON.stringify(graphFiles(b, g)));
}

describe("incremental", () => {
  it("recompiling an unchanged pipeline is up to date and writes nothing", async () => {
    await compileYaml();
    const before = snapshot(out);
    const r = await compileYaml();
    expect(r).toMatchObject({ upToDate: true, rebuilt: [], reused: GRAPH_NAMES });
    expect(r.summary).toMatch(/ is up to date$/);
    expect(snapshot(out)).toEqual(before); // plan.json included: same inode, same mtime
  });

  it("a scheduler edit rewrites plan.json (and the scheduler files) only", async () => {
    await compileYaml();
    const before = snapshot(out);
    const r = await compileYaml("scheduler:\n  type: ddim\n  steps: 7\n");
    expect(r).toMatchObject({ upToDate: false, rebuilt: [], reused: GRAPH_NAMES });
    expect(r.summary).toContain("graphs unchanged, plan rewritten");
    const after = snapshot(out);
    expect(untouched(before, after)).toEqual(GRAPH_NAMES);
    expect(after["plan.json"]!.sha256).not.toBe(before["plan.json"]!.sha256);
    expect(r.plan.scheduler).toMatchObject({ className: "DDIMScheduler", steps: 7 });
    expect(JSON.parse(fs.readFileSync(path.join(out, "model_index.json"), "utf8")).scheduler).toEqual(["diffusers", "DDIMScheduler"]);
    expect(JSON.parse(fs.readFileSync(path.join(out, "scheduler", "scheduler_config.json"), "utf8"))._class_name).toBe("DDIMScheduler");
    // and back: the plan changes again, the graphs still do not
    const back = await compileYaml();
    expect(back.rebuilt).toEqual([]);
    expect(untouched(after, snapshot(out))).toEqual(GRAPH_NAMES);
  });

  it("run settings (guidance, prompts, size, seed, output, threads) are not compiled: the folder is up to date", async () => {
    await compileYaml();
    const before = snapshot(out);
    const r = await compileYaml(
      "guidance:\n  scale: 3\n  negative_prompt: blurry\nsample:\n  prompt: a red fox\n  seed: 5\n  batch: 2\n  width: 32\noutput:\n  dir: elsewhere\n  grid: true\nruntime:\n  threads: 1\n",
    );
    expect(r).toMatchObject({ upToDate: true, rebuilt: [] });
    expect(snapshot(out)).toEqual(before);
    expect(JSON.stringify(r.plan)).not.toMatch(/red fox|blurry|elsewhere/);
  });

  it("a U-Net architecture change rebuilds only the unet", async () => {
    const first = await compileYaml();
    const before = snapshot(out);
    // the same weights fit 4 heads as well as 8: the graph changes, the checkpoint does not
    const r = await compileYaml("  unet:\n    attention_head_dim: 4\n");
    expect(r.rebuilt).toEqual(["unet"]);
    expect(r.reused).toEqual(others(["unet"]));
    const after = snapshot(out);
    expect(untouched(before, after)).toEqual(others(["unet"]));
    expect(after["unet/model.onnx"]!.sha256).not.toBe(before["unet/model.onnx"]!.sha256);
    expect(r.plan.graphs.unet.buildHash).not.toBe(first.plan.graphs.unet.buildHash);
    expect(r.plan.compileHash).not.toBe(first.plan.compileHash);
  });

  it("new U-Net weights rebuild only the unet; new VAE weights only the two VAE graphs", async () => {
    await compileYaml();
    const s0 = snapshot(out);
    rewriteSafetensors(path.join(model, "unet", "diffusion_pytorch_model.safetensors"), (name, t) => (name === "conv_in.weight" ? { ...t, data: nudged(t.data, 0.01) } : t));
    const r1 = await compileYaml();
    expect(r1.rebuilt).toEqual(["unet"]);
    const s1 = snapshot(out);
    expect(untouched(s0, s1)).toEqual(others(["unet"]));
    // the new unet links the new checkpoint file, not the old one
    expect(s1["unet/diffusion_pytorch_model.safetensors"]!.ino).toBe(fs.statSync(path.join(model, "unet", "diffusion_pytorch_model.safetensors")).ino);
    expect(s1["unet/diffusion_pytorch_model.safetensors"]!.ino).not.toBe(s0["unet/diffusion_pytorch_model.safetensors"]!.ino);

    rewriteSafetensors(path.join(model, "vae", "diffusion_pytorch_model.safetensors"), (_n, t) => t);
    const r2 = await compileYaml();
    expect(r2.rebuilt).toEqual(["vae_decoder", "vae_encoder"]);
    expect(untouched(s1, snapshot(out))).toEqual(["text_encoder", "unet"]);
  });

  it("clip_skip rebuilds only the text encoder", async () => {
    await compileYaml();
    const before = snapshot(out);
    const r = await compileYaml("  text_encoder:\n    clip_skip: 1\n");
    expect(r.rebuilt).toEqual(["text_encoder"]);
    expect(untouched(before, snapshot(out))).toEqual(others(["text_encoder"]));
  });

  it("a graph file deleted from the compiled folder is rebuilt", async () => {
    await compileYaml();
    const before = snapshot(out);
    fs.rmSync(path.join(out, "vae_decoder", "diffusion_pytorch_model.safetensors"));
    const r = await compileYaml();
    expect(r.rebuilt).toEqual(["vae_decoder"]);
    expect(untouched(before, snapshot(out))).toEqual(others(["vae_decoder"]));
  });

  it("force rebuilds every graph", async () => {
    await compileYaml();
    const before = snapshot(out);
    const r = await compileYaml("", { force: true });
    expect(r).toMatchObject({ upToDate: false, rebuilt: GRAPH_NAMES, reused: [] });
    const after = snapshot(out);
    expect(untouched(before, after)).toEqual([]);
    // same inputs, same bytes: only the files are new
    for (const g of GRAPH_NAMES) expect([g, after[`${g}/model.onnx`]!.sha256]).toEqual([g, before[`${g}/model.onnx`]!.sha256]);
    for (const g of GRAPH_NAMES) expect(after[`${g}/model.onnx`]!.ino).not.toBe(before[`${g}/model.onnx`]!.ino);
  });
});

describe("atomicity", () => {
  /** A U-Net weight with the wrong shape (conv_in's kernel cut to 3×2). */
  function breakUnet(): void {
    rewriteSafetensors(path.join(model, "unet", "diffusion_pytorch_model.safetensors"), (name, t) => {
      if (name !== "conv_in.weight") return t;
      const [o, i, h] = t.shape as [number, number, number, number];
      return { ...t, shape: [o, i, h, 2], data: t.data.slice(0, o * i * h * 2 * 4) };
    });
  }

  it.each([
    ["an incremental compile", {}],
    ["a forced compile (text encoder already rebuilt when the unet fails)", { force: true }],
  ])("%s that fails midway leaves the previous folder byte-identical and no temporary folder", async (_, opts) => {
    await compileYaml();
    const before = snapshot(out);
    breakUnet();
    const problems = await problemsOf(compileYaml("", opts));
    expect(problems).toEqual([
      expect.objectContaining({ subject: "unet.conv_in.weight", message: "has shape [16, 4, 3, 2], but the model expects [16, 4, 3, 3]" }),
    ]);
    expect(problems[0]!.hint).toContain("diffusion_pytorch_model.safetensors");
    expect(snapshot(out)).toEqual(before);
    expect(fs.readdirSync(path.dirname(out))).toEqual(["p"]);
  });

  it("a first compile that fails leaves nothing at all", async () => {
    breakUnet();
    await problemsOf(compileYaml());
    expect(fs.existsSync(path.dirname(out)) ? fs.readdirSync(path.dirname(out)) : []).toEqual([]);
  });
});
