/**
 * The training graphs of a pipeline with a `train` section: `train_step` (forward, reverse-mode
 * gradients, clipping, the optimizer update and EMA in one graph), `train_accumulate` (with
 * gradient accumulation: the micro-batches before the last add their gradients to accumulators)
 * and `train_eval` (the loss alone, for validation loss with fixed noise). What the graphs bake in
 * (architecture, objective, optimizer kind and its constants, LoRA shape, clipping) is compiled;
 * what the trainer feeds each step (learning rate from its schedule, batch, random values) is not.
 */
import type { LoadedPipeline } from "../config/load.js";
import type { TrainConfig } from "../config/schema.js";
import type { Builder } from "../ir/builder.js";
import type { LowerTarget } from "../ir/passes/lower.js";
import type { TrainingSpecT, TrainGraphName } from "../plan/schema.js";
import { noiseSchedule } from "../schedulers/schedule.js";
import { buildTrainableTextEncoder, buildTrainableUNet, buildTrainStep, type TrainStep, type TrainStepOptions } from "../training/step.js";
import { UserError } from "../util/errors.js";
import type { GraphJob } from "./graphs.js";

export interface TrainGraphJob extends GraphJob<TrainGraphName> {
  /** The step's signature, once built. */
  signature(): TrainStep;
}

/** The train keys the graphs depend on (the rest — data, lengths, seed, schedule, lr — are the trainer's run settings). */
export function trainGraphConfig(t: TrainConfig): Record<string, unknown> {
  const { lr: _lr, ...optimizer } = t.optimizer;
  return {
    target: t.target,
    lora: t.target === "lora" ? { ...t.lora, text_encoder_target_modules: t.train_text_encoder ? t.lora.text_encoder_target_modules : null } : null,
    objective: t.objective,
    optimizer,
    ema: t.ema,
    gradient_accumulation: t.gradient_accumulation,
    gradient_checkpointing: t.gradient_checkpointing,
    train_text_encoder: t.train_text_encoder,
  };
}

/** Things the graphs cannot do yet, refused where the pipeline asks for them. */
function refuse(p: LoadedPipeline, t: TrainConfig): void {
  if (t.target === "text_encoder")
    throw new UserError({
      message: "training the text encoder is not built yet: sdc trains the U-Net (full or LoRA) and the VAE",
      ...p.where(["train", "target"]),
      hint: "use target unet, lora or vae",
    });
  if (t.train_text_encoder && t.target === "vae")
    throw new UserError({
      message: "train_text_encoder trains the text encoder with the U-Net (target unet, or lora for LoRA on both); a VAE training has no text encoder",
      ...p.where(["train", "train_text_encoder"]),
      hint: "set train_text_encoder: false, or target: unet or lora",
    });
  if (t.train_text_encoder && t.data.cache_text_embeddings)
    throw new UserError({
      message: "cache_text_embeddings cannot be used with train_text_encoder: the text encoder changes every step, so its embeddings cannot be cached",
      ...p.where(["train", "data", "cache_text_embeddings"]),
      hint: "set cache_text_embeddings: false (the captions are encoded inside the training step)",
    });
  if (t.target === "vae" && t.objective.loss === "huber")
    throw new UserError({ message: "the VAE's reconstruction loss is mse or l1", ...p.where(["train", "objective", "loss"]), hint: "use loss mse or l1 for target vae" });
}

export function trainingSpec(p: LoadedPipeline): Omit<TrainingSpecT, "graphs"> {
  const t = p.config.train!;
  const sc = p.model.schedulerConfig;
  const prediction = t.objective.prediction_type ?? (sc.prediction_type as "epsilon" | "v_prediction" | "sample" | undefined) ?? "epsilon";
  return {
    target: t.target as "unet" | "lora" | "vae",
    component: t.target === "vae" ? "vae" : "unet",
    microBatches: t.gradient_accumulation,
    numTrainTimesteps: Number(sc.num_train_timesteps ?? 1000),
    predictionType: prediction,
    optimizer: t.optimizer.type === "adamw" ? { type: "adamw", betas: t.optimizer.betas, eps: t.optimizer.eps, weightDecay: t.optimizer.weight_decay } : { type: "sgd", momentum: t.optimizer.momentum, weightDecay: t.optimizer.weight_decay },
    maxGradNorm: t.optimizer.max_grad_norm,
    ema: t.ema.enabled,
    lora:
      t.target === "lora"
        ? { rank: t.lora.rank, alpha: t.lora.alpha ?? t.lora.rank, targets: t.lora.target_modules, ...(t.train_text_encoder ? { textEncoderTargets: t.lora.text_encoder_target_modules } : {}), dropout: t.lora.dropout }
        : null,
    captionDropout: t.objective.cfg_dropout > 0,
    gradientCheckpointing: t.gradient_checkpointing,
    textEncoder: t.train_text_encoder,
  };
}

