/**
 * The training step as one ordinary ONNX graph: inputs are the trainable parameters, optimizer
 * state, step counter, learning rate, batch tensors and every random value; outputs are the loss
 * and the updated parameters and state. It is differentiated by sdc's own autodiff
 * (src/autodiff), so it runs in any onnxruntime, with no training build.
 *
 * Names: a parameter input is its state-dict name (diffusers keys, PEFT `lora_A`/`lora_B` keys for
 * LoRA); its optimizer state is `<state>.<name>` as torch names the state (`exp_avg`,
 * `exp_avg_sq`, `momentum_buffer`), its EMA shadow `ema.<name>`, its gradient accumulator
 * `grad_acc.<name>`; each updated tensor is the output `next.<input name>`.
 */
import { differentiate } from "../autodiff/reverse.js";
import type { Builder } from "../ir/builder.js";
import { dimStr, sym } from "../ir/dims.js";
import type { DType, Graph, Value } from "../ir/graph.js";
import type { TensorRole } from "../plan/schema.js";
import { lowerComposites, type LowerTarget } from "../ir/passes/lower.js";
import { type AutoencoderKLConfig, type CLIPTextConfig, type UNet2DConditionConfig, vaeScaleFactor } from "../models/arch.js";
import { buildClipText } from "../models/clip-text.js";
import { buildUNet } from "../models/unet.js";
import { buildVaeDecoder, buildVaeEncoder } from "../models/vae.js";
import { diffusionInputs, samplePosterior, vaeInputs, vaeLoss, type DiffusionObjective, type InputRole, type VaeObjective } from "./objective.js";
import { loraAdapter, type LoraSpec } from "./lora.js";
import { applyUpdate, clipByGlobalNorm, emaUpdate, stateNames, stepScalars, type OptimizerSpec } from "./optim.js";

export type StepRole = TensorRole;

export interface SignatureEntry {
  name: string;
  role: StepRole;
  dtype: DType;
  /** Numbers, or symbols such as "batch", "height". */
  shape: (number | string)[];
  /** The tensor's name in a PyTorch state dict (parameters and their state). */
  stateDictName?: string;
}

export interface TrainStepOptions {
  model:
    | {
        kind: "unet";
        arch: UNet2DConditionConfig;
        objective: DiffusionObjective;
        alphasCumprod: Float32Array;
        sequence: number | string;
        /** Train the text encoder too: the step takes token ids and runs it (parameters `text_model.…`). */
        textEncoder?: { arch: CLIPTextConfig; clipSkip: number } | null;
      }
    | { kind: "vae"; arch: AutoencoderKLConfig; objective: VaeObjective };
  /** null: every parameter of the model is trained; a LoRA spec: only the LoRA tensors. */
  lora: LoraSpec | null;
  optimizer: OptimizerSpec;
  maxGradNorm: number | null;
  ema: boolean;
  /** Micro-batches per optimizer step; K > 1 adds gradient accumulators and divides the loss by K. */
  accumulation: number;
  /** "step": gradients → update; "accumulate": gradients added to the accumulators, no update; "eval": the loss alone. */
  mode: "step" | "accumulate" | "eval";
  target: LowerTarget;
  /** Also output each gradient (after accumulation, before clipping) as `grad.<name>`. */
  outputGradients?: boolean;
  /** Recompute each resnet and attention module's activations in the backward pass instead of keeping them. */
  gradientCheckpointing?: boolean;
}

/** The module a node belongs to for gradient checkpointing: each resnet and attention block, as diffusers checkpoints them. */
export function checkpointSegment(nodeName: string): string | null {
  const m = /^((?:(?:encoder|decoder)\.)?(?:(?:down|up)_blocks\.\d+\.(?:resnets|attentions)\.\d+|mid_block\.(?:resnets|attentions)\.\d+))[./]/.exec(nodeName);
  return m ? m[1]! : null;
}

export interface TrainStep {
  inputs: SignatureEntry[];
  outputs: SignatureEntry[];
  /** Parameters that do not reach the loss (not trained; named for the user). */
  unused: string[];
}

