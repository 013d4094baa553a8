/**
 * LoRA as a builder adapter: every Linear or 1×1 Conv whose scoped name matches a target module
 * (PEFT's rule: the name equals the target or ends with "." + target) gets the trainable side path
 * y += scale · B(A(x)), scale = alpha / rank, with A [r, in] and B [out, r] (1×1 kernels for a
 * Conv) as graph inputs named as PEFT saves them (`<module>.lora_A.weight`, `<module>.lora_B.weight`).
 * The base weights stay initializers pointing into the checkpoint.
 */
import type { Adapter, Builder } from "../ir/builder.js";
import type { Value } from "../ir/graph.js";

export interface LoraSpec {
  rank: number;
  alpha: number;
  targets: string[];
  /** The text encoder's targets, for modules under `text_model.` (a step that trains the text encoder too). */
  textEncoderTargets?: string[];
  /** Dropout on the LoRA input (training only): a mask input per module, drawn by the host. */
  dropout?: number;
}

export function targetMatches(module: string, targets: readonly string[]): boolean {
  return targets.some((t) => module === t || module.endsWith(`.${t}`));
}

/**
 * The adapter, and the LoRA tensors it declares (in build order) as they are created. With
 * dropout, each module also takes `lora_dropout.<module>`, a mask shaped like its input holding 0
 * or 1/(1 − p) (torch's inverted dropout), which the host draws: `masks` records their names.
 */
export function loraAdapter(b: Builder, spec: LoraSpec, created: Value[], masks?: string[]): Adapter {
  const scale = spec.alpha / spec.rank;
  const r = spec.rank;
  return (module, x, kind, inF, outF) => {
    if (!targetMatches(module, module.startsWith("text_model.") ? (spec.textEncoderTargets ?? []) : spec.targets)) return null;
    const k = kind === "conv" ? [1, 1] : [];
    const a = b.input(`${module}.lora_A.weight`, b.floatType, [r, inF, ...k]);
    const bb = b.input(`${module}.lora_B.weight`, b.floatType, [outF, r, ...k]);
    created.push(a, bb);
    if (spec.dropout && masks) {
      const m = b.input(`lora_dropout.${module}`, x.dtype, x.shape);
      masks.push(m.name);
      x = b.mul(x, m);
    }
    const down = kind === "conv" ? b.op1("Conv", [x, a], { kernel_shape: [1, 1] }) : b.matmul(x, b.transpose(a, [1, 0]));
    const up = kind === "conv" ? b.op1("Conv", [down, bb], { kernel_shape: [1, 1] }) : b.matmul(down, b.transpose(bb, [1, 0]));
    return b.mul(up, b.float(scale));
  };
}
