/**
 * Training steps against PyTorch: each case of test/fixtures/train (diffusers 0.24 modules,
 * torch.optim in float32; see its README) is rebuilt as sdc's differentiated step graph, run
 * with onnxruntime for the same two optimizer steps from the same inputs, and compared:
 * - the loss, relative error ≤ 1e-5;
 * - every parameter gradient: max|g − g_ref| ≤ 1e-4 · max|g_ref| of the tensor + 1e-5 · the
 *   largest |g_ref| of the model. The floor is for gradients that are sums of cancelling terms
 *   (a bias feeding a GroupNorm, the VAE's attention key bias): their float32 error scales with
 *   the terms, not with the small result. The float32 reference itself is up to 7.8e-5 (per
 *   tensor) from a float64 rerun;
 * - every parameter update (after − before): max|u − u_ref| ≤ 1e-3 · max|u_ref| per tensor, over
 *   the entries whose direction the gradients determine: where the reference gradient (AdamW: the
 *   first moment) is within the gradient allowance of zero, its float32 sign is noise, and the
 *   update is only checked to stay within Adam's bound (3.2·lr + lr·wd·|p|). "Near zero" is within
 *   10× the gradient allowance (times 1 − β1, the moment's share of the gradient); about 1% of the
 *   entries, counted in the report. SGD's update is linear in the gradient: all entries compared.
 * Updates, not parameters, are compared: at lr 1e-3 a 5% error in an update hides below 1e-4 of
 * the parameters. Step 2 starts from the reference's parameters (weights + update1), so a
 * noise-signed step-1 entry does not carry over. With clipping, the global norm is also compared
 * (relative error < 1e-4). sdc must train exactly the parameters the reference has gradients for.
 * sd1-text-encoder (the CLIP text encoder trained with the U-Net, from token ids) adds a rule for
 * the token table's sparse gradient: the rows with a non-zero gradient must be exactly those of the
 * ids the step used after caption dropout (computed here from the fed ids), every other row exactly
 * 0; rows no step has used so far are only weight-decayed, and their updates are compared in full
 * (not bounded only). "The largest |g_ref| of the model" is over both models there.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import { afterAll, describe, expect, it } from "vitest";
import { Builder, type WeightProvider } from "../../src/ir/builder.js";
import { writeOnnx } from "../../src/ir/onnx/writer.js";
import { dce } from "../../src/ir/passes/dce.js";
import { foldKnown } from "../../src/ir/passes/fold.js";
import { verify } from "../../src/ir/verify.js";
import { AutoencoderKLConfigSchema, CLIPTextConfigSchema, UNet2DConditionConfigSchema } from "../../src/models/arch.js";
import { SafetensorsFile } from "../../src/models/weights/safetensors.js";
import { noiseSchedule } from "../../src/schedulers/schedule.js";
import { buildTrainStep, type TrainStepOptions } from "../../src/training/step.js";
import { tempDir } from "../helpers/repo.js";

const DIR = path.join(path.dirname(new URL(import.meta.url).pathname), "..", "fixtures", "train");
const TOL = { loss: 1e-5, grad: 1e-4, update: 1e-3 };
const tmp = tempDir();
const report: string[] = [];
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
  console.log(`training-step parity (worst per case):\n  ${report.join("\n  ")}`);
});

interface CaseJson {
  case: string;
  model: string;
  weights: string;
  steps: number;
  micro_batches?: number;
  prediction_type?: "epsilon" | "v_prediction";
  loss?: string;
  losses: number[];
  optimizer: { type: string; lr: number; betas?: [number, number]; eps?: number; weight_decay: number; momentum?: number };
  snr_gamma?: number;
  huber_c?: number;
  noise_offset?: number;
  input_perturbation?: number;
  max_grad_norm?: number;
  lora?: { rank: number; alpha: number; targets: string[] };
  kl_beta?: number;
  reconstruction_loss?: "mse" | "l1";
  zero_gradient_parameters?: string[];
  schedule?: { beta_start: number; beta_end: number; beta_schedule: string; num_train_timesteps: number };
  /** The text encoder trained with the U-Net (folder and weights file); its parameters are `text_model.…`. */
  text_encoder?: string;
  text_encoder_weights?: string;
  tensors: Record<string, { dtype: string; shape: number[] }>;
}

const TOKEN_TABLE = "text_model.embeddings.token_embedding.weight";

