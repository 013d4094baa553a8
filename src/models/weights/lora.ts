/**
 * LoRA files: pairs of low-rank factors (down [r, in(, kh, kw)], up [out, r(, 1, 1)]) and an optional
 * alpha per module, in any of the dialects of `keymap.ts` (kohya/A1111 with diffusers or LDM block
 * names, PEFT, diffusers 0.21-0.25, attention processors). `readLora` turns a file into one entry per
 * diffusers module; folding is the compiler's: W' = W + scale * (alpha / rank) * up @ down, which
 * `loraDelta` computes (convolutions: both factors flattened to matrices, as kohya and diffusers do).
 * An entry without alpha uses alpha = rank (diffusers' and PEFT's default scale of 1).
 */
import { UserError, type Problem } from "../../util/errors.js";
import {
  kohyaName,
  parseLoraKey,
  type LoraComponent,
  type LoraDialect,
  type LoraPart,
  type UnetLayout,
} from "./keymap.js";
import { SafetensorsFile, shapeStr, type TensorInfo } from "./safetensors.js";
import { nearestKeys, readWeightFloat32, type WeightRef, type WeightSet } from "./weight-set.js";

export interface LoraEntry {
  component: LoraComponent;
  /** diffusers module key, e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q". */
  module: string;
  down: WeightRef;
  up: WeightRef;
  alpha?: number;
  rank: number;
  dialect: LoraDialect;
  /** Shape of the weight the delta adds to: [out, in] or [out, in, kh, kw]. */
  targetShape: number[];
}

export interface ReadLoraOptions {
  /** Module names of the model (e.g. `moduleNames(weightSet)`): exact kohya name lookup and did-you-mean. */
  modules?: Partial<Record<LoraComponent, Iterable<string>>>;
  /** Layout for LDM-named kohya keys (lora_unet_input_blocks_...); default SD 1.x/2.x. */
  unetLayout?: UnetLayout;
  /**
   * Shape of the weight a module's delta adds to (`<module>.weight` of the model), when known: every
   * LoRA pair must fit it exactly, or the file is for another model and is reported, never folded.
   */
  targetShape?: (component: LoraComponent, module: string) => readonly number[] | undefined;
}

/** Module names of a WeightSet: every `<module>.weight` key without the suffix. */
export function moduleNames(ws: WeightSet): string[] {
  return ws
    .keys()
    .filter((k) => k.endsWith(".weight"))
    .map((k) => k.slice(0, -".weight".length));
}

const LYCORIS = /\.(hada_w[12]_[ab]|hada_t[12]|lokr_w[12](_[ab])?|lokr_t2|lora_mid\.weight|dora_scale|diff|diff_b|w_norm|b_norm)\b/;

