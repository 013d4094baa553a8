/**
 * Classifier-free guidance against closed-form numbers: the CFG combination, the guidance rescale
 * of diffusers' `rescale_noise_cfg` (per sample, torch.std), and the sampling loop's scale ≤ 1 path
 * (no unconditional half at all). The end-to-end cases are in pipeline-parity.test.ts.
 */
import { describe, expect, it } from "vitest";
import type { NoiseSource, Scheduler } from "../../src/schedulers/index.js";
import { denoise } from "../../src/runtime/denoise.js";
import { guide } from "../../src/runtime/guidance.js";
import { randomFloats } from "../helpers/ort.js";

/** [uncond (all samples); text (all samples)], as the U-Net returns the batched prediction. */
const batched = (uncond: number[][], text: number[][]) => Float32Array.from([...uncond.flat(), ...text.flat()]);

/** diffusers 0.24's rescale_noise_cfg, transcribed in float64: std over all but the batch axis, unbiased. */
function rescaleNoiseCfgRef(cfg: number[], text: number[], phi: number, batch: number): number[] {
  const per = cfg.length / batch;
  const std = (x: number[]) => {
    const m = x.reduce((a, b) => a + b, 0) / x.length;
    return Math.sqrt(x.reduce((a, b) => a + (b - m) ** 2, 0) / (x.length - 1));
  };
  const out: number[] = [];
  for (let b = 0; b < batch; b++) {
    const c = cfg.slice(b * per, (b + 1) * per);
    const ratio = std(text.slice(b * per, (b + 1) * per)) / std(c);
    for (const v of c) out.push(phi * (v * ratio) + (1 - phi) * v);
  }
  return out;
}

describe("guide: ε̂ = ε_uncond + s · (ε_text − ε_uncond)", () => {
  it("combines the halves sample by sample (exact in float32 here)", () => {
    const pred = batched(
      [
        [0, 1, -2, 0.5],
        [4, 4, 4, 4],
      ],
      [
        [1, 1, 0, 0.25],
        [2, 6, 4, 3],
      ],
    );
    expect(Array.from(guide(pred, 7.5, 0, 2))).toEqual([7.5, 1, 13, -1.375, -11, 19, 4, -3.5]);
  });

  it("scale 1 gives the text half, scale 0 the unconditional half", () => {
    const u = [0.25, -0.5, 1.5, 3];
    const t = [-1.25, 2, 0.75, -4];
    expect(Array.from(guide(batched([u], [t]), 1, 0, 1))).toEqual(t);
    expect(Array.from(guide(batched([u], [t]), 0, 0, 1))).toEqual(u);
  });

  it("leaves the prediction arrays as they were", () => {
    const pred = randomFloats(32, 3);
    const copy = pred.slice();
    guide(pred, 7.5, 0.7, 2);
    expect(pred).toEqual(copy);
  });
});

