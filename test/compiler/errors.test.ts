/**
 * Bad checkpoints get clear, named errors through `sdc compile` (in process, as the CLI runs it):
 * exit code 2, the file or tensor named, what was expected, what to do; no stack trace, and no
 * compiled folder left behind.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { beforeEach, describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { SafetensorsFile } from "../../src/models/weights/safetensors.js";
import { copyFixture, MODELS, rewriteSafetensors, tmp } from "./helpers.js";

let work: string;

beforeEach(() => {
  work = tmp();
});

/** `sdc compile p.yaml` in `work` with `model.from: <from>` (relative to the YAML). */
async function sdcCompile(from: string, extraYaml = ""): Promise<{ code: number; stdout: string; stderr: string }> {
  fs.writeFileSync(path.join(work, "p.yaml"), `version: 1\nname: p\nmodel:\n  from: ${from}\n${extraYaml}`);
  let stdout = "";
  let stderr = "";
  const code = await main(["compile", "p.yaml"], { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t), cwd: work });
  return { code, stdout, stderr };
}

/** A failed compile: exit 2, no stack trace, nothing in compiled/; returns stderr. */
async function expectUserError(from: string, extraYaml = ""): Promise<string> {
  const r = await sdcCompile(from, extraYaml);
  expect(r.stdout).toBe("");
  expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
  expect(r.code, r.stderr).toBe(2);
  const compiled = path.join(work, "compiled");
  expect(fs.existsSync(compiled) ? fs.readdirSync(compiled) : []).toEqual([]); // neither output nor temporary folder
  return r.stderr;
}

const UNET = "tiny-sd1/unet/diffusion_pytorch_model.safetensors";

