/**
 * Where each graph's weights come from: a diffusers folder, or a single-file checkpoint, with
 * LoRAs folded in. A weight the graph needs unchanged is handed to the ONNX writer as a byte range
 * of its source file (no copy); a weight with a LoRA delta, or in another dtype, is produced when
 * written. (The graphs' build hashes identify the files themselves: see compileKeys in compile.ts.)
 */
import type { ResolvedModel } from "../config/model.js";
import type { WeightProvider } from "../ir/builder.js";
import type { DType, TensorData } from "../ir/graph.js";
import { materialize } from "../ir/onnx/writer.js";
import { loadDiffusersComponent, loadSingleFile, loraDelta, moduleNames, readLora, unetLayoutFromConfig, type LoraEntry, type StDtype, type WeightRef, type WeightSet } from "../models/weights/index.js";
import type { Where } from "../config/origins.js";
import { isUserError, UserError } from "../util/errors.js";
import { f32ToF16 } from "../util/half.js";

export type Component = "unet" | "vae" | "text_encoder";

const ST_TO_IR: Partial<Record<StDtype, DType>> = { F32: "float32", F16: "float16", BF16: "bfloat16", F64: "float64" };

export interface ModelWeights {
  sets: Record<Component, WeightSet>;
  /** LoRA deltas by component and weight key (`<module>.weight`), with their scale. */
  lora: Record<Component, Map<string, { entry: LoraEntry; scale: number }[]>>;
}

export function openModelWeights(model: ResolvedModel, loraWhere?: (i: number) => Where): ModelWeights {
  let sets: Record<Component, WeightSet>;
  if (model.kind === "diffusers") {
    const variant = model.variant === "fp16" ? "fp16" : undefined;
    sets = {
      unet: loadDiffusersComponent(model.path!, "unet", { variant }),
      vae: loadDiffusersComponent(model.path!, "vae", { variant }),
      text_encoder: loadDiffusersComponent(model.path!, "text_encoder", { variant }),
    };
  } else if (model.kind === "single-file") {
    const ck = loadSingleFile(model.path!);
    sets = { unet: ck.unet, vae: ck.vae, text_encoder: ck.textEncoder };
  } else {
    throw new Error("inline architectures have no weights to compile");
  }
  const lora: ModelWeights["lora"] = { unet: new Map(), vae: new Map(), text_encoder: new Map() };
  // LDM-named kohya keys (lora_unet_input_blocks_4_1_...) name blocks by position: they need this U-Net's layout
  // (LDM names exist only for a uniform layers_per_block)
  const lpb = model.unet.layers_per_block;
  const uniform = typeof lpb === "number" ? lpb : lpb.every((n) => n === lpb[0]) ? lpb[0] : undefined;
  const unetLayout = uniform === undefined ? undefined : unetLayoutFromConfig({ ...model.unet, layers_per_block: uniform });
  const shapes = {
    unet: new Map(sets.unet.entries().map((r) => [r.key, r.shape])),
    text_encoder: new Map(sets.text_encoder.entries().map((r) => [r.key, r.shape])),
  };
  for (const [i, l] of model.lora.entries()) {
    const modules = { unet: moduleNames(sets.unet), text_encoder: moduleNames(sets.text_encoder) };
    let entries: LoraEntry[];
    try {
      entries = readLora(l.file, { modules, targetShape: (c, module) => shapes[c].get(`${module}.weight`), ...(unetLayout ? { unetLayout } : {}) });
    } catch (e) {
      // the file's own problems, led by where the pipeline names it
      if (!isUserError(e) || !loraWhere) throw e;
      throw new UserError([{ message: `LoRA ${l.file} cannot be folded into this model`, ...loraWhere(i) }, ...e.problems]);
    }
    for (const e of entries) {
      const key = `${e.module}.weight`;
      const m = lora[e.component as Component];
      m.set(key, [...(m.get(key) ?? []), { entry: e, scale: l.scale }]);
    }
  }
  return { sets, lora };
}

/** The WeightProvider a graph builder asks for `key` (diffusers naming, without component prefix). */
export function providerFor(w: ModelWeights, c: Component): WeightProvider {
  const set = w.sets[c];
  const loras = w.lora[c];
  return (key, shape, dtype): TensorData => {
    const ref = set.get(key, shape);
    const deltas = loras.get(key);
    const src = refData(ref);
    if (!deltas) return src;
    return {
      kind: "lazy",
      identity: `${ref.file}:${ref.offset}+lora`,
      produce: () => {
        // W' = W + Σ scale · (alpha/rank) · up @ down, in float32, then to the graph's dtype
        const base = new Float32Array(materialize(src, "float32").slice().buffer);
        for (const { entry, scale } of deltas) {
          const d = loraDelta(entry, scale);
          // readLora checked every pair against the weight's shape; this guards the fold itself
          if (d.length !== base.length) throw new Error(`${key}: LoRA delta has ${d.length} values, the weight ${base.length}`);
          for (let i = 0; i < base.length; i++) base[i]! += d[i]!;
        }
        if (dtype === "float32") return new Uint8Array(base.buffer);
        if (dtype === "float16") return new Uint8Array(f32ToF16(base).buffer);
        throw new Error(`${key}: cannot produce ${dtype}`);
      },
    };
  };
}

function refData(ref: WeightRef): TensorData {
  const storageDtype = ST_TO_IR[ref.dtype];
  if (!storageDtype) throw new Error(`${ref.key}: unsupported dtype ${ref.dtype}`);
  return { kind: "file", file: ref.file, offset: ref.offset, byteLength: ref.byteLength, storageDtype, source: ref.sourceKey };
}

/** LoRA modules that matched no weight the graphs asked for. */
export function unusedLora(w: ModelWeights): string[] {
  const out: string[] = [];
  for (const c of ["unet", "text_encoder"] as Component[])
    for (const key of w.lora[c].keys()) if (!w.sets[c].has(key)) out.push(`${c}.${key}`);
  return out;
}
