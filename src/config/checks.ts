/**
 * Cross-field checks: what no single key's schema can see.
 *
 * They need the resolved architecture (the folder's config.json under the YAML overrides): image
 * sizes against the latent factor, the U-Net's cross-attention width against the text encoder,
 * channels against GroupNorm groups and attention heads, per-block list lengths, and the
 * training section's internal consistency. Each problem points at the text that set the value it
 * blames (YAML, a config.json, or the `model.from` that brought in a default).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { type AutoencoderKLConfig, nonSd12UnetKeys, perBlock, SD12_UNET_VALUES, type UNet2DConditionConfig, unetHeads, vaeScaleFactor } from "../models/arch.js";
import { checkDataConfig } from "../data/config.js";
import type { Problem } from "../util/errors.js";
import { archWhere, type ComponentName, type ComponentSources, type ModelContext, type ResolvedModel } from "./model.js";
import { missingTargets } from "./modules.js";
import type { Where } from "./origins.js";
import type { PipelineConfig } from "./schema.js";
import type { Path } from "./source.js";

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/** The largest divisor of every channel count that is at most `max`. */
function bestGroups(channels: readonly number[], max: number): number {
  const g = channels.reduce(gcd);
  for (let d = Math.min(g, max); d > 1; d--) if (g % d === 0) return d;
  return 1;
}

function nearestMultiples(v: number, f: number): [number, number] {
  const lo = Math.max(f, Math.floor(v / f) * f);
  return [lo, lo + f];
}