describe("sdc compile on bad checkpoints exits 2 with a named error", () => {
  it("compiles the intact copy (exit 0), so the failures below come from the damage", async () => {
    copyFixture("tiny-sd1", work);
    const r = await sdcCompile("tiny-sd1");
    expect(r.code).toBe(0);
    expect(r.stderr).not.toMatch(/error|warning/i); // progress lines only
    expect(fs.existsSync(path.join(work, "compiled", "p", "plan.json"))).toBe(true); // under the CLI's working directory
    expect(r.stdout).toMatch(/^compiled compiled\/p in [\d.]+ s \(rebuilt text_encoder, unet, vae_decoder, vae_encoder\)\n$/);
  });

  it("a missing tensor: names it, the files searched and the nearest names", async () => {
    copyFixture("tiny-sd1", work);
    rewriteSafetensors(path.join(work, UNET), (name, t) => (name === "down_blocks.0.attentions.0.proj_in.weight" ? null : t));
    const err = await expectUserError("tiny-sd1");
    expect(err).toContain("down_blocks.0.attentions.0.proj_in.weight: missing from the unet weights");
    expect(err).toContain(
      `hint: searched ${path.join(work, UNET)}; similar names: down_blocks.0.attentions.0.proj_out.weight, down_blocks.0.attentions.0.proj_in.bias, ` +
        "up_blocks.1.attentions.0.proj_in.weight; the checkpoint may be for another architecture than the config describes",
    );
  });

  it("a tensor of the wrong shape: both shapes and the file", async () => {
    copyFixture("tiny-sd1", work);
    rewriteSafetensors(path.join(work, UNET), (name, t) => (name === "conv_out.weight" ? { ...t, shape: [t.shape[1]!, t.shape[0]!, 3, 3] } : t));
    const err = await expectUserError("tiny-sd1");
    expect(err).toContain("unet.conv_out.weight: has shape [16, 4, 3, 3], but the model expects [4, 16, 3, 3]");
    expect(err).toContain(`hint: read from ${path.join(work, UNET)}; check that the model config matches the checkpoint`);
  });

  it("a LoRA made for another model (tiny-sd1's on tiny-sd2): located at the pipeline's lora entry, each misfit named with both shapes", async () => {
    copyFixture("tiny-sd2", work);
    const lora = path.join(MODELS, "lora", "tiny-sd1.kohya.safetensors");
    const err = await expectUserError("tiny-sd2", `  lora:\n    - file: ${JSON.stringify(lora)}\n`);
    expect(err).toMatch(/^p\.yaml:6:13: LoRA .*tiny-sd1\.kohya\.safetensors cannot be folded into this model\n/);
    expect(err).toMatch(/tiny-sd1\.kohya\.safetensors: \d+ tensor pairs do not fit the shapes of the model's weights/);
    expect(err).toContain(
      "tiny-sd1.kohya.safetensors: lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight: would add a [16, 16] delta (down [4, 16], up [16, 4]) to unet down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight, which is [8, 8]",
    );
  });

  it("a corrupt safetensors header", async () => {
    copyFixture("tiny-sd1", work);
    const file = path.join(work, UNET);
    const buf = fs.readFileSync(file);
    buf.write("#", 8 + 1); // the header's first key loses its opening quote: not JSON any more
    fs.writeFileSync(file, buf);
    const err = await expectUserError("tiny-sd1");
    expect(err).toContain(`${file}: header is not valid JSON`);
    expect(err).toContain("hint: the file is not a valid .safetensors file (truncated download, or another format renamed); re-download or re-export it");
  });

  it("a truncated file", async () => {
    copyFixture("tiny-sd1", work);
    const file = path.join(work, UNET);
    const st = SafetensorsFile.open(file);
    fs.truncateSync(file, st.fileSize - 1000);
    const last = [...st.tensors.values()].sort((a, b) => b.offset - a.offset)[0]!;
    const err = await expectUserError("tiny-sd1");
    const dataStart = 8 + st.headerLength;
    expect(err).toContain(
      `${file}: ${last.name}: data_offsets [${last.offset - dataStart}, ${last.offset - dataStart + last.byteLength}] ` +
        `run past the end of the data area (${st.fileSize - 1000 - dataStart} bytes): the file is truncated\n  hint: re-download or re-export the file`,
    );
  });

  it("an unknown block type in config.json: located in the file, with the blocks sdc has", async () => {
    copyFixture("tiny-sd1", work);
    const cfgFile = path.join(work, "tiny-sd1/unet/config.json");
    fs.writeFileSync(cfgFile, fs.readFileSync(cfgFile, "utf8").replace('"CrossAttnDownBlock2D"', '"AttnDownBlock2D"'));
    const err = await expectUserError("tiny-sd1");
    const line = fs.readFileSync(cfgFile, "utf8").split("\n").findIndex((l) => l.includes("AttnDownBlock2D")) + 1;
    expect(err).toContain(
      `tiny-sd1/unet/config.json:${line}:5: down_block_types[0]: "AttnDownBlock2D" is not an allowed value\n` +
        `  ${line} |     "AttnDownBlock2D",\n` +
        `     |     ^^^^^^^^^^^^^^^^^\n` +
        '  hint: did you mean "DownBlock2D"? allowed: CrossAttnDownBlock2D, DownBlock2D; fix unet/config.json, or override the key under model.unet in the pipeline',
    );
  });

  it("a pickle .ckpt: refused with how to convert it", async () => {
    fs.writeFileSync(path.join(work, "model.ckpt"), Buffer.from([0x80, 0x02, 0x7d, 0x71, 0x00]));
    const err = await expectUserError("model.ckpt");
    expect(err).toContain('p.yaml:4:9: model.from: sdc loads only .safetensors checkpoints, and "model.ckpt" is a PyTorch pickle (.ckpt)');
    expect(err).toContain("--to_safetensors");
  });

  it("an LDM single file without a VAE", async () => {
    const file = copyFixture("tiny-sd1.ldm.safetensors", work);
    rewriteSafetensors(file, (name, t) => (name.startsWith("first_stage_model.") ? null : t));
    const err = await expectUserError("tiny-sd1.ldm.safetensors");
    // found while resolving the model, so it points at model.from in the pipeline
    expect(err).toMatch(/^p\.yaml:\d+:\d+: model\.from: .*tiny-sd1\.ldm\.safetensors: has no VAE \(first_stage_model\.\* tensors\)/);
  });

  it("an inline architecture has nothing to compile", async () => {
    fs.writeFileSync(path.join(work, "p.yaml"), "version: 1\nname: p\nmodel:\n  unet:\n    cross_attention_dim: 512\n");
    let stderr = "";
    const code = await main(["compile", "p.yaml"], { stdout: () => {}, stderr: (t) => void (stderr += t), cwd: work });
    expect(code).toBe(2);
    expect(stderr).toContain("p.yaml:3:1: an inline architecture has no weights, so there is nothing to compile for inference");
  });
});