const readJson = (f: string) => JSON.parse(fs.readFileSync(path.join(DIR, f), "utf8"));

function fileWeights(st: SafetensorsFile, text: SafetensorsFile | null): WeightProvider {
  return (key, shape) => {
    const file = text && key.startsWith("text_model.") ? text : st;
    const t = file.info(key);
    expect(t.shape, key).toEqual(shape);
    return { kind: "file", file: file.path, offset: t.offset, byteLength: t.byteLength, storageDtype: "float32" };
  };
}

function feedFloat(a: Float32Array, shape: number[]): ort.Tensor {
  return new ort.Tensor("float32", a, shape);
}

function readInt32(st: SafetensorsFile, name: string): Int32Array {
  const raw = st.readRaw(name);
  return new Int32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
}

/** The token ids a step's text encoder sees: each row, or the empty prompt's where the caption is dropped. */
function usedTokenRows(ref: SafetensorsFile, prefix: string): Set<number> {
  const ids = readInt32(ref, `${prefix}.input_ids`);
  const S = ref.info(`${prefix}.input_ids`).shape[1]!;
  const drop = ref.tensors.has(`${prefix}.uncond_mask`) ? Array.from(new BigInt64Array(ref.readRaw(`${prefix}.uncond_mask`).buffer), Number) : null;
  const empty = drop ? readInt32(ref, "empty_prompt_ids") : null;
  const rows = new Set<number>();
  for (let i = 0; i < ids.length; i++) rows.add(drop?.[Math.floor(i / S)] === 1 ? empty![i % S]! : ids[i]!);
  return rows;
}

function maxAbs(a: Float32Array): number {
  let m = 0;
  for (const x of a) m = Math.max(m, Math.abs(x));
  return m;
}

function relErr(a: Float32Array, ref: Float32Array): number {
  let scale = 0;
  let err = 0;
  for (let i = 0; i < ref.length; i++) {
    scale = Math.max(scale, Math.abs(ref[i]!));
    err = Math.max(err, Math.abs(a[i]! - ref[i]!));
  }
  return err / Math.max(scale, 1e-30);
}

async function compileStep(c: CaseJson, mode: "step" | "accumulate", ema: boolean) {
  const modelDir = path.join(DIR, c.model.split(" ")[0]!);
  const st = SafetensorsFile.open(path.join(DIR, c.weights));
  const textSt = c.text_encoder_weights ? SafetensorsFile.open(path.join(DIR, c.text_encoder_weights)) : null;
  const cfg = readJson(path.join(path.relative(DIR, modelDir), "config.json"));
  const b = new Builder("train_step", fileWeights(st, textSt));
  const o = c.optimizer;
  const optimizer: TrainStepOptions["optimizer"] =
    o.type === "torch.optim.SGD" ? { type: "sgd", momentum: o.momentum!, weightDecay: o.weight_decay } : { type: "adamw", betas: o.betas!, eps: o.eps!, weightDecay: o.weight_decay };
  let model: TrainStepOptions["model"];
  if (c.model.startsWith("models/vae")) {
    model = { kind: "vae", arch: AutoencoderKLConfigSchema.parse(cfg), objective: { reconstruction: c.reconstruction_loss!, klWeight: c.kl_beta! } };
  } else {
    const s = c.schedule!;
    const { alphasCumprod } = noiseSchedule({ beta_start: s.beta_start, beta_end: s.beta_end, beta_schedule: s.beta_schedule as "scaled_linear", num_train_timesteps: s.num_train_timesteps, trained_betas: null });
    const te = c.text_encoder ? CLIPTextConfigSchema.parse(readJson(path.join(c.text_encoder, "config.json"))) : null;
    model = {
      kind: "unet",
      arch: UNet2DConditionConfigSchema.parse(cfg),
      alphasCumprod,
      // as the compiler does: with the text encoder, the step takes the tokenizer's padded length
      sequence: te ? te.max_position_embeddings : "sequence",
      textEncoder: te ? { arch: te, clipSkip: 0 } : null,
      objective: {
        prediction: c.prediction_type!,
        loss: c.loss === "huber" ? "huber" : c.loss === "l1" ? "l1" : "mse",
        huberC: c.huber_c ?? 0.1,
        snrGamma: c.snr_gamma ?? null,
        noiseOffset: c.noise_offset ?? 0,
        inputPerturbation: c.input_perturbation ?? 0,
        captionDropout: "input1.uncond_mask" in c.tensors,
      },
    };
  }
  const sig = buildTrainStep(b, {
    model,
    lora: c.lora ? { rank: c.lora.rank, alpha: c.lora.alpha, targets: c.lora.targets } : null,
    optimizer,
    maxGradNorm: c.max_grad_norm ?? null,
    ema,
    accumulation: c.micro_batches ?? 1,
    mode,
    target: { ep: "cpu", training: true },
    outputGradients: true,
  });
  verify(b.graph, { final: true });
  foldKnown(b.graph);
  dce(b.graph);
  verify(b.graph, { final: true });
  const dir = path.join(tmp, `${c.case}-${mode}`);
  writeOnnx(b.graph, { dir });
  const session = await ort.InferenceSession.create(path.join(dir, "model.onnx"), { logSeverityLevel: 3, intraOpNumThreads: 2 });
  return { session, sig, st, textSt };
}

