/** The checkpoint the kill test's child saves at each step (`n` float32 elements per big tensor), and its check. */
import type { CheckpointContent, TensorGroup } from "../../src/trainer/checkpoint.js";

export function killContent(step: number, n: number, buffers?: Float32Array[]): CheckpointContent {
  const [w, m, v, e] = buffers ?? [0, 1, 2, 3].map(() => new Float32Array(n));
  w!.fill(step);
  m!.fill(step / 2);
  v!.fill(step / 4);
  e!.fill(step + 0.125);
  const f32 = (data: Float32Array) => ({ dtype: "F32" as const, shape: [data.length / 4, 4], data });
  return {
    tensors: {
      weights: { "unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": f32(w!) },
      optimizer: {
        "exp_avg.unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": f32(m!),
        "exp_avg_sq.unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": f32(v!),
        step: { dtype: "I64", shape: [], data: BigInt64Array.of(BigInt(step)) },
      },
      ema: {
        "unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": f32(e!),
        scale: { dtype: "F16", shape: [2], data: Uint16Array.of(0x3c00, 0x4000) },
      },
    },
    state: { step, epoch: Math.floor(step / 7), rng: { seed: "18446744073709551615", offset: step * 4 } },
  };
}

/** Why `groups` and `state` are not what `killContent(step)` saved, or null when they are. */
export function killContentMismatch(step: number, state: unknown, read: (group: string) => TensorGroup): string | null {
  const s = state as { step?: unknown };
  if (s.step !== step) return `state.step is ${String(s.step)}`;
  const want: Record<string, number> = { weights: step, optimizer: step / 2, ema: step + 0.125 };
  for (const [group, value] of Object.entries(want)) {
    for (const [name, t] of Object.entries(read(group))) {
      if (t.dtype !== "F32") continue;
      const d = t.data;
      const expect = name.startsWith("exp_avg_sq.") ? step / 4 : value;
      if (d[0] !== expect || d[d.length - 1] !== expect) return `${group}/${name} holds ${d[0]}…${d[d.length - 1]}, not ${expect}`;
    }
  }
  const opt = read("optimizer").step;
  if (opt?.dtype !== "I64" || opt.data[0] !== BigInt(step)) return "optimizer/step is wrong";
  return null;
}
