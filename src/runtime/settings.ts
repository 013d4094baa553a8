/**
 * Run settings: what one run of a compiled plan is asked for, as opposed to what the plan holds
 * (graphs, tokenizer, scheduler). They come with each run (from the pipeline's config, see
 * src/pipeline.ts, or from the trainer for its validation images) and are never written to a
 * compiled folder, so changing a prompt or a seed recompiles nothing.
 */
import { imageSideMultiple, type Plan } from "../plan/schema.js";
import { UserError } from "../util/errors.js";
import { checkDeepCache, type DeepCacheSettings } from "./deepcache.js";
import { checkTome, type TomeSettings } from "./tome.js";
import { tilingGeometry, type VaeTiling } from "./stages/vae-tiling.js";

export interface RunSettings {
  /** The prompts; each gives `batch` images. */
  prompts: string[];
  /** One negative prompt for every prompt, or one per prompt. */
  negativePrompts: string[];
  /** Classifier-free guidance scale (≤ 1: no guidance, the negative prompts are not used). */
  guidanceScale: number;
  /** Guidance rescale φ (0: none). */
  guidanceRescale: number;
  /** Image size in pixels. */
  width: number;
  height: number;
  /** Images per prompt. */
  batch: number;
  /** Seed of the PyTorch-compatible CPU generator. */
  seed: number;
  /** img2img: the init image (absolute path), or null for txt2img. */
  initImage: string | null;
  /** img2img strength in (0, 1]: how much of the init image is replaced. */
  strength: number;
  /** A .safetensors file of starting latents (absolute path) instead of seeded noise, or null. */
  latents: string | null;
  /** Output folder (absolute). */
  outputDir: string;
  /** Also save all images of the run as one grid. */
  grid: boolean;
  /** Intra-op CPU threads for the sessions (0: one per core). */
  threads: number;
  /** DeepCache's schedule (the plan must have its shallow U-Net), or null: every call runs the full U-Net. */
  deepcache?: DeepCacheSettings | null;
  /** Token merging's run setting (the plan's U-Net must merge tokens), or null: the plan decides (random splits when it merges). */
  tome?: TomeSettings | null;
  /** Decode (and encode) large images in blended tiles; null: whole images. */
  vaeTiling: VaeTiling | null;
}

/** Settings the plan cannot run: image sides the graphs do not accept, a mismatched negative prompt count. */
export function checkRunSettings(plan: Plan, s: RunSettings): void {
  const need = imageSideMultiple(plan);
  for (const [k, v] of [["width", s.width], ["height", s.height]] as const)
    if (v % need !== 0)
      throw new UserError({ message: `sample.${k} ${v} is not a multiple of ${need}`, subject: `sample.${k}`, hint: `this model needs image sides that are multiples of ${need}; try ${Math.max(need, Math.round(v / need) * need)}` });
  if (s.prompts.length === 0) throw new UserError({ message: "no prompt to run", subject: "sample.prompt", hint: "give a prompt (an empty string is one)" });
  if (s.vaeTiling) for (const dir of ["decode", "encode"] as const) tilingGeometry(s.vaeTiling, plan.vae.scaleFactor, dir);
  if (s.negativePrompts.length !== 1 && s.negativePrompts.length !== s.prompts.length)
    throw new UserError({ message: `${s.negativePrompts.length} negative prompts for ${s.prompts.length} prompts`, subject: "guidance.negative_prompt", hint: "give one negative prompt, or one per prompt" });
  checkDeepCache(plan, s.deepcache ?? null);
  const f = plan.vae.scaleFactor;
  checkTome(plan, s.tome ?? null, { height: s.height / f, width: s.width / f }, f);
}

/** Images a run writes: batch × prompts. */
export function imageCount(s: Pick<RunSettings, "prompts" | "batch">): number {
  return s.prompts.length * s.batch;
}