/** Read a LoRA file; every problem (unknown key, missing partner, rank mismatch, unknown module) is reported. */
export function readLora(file: string, opts: ReadLoraOptions = {}): LoraEntry[] {
  const st = SafetensorsFile.open(file);
  const known: Partial<Record<LoraComponent, Set<string>>> = {};
  const byFlat: Partial<Record<LoraComponent, Map<string, string>>> = {};
  for (const c of ["unet", "text_encoder"] as const) {
    const mods = opts.modules?.[c];
    if (!mods) continue;
    known[c] = new Set(mods);
    byFlat[c] = new Map([...known[c]!].map((m) => [kohyaName(c, m).replace(/^lora_(unet|te)_/, ""), m]));
  }

  const problems: Problem[] = [];
  const shapeMismatches: ShapeMismatch[] = [];
  type Parts = Partial<Record<LoraPart, TensorInfo>> & { dialect: LoraDialect; component: LoraComponent; module: string };
  const groups = new Map<string, Parts>();
  for (const t of st.tensors.values()) {
    const k = parseLoraKey(t.name, {
      ...(opts.unetLayout ? { unetLayout: opts.unetLayout } : {}),
      lookupFlat: (c, flat) => byFlat[c]?.get(flat),
    });
    if (!k) {
      problems.push(unknownKey(file, t.name));
      continue;
    }
    const id = `${k.component}.${k.module}`;
    let g = groups.get(id);
    if (!g) groups.set(id, (g = { dialect: k.dialect, component: k.component, module: k.module }));
    if (g[k.part]) {
      problems.push({
        message: `a second ${k.part} tensor for ${id} (the first is ${g[k.part]!.name})`,
        subject: `${file}: ${t.name}`,
        hint: "the file mixes two LoRAs or two dialects for the same module",
      });
      continue;
    }
    g[k.part] = t;
    if (k.dialect !== "diffusers" || k.part !== "alpha") g.dialect = k.dialect;
  }

  const entries: LoraEntry[] = [];
  for (const [id, g] of groups) {
    const named = g.down ?? g.up ?? g.alpha!;
    if (!g.down || !g.up) {
      const missing = g.down ? "up" : "down";
      problems.push({
        message: `has no matching ${missing} factor`,
        subject: `${file}: ${named.name}`,
        hint: `every LoRA module needs a down and an up tensor (${id}); the file is incomplete`,
      });
      continue;
    }
    const set = known[g.component];
    if (set && !set.has(g.module)) {
      const near = nearestKeys(g.module, [...set], 3);
      problems.push({
        message: `targets ${g.component} module ${g.module}, which the model does not have`,
        subject: `${file}: ${named.name}`,
        hint: near.length ? `did you mean ${near.join(" or ")}? (is the LoRA for this model family?)` : "is the LoRA for this model family?",
      });
      continue;
    }
    const shapes = checkShapes(g.down, g.up);
    if (typeof shapes === "string") {
      problems.push({ message: shapes, subject: `${file}: ${g.down.name}` });
      continue;
    }
    const want = opts.targetShape?.(g.component, g.module);
    if (want && !fits(shapes.target, want)) {
      shapeMismatches.push({ component: g.component, module: g.module, lora: shapes.target, model: [...want] });
      problems.push({
        message: `would add a ${shapeStr(shapes.target)} delta (down ${shapeStr(g.down.shape)}, up ${shapeStr(g.up.shape)}) to ${g.component} ${g.module}.weight, which is ${shapeStr(want)}`,
        subject: `${file}: ${g.down.name}`,
      });
      continue;
    }
    let alpha: number | undefined;
    if (g.alpha) {
      if (g.alpha.shape.reduce((a, b) => a * b, 1) !== 1) {
        problems.push({ message: `alpha has shape ${shapeStr(g.alpha.shape)}; expected a scalar`, subject: `${file}: ${g.alpha.name}` });
        continue;
      }
      alpha = st.readFloat32(g.alpha.name)[0]!;
    }
    entries.push({
      component: g.component,
      module: g.module,
      down: ref(st, g.down, `${g.module}.lora_down.weight`),
      up: ref(st, g.up, `${g.module}.lora_up.weight`),
      ...(alpha !== undefined ? { alpha } : {}),
      rank: shapes.rank,
      dialect: g.dialect,
      targetShape: shapes.target,
    });
  }
  if (shapeMismatches.length) problems.unshift(mismatchSummary(file, shapeMismatches));
  if (problems.length) {
    const shown = problems.length > 12 ? [...problems.slice(0, 12), { message: `... and ${problems.length - 12} more problems` }] : problems;
    throw new UserError(shown);
  }
  entries.sort((a, b) => (a.component + a.module < b.component + b.module ? -1 : 1));
  return entries;
}

function ref(st: SafetensorsFile, t: TensorInfo, key: string): WeightRef {
  return { key, file: st.path, sourceKey: t.name, dtype: t.dtype, shape: t.shape, offset: t.offset, byteLength: t.byteLength };
}

function checkShapes(down: TensorInfo, up: TensorInfo): { rank: number; target: number[] } | string {
  const d = down.shape;
  const u = up.shape;
  if (d.length === 2 && u.length === 2) {
    if (u[1] !== d[0]) return `rank mismatch: down ${shapeStr(d)} has rank ${d[0]}, up ${shapeStr(u)} has ${u[1]}`;
    return { rank: d[0]!, target: [u[0]!, d[1]!] };
  }
  if (d.length === 4 && u.length === 4) {
    if (u[1] !== d[0]) return `rank mismatch: down ${shapeStr(d)} has rank ${d[0]}, up ${shapeStr(u)} has ${u[1]}`;
    if (u[2] !== 1 || u[3] !== 1) return `conv LoRA up factor ${shapeStr(u)} must be 1x1`;
    return { rank: d[0]!, target: [u[0]!, d[1]!, d[2]!, d[3]!] };
  }
  return `down ${shapeStr(d)} and up ${shapeStr(u)} are not a linear (2-D) or conv (4-D) pair`;
}

interface ShapeMismatch {
  component: LoraComponent;
  module: string;
  lora: number[];
  model: number[];
}

/** A 1x1 convolution weight is the same matrix as a linear one: [out, in, 1, 1] ~ [out, in]. */
function squeeze(s: readonly number[]): readonly number[] {
  return s.length === 4 && s[2] === 1 && s[3] === 1 ? s.slice(0, 2) : s;
}

