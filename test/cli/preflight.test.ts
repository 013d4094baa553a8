/**
 * `sdc validate` finds what `sdc run` would otherwise find only after compiling or denoising: an
 * unreadable init image, a latents file of the wrong shape, an output folder that is a file, an
 * inline architecture with nothing to run. It takes run's input flags, and a path given on the
 * command line is reported under the flag with the working-directory hint.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { writeSafetensors } from "../../src/models/weights/safetensors.js";
import { HEAD, P, project, REPO } from "../config/helpers.js";

async function sdc(argv: string[], cwd: string) {
  let stdout = "";
  let stderr = "";
  const code = await main(argv, { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t), cwd });
  return { code, stdout, stderr };
}

const GOOD = `${HEAD}sample:\n  prompt: a cat\n  width: 16\n  height: 16\n`;

describe("sdc validate checks what run would find late", () => {
  it("takes run's input flags; a missing --init-image names the flag and the working-directory hint", async () => {
    const cwd = project({ [P]: GOOD });
    const r = await sdc(["validate", P, "--init-image", "nope.png"], cwd);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--init-image nope\.png: init image "nope\.png" does not exist/);
    expect(r.stderr).toMatch(/hint: a path given on the command line is relative to the working directory/);
    // the same path written in the YAML keeps the YAML hint and points at the line
    const y = project({ [P]: `${GOOD}  init_image: nope.png\n` });
    const ry = await sdc(["validate", P], y);
    expect(ry.code).toBe(2);
    expect(ry.stderr).toMatch(/p\.yaml:8:\d+: init image/);
    expect(ry.stderr).toMatch(/paths are relative to the YAML file that names them/);
    for (const flag of ["--prompts-file", "--latents"]) {
      const rf = await sdc(["validate", P, flag, "missing.txt"], cwd);
      expect(rf.code, flag).toBe(2);
      expect(rf.stderr, flag).toContain(`${flag} missing.txt:`);
      expect(rf.stderr, flag).toContain("relative to the working directory");
    }
  });

  it("an init image that does not decode is refused; one of another size gets a note saying how it is fitted", async () => {
    const cwd = project({ [P]: GOOD, "bad.png": "not a png" });
    const bad = await sdc(["validate", P, "--init-image", "bad.png"], cwd);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--init-image bad\.png: init image "bad\.png" cannot be decoded as an image/);

    await sharp({ create: { width: 64, height: 8, channels: 3, background: "#808080" } }).png().toFile(path.join(cwd, "wide.png"));
    await sharp({ create: { width: 1, height: 1, channels: 3, background: "#808080" } }).png().toFile(path.join(cwd, "dot.png"));
    const wide = await sdc(["validate", P, "--init-image", "wide.png"], cwd);
    expect(wide.code).toBe(0);
    expect(wide.stderr).toMatch(/note: init image wide\.png is 64×8: it is stretched to 16×16 \(its aspect ratio 8\.00 becomes 1\.00/);
    const dot = await sdc(["validate", P, "--init-image", "dot.png", "--json"], cwd);
    expect(dot.code).toBe(0);
    expect(JSON.parse(dot.stdout).notes).toEqual([expect.stringMatching(/dot\.png is 1×1: it is stretched to 16×16 \(upscaled 16×: expect a blurry start\)/)]);
  });

  it("a latents file of the wrong shape is refused at validate, naming both shapes", async () => {
    const cwd = project({ [P]: GOOD });
    writeSafetensors(path.join(cwd, "l.safetensors"), [{ name: "latents", dtype: "F32", shape: [1, 4, 4, 4], data: new Uint8Array(4 * 64) }]);
    const r = await sdc(["validate", P, "--latents", "l.safetensors"], cwd);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--latents l.safetensors:");
    // the fixture model's VAE halves each side: 16×16 pixels are 8×8 latents
    expect(r.stderr).toMatch(/tensor latents has shape 1×4×4×4, the run needs 1×4×8×8/);
  });

  it("an output folder that is a file, or under a file, is refused before any work", async () => {
    const cwd = project({ [P]: GOOD, "taken": "a file" });
    for (const out of ["taken", "taken/sub"]) {
      const r = await sdc(["validate", P, "--out", out], cwd);
      expect(r.code, out).toBe(2);
      expect(r.stderr, out).toMatch(new RegExp(`--out ${out}: output folder "${out}" (is a file|cannot be made: taken is a file)`));
      const run = await sdc(["run", P, "--out", out], cwd);
      expect(run.code, out).toBe(2);
      expect(run.stderr, out).not.toMatch(/compiled compiled/);
      expect(fs.existsSync(path.join(cwd, "compiled")), out).toBe(false);
    }
  });

  it("a size far from the model's native one gets a note before the run", async () => {
    const cwd = project({ [P]: GOOD });
    const big = await sdc(["validate", P, "--set", "sample.width=128", "--set", "sample.height=128"], cwd);
    expect(big.code).toBe(0);
    expect(big.stderr).toMatch(/note: 128×128 is 64× the pixels of the model's native 16×16: each U-Net step takes roughly 64× as long/);
    const near = await sdc(["validate", P, "--set", "sample.width=24"], cwd);
    expect(near.stderr).not.toMatch(/native/);
  });

  it("an inline architecture without a train section has nothing to run: validate says so", async () => {
    const inline = [
      "version: 1",
      "model:",
      "  vae: { block_out_channels: [8, 8], down_block_types: [DownEncoderBlock2D, DownEncoderBlock2D], up_block_types: [UpDecoderBlock2D, UpDecoderBlock2D], latent_channels: 4, layers_per_block: 1, norm_num_groups: 4 }",
      "  unet: { block_out_channels: [8, 16], down_block_types: [CrossAttnDownBlock2D, DownBlock2D], up_block_types: [UpBlock2D, CrossAttnUpBlock2D], layers_per_block: 1, attention_head_dim: 4, cross_attention_dim: 16, norm_num_groups: 4 }",
      "  text_encoder: { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2 }",
      "",
    ].join("\n");
    const cwd = project({ [P]: inline });
    const r = await sdc(["validate", P], cwd);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/p\.yaml:2:1: an inline architecture has no weights, so there is nothing to run/);
    expect(r.stderr).toMatch(/add a train section/);
  });
});

describe("sdc compile --out", () => {
  it("writes the compiled folder there (not compiled/<name>), and run --compiled uses it without compiling again", async () => {
    const real = `version: 1\nmodel:\n  from: ${JSON.stringify(path.join(REPO, "models", "tiny-sd"))}\nsample:\n  prompt: a cat\nscheduler:\n  type: ddim\n  steps: 2\n`;
    const cwd = project({ [P]: real });
    const c = await sdc(["compile", P, "--out", "graphs/p", "--json"], cwd);
    expect(c.code, c.stdout + c.stderr).toBe(0);
    expect(JSON.parse(c.stdout).dir).toBe(path.join(cwd, "graphs", "p"));
    expect(fs.existsSync(path.join(cwd, "graphs", "p", "plan.json"))).toBe(true);
    expect(fs.existsSync(path.join(cwd, "compiled"))).toBe(false);
    expect(fs.existsSync(path.join(cwd, "graphs", "p", "unet", "model.onnx"))).toBe(true);
    const r = await sdc(["run", P, "--compiled", "graphs/p", "--out", "images", "--json"], cwd);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/compiled /);
    expect(JSON.parse(r.stdout).outputs.map((f: string) => path.relative(cwd, f))).toEqual([path.join("images", "00000-0.png")]);
    expect(fs.existsSync(path.join(cwd, "compiled"))).toBe(false);
    // validate checks the folder run would use
    fs.writeFileSync(path.join(cwd, "afile"), "x");
    const v = await sdc(["validate", P, "--compiled", "afile"], cwd);
    expect(v.code).toBe(2);
    expect(v.stderr).toMatch(/compiled folder "afile" is a file/);
  });
});
