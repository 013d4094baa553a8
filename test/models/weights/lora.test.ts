import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { loadDiffusersComponent, readComponentConfig } from "../../../src/models/weights/diffusers.js";
import { unetLayoutFromConfig } from "../../../src/models/weights/keymap.js";
import { loraDelta, loraScale, moduleNames, readLora, type LoraEntry } from "../../../src/models/weights/lora.js";
import { SafetensorsFile, writeSafetensors, type TensorEntry } from "../../../src/models/weights/safetensors.js";
import { readWeightFloat32, readWeightRaw } from "../../../src/models/weights/weight-set.js";
import { MODEL_FIXTURES, tempDir } from "../../helpers/repo.js";
import { bytesEqual, problemsOf, readJson } from "./helpers.js";

const LORA = path.join(MODEL_FIXTURES, "lora");
const SD1 = path.join(MODEL_FIXTURES, "tiny-sd1");
const meta = readJson(path.join(LORA, "lora.json"));
const unet = loadDiffusersComponent(SD1, "unet");
const te = loadDiffusersComponent(SD1, "text_encoder");
const modules = { unet: moduleNames(unet), text_encoder: moduleNames(te) };
const unetLayout = unetLayoutFromConfig(readComponentConfig(SD1, "unet") as any);
const file = (dialect: string) => path.join(LORA, meta.files[dialect]);
const byModule = (es: LoraEntry[]) => new Map(es.map((e) => [`${e.component}.${e.module}`, e]));
const dir = tempDir("sdc-weights-");

describe("the same LoRA in five dialects", () => {
  const kohya = readLora(file("kohya"), { modules });
  const all = {
    kohya,
    "kohya without module list": readLora(file("kohya")),
    "kohya-ldm": readLora(file("kohya-ldm"), { modules, unetLayout }),
    peft: readLora(file("peft"), { modules }),
    diffusers: readLora(file("diffusers"), { modules }),
  };

  it("targets exactly the modules the generator chose", () => {
    const want = [...meta.modules.unet.map((m: string) => `unet.${m}`), ...meta.modules.text_encoder.map((m: string) => `text_encoder.${m}`)].sort();
    for (const [name, es] of Object.entries(all)) expect([name, [...byModule(es).keys()].sort()]).toEqual([name, want]);
    expect(kohya.filter((e) => e.targetShape.length === 4).map((e) => [e.module, e.targetShape])).toEqual([
      ["down_blocks.0.attentions.0.proj_in", [16, 16, 1, 1]],
      ["down_blocks.0.resnets.0.conv1", [16, 16, 3, 3]],
      ["up_blocks.1.attentions.1.proj_out", [16, 16, 1, 1]],
    ]);
  });

  it("reads the same factors (byte-equal), ranks and target shapes from every dialect", () => {
    const ref = byModule(kohya);
    for (const [name, es] of Object.entries(all)) {
      for (const e of es) {
        const r = ref.get(`${e.component}.${e.module}`)!;
        expect([name, e.module, e.rank, e.targetShape]).toEqual([name, r.module, meta.rank, r.targetShape]);
        expect(bytesEqual(readWeightRaw(e.down), readWeightRaw(r.down))).toBe(true);
        expect(bytesEqual(readWeightRaw(e.up), readWeightRaw(r.up))).toBe(true);
      }
    }
    expect(all["kohya-ldm"].every((e) => e.component === "text_encoder" || e.dialect === "kohya-ldm")).toBe(true);
    expect(all.peft.every((e) => e.dialect === "peft")).toBe(true);
  });

  it("carries kohya's alphas; the alpha-less dialects scale by 1", () => {
    for (const name of ["kohya", "kohya without module list", "kohya-ldm"] as const) {
      for (const e of all[name]) expect([e.module, e.alpha]).toEqual([e.module, meta.alphas[`${e.component}.${e.module}`]]);
    }
    expect(new Set(kohya.map(loraScale))).toEqual(new Set([0.25, 0.5, 1, 2]));
    for (const e of [...all.peft, ...all.diffusers]) {
      expect(e.alpha).toBeUndefined();
      expect(loraScale(e)).toBe(1);
    }
  });

  it("reads the pre-0.21 attention-processor file: the U-Net attention projections", () => {
    const procs = readLora(file("attnprocs"), { modules });
    const ref = byModule(kohya);
    expect(procs.map((e) => e.module).sort()).toEqual(meta.modules.unet.filter((m: string) => /\.to_(q|k|v|out\.0)$/.test(m)).sort());
    for (const e of procs) expect(bytesEqual(readWeightRaw(e.down), readWeightRaw(ref.get(`unet.${e.module}`)!.down))).toBe(true);
  });
});