/** Runs the case's steps through sdc's graphs and compares with the reference; returns the worst errors. */
async function runCase(name: string, opts: { ema?: boolean } = {}) {
  const c = readJson(`${name}.json`) as CaseJson;
  const ref = SafetensorsFile.open(path.join(DIR, `${name}.safetensors`));
  const emaRef = opts.ema ? SafetensorsFile.open(path.join(DIR, "ema.safetensors")) : null;
  const decays = opts.ema ? (readJson("ema.json").decays as number[]) : [];
  const K = c.micro_batches ?? 1;
  const step = await compileStep(c, "step", !!opts.ema);
  const acc = K > 1 ? await compileStep(c, "accumulate", false) : null;
  const params = new Map<string, Float32Array>();
  const shapes = new Map<string, number[]>();
  for (const e of step.sig.inputs.filter((x) => x.role === "parameter")) {
    const file = step.textSt && e.name.startsWith("text_model.") ? step.textSt : step.st;
    params.set(e.name, c.lora ? ref.readFloat32(`param0.${e.name}`) : file.readFloat32(e.name));
    shapes.set(e.name, e.shape as number[]);
  }
  // sdc trains exactly the parameters torch trained: none missing, none extra
  expect(step.sig.unused, "parameters that do not reach the loss").toEqual([]);
  expect([...params.keys()].sort()).toEqual([...ref.tensors.keys()].filter((n) => n.startsWith("grad1.")).map((n) => n.slice(6)).sort());
  const state = new Map<string, Float32Array>(); // optimizer state, EMA and accumulators by input name
  const worst = { loss: 0, grad: 0, update: 0, ema: 0, undetermined: 0, entries: 0, textGrad: 0, textUpdate: 0, textUndetermined: 0, textEntries: 0 };
  // the token table's rows no step has used so far: their gradient is exactly zero (the Gather's
  // backward scatters into zeros) and AdamW only decays them, so their updates are compared in full
  const unusedRows = params.has(TOKEN_TABLE) ? new Set(Array.from({ length: shapes.get(TOKEN_TABLE)![0]! }, (_, r) => r)) : null;
  const m1 = new Map<string, Float32Array>(); // the reference's first moment after step 1 (AdamW)
  const zeroGrad = new Set(c.zero_gradient_parameters ?? []);

  const batchFeeds = (prefix: string, inputs: ort.InferenceSession["inputNames"]) => {
    const f: Record<string, ort.Tensor> = {};
    const map: Record<string, string> = {
      latents: "latents",
      noise: "noise",
      timesteps: "timesteps",
      encoder_hidden_states: "encoder_hidden_states",
      offset_noise: "offset_noise",
      perturbation_noise: "perturbation",
      caption_drop_mask: "uncond_mask",
      input_ids: "input_ids",
      images: "images",
      posterior_noise: "posterior_noise",
    };
    for (const n of inputs) {
      if (n === "empty_prompt_embedding") {
        const t = ref.info("uncond_embedding");
        f[n] = feedFloat(ref.readFloat32("uncond_embedding"), t.shape);
        continue;
      }
      if (n === "empty_prompt_ids") {
        f[n] = new ort.Tensor("int32", readInt32(ref, n), ref.info(n).shape);
        continue;
      }
      const key = map[n];
      if (!key) continue;
      const t = ref.info(`${prefix}.${key}`);
      if (t.dtype === "I32") f[n] = new ort.Tensor("int32", readInt32(ref, `${prefix}.${key}`), t.shape);
      else if (t.dtype === "I64") {
        const raw = ref.readRaw(`${prefix}.${key}`);
        f[n] = new ort.Tensor("int64", new BigInt64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength)), t.shape);
      } else f[n] = feedFloat(ref.readFloat32(`${prefix}.${key}`), t.shape);
    }
    return f;
  };
  const stateFeeds = (session: ort.InferenceSession, k: number) => {
    const f: Record<string, ort.Tensor> = {};
    for (const n of session.inputNames) {
      if (params.has(n)) f[n] = feedFloat(params.get(n)!, shapes.get(n)!);
      else if (n === "lr") f[n] = new ort.Tensor("float64", new Float64Array([c.optimizer.lr]), []);
      else if (n === "step") f[n] = new ort.Tensor("int64", new BigInt64Array([BigInt(k)]), []);
      else if (n === "ema_decay") f[n] = new ort.Tensor("float64", new Float64Array([decays[k - 1]!]), []);
      else {
        const dot = n.indexOf(".");
        const p = n.slice(dot + 1);
        if (!params.has(p)) continue;
        const init = n.startsWith("ema.") ? params.get(p)!.slice() : new Float32Array(params.get(p)!.length);
        f[n] = feedFloat(state.get(n) ?? init, shapes.get(p)!);
      }
    }
    return f;
  };

  for (let k = 1; k <= c.steps; k++) {
    let last = `input${k}`;
    if (acc) {
      // micro-batches 1..K−1 accumulate; the last one steps
      for (let mb = 1; mb < K; mb++) {
        const out = await acc.session.run({ ...stateFeeds(acc.session, k), ...batchFeeds(`input${k}.mb${mb}`, acc.session.inputNames) });
        for (const n of acc.session.outputNames) if (n.startsWith("next.grad_acc.")) state.set(n.slice(5), out[n]!.data as Float32Array);
        worst.loss = Math.max(worst.loss, Math.abs(Number(out.loss!.data[0]) - ref.readFloat32(`loss${k}.mb${mb}`)[0]!) / Math.abs(ref.readFloat32(`loss${k}.mb${mb}`)[0]!));
      }
      last = `input${k}.mb${K}`;
    }
    const out = await step.session.run({ ...stateFeeds(step.session, k), ...batchFeeds(last, step.session.inputNames) });
    const wantLoss = acc ? ref.readFloat32(`loss${k}.mb${K}`)[0]! : ref.readFloat32(`loss${k}`)[0]!;
    worst.loss = Math.max(worst.loss, Math.abs(Number(out.loss!.data[0]) - wantLoss) / Math.abs(wantLoss));
    if (c.max_grad_norm) {
      const want = ref.readFloat32(`gradnorm${k}`)[0]!;
      expect(Math.abs(Number(out.grad_norm!.data[0]) - want) / want).toBeLessThan(1e-4);
    }
    let gmax = 0;
    for (const name of params.keys()) gmax = Math.max(gmax, maxAbs(ref.readFloat32(`grad${k}.${name}`)));
    const adam = c.optimizer.type !== "torch.optim.SGD";
    const usedRows = unusedRows ? usedTokenRows(ref, last) : null;
    if (usedRows) for (const r of usedRows) unusedRows!.delete(r);
    for (const [name, p] of params) {
      const g = out[`grad.${name}`]!.data as Float32Array;
      const gref = ref.readFloat32(`grad${k}.${name}`);
      const allowance = TOL.grad * maxAbs(gref) + 1e-5 * gmax;
      let gerr = 0;
      gref.forEach((x, i) => (gerr = Math.max(gerr, Math.abs(g[i]! - x))));
      worst.grad = Math.max(worst.grad, gerr / allowance);
      const text = name.startsWith("text_model.");
      if (text) worst.textGrad = Math.max(worst.textGrad, gerr / allowance);
      let sparse: ((i: number) => boolean) | null = null;
      if (name === TOKEN_TABLE) {
        const D = shapes.get(name)![1]!;
        const rows = new Set<number>();
        g.forEach((x, i) => x !== 0 && rows.add(Math.floor(i / D)));
        expect([...rows].sort((a, b) => a - b), `rows of ${name} with a gradient, step ${k}`).toEqual([...usedRows!].sort((a, b) => a - b));
        sparse = (i) => unusedRows!.has(Math.floor(i / D));
      }
      // the direction each entry moves in: the reference's first moment (AdamW) or gradient (SGD)
      const prevM = m1.get(name);
      const dir = adam ? gref.map((x, i) => 0.1 * x + (prevM ? 0.9 * prevM[i]! : 0)) : gref;
      if (adam) m1.set(name, dir);
      // SGD's update is linear in the gradient: every entry is compared
      const dirAllowance = adam ? 10 * 0.1 * allowance : -1;
      const next = out[`next.${name}`]!.data as Float32Array;
      const upd = next.map((x, i) => Math.fround(x - p[i]!));
      const uref = ref.readFloat32(`update${k}.${name}`);
      const uscale = maxAbs(uref);
      const lr = c.optimizer.lr;
      upd.forEach((u, i) => {
        worst.entries++;
        if (text) worst.textEntries++;
        if (Math.abs(dir[i]!) <= dirAllowance && !sparse?.(i)) {
          worst.undetermined++;
          if (text) worst.textUndetermined++;
          expect(Math.abs(u)).toBeLessThanOrEqual(3.2 * lr + lr * c.optimizer.weight_decay * Math.abs(p[i]!));
        } else {
          const e = Math.abs(u - uref[i]!) / uscale;
          worst.update = Math.max(worst.update, e);
          if (text) worst.textUpdate = Math.max(worst.textUpdate, e);
        }
      });
      if (emaRef) worst.ema = Math.max(worst.ema, relErr(out[`next.ema.${name}`]!.data as Float32Array, emaRef.readFloat32(`ema${k}.${name}`)));
      // the next step starts from the reference's parameters: before + its update
      const pref = p.map((x, i) => Math.fround(x + uref[i]!));
      params.set(name, k === 1 ? pref : next);
    }
    for (const n of step.session.outputNames) {
      if (n.startsWith("next.") && !params.has(n.slice(5)) && !n.startsWith("next.grad_acc.")) state.set(n.slice(5), out[n]!.data as Float32Array);
    }
    for (const n of [...state.keys()]) if (n.startsWith("grad_acc.")) state.delete(n); // accumulators restart from zero
  }
  await step.session.release();
  await acc?.session.release();
  report.push(
    `${name}: loss ${worst.loss.toExponential(2)}, gradient ${worst.grad.toFixed(2)} of its allowance, update ${worst.update.toExponential(2)} ` +
      `(${worst.undetermined} of ${worst.entries} entries with noise-signed moments bounded only)${emaRef ? `, ema ${worst.ema.toExponential(2)}` : ""}` +
      (unusedRows ? `; text encoder alone: gradient ${worst.textGrad.toFixed(2)} of its allowance, update ${worst.textUpdate.toExponential(2)} (${worst.textUndetermined} of ${worst.textEntries} bounded only)` : ""),
  );
  return worst;
}

