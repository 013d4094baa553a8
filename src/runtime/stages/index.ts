/**
 * The sampling stages, each a function of the graphs it runs (GraphRunner, not file paths), so the
 * runner of a compiled folder and the trainer's validation images share them:
 *
 *   encodePrompts → prepareSchedule + initialLatents → denoiseLoop → decodeAndSave
 */
export { decodeAndSave, decodeImage, imageParameters, nextImageIndex } from "./decode-save.js";
export type { DecodeAndSaveOptions } from "./decode-save.js";
export { denoiseLoop } from "./denoise-loop.js";
export type { DenoiseLoopOptions, DenoiseLoopResult } from "./denoise-loop.js";
export { encodePrompts } from "./encode-prompts.js";
export type { EncodePromptsOptions, PromptEmbeddings } from "./encode-prompts.js";
export { initialLatents, readLatents } from "./initial-latents.js";
export type { InitialLatentsOptions, LatentShape, LatentSource } from "./initial-latents.js";
export { prepareSchedule } from "./schedule.js";
export { needsTiling, runTiled, tilingGeometry } from "./vae-tiling.js";
export type { VaeTiling } from "./vae-tiling.js";
export type { Schedule, ScheduleOptions } from "./schedule.js";