describe("folding: W + scale * alpha/rank * up @ down equals diffusers' load_lora_weights + fuse_lora", () => {
  const merged = SafetensorsFile.open(path.join(LORA, meta.merged));
  const base = { unet, text_encoder: te };

  function maxFoldError(entries: LoraEntry[], prefix: string): { err: number; maxDelta: number } {
    let err = 0;
    let maxDelta = 0;
    for (const e of entries) {
      const w = readWeightFloat32(base[e.component].get(`${e.module}.weight`, e.targetShape));
      const d = loraDelta(e, meta.lora_scale);
      const want = merged.readFloat32(`${prefix}.${e.component}.${e.module}.weight`);
      expect(d.length).toBe(w.length);
      for (let i = 0; i < w.length; i++) {
        err = Math.max(err, Math.abs(w[i]! + d[i]! - want[i]!));
        maxDelta = Math.max(maxDelta, Math.abs(d[i]!));
      }
    }
    return { err, maxDelta };
  }

  it("kohya file (with alphas), linear and conv 1x1/3x3, within 1e-6", () => {
    const { err, maxDelta } = maxFoldError(readLora(file("kohya"), { modules }), "kohya");
    console.info(`LoRA fold (kohya, alphas): max |error| ${err.toExponential(2)}, max |delta| ${maxDelta.toFixed(3)}`);
    expect(maxDelta).toBeGreaterThan(0.1); // the deltas are large enough for the comparison to mean something
    expect(err).toBeLessThan(1e-6);
  });

  it("diffusers-format file (no alphas), within 1e-6", () => {
    const { err } = maxFoldError(readLora(file("diffusers"), { modules }), "noalpha");
    console.info(`LoRA fold (diffusers, no alphas): max |error| ${err.toExponential(2)}`);
    expect(err).toBeLessThan(1e-6);
  });

  it("a wrong alpha would be caught: folding with scale 1 instead of alpha/rank misses the reference", () => {
    const kohya = readLora(file("kohya"), { modules }).filter((e) => e.alpha !== e.rank);
    const stripped = kohya.map(({ alpha: _alpha, ...rest }) => rest as LoraEntry);
    expect(maxFoldError(stripped, "kohya").err).toBeGreaterThan(1e-2);
  });
});

describe("broken LoRA files get located errors", () => {
  let n = 0;
  const write = (entries: Record<string, number[]>): string => {
    const f = path.join(dir, `bad-${n++}.safetensors`);
    const list: TensorEntry[] = Object.entries(entries).map(([name, shape]) => ({
      name,
      dtype: "F32",
      shape,
      data: new Uint8Array(shape.reduce((a, b) => a * b, 1) * 4),
    }));
    writeSafetensors(f, list);
    return f;
  };
  const q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";

  it("an unknown key, a lone factor, a rank mismatch", () => {
    const f = write({
      "foo.bar": [1],
      [`${q}.lora_down.weight`]: [4, 16],
      "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": [4, 32],
      "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": [32, 2],
    });
    const p = problemsOf(() => readLora(f, { modules }));
    expect(p.map((x) => [x.subject, x.message])).toEqual([
      [`${f}: foo.bar`, "not a LoRA key of a known dialect"],
      [`${f}: lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight`, "rank mismatch: down [4, 32] has rank 4, up [32, 2] has 2"],
      [`${f}: ${q}.lora_down.weight`, "has no matching up factor"],
    ]);
    expect(p[0]!.hint).toMatch(/^expected kohya/);
  });

  it("a module the model lacks, with a did-you-mean", () => {
    const k = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q";
    const f = write({ [`${k}.lora_down.weight`]: [4, 32], [`${k}.lora_up.weight`]: [32, 4] });
    const [p] = problemsOf(() => readLora(f, { modules }));
    expect(p!.message).toBe("targets unet module down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q, which the model does not have");
    expect(p!.hint).toMatch(/^did you mean down_blocks\.0\.attentions\.0\.transformer_blocks\.0\.attn1\.to_q/);
  });

  it("LyCORIS factors, SDXL keys, a module given twice, a non-scalar alpha, a conv up factor that is not 1x1", () => {
    const f = write({
      "lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a": [4, 4],
      "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.alpha": [],
      [`${q}.lora_down.weight`]: [4, 16],
      [`${q}.lora_up.weight`]: [16, 4],
      "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": [4, 16],
      "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": [4, 16, 1, 1],
      "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": [16, 4, 3, 3],
      "lora_unet_down_blocks_0_attentions_0_proj_out.lora_down.weight": [4, 16],
      "lora_unet_down_blocks_0_attentions_0_proj_out.lora_up.weight": [16, 4],
      "lora_unet_down_blocks_0_attentions_0_proj_out.alpha": [2],
    });
    const p = problemsOf(() => readLora(f, { modules }));
    expect(p.map((x) => x.message).sort()).toEqual([
      "LyCORIS (LoHa, LoKr, DoRA, LoCon mid) factors are not supported",
      "SDXL text encoder LoRA keys (lora_te1_/lora_te2_); sdc supports SD 1.x/2.x",
      "a second down tensor for unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q (the first is lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight)",
      "alpha has shape [2]; expected a scalar",
      "conv LoRA up factor [16, 4, 3, 3] must be 1x1",
    ]);
  });
});