describe("training steps against PyTorch (test/fixtures/train)", () => {
  it("the noise schedule sdc computes equals diffusers' alphas_cumprod bit for bit", () => {
    const st = SafetensorsFile.open(path.join(DIR, "schedule.safetensors"));
    const { alphasCumprod } = noiseSchedule({ beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear", num_train_timesteps: 1000, trained_betas: null });
    expect(Array.from(alphasCumprod)).toEqual(Array.from(st.readFloat32("alphas_cumprod")));
  });

  const cases = [
    "unet-eps-sd1",
    "unet-eps-sd2",
    "unet-v-sd1",
    "unet-minsnr-eps",
    "unet-minsnr-v",
    "unet-lora-sd1",
    "unet-extras-noise-offset",
    "unet-extras-input-perturbation",
    "unet-extras-huber",
    "unet-extras-l1",
    "unet-extras-cfg-dropout",
    "unet-extras-clip",
    "unet-extras-sgd",
    "unet-extras-accum",
    "vae-loss-mse",
    "vae-loss-l1",
    "sd1-text-encoder",
  ];
  for (const name of cases) {
    it(name, async () => {
      const w = await runCase(name);
      expect(w.loss, "loss").toBeLessThan(TOL.loss);
      expect(w.grad, "gradients (fraction of the allowance)").toBeLessThan(1);
      expect(w.update, "updates").toBeLessThan(TOL.update);
    });
  }

  it("EMA (diffusers' EMAModel, decay 0 then 2/11) over unet-eps-sd1", async () => {
    const w = await runCase("unet-eps-sd1", { ema: true });
    expect(w.ema).toBeLessThan(1e-5);
  });
});