describe("guidance rescale (diffusers' rescale_noise_cfg, arXiv 2305.08891 §3.4)", () => {
  it("ε̂ ← φ · ε̂ · σ(ε_text)/σ(ε̂) + (1 − φ) · ε̂ with σ per sample, around each sample's mean", () => {
    // sample 0: text [2, 0, 2, 0] (mean 1, deviations ±1), cfg = 1 + 2·(text − 1) = [3, −1, 3, −1]
    //   (deviations ±2): σ ratio 1/2, so with φ = 0.5 the result is 0.5·cfg/2 + 0.5·cfg = 0.75·cfg.
    // sample 1: text [1, −1, 1, −1], cfg = 2·text: σ ratio 1/2 again, result 0.75·cfg.
    // (σ over the whole batch would give a ratio √(10/34); an RMS instead of σ, √(2/5) for sample 0.)
    const pred = batched(
      [
        [1, 1, 1, 1],
        [0, 0, 0, 0],
      ],
      [
        [2, 0, 2, 0],
        [1, -1, 1, -1],
      ],
    );
    expect(Array.from(guide(pred, 2, 0.5, 2))).toEqual([2.25, -0.75, 2.25, -0.75, 1.5, -1.5, 1.5, -1.5]);
  });

  it("φ = 1 gives the CFG result with the text prediction's σ", () => {
    // uncond 0, text [1, −1, 1, −1], scale 3: cfg = 3·text, rescaled back to text exactly
    const out = guide(batched([[0, 0, 0, 0]], [[1, -1, 1, -1]]), 3, 1, 1);
    Array.from(out).forEach((v, i) => expect(v).toBeCloseTo([1, -1, 1, -1][i]!, 6));
  });

  it("matches the float64 transcription of rescale_noise_cfg on random predictions", () => {
    const batch = 2;
    const per = 4 * 8 * 8;
    const pred = randomFloats(2 * batch * per, 11).map((v, i) => v * (i < batch * per ? 1 : 1.7) + (i % 5) * 0.1);
    const scale = 7.5;
    const phi = 0.7;
    const uncond = Array.from(pred.subarray(0, batch * per));
    const text = Array.from(pred.subarray(batch * per));
    const cfg = uncond.map((u, i) => u + scale * (text[i]! - u));
    const want = rescaleNoiseCfgRef(cfg, text, phi, batch);
    const got = guide(pred, scale, phi, batch);
    let err = 0;
    let max = 0;
    want.forEach((w, i) => {
      err = Math.max(err, Math.abs(got[i]! - w));
      max = Math.max(max, Math.abs(w));
    });
    expect(err / max).toBeLessThan(1e-6);
  });
});

describe("the sampling loop's guidance paths", () => {
  /** A scheduler that records what it is given and returns the model output as the next latents. */
  function recordingScheduler() {
    const steps: Float32Array[] = [];
    const scheduler = {
      scaleModelInput: (x: Float32Array) => x.slice(),
      step: (modelOutput: Float32Array) => {
        steps.push(modelOutput);
        return { prevSample: modelOutput.slice(0, 4) };
      },
    } as unknown as Scheduler;
    return { scheduler, steps };
  }
  const noise: NoiseSource = { randn: (n) => new Float32Array(n) };
  const text = Float32Array.from([7, 8]); // [B=1, S=1, D=2]

  it("scale ≤ 1 (no unconditional embeddings): one U-Net half, its prediction steps the scheduler unchanged", async () => {
    const { scheduler, steps } = recordingScheduler();
    const calls: { n: number; embeddings: number[]; sample: number[] }[] = [];
    const prediction = Float32Array.from([0.5, -1, 2, 3]);
    await denoise({
      scheduler,
      timesteps: Float64Array.from([999]),
      latents: Float32Array.from([1, 2, 3, 4]),
      batch: 1,
      text,
      uncond: null,
      guidanceScale: 1,
      guidanceRescale: 0.7,
      noise,
      unet: async (sample, _t, embeddings, n) => {
        calls.push({ n, embeddings: Array.from(embeddings), sample: Array.from(sample) });
        return prediction;
      },
    });
    expect(calls).toEqual([{ n: 1, embeddings: [7, 8], sample: [1, 2, 3, 4] }]);
    expect(steps).toHaveLength(1);
    expect(steps[0]).toBe(prediction);
  });

  it("scale > 1: the U-Net sees [uncond; text] and the latents twice; the scheduler gets the guided prediction", async () => {
    const { scheduler, steps } = recordingScheduler();
    const calls: { n: number; embeddings: number[]; sample: number[] }[] = [];
    const prediction = Float32Array.from([0, 1, -2, 0.5, 1, 1, 0, 0.25]);
    await denoise({
      scheduler,
      timesteps: Float64Array.from([999]),
      latents: Float32Array.from([1, 2, 3, 4]),
      batch: 1,
      text,
      uncond: Float32Array.from([5, 6]),
      guidanceScale: 7.5,
      guidanceRescale: 0,
      noise,
      unet: async (sample, _t, embeddings, n) => {
        calls.push({ n, embeddings: Array.from(embeddings), sample: Array.from(sample) });
        return prediction;
      },
    });
    expect(calls).toEqual([{ n: 2, embeddings: [5, 6, 7, 8], sample: [1, 2, 3, 4, 1, 2, 3, 4] }]);
    expect(Array.from(steps[0]!)).toEqual([7.5, 1, 13, -1.375]);
  });
});
