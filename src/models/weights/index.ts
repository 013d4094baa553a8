/**
 * Weights: safetensors files, diffusers folders, single-file LDM checkpoints and LoRA files, all
 * resolved to `WeightSet`s of (file, offset, length) views keyed by diffusers module names.
 */
export * from "./safetensors.js";
export * from "./weight-set.js";
export * from "./keymap.js";
export * from "./diffusers.js";
export * from "./single-file.js";
export * from "./lora.js";