/** Every checkpoint parameter of the graph becomes a graph input of the same name (a full fine-tune feeds them). */
function promoteParams(g: Graph): Value[] {
  const params = [...g.constants.values()].filter((v) => v.param);
  for (const v of params) {
    g.constants.delete(v.name);
    v.kind = "input";
    v.data = null;
    g.inputs.push({ name: v.name, value: v });
  }
  return params;
}

export function buildTrainStep(b: Builder, o: TrainStepOptions): TrainStep {
  const g = b.graph;
  const roles = new Map<string, InputRole>();
  const lora: Value[] = [];
  const masks: string[] = [];
  // evaluation (validation loss) runs without dropout
  if (o.lora) b.adapter = loraAdapter(b, o.mode === "eval" ? { ...o.lora, dropout: 0 } : o.lora, lora, masks);

  // 1. forward and loss
  let loss: Value;
  const m = o.model;
  if (m.kind === "unet") {
    const te = m.textEncoder ?? null;
    if (te && typeof m.sequence !== "number") throw new Error("a step that runs the text encoder needs the token count as a number");
    const encodeText = te ? (ids: Value) => buildClipText(b, te.arch, { ids, sequence: m.sequence as number, clipSkip: te.clipSkip }).hidden : undefined;
    const io = diffusionInputs(b, m.objective, { channels: m.arch.in_channels, sequence: typeof m.sequence === "number" ? m.sequence : sym(m.sequence), crossDim: m.arch.cross_attention_dim as number }, m.alphasCumprod, roles, encodeText);
    loss = io.loss(buildUNet(b, m.arch, { inputs: io.unet }));
  } else {
    const io = vaeInputs(b, m.arch.in_channels, vaeScaleFactor(m.arch), roles);
    const { parameters } = buildVaeEncoder(b, m.arch, { input: io.images });
    const { z, kl } = samplePosterior(b, parameters, roles);
    loss = vaeLoss(b, buildVaeDecoder(b, m.arch, { input: z }), io.images, kl, m.objective);
  }
  b.adapter = null;
  for (const m of masks) roles.set(m, "random");
  const reported = loss;
  if (o.accumulation > 1) loss = b.div(loss, b.float32(o.accumulation));
  lowerComposites(g, { ...o.target, training: true });

  // 2. what is trained: the LoRA inputs, or every checkpoint parameter promoted to an input
  const params = o.lora ? lora : promoteParams(g);
  if (o.mode === "eval") {
    // the loss alone, at the weights the trainer feeds
    const inputs: SignatureEntry[] = [];
    for (const io of g.inputs) {
      const role: StepRole | undefined = roles.get(io.name) ?? (params.includes(io.value) ? "parameter" : undefined);
      if (role) inputs.push({ name: io.name, role, dtype: io.value.dtype, shape: io.value.shape.map((d) => (typeof d === "number" ? d : dimStr(d))), ...(role === "parameter" ? { stateDictName: io.name } : {}) });
    }
    b.output("loss", reported);
    return { inputs, outputs: [{ name: "loss", role: "loss", dtype: reported.dtype, shape: [] }], unused: [] };
  }
  const grads0 = differentiate(g, loss, params, o.gradientCheckpointing ? { checkpoint: checkpointSegment } : {});
  const unused = params.filter((_, i) => !grads0[i]).map((v) => v.name);
  const trained = params.filter((_, i) => grads0[i]);
  let grads = grads0.filter((x): x is Value => !!x);
  if (o.lora && unused.length) throw new Error(`LoRA tensors that do not reach the loss: ${unused.join(", ")}`);

  const inputs: SignatureEntry[] = [];
  const outputs: SignatureEntry[] = [];
  const declare = (list: SignatureEntry[], name: string, role: StepRole, v: Value, stateDictName?: string) =>
    list.push({ name, role, dtype: v.dtype, shape: v.shape.map((d) => (typeof d === "number" ? d : dimStr(d))), ...(stateDictName ? { stateDictName } : {}) });
  const stateInput = (prefix: string, p: Value, role: StepRole) => {
    const v = b.input(`${prefix}.${p.name}`, p.dtype, p.shape);
    declare(inputs, v.name, role, v, p.name);
    return v;
  };
  const out = (name: string, v: Value, role: StepRole, stateDictName?: string) => {
    b.output(name, v);
    declare(outputs, name, role, v, stateDictName);
  };

  for (const io of g.inputs) {
    const role = roles.get(io.name);
    if (role) declare(inputs, io.name, role, io.value);
  }
  for (const p of trained) declare(inputs, p.name, "parameter", p, p.name);

  // 3. accumulation
  if (o.accumulation > 1) {
    grads = grads.map((gr, i) => b.add(stateInput("grad_acc", trained[i]!, "grad_accumulator"), gr));
    if (o.mode === "accumulate") {
      out("loss", reported, "loss");
      grads.forEach((gr, i) => out(`next.grad_acc.${trained[i]!.name}`, gr, "updated_grad_accumulator", trained[i]!.name));
      return { inputs, outputs, unused };
    }
  }

  // 4. clipping, optimizer, EMA
  if (o.outputGradients) grads.forEach((gr, i) => out(`grad.${trained[i]!.name}`, gr, "gradient", trained[i]!.name));
  let norm: Value | null = null;
  if (o.maxGradNorm !== null) ({ grads, norm } = clipByGlobalNorm(b, grads, o.maxGradNorm));
  const lr = b.input("lr", "float64", []);
  const step = b.input("step", "int64", []);
  declare(inputs, "lr", "learning_rate", lr);
  declare(inputs, "step", "step", step);
  const scalars = stepScalars(b, o.optimizer, { lr, step });
  let decay: Value | null = null;
  if (o.ema) {
    decay = b.input("ema_decay", "float64", []);
    declare(inputs, "ema_decay", "ema_decay", decay);
  }
  const oneMinusDecay = decay ? b.cast(b.sub(b.scalar(1, "float64"), decay), "float32") : undefined;
  out("loss", reported, "loss");
  if (norm) out("grad_norm", norm, "grad_norm");
  trained.forEach((p, i) => {
    const names = stateNames(o.optimizer);
    const state = names.map((s) => stateInput(s, p, "optimizer_state"));
    const next = applyUpdate(b, o.optimizer, scalars, p, grads[i]!, state);
    out(`next.${p.name}`, next.p, "updated_parameter", p.name);
    next.state.forEach((v, j) => out(`next.${names[j]}.${p.name}`, v, "updated_optimizer_state", p.name));
    if (decay) out(`next.ema.${p.name}`, emaUpdate(b, decay, stateInput("ema", p, "ema"), next.p, oneMinusDecay), "updated_ema", p.name);
  });
  return { inputs, outputs, unused };
}