function stepOptions(p: LoadedPipeline, spec: Omit<TrainingSpecT, "graphs">, mode: TrainStepOptions["mode"], target: LowerTarget): TrainStepOptions {
  const t = p.config.train!;
  const sc = p.model.schedulerConfig;
  let model: TrainStepOptions["model"];
  if (t.target === "vae") model = { kind: "vae", arch: p.model.vae, objective: { reconstruction: t.objective.loss === "l1" ? "l1" : "mse", klWeight: t.objective.kl_weight } };
  else {
    const { alphasCumprod } = noiseSchedule({
      num_train_timesteps: spec.numTrainTimesteps,
      beta_start: Number(sc.beta_start ?? 0.0001),
      beta_end: Number(sc.beta_end ?? 0.02),
      beta_schedule: String(sc.beta_schedule ?? "linear"),
      trained_betas: (sc.trained_betas as number[] | null | undefined) ?? null,
      rescale_betas_zero_snr: !!sc.rescale_betas_zero_snr,
    });
    model = {
      kind: "unet",
      arch: p.model.unet,
      alphasCumprod,
      // the text encoder in the step takes the tokenizer's padded length, its position table's size
      sequence: spec.textEncoder ? p.model.textEncoder.max_position_embeddings : "sequence",
      textEncoder: spec.textEncoder ? { arch: p.model.textEncoder, clipSkip: p.model.textEncoder.clip_skip } : null,
      objective: {
        prediction: spec.predictionType,
        loss: t.objective.loss,
        huberC: t.objective.huber_c,
        snrGamma: t.objective.snr_gamma ?? null,
        noiseOffset: t.objective.noise_offset,
        inputPerturbation: t.objective.input_perturbation,
        captionDropout: spec.captionDropout,
      },
    };
  }
  return { model, lora: spec.lora, optimizer: spec.optimizer, maxGradNorm: spec.maxGradNorm, ema: spec.ema, accumulation: spec.microBatches, mode, target: { ...target, training: true }, gradientCheckpointing: spec.gradientCheckpointing };
}

export function trainingJobs(p: LoadedPipeline, precision: "fp32" | "fp16", target: LowerTarget): { jobs: TrainGraphJob[]; spec: Omit<TrainingSpecT, "graphs"> } {
  const t = p.config.train!;
  refuse(p, t);
  if (precision !== "fp32")
    throw new UserError({
      message: "training graphs are float32 for now (fp16 with fp32 master weights and loss scaling comes with the CUDA training work)",
      ...p.where(["runtime", "precision"]),
      hint: "set runtime.precision: fp32 for a training pipeline",
    });
  const spec = trainingSpec(p);
  const modes: [TrainGraphName, TrainStepOptions["mode"]][] = [["train_step", "step"], ["train_eval", "eval"]];
  if (spec.microBatches > 1) modes.push(["train_accumulate", "accumulate"]);
  const jobs = modes.map(([name, mode]): TrainGraphJob => {
    let sig: TrainStep | null = null;
    return {
      name,
      component: spec.component,
      options: { precision, target, mode, spec, graphConfig: trainGraphConfig(t), arch: spec.component === "vae" ? p.model.vae : p.model.unet, scheduler: spec.component === "unet" ? p.model.schedulerConfig : null },
      build(b) {
        sig = buildTrainStep(b, stepOptions(p, spec, mode, target));
        if (spec.lora?.textEncoderTargets && !sig.inputs.some((e) => e.role === "parameter" && e.name.startsWith("text_model.")))
          throw new UserError({
            message: `no module of the text encoder is named ${spec.lora.textEncoderTargets.map((x) => JSON.stringify(x)).join(" or ")} (or ends with one), so its LoRA would train nothing`,
            ...p.where(["train", "lora", "text_encoder_target_modules"]),
            hint: "name its Linear modules as transformers does: q_proj, k_proj, v_proj, out_proj, fc1, fc2",
          });
        if (spec.lora && sig.inputs.every((e) => e.role !== "parameter" || e.name.startsWith("text_model.")))
          throw new UserError({
            message: `no module of the U-Net is named ${spec.lora.targets.map((x) => JSON.stringify(x)).join(" or ")} (or ends with one), so the LoRA would train nothing`,
            ...p.where(["train", "lora", "target_modules"]),
            hint: "name Linear or 1×1 Conv modules as diffusers does: to_q, to_k, to_v, to_out.0, proj_in, proj_out, ff.net.2, …",
          });
      },
      signature() {
        if (!sig) throw new Error(`${name} was not built`);
        return sig;
      },
    };
  });
  if (spec.component === "unet") {
    let sig: TrainStep | null = null;
    jobs.push({
      name: "train_unet",
      component: "unet",
      options: { precision, target, spec, arch: p.model.unet },
      build(b) {
        sig = buildTrainableUNet(b, p.model.unet, spec.lora, target);
      },
      signature() {
        if (!sig) throw new Error("train_unet was not built");
        return sig;
      },
    });
  }
  if (spec.textEncoder) {
    let sig: TrainStep | null = null;
    jobs.push({
      name: "train_text_encoder",
      component: "text_encoder",
      options: { precision, target, spec, arch: p.model.textEncoder },
      build(b) {
        sig = buildTrainableTextEncoder(b, p.model.textEncoder, p.model.textEncoder.clip_skip, spec.lora, target);
      },
      signature() {
        if (!sig) throw new Error("train_text_encoder was not built");
        return sig;
      },
    });
  }
  return { jobs, spec };
}
