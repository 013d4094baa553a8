/**
 * Single-file checkpoints (LDM key naming, as the popular UIs share them) compile to the same graphs
 * as the diffusers folder they were converted from: tiny-sd1.ldm.safetensors holds the fp16
 * variant's bytes, so its fp32 graphs must equal those compiled from the folder with `variant: fp16`
 * bit for bit (both convert fp16 → fp32 at write time); tiny-sd2.ldm.safetensors holds the fp32
 * weights (OpenCLIP's fused q/k/v as row slices, the VAE's attention as 1×1 convs), and must match
 * the folder's graphs to < 1e-6 relative.
 *
 * The architecture is spelled out in the YAML (from the folder's config.json files): the config
 * layer does not yet take it from the weights (`loadSingleFile(...).inferred`), and YAML keys would
 * still win once it does.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { compile, type CompileResult } from "../../src/compiler/compile.js";
import { autoencoderKLFields, clipTextFields, unet2DConditionFields } from "../../src/models/arch.js";
import { GRAPH_NAMES } from "../../src/plan/schema.js";
import { sha256File } from "../../src/util/hash.js";
import { compareOutputs, copyFixture, MODELS, pipelineIn, runReferenceInputs, tmp } from "./helpers.js";

/** `model.unet/vae/text_encoder` YAML (JSON flow style) with the keys of a folder's config.json sdc knows. */
function archYaml(folder: string): string {
  const pick = (component: string, fields: Record<string, unknown>) => {
    const cfg = JSON.parse(fs.readFileSync(path.join(folder, component, "config.json"), "utf8")) as Record<string, unknown>;
    return JSON.stringify(Object.fromEntries(Object.entries(cfg).filter(([k, v]) => k in fields && v !== null)));
  };
  return `  unet: ${pick("unet", unet2DConditionFields)}\n  vae: ${pick("vae", autoencoderKLFields)}\n  text_encoder: ${pick("text_encoder", clipTextFields)}\n`;
}

const log: string[] = [];

describe.each([
  { fixture: "tiny-sd1", folderYaml: "  variant: fp16\n", storage: "fp16", tol: 0 },
  { fixture: "tiny-sd2", folderYaml: "", storage: "fp32", tol: 1e-6 },
])("$fixture single file ($storage)", ({ fixture, folderYaml, storage, tol }) => {
  let work: string;
  let single: CompileResult;
  let folder: CompileResult;
  let file: string;

  beforeAll(async () => {
    work = tmp();
    const dir = copyFixture(fixture, work);
    file = copyFixture(`${fixture}.ldm.safetensors`, work);
    const arch = archYaml(path.join(MODELS, fixture));
    single = await compile(await pipelineIn(work, file, arch, { file: "single.yaml" }), { outDir: path.join(work, "single") });
    folder = await compile(await pipelineIn(work, dir, folderYaml, { file: "folder.yaml" }), { outDir: path.join(work, "folder") });
  });

  it(`gives the outputs of the folder's graphs (${tol === 0 ? "bit-exact" : `< ${tol} relative`}) on every reference input`, async () => {
    const a = await runReferenceInputs(single.dir, fixture);
    const b = await runReferenceInputs(folder.dir, fixture);
    expect(a.size).toBeGreaterThanOrEqual(14);
    const c = compareOutputs(a, b);
    log.push(`${fixture} single file vs folder: max rel err ${c.max.toExponential(2)} (${c.bitExact ? "bit-exact" : c.worst})`);
    if (tol === 0) expect(c.bitExact, `worst: ${c.worst} ${c.max}`).toBe(true);
    else expect(c.max).toBeLessThan(tol);
  });

  it("uses the same weight bytes: equal parameter counts, linked and written sizes", () => {
    for (const g of GRAPH_NAMES) {
      const s = single.plan.graphs[g];
      const f = folder.plan.graphs[g];
      expect([g, s.parameters, s.nodes, s.bytesLinked, s.bytesWritten]).toEqual([g, f.parameters, f.nodes, f.bytesLinked, f.bytesWritten]);
      expect([g, s.inputs, s.outputs]).toEqual([g, f.inputs, f.outputs]);
    }
    if (storage === "fp32") {
      // zero-copy from the single file: every graph links it
      for (const g of GRAPH_NAMES) {
        expect(single.plan.graphs[g].externalData).toContain(path.basename(file));
        expect(fs.statSync(path.join(single.dir, g, path.basename(file))).ino).toBe(fs.statSync(file).ino);
      }
    } else {
      // fp16 storage into fp32 graphs: converted once, nothing linked
      for (const g of GRAPH_NAMES) expect([g, single.plan.graphs[g].bytesLinked]).toEqual([g, 0]);
    }
  });

  it("the plan names the single file and its short sha256 (the UIs' model hash); the family's tokenizer is bundled", () => {
    expect(single.plan.model).toEqual({ kind: "single-file", name: `${fixture}.ldm`, hash: sha256File(file).slice(0, 10) });
    // a single file has no tokenizer: sdc supplies SD1's (pad <|endoftext|>) or SD2's (pad "!"), like the folder's
    expect(single.plan.tokenizer).toEqual(folder.plan.tokenizer);
    for (const f of ["vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json", "tokenizer.json"]) {
      expect([f, sha256File(path.join(single.dir, "tokenizer", f))]).toEqual([f, sha256File(path.join(folder.dir, "tokenizer", f))]);
    }
    expect(single.plan.sources.map((s) => path.basename(s.path))).toContain(path.basename(file));
  });
});

describe("tiny-sd1.ldm.safetensors at runtime.precision fp16", () => {
  it("links every weight of the fp16 file in place (nothing converted)", async () => {
    const work = tmp();
    const file = copyFixture("tiny-sd1.ldm.safetensors", work);
    const r = await compile(await pipelineIn(work, file, `${archYaml(path.join(MODELS, "tiny-sd1"))}runtime:\n  precision: fp16\n`), { outDir: path.join(work, "out") });
    for (const g of GRAPH_NAMES) {
      const spec = r.plan.graphs[g];
      expect([g, spec.externalData.includes("tiny-sd1.ldm.safetensors"), spec.bytesWritten]).toEqual([g, true, g === "text_encoder" ? 77 * 77 * 2 : 0]); // only the float16 causal mask
      expect(spec.bytesLinked).toBeGreaterThan(0);
    }
  });
});

describe("summary", () => {
  it("logs the measured differences", () => {
    console.log(log.join("\n"));
    expect(log).toHaveLength(2);
  });
});
