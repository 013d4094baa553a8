/**
 * Which GroupNorm form a compile writes: the graphs run on onnxruntime's CPU provider whenever the
 * device is cpu or auto (auto falls back to the CPU; on CUDA the InstanceNormalization form runs
 * too), so those get reshape → InstanceNormalization → reshape → affine, the form the CPU kernel runs
 * as one op (GroupNormalization-21 is expanded there into a dozen nodes); only device: cuda, which
 * never runs on the CPU provider, keeps GroupNormalization. Numbers: test/ir/ops.test.ts (GroupNorm
 * fused) and the parity tests, which compile with the default device. The VAE decoder's upsamplers
 * likewise: four 2×2 convolutions at the low resolution and a DepthToSpace on the CPU, Resize → 3×3
 * Conv for CUDA.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { compile } from "../../src/compiler/compile.js";
import { MODELS, onnx, pipelineIn, tmp } from "./helpers.js";

function opCounts(file: string): Record<string, number> {
  const m = onnx.ModelProto.decode(fs.readFileSync(file));
  const n: Record<string, number> = {};
  for (const node of m.graph!.node!) n[node.opType!] = (n[node.opType!] ?? 0) + 1;
  return n;
}

describe("GroupNorm lowering follows the device", () => {
  it.each([
    ["auto", "", true],
    ["cpu", "runtime:\n  device: cpu\n", true],
    ["cuda", "runtime:\n  device: cuda\n  precision: fp32\n", false],
  ] as const)("device %s", async (_, yaml, instanceNorm) => {
    const dir = tmp();
    const p = await pipelineIn(dir, path.join(MODELS, "tiny-sd1"), yaml);
    const r = await compile(p, { outDir: path.join(dir, "compiled") });
    for (const g of ["vae_decoder", "vae_encoder", "unet"]) {
      const ops = opCounts(path.join(r.dir, g, "model.onnx"));
      if (instanceNorm) {
        expect(ops.InstanceNormalization, g).toBeGreaterThan(0);
        expect(ops.GroupNormalization, g).toBeUndefined();
      } else {
        expect(ops.GroupNormalization, g).toBeGreaterThan(0);
        expect(ops.InstanceNormalization, g).toBeUndefined();
      }
    }
    const dec = opCounts(path.join(r.dir, "vae_decoder", "model.onnx"));
    // tiny-sd1's VAE has one upsampler
    if (instanceNorm) {
      expect(dec.DepthToSpace).toBe(1);
      expect(dec.Resize).toBeUndefined();
    } else {
      expect(dec.Resize).toBe(1);
      expect(dec.DepthToSpace).toBeUndefined();
    }
  });
});
