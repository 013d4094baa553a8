/**
 * LCM-LoRA loading. test/fixtures/gen/lcm_lora.py writes a rank-4 LoRA for tiny-sd1's U-Net on every
 * kind of module latent-consistency/lcm-lora-sdv1-5 adapts (attention projections, proj_in/proj_out,
 * feed-forward, resnet conv1/conv2/conv_shortcut/time_emb_proj, the 3x3 downsampler and upsampler
 * convolutions) plus the time embedding, in that file's key format (kohya names with diffusers module
 * paths and per-module alphas), in the original LDM naming that UI conversions use, and in PEFT's own names. Compiled into tiny-sd1 at scale 0.8, the U-Net
 * must compute what diffusers 0.24 computes with the LoRA fused (load_lora_into_unet + fuse_lora) on
 * every reference U-Net input, within 1e-5 of the output's magnitude.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { compile } from "../../src/compiler/compile.js";
import { moduleNames, readLora } from "../../src/models/weights/lora.js";
import { loadDiffusersComponent, unetLayoutFromConfig } from "../../src/models/weights/index.js";
import { SafetensorsFile } from "../../src/models/weights/safetensors.js";
import { copyFixture, MODELS, pipelineIn, runReferenceInputs, tmp } from "./helpers.js";

const LORA = path.join(MODELS, "lora");
const meta = JSON.parse(fs.readFileSync(path.join(LORA, "lcm-tiny-sd1.json"), "utf8")) as {
  rank: number;
  lora_scale: number;
  modules: string[];
  alphas: Record<string, number>;
  files: { kohya: string; "kohya-ldm": string; peft: string };
  reference: string;
};
const TOL = 1e-5;
const KINDS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj", "time_embedding.linear_1", "time_embedding.linear_2"];

let work: string;
let model: string;
beforeAll(() => {
  work = tmp();
  model = copyFixture("tiny-sd1", work);
});

describe("the LCM-LoRA key formats", () => {
  it("cover every module kind LCM-LoRA adapts, and sdc reads every one of them with its alpha and shape", () => {
    const unet = loadDiffusersComponent(model, "unet");
    const modules = moduleNames(unet);
    // LDM names place blocks by position, so reading them needs this U-Net's layout (the compiler passes it too)
    const unetLayout = unetLayoutFromConfig(JSON.parse(fs.readFileSync(path.join(model, "unet", "config.json"), "utf8")));
    for (const kind of KINDS) expect([kind, meta.modules.some((m) => m === kind || m.endsWith(`.${kind}`))]).toEqual([kind, true]);
    for (const [dialect, file] of Object.entries(meta.files)) {
      const entries = readLora(path.join(LORA, file), { modules: { unet: modules }, unetLayout, targetShape: (_c, m) => unet.get(`${m}.weight`).shape });
      expect(entries.map((e) => e.module).sort()).toEqual([...meta.modules].sort());
      for (const e of entries) {
        expect(e.component).toBe("unet");
        expect(e.rank).toBe(meta.rank);
        expect(e.alpha).toBe(dialect.startsWith("kohya") ? meta.alphas[e.module] : undefined);
        expect(e.targetShape).toEqual(unet.get(`${e.module}.weight`).shape);
      }
      // the 3x3 resampler convolutions: a k x k down conv to the rank, a 1x1 up conv
      const down = entries.find((e) => e.module === "down_blocks.0.downsamplers.0.conv")!;
      expect([down.down.shape, down.up.shape]).toEqual([[4, 16, 3, 3], [16, 4, 1, 1]]);
    }
  });
});

describe.each([
  { dialect: "kohya", prefix: "" },
  { dialect: "kohya-ldm", prefix: "" },
  { dialect: "peft", prefix: "noalpha." },
] as const)("LCM-LoRA ($dialect) folded into tiny-sd1", ({ dialect, prefix }) => {
  it(`computes diffusers' fused U-Net on every reference input (< ${TOL} of the output's magnitude)`, async () => {
    const file = path.join(LORA, meta.files[dialect]);
    const yaml = `  lora:\n    - file: ${JSON.stringify(file)}\n      scale: ${meta.lora_scale}\n`;
    const r = await compile(await pipelineIn(work, model, yaml, { file: `${dialect}.yaml` }), { outDir: path.join(work, `out-${dialect}`) });
    const outs = await runReferenceInputs(r.dir, "tiny-sd1", ["unet"]);
    const ref = SafetensorsFile.open(path.join(LORA, meta.reference));
    const base = SafetensorsFile.open(path.join(MODELS, "tiny-sd1.reference.safetensors"));
    let cases = 0;
    let worst = 0;
    for (const [key, got] of outs) {
      const [, c] = key.split(" ");
      const want = ref.readFloat32(`${prefix}${c}.out_sample`);
      const plain = base.readFloat32(`unet.${c}.out_sample`);
      const scale = Math.max(...Array.from(want, Math.abs));
      let err = 0;
      let moved = 0;
      for (let i = 0; i < want.length; i++) {
        err = Math.max(err, Math.abs(got[i]! - want[i]!));
        moved = Math.max(moved, Math.abs(want[i]! - plain[i]!));
      }
      expect([c, err / scale]).toSatisfy(([, e]) => (e as number) < TOL);
      worst = Math.max(worst, err / scale);
      expect(moved / scale).toBeGreaterThan(1e3 * TOL); // the LoRA changed the output far beyond the tolerance
      cases++;
    }
    expect(cases).toBe(4);
    console.log(`LCM-LoRA ${dialect}: U-Net vs diffusers fused, max error ${worst.toExponential(2)} of the output's magnitude`);
  });
});