function fits(lora: readonly number[], model: readonly number[]): boolean {
  const a = squeeze(lora);
  const b = squeeze(model);
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Which SD family a width belongs to: cross-attention / text encoder width 768 (SD 1.x) or 1024 (SD 2.x). */
const FAMILY_WIDTH: Record<number, string> = { 768: "SD 1.x", 1024: "SD 2.x" };

/**
 * The first problem of a file whose tensors do not fit: how many, and when the widths say so, that it
 * is a LoRA for the other SD family (cross-attention to_k/to_v and the text encoder are 768 wide in
 * SD 1.x, 1024 in SD 2.x).
 */
function mismatchSummary(file: string, list: ShapeMismatch[]): Problem {
  let family: { lora: string; model: string; detail: string } | undefined;
  for (const m of list) {
    const cross = m.component === "unet" && /\.attn2\.to_[kv]$/.test(m.module);
    const te = m.component === "text_encoder";
    if (!cross && !te) continue;
    const lw = cross ? m.lora[1]! : m.lora[0]!;
    const mw = cross ? m.model[1]! : m.model[0]!;
    const lf = FAMILY_WIDTH[lw];
    const mf = FAMILY_WIDTH[mw];
    if (!lf || !mf || lf === mf) continue;
    const detail = cross
      ? `cross-attention ${m.module.slice(m.module.lastIndexOf(".") + 1)} takes ${lw} features in the LoRA, ${mw} in the model`
      : `the text encoder is ${lw} wide in the LoRA, ${mw} in the model`;
    family = { lora: lf, model: mf, detail };
    break;
  }
  const n = list.length;
  const pairs = `${n} tensor pair${n === 1 ? " does" : "s do"} not fit`;
  if (family) {
    return {
      message: `is an ${family.lora} LoRA on an ${family.model} model (${family.detail}); ${pairs}`,
      subject: file,
      hint: `use a LoRA trained for ${family.model} models`,
    };
  }
  return {
    message: `${pairs} the shapes of the model's weights`,
    subject: file,
    hint: "the LoRA was trained for another model (or model family); sdc folds a LoRA only into weights of the shapes it was trained on",
  };
}

function unknownKey(file: string, name: string): Problem {
  if (LYCORIS.test(name)) {
    return {
      message: "LyCORIS (LoHa, LoKr, DoRA, LoCon mid) factors are not supported",
      subject: `${file}: ${name}`,
      hint: "sdc folds plain LoRA (down/up/alpha); convert or re-extract the LoRA as plain LoRA",
    };
  }
  if (/^lora_te[12]_/.test(name)) {
    return { message: "SDXL text encoder LoRA keys (lora_te1_/lora_te2_); sdc supports SD 1.x/2.x", subject: `${file}: ${name}` };
  }
  return {
    message: "not a LoRA key of a known dialect",
    subject: `${file}: ${name}`,
    hint:
      "expected kohya (lora_unet_<module>.lora_down.weight / .lora_up.weight / .alpha, lora_te_...), " +
      "PEFT (unet.<module>.lora_A.weight / lora_B.weight) or diffusers (unet.<module>.lora.down.weight, " +
      "<attention>.processor.to_q_lora.down.weight)",
  };
}

/** alpha / rank, the factor kohya and diffusers put on up @ down (1 when the file has no alpha). */
export function loraScale(entry: LoraEntry): number {
  return entry.alpha === undefined ? 1 : entry.alpha / entry.rank;
}

/**
 * The weight delta `scale * (alpha / rank) * up @ down` in the target's shape ([out, in] or
 * [out, in, kh, kw], row-major), accumulated in float64.
 */
export function loraDelta(entry: LoraEntry, scale = 1): Float32Array {
  const down = readWeightFloat32(entry.down);
  const up = readWeightFloat32(entry.up);
  const r = entry.rank;
  const out = entry.targetShape[0]!;
  const inner = down.length / r; // in * kh * kw
  const f = scale * loraScale(entry);
  const delta = new Float32Array(out * inner);
  const acc = new Float64Array(inner);
  for (let o = 0; o < out; o++) {
    acc.fill(0);
    for (let k = 0; k < r; k++) {
      const u = up[o * r + k]!;
      if (u === 0) continue;
      const row = k * inner;
      for (let i = 0; i < inner; i++) acc[i]! += u * down[row + i]!;
    }
    for (let i = 0; i < inner; i++) delta[o * inner + i] = f * acc[i]!;
  }
  return delta;
}