describe("a LoRA whose tensors do not fit the model's weights is refused, never folded", () => {
  let n = 0;
  const write = (entries: Record<string, number[]>): string => {
    const f = path.join(dir, `misfit-${n++}.safetensors`);
    writeSafetensors(f, Object.entries(entries).map(([name, shape]) => ({ name, dtype: "F32", shape, data: new Uint8Array(shape.reduce((a, b) => a * b, 1) * 4) })));
    return f;
  };
  const shapes = new Map([...unet.entries(), ...te.entries()].map((r) => [r.key, r.shape]));
  const targetShape = (_c: string, m: string) => shapes.get(`${m}.weight`);
  const q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";

  it("a rank-1 LoRA for a 16x16 to_q whose down factor is 12 wide: the file, the tensor and both shapes", () => {
    expect(shapes.get("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight")).toEqual([16, 16]);
    const f = write({ [`${q}.lora_down.weight`]: [1, 12], [`${q}.lora_up.weight`]: [16, 1] });
    expect(readLora(f, { modules }).length).toBe(1); // without the model's shapes nothing can tell
    const p = problemsOf(() => readLora(f, { modules, targetShape }));
    expect(p.map((x) => [x.subject, x.message])).toEqual([
      [f, "1 tensor pair does not fit the shapes of the model's weights"],
      [`${f}: ${q}.lora_down.weight`, "would add a [16, 12] delta (down [1, 12], up [16, 1]) to unet down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight, which is [16, 16]"],
    ]);
  });

  it("conv pairs: a 1x1 conv pair fits a linear weight of the same matrix; a 3x3 pair on a 1x1 weight does not", () => {
    const pi = "lora_unet_down_blocks_0_attentions_0_proj_in";
    const c1 = "lora_unet_down_blocks_0_resnets_0_conv1";
    expect(shapes.get("down_blocks.0.resnets.0.conv1.weight")).toEqual([16, 16, 3, 3]);
    const ok = write({ [`${pi}.lora_down.weight`]: [2, 16, 1, 1], [`${pi}.lora_up.weight`]: [16, 2, 1, 1], [`${c1}.lora_down.weight`]: [2, 16, 3, 3], [`${c1}.lora_up.weight`]: [16, 2, 1, 1] });
    expect(readLora(ok, { modules, targetShape }).length).toBe(2);
    const bad = write({ [`${c1}.lora_down.weight`]: [2, 16, 1, 1], [`${c1}.lora_up.weight`]: [16, 2, 1, 1] });
    expect(problemsOf(() => readLora(bad, { modules, targetShape }))[1]!.message).toBe(
      "would add a [16, 16, 1, 1] delta (down [2, 16, 1, 1], up [16, 2, 1, 1]) to unet down_blocks.0.resnets.0.conv1.weight, which is [16, 16, 3, 3]",
    );
  });

  it("an SD 1.x LoRA on an SD 2.x model says so: cross-attention to_k/to_v take 768 features, the model's 1024", () => {
    const k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
    const f = write({ [`${k}.lora_down.weight`]: [4, 768], [`${k}.lora_up.weight`]: [320, 4] });
    const sd2 = (_c: string, m: string) => (m.endsWith("attn2.to_k") ? [320, 1024] : undefined);
    const [summary, detail] = problemsOf(() => readLora(f, { modules, targetShape: sd2 }));
    expect(summary).toEqual({
      subject: f,
      message: "is an SD 1.x LoRA on an SD 2.x model (cross-attention to_k takes 768 features in the LoRA, 1024 in the model); 1 tensor pair does not fit",
      hint: "use a LoRA trained for SD 2.x models",
    });
    expect(detail!.message).toBe("would add a [320, 768] delta (down [4, 768], up [320, 4]) to unet down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight, which is [320, 1024]");
  });
});

describe("loraDelta", () => {
  it("is scale * alpha/rank * up @ down on a hand-checked case", () => {
    const f = path.join(dir, "hand.safetensors");
    const f32 = (xs: number[]) => new Uint8Array(new Float32Array(xs).buffer);
    writeSafetensors(f, [
      { name: "lora_unet_conv_in.lora_down.weight", dtype: "F32", shape: [2, 3], data: f32([1, 2, 3, 4, 5, 6]) },
      { name: "lora_unet_conv_in.lora_up.weight", dtype: "F32", shape: [2, 2], data: f32([1, 0, 1, -1]) },
      { name: "lora_unet_conv_in.alpha", dtype: "F32", shape: [], data: f32([1]) },
    ]);
    const [e] = readLora(f);
    expect(e).toMatchObject({ component: "unet", module: "conv_in", rank: 2, alpha: 1, targetShape: [2, 3] });
    // up @ down = [[1,2,3],[1-4, 2-5, 3-6]] = [[1,2,3],[-3,-3,-3]]; * 3 (scale) * 1/2 (alpha/rank)
    expect([...loraDelta(e!, 3)]).toEqual([1.5, 3, 4.5, -4.5, -4.5, -4.5]);
  });
});
