/**
 * Writing a single-file checkpoint in the original (LDM) key naming, the file AUTOMATIC1111 and
 * ComfyUI load: U-Net, VAE and an SD 1.x text encoder in one `.safetensors`. Key names come from
 * keymap.ts (`ldmKeyOf`); the VAE's attention projections become the 1×1 convolutions LDM stores.
 * sdc's own single-file loader reads the result back.
 */
import { UserError } from "../../util/errors.js";
import { f32ToF16 } from "../../util/half.js";
import { isVaeAttentionLinear, ldmKeyOf, type UnetLayout, type VaeLayout } from "./keymap.js";
import { writeSafetensors, type TensorEntry } from "./safetensors.js";

export interface ComponentTensors {
  /** diffusers key → float32 data and shape */
  get(key: string): { data: Float32Array; shape: number[] };
  keys(): string[];
}

export function saveSingleFile(
  file: string,
  parts: { unet: ComponentTensors; vae: ComponentTensors; textEncoder: ComponentTensors },
  layout: { unet: UnetLayout; vae: VaeLayout },
  o: { dtype?: "F32" | "F16"; metadata?: Record<string, string> } = {},
): void {
  const dtype = o.dtype ?? "F16";
  const entries: TensorEntry[] = [];
  for (const [component, tensors] of [["unet", parts.unet], ["vae", parts.vae], ["text_encoder", parts.textEncoder]] as const) {
    for (const key of tensors.keys()) {
      const name = ldmKeyOf(component, key, layout);
      if (name === null) throw new UserError({ message: `no single-file (LDM) name for the ${component} tensor ${key}`, subject: key, hint: "single-file export covers SD 1.x/2.x U-Nets and VAEs and SD 1.x (CLIP) text encoders" });
      const t = tensors.get(key);
      const shape = component === "vae" && isVaeAttentionLinear(key) && t.shape.length === 2 ? [...t.shape, 1, 1] : t.shape;
      entries.push({ name, dtype, shape, data: () => (dtype === "F16" ? new Uint8Array(f32ToF16(t.data).buffer) : new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)) });
    }
  }
  writeSafetensors(file, entries, { format: "pt", ...(o.metadata ?? {}) });
}