export function checkPipeline(cfg: PipelineConfig, model: ResolvedModel, ctx: ModelContext, json: ComponentSources): Problem[] {
  const problems: Problem[] = [];
  const yaml = (p: Path, mode: "key" | "value" = "value") => ctx.origins.where(p, mode);
  const explicit = (p: Path) => ctx.origins.originOf(p)?.exact === true;
  const arch = (c: ComponentName, p: Path): Where => archWhere(c, ctx, json)(p, "value");
  const add = (where: Where, message: string, hint?: string) => problems.push({ message, ...where, ...(hint ? { hint } : {}) });
  /** "(set at file:line)" for a value the message compares against. */
  const setAt = (w: Where) => (w.at ? ` (set at ${w.at.file}:${w.at.line})` : w.subject ? ` (set by ${w.subject})` : "");

  /** One up block and one channel count per down block (a U-Net's or a VAE's); false, and reported, when not. */
  const blocksMatch = (c: "unet" | "vae", cfg: UNet2DConditionConfig | AutoencoderKLConfig, upHint: string): boolean => {
    const n = cfg.down_block_types.length;
    const up = cfg.up_block_types.length;
    const out = cfg.block_out_channels.length;
    if (up !== n) add(arch(c, ["up_block_types"]), `${c}.up_block_types has ${up} blocks but down_block_types has ${n}`, upHint);
    if (out !== n) add(arch(c, ["block_out_channels"]), `${c}.block_out_channels has ${out} entries but there are ${n} down blocks`, "give one channel count per down block");
    return up === n && out === n;
  };
  /** GroupNorm's groups must divide every channel count. */
  const groupsDivide = (c: "unet" | "vae", g: number, ch: readonly number[]): void => {
    const bad = ch.filter((x) => x % g !== 0);
    if (bad.length)
      add(
        arch(c, ["norm_num_groups"]),
        `${c}.norm_num_groups ${g} does not divide the channel count${bad.length > 1 ? "s" : ""} ${bad.join(", ")} of block_out_channels`,
        `GroupNorm splits channels into equal groups; use a divisor of every channel count, e.g. ${bestGroups(ch, g)}`,
      );
  };

  const { unet, vae, textEncoder: te } = model;

  // --- U-Net structure -------------------------------------------------------------------------
  // a config that sets keys SD 1.x/2.x leave alone (SDXL, LCM, unCLIP, upscalers) is a model sdc
  // does not build, better said now than by a failed compile
  for (const key of nonSd12UnetKeys(unet)) {
    const v = unet[key];
    // LCM checkpoints' guidance embedding: sampled (the U-Net takes timestep_cond), not trained
    if (key === "time_cond_proj_dim" && !cfg.train) continue;
    if (key === "time_cond_proj_dim") {
      add(arch("unet", [key]), `unet.time_cond_proj_dim is ${JSON.stringify(v)}: a guidance-embedded LCM U-Net, which sdc samples but does not train`, "train the base model (or an LCM-LoRA on it), or remove the train section to sample");
      continue;
    }
    add(
      arch("unet", [key]),
      `unet.${key} is ${JSON.stringify(v)}: sdc builds Stable Diffusion 1.x/2.x U-Nets, where it is ${JSON.stringify(SD12_UNET_VALUES[key])}${key === "addition_embed_type" && v === "text_time" ? " (this looks like SDXL)" : ""}`,
      "use an SD 1.x/2.x model, or remove the key if the pipeline sets it",
    );
  }
  const n = unet.down_block_types.length;
  let unetShapeOk = blocksMatch("unet", unet, "the U-Net needs one up block per down block");
  for (const key of ["only_cross_attention", "attention_head_dim", "num_attention_heads", "cross_attention_dim", "layers_per_block", "transformer_layers_per_block"] as const) {
    const v = unet[key];
    if (Array.isArray(v) && v.length !== n) {
      unetShapeOk = false;
      add(arch("unet", [key]), `unet.${key} has ${v.length} entries but there are ${n} down blocks`, "give one value per down block, or a single value for all blocks");
    }
  }
  if (unetShapeOk) {
    const ch = unet.block_out_channels;
    if (unet.norm_num_groups !== null) groupsDivide("unet", unet.norm_num_groups, ch);
    const heads = unetHeads(unet);
    const headsKey = unet.num_attention_heads !== null ? "num_attention_heads" : "attention_head_dim";
    unet.down_block_types.forEach((t, i) => {
      if (t === "CrossAttnDownBlock2D" && ch[i]! % heads[i]! !== 0)
        add(
          arch("unet", Array.isArray(unet[headsKey]) ? [headsKey, i] : [headsKey]),
          `unet: the ${ch[i]} channels of down block ${i} do not split into ${heads[i]} attention heads`,
          `${headsKey} is the number of heads of each block (for SD 1/2 U-Nets) and must divide its block_out_channels`,
        );
    });
    const cad = perBlock(unet.cross_attention_dim, n, "cross_attention_dim");
    const badCad = [...new Set(cad.filter((d) => d !== te.hidden_size))];
    if (badCad.length) {
      add(
        arch("unet", ["cross_attention_dim"]),
        `unet.cross_attention_dim is ${badCad.join(", ")} but the text encoder's hidden_size is ${te.hidden_size}${setAt(arch("text_encoder", ["hidden_size"]))}`,
        "the U-Net's cross-attention reads the text encoder's output, so the two widths must be equal",
      );
    }
  }
  const L = vae.latent_channels;
  if (unet.in_channels !== L && unet.in_channels !== 2 * L + 1)
    add(
      arch("unet", ["in_channels"]),
      `unet.in_channels is ${unet.in_channels} but the VAE's latent_channels is ${L}${setAt(arch("vae", ["latent_channels"]))}`,
      `the U-Net denoises VAE latents: in_channels must be ${L} (or ${2 * L + 1} for an inpainting U-Net)`,
    );
  if (unet.out_channels !== L)
    add(
      arch("unet", ["out_channels"]),
      `unet.out_channels is ${unet.out_channels} but the VAE's latent_channels is ${L}${setAt(arch("vae", ["latent_channels"]))}`,
      `the U-Net predicts latents (or their noise): out_channels must be ${L}`,
    );

  // --- VAE ---------------------------------------------------------------------------------------
  const vaeShapeOk = blocksMatch("vae", vae, "the decoder needs one up block per encoder down block");
  groupsDivide("vae", vae.norm_num_groups, vae.block_out_channels);

  // --- Text encoder ------------------------------------------------------------------------------
  if (te.hidden_size % te.num_attention_heads !== 0)
    add(
      arch("text_encoder", ["num_attention_heads"]),
      `text_encoder: hidden_size ${te.hidden_size} does not split into ${te.num_attention_heads} attention heads`,
      "num_attention_heads must divide hidden_size",
    );
  if (te.clip_skip >= te.num_hidden_layers)
    add(
      yaml(["model", "text_encoder", "clip_skip"]),
      `model.text_encoder.clip_skip ${te.clip_skip} skips all ${te.num_hidden_layers} layers of the text encoder`,
      `use a value from 0 to ${te.num_hidden_layers - 1} (0: the last layer's output, 1: the one before, ...)`,
    );

  // --- Image size --------------------------------------------------------------------------------
  if (unetShapeOk && vaeShapeOk) {
    // the VAE needs whole latents; the U-Net takes any latent size (it upsamples to its skips' sizes)
    const f = vaeScaleFactor(vae);
    const sizeHint = (v: number) => {
      const [lo, hi] = nearestMultiples(v, f);
      return `the VAE turns every ${f}×${f} pixels into one latent, so sizes must be multiples of ${f}: try ${lo} or ${hi}`;
    };
    for (const side of ["width", "height"] as const) {
      const v = cfg.sample[side];
      if (v % f !== 0) {
        const where = explicit(["sample", side]) ? yaml(["sample", side]) : yaml(["sample", side], "key");
        add(where, `sample.${side} ${v}${explicit(["sample", side]) ? "" : " (the model's default)"} is not a multiple of ${f}`, sizeHint(v));
      }
    }
    if (cfg.train && cfg.train.data.resolution % f !== 0) {
      const r = cfg.train.data.resolution;
      add(yaml(["train", "data", "resolution"]), `train.data.resolution ${r} is not a multiple of ${f}`, sizeHint(r));
    }
    cfg.train?.validation.prompts.forEach((v, i) => {
      if (typeof v === "string") return;
      for (const side of ["width", "height"] as const) {
        const x = v[side];
        if (x !== undefined && x % f !== 0) add(yaml(["train", "validation", "prompts", i, side]), `train.validation.prompts[${i}].${side} ${x} is not a multiple of ${f}`, sizeHint(x));
      }
    });
  }

  // --- Sampling ----------------------------------------------------------------------------------
  const T = typeof model.schedulerConfig.num_train_timesteps === "number" ? model.schedulerConfig.num_train_timesteps : 1000;
  if (cfg.scheduler.steps > T)
    add(yaml(["scheduler", "steps"]), `scheduler.steps ${cfg.scheduler.steps} is more than the ${T} timesteps the model was trained with`, `use at most ${T} steps`);
  if (explicit(["sample", "strength"]) && cfg.sample.init_image === undefined)
    add(yaml(["sample", "strength"]), "sample.strength applies to img2img only, but there is no sample.init_image", "add sample.init_image, or remove strength");
  if (cfg.sample.init_image !== undefined && cfg.sample.latents !== undefined)
    add(yaml(["sample", "latents"]), "sample.latents and sample.init_image both set the starting latents", "keep one of them");
  if (cfg.sample.init_image !== undefined) checkExists(cfg.sample.init_image, ["sample", "init_image"], "file", "init image", ctx, problems);
  if (cfg.sample.latents !== undefined && checkExists(cfg.sample.latents, ["sample", "latents"], "file", "latents file", ctx, problems)) {
    if (path.extname(cfg.sample.latents).toLowerCase() !== ".safetensors")
      add(yaml(["sample", "latents"]), `sample.latents must be a .safetensors file, got "${path.basename(cfg.sample.latents)}"`, "save the latents with safetensors (tensor name: latents)");
  }
  const dc = cfg.sample.deepcache;
  if (dc && unetShapeOk) {
    const layers = perBlock(unet.layers_per_block, unet.down_block_types.length, "layers_per_block");
    if (dc.branch >= layers.length)
      add(yaml(["sample", "deepcache", "branch"]), `sample.deepcache.branch ${dc.branch} is not a down block of this U-Net`, `it has ${layers.length} down blocks: use 0 to ${layers.length - 1} (0: the shallowest, fastest)`);
    else if (dc.layer !== undefined && dc.layer >= layers[dc.branch]!)
      add(yaml(["sample", "deepcache", "layer"]), `sample.deepcache.layer ${dc.layer} is not a resnet layer of down block ${dc.branch}`, `that block has ${layers[dc.branch]} layer${layers[dc.branch] === 1 ? "" : "s"}: use 0 to ${layers[dc.branch]! - 1}, or leave layer out`);
  }
  if (dc?.full_steps && !dc.full_steps.includes(0))
    add(yaml(["sample", "deepcache", "full_steps"]), "sample.deepcache.full_steps must include 0: the first U-Net call has no cached features to reuse", "add 0 to the list");
  const prompts = Array.isArray(cfg.sample.prompt) ? cfg.sample.prompt.length : 1;
  const neg = cfg.guidance.negative_prompt;
  if (Array.isArray(neg) && neg.length !== prompts)
    add(
      yaml(["guidance", "negative_prompt"]),
      `guidance.negative_prompt has ${neg.length} entries but there ${prompts === 1 ? "is 1 prompt" : `are ${prompts} prompts`}`,
      "give one negative prompt for all, or one per prompt",
    );

  // --- Training ----------------------------------------------------------------------------------
  const train = cfg.train;
  // the data options' combinations (a cache that would be wrong, subsets outside data.dir): found
  // here, so `sdc validate` reports them, not only the run that opens the data
  if (train) problems.push(...checkDataConfig(train.data, (p, mode) => yaml(p, mode)));
  if (train?.target === "vae" && train.validation.prompts.length)
    add(yaml(["train", "validation", "prompts"]), "validation prompts draw images with the U-Net, and a VAE training has no U-Net to draw with", "remove train.validation.prompts (validation.holdout_dir gives a VAE its validation loss)");
  if (train) {
    if (train.steps === undefined && train.epochs === undefined)
      add(yaml(["train"], "key"), "train needs a length: neither train.steps nor train.epochs is set", "add train.steps (optimizer steps) or train.epochs (passes over the data)");
    if (train.steps !== undefined && train.epochs !== undefined)
      add(yaml(["train", "epochs"], "key"), "train.steps and train.epochs are both set", "keep one of them");
    checkExists(train.data.dir, ["train", "data", "dir"], "dir", "training data folder", ctx, problems);
    // (module names need a consistent U-Net: with per-block lists of the wrong length, that is reported above)
    if (train.target === "lora" && unetShapeOk) {
      // target_modules name the U-Net's modules; with train_text_encoder, text_encoder_target_modules the text encoder's
      const lists: ["target_modules" | "text_encoder_target_modules", "unet" | "text_encoder"][] = [["target_modules", "unet"]];
      if (train.train_text_encoder) lists.push(["text_encoder_target_modules", "text_encoder"]);
      for (const [key, component] of lists) {
        const targets = train.lora[key];
        const label = component === "unet" ? "the U-Net" : "the text encoder";
        for (const m of missingTargets(targets, model, [component])) {
          const i = targets.indexOf(m.target);
          const where = explicit(["train", "lora", key]) ? yaml(["train", "lora", key, i]) : yaml(["train", "lora"], "key");
          add(
            where,
            m.notLoraable
              ? `train.lora.${key}: "${m.target}" names ${m.notLoraable.join(" and ")} layers, which take no LoRA`
              : m.foundIn
                ? `train.lora.${key}: "${m.target}" is a module of the ${m.foundIn === "unet" ? "U-Net" : "text encoder"}, not of ${label}`
                : `train.lora.${key}: no module of ${label} is named "${m.target}"`,
            m.foundIn === "text_encoder"
              ? "list text encoder modules under train.lora.text_encoder_target_modules, with train.train_text_encoder: true"
              : m.foundIn === "unet"
                ? "list U-Net modules under train.lora.target_modules"
                : m.suggestion
                  ? `did you mean "${m.suggestion}"?`
                  : component === "unet"
                    ? "LoRA attaches to Linear and Conv2d layers, named as in diffusers: to_q, to_k, to_v, to_out.0, proj_in, ff.net.0.proj, conv1, ..."
                    : "LoRA attaches to the text encoder's Linear layers, named as in transformers: q_proj, k_proj, v_proj, out_proj, fc1, fc2",
          );
        }
      }
    }
  }
  return problems;
}

function checkExists(p: string, at: Path, kind: "file" | "dir", what: string, ctx: ModelContext, problems: Problem[]): boolean {
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(p);
  } catch {
    st = undefined;
  }
  const where = ctx.origins.where(at);
  if (!st) {
    problems.push({ message: `${what} "${ctx.display(p)}" does not exist`, ...where, hint: ctx.origins.pathHint(at) });
    return false;
  }
  if (kind === "file" ? !st.isFile() : !st.isDirectory()) {
    problems.push({ message: `${what} "${ctx.display(p)}" is not a ${kind === "file" ? "file" : "folder"}`, ...where });
    return false;
  }
  return true;
}