/**
 * The U-Net for sampling with the weights a trainer holds: the inference graph (same inputs and
 * output as the compiled `unet`), with the trained tensors as inputs — the LoRA factors, or every
 * parameter for a full fine-tune. The trainer's validation images run it through the sampling stages.
 */
export function buildTrainableUNet(b: Builder, arch: UNet2DConditionConfig, lora: LoraSpec | null, target: LowerTarget): TrainStep {
  return trainable(b, lora, target, () => void buildUNet(b, arch, { sequence: sym("sequence") }));
}

/** The text encoder with its parameters as inputs (same I/O as the compiled `text_encoder`): validation prompts while it is trained. */
export function buildTrainableTextEncoder(b: Builder, arch: CLIPTextConfig, clipSkip: number, lora: LoraSpec | null, target: LowerTarget): TrainStep {
  return trainable(b, lora, target, () => void buildClipText(b, arch, { clipSkip }));
}

function trainable(b: Builder, lora: LoraSpec | null, target: LowerTarget, build: () => void): TrainStep {
  const created: Value[] = [];
  if (lora) b.adapter = loraAdapter(b, { ...lora, dropout: 0 }, created);
  build();
  b.adapter = null;
  const g = b.graph;
  lowerComposites(g, { ...target, training: false });
  const params = lora ? created : promoteParams(g);
  const set = new Set(params);
  const entry = (name: string, v: Value, role: StepRole): SignatureEntry => ({ name, role, dtype: v.dtype, shape: v.shape.map((d) => (typeof d === "number" ? d : dimStr(d))), ...(role === "parameter" ? { stateDictName: name } : {}) });
  return {
    inputs: g.inputs.map((io) => entry(io.name, io.value, set.has(io.value) ? "parameter" : "batch")),
    outputs: g.outputs.map((io) => entry(io.name, io.value, "batch")),
    unused: [],
  };
}
