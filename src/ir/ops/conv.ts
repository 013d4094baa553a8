/**
 * Conv (2-D and 1-D, NCHW) with strides, dilations, groups and explicit (possibly asymmetric)
 * pads, ConvTranspose (which the gradient of a strided Conv uses), and Conv's gradient rule; and the
 * composite sdc.Upsample2xConv (nearest 2× upsampling then a 3×3 convolution), computed at the low
 * resolution on the CPU.
 *
 * A symbolic size H becomes ⌊(H + P − span)/s⌋ + 1 = ⌊(H + r)/s⌋ with r = P − span + s:
 * r = 0 is ⌊H/s⌋ (the VAE's asymmetric (0,1) pad), r = s − 1 is ⌈H/s⌉ (3×3 pad 1 stride 2,
 * the U-Net's downsamplers); stride 1 with "same" padding keeps H. Other combinations need
 * static sizes.
 */
import { dimDivRound, dimEq, dimMul, dimOpaque, dimStr, isSym, shapeStr, type Dim } from "../dims.js";
import type { Builder } from "../builder.js";
import type { DType, Node, Value } from "../graph.js";
import { attrInt, attrInts, check, checkRank, defineOps, need, type Lowering } from "./registry.js";

function convOut(inp: Dim, k: number, stride: number, padBegin: number, padEnd: number, dil: number): Dim {
  const span = dil * (k - 1) + 1;
  if (!isSym(inp)) {
    const out = Math.floor((inp + padBegin + padEnd - span) / stride) + 1;
    check(out > 0, `Conv output size ${out} for input ${inp}`);
    return out;
  }
  const r = padBegin + padEnd - span + stride;
  if (stride === 1 && r === 0) return inp;
  check(stride > 1 && (r === 0 || r === stride - 1), () => `Conv with kernel ${k}, stride ${stride}, pads (${padBegin},${padEnd}) gives no closed form for symbolic size ${dimStr(inp)}`);
  return dimDivRound(inp, stride, r === 0 ? "floor" : "ceil");
}

interface ConvAttrs {
  nsp: number;
  group: number;
  kernel: number[];
  strides: number[];
  dil: number[];
  pads: number[];
}

function convAttrs(n: Node): ConvAttrs {
  const w = n.inputs[1]!;
  const nsp = w.rank - 2;
  return {
    nsp,
    group: attrInt(n.attrs, "group", 1),
    kernel: w.shape.slice(2) as number[],
    strides: attrInts(n.attrs, "strides", Array(nsp).fill(1)),
    dil: attrInts(n.attrs, "dilations", Array(nsp).fill(1)),
    pads: attrInts(n.attrs, "pads", Array(2 * nsp).fill(0)),
  };
}

const CONV_ATTRS = { kernel_shape: "ints", strides: "ints", pads: "ints", dilations: "ints", group: "int", auto_pad: "string" } as const;

defineOps(
  {
    op: "Conv",
    domain: "",
    attrs: CONV_ATTRS,
    infer([xv, wv, bv], attrs) {
      const x = need(xv, "X");
      const w = need(wv, "W");
      checkRank(x, [3, 4], "Conv input X");
      check(w.rank === x.rank, () => `Conv weight must have rank ${x.rank}, got ${shapeStr(w.shape)}`);
      check(x.dtype === w.dtype, () => `Conv input and weight differ in dtype: ${x.dtype} vs ${w.dtype}`);
      const nsp = x.rank - 2;
      const group = attrInt(attrs, "group", 1);
      const kernel = w.shape.slice(2);
      check(kernel.every((d) => typeof d === "number"), "Conv kernel size must be static");
      const ks = attrInts(attrs, "kernel_shape", kernel as number[]);
      check(ks.length === nsp && ks.every((k, i) => k === kernel[i]), () => `Conv kernel_shape ${ks} does not match weight ${shapeStr(w.shape)}`);
      const strides = attrInts(attrs, "strides", Array(nsp).fill(1));
      const dil = attrInts(attrs, "dilations", Array(nsp).fill(1));
      const pads = attrInts(attrs, "pads", Array(2 * nsp).fill(0));
      const cin = x.shape[1]!;
      const wcin = w.shape[1]!;
      check(typeof wcin === "number" && dimEq(cin, wcin * group), () => `Conv input has ${dimStr(cin)} channels, weight ${shapeStr(w.shape)} with group ${group} expects ${dimStr(wcin)}×${group}`);
      const cout = w.shape[0]!;
      if (bv) {
        checkRank(bv, 1, "Conv bias");
        check(dimEq(bv.shape[0]!, cout), () => `Conv bias ${shapeStr(bv.shape)} does not match ${dimStr(cout)} output channels`);
      }
      const spatial = x.shape.slice(2).map((d, i) => convOut(d, ks[i]!, strides[i]!, pads[i]!, pads[i + nsp]!, dil[i]!));
      return [{ dtype: x.dtype, shape: [x.shape[0]!, cout, ...spatial] }];
    },
    grad({ b, node, x: [x, w, bias], dy: [d], wants }) {
      const a = convAttrs(node);
      const sp = [...Array(a.nsp).keys()].map((i) => i + 2);
      return [
        wants[0] ? convGradInput(b, a, x!, w!, d!) : null,
        wants[1] ? convGradWeight(b, a, x!, w!, d!) : null,
        bias && wants[2] ? b.op1("ReduceSum", [d!, b.int64([0, ...sp])], { keepdims: 0 }) : null,
      ];
    },
  },
  {
    // Weight [C_in, C_out / group, k...]; output_padding extends the end of each spatial axis.
    op: "ConvTranspose",
    domain: "",
    attrs: { ...CONV_ATTRS, output_padding: "ints", output_shape: "ints" },
    infer([xv, wv], attrs) {
      const x = need(xv, "X");
      const w = need(wv, "W");
      checkRank(x, [3, 4], "ConvTranspose input X");
      check(w.rank === x.rank && x.dtype === w.dtype, () => `ConvTranspose weight ${w.dtype}${shapeStr(w.shape)} does not fit input ${x.dtype}${shapeStr(x.shape)}`);
      const nsp = x.rank - 2;
      const group = attrInt(attrs, "group", 1);
      check(dimEq(x.shape[1]!, w.shape[0]!), () => `ConvTranspose input has ${dimStr(x.shape[1]!)} channels, weight ${shapeStr(w.shape)} expects ${dimStr(w.shape[0]!)}`);
      const kernel = w.shape.slice(2) as number[];
      const strides = attrInts(attrs, "strides", Array(nsp).fill(1));
      const dil = attrInts(attrs, "dilations", Array(nsp).fill(1));
      const pads = attrInts(attrs, "pads", Array(2 * nsp).fill(0));
      const outPad = attrInts(attrs, "output_padding", Array(nsp).fill(0));
      const spatial = x.shape.slice(2).map((dim, i) => {
        // a symbolic size gives (H − 1)·s + …, which is no monomial: known only at run time
        if (isSym(dim)) return dimOpaque("convT");
        return (dim - 1) * strides[i]! + outPad[i]! + dil[i]! * (kernel[i]! - 1) + 1 - pads[i]! - pads[i + nsp]!;
      });
      return [{ dtype: x.dtype, shape: [x.shape[0]!, (w.shape[1] as number) * group, ...spatial] }];
    },
  },
);

/** A constant of a float dtype from float64 values. */
function floatConst(b: Builder, dtype: DType, shape: number[], values: number[]): Value {
  if (dtype === "float64") return b.constant({ dtype, shape }, new Uint8Array(new Float64Array(values).buffer));
  if (dtype === "float32") return b.float32(values, shape);
  const prev = b.floatType;
  if (prev !== dtype) throw new Error(`Conv gradient in ${dtype} inside a ${prev} graph`);
  return b.float(values, shape);
}

/**
 * dX. Stride 1: a Conv of dY with the kernel flipped and its in/out channels swapped per group,
 * padded by d(k−1) − p so the result has X's size. Strided: ConvTranspose with the forward
 * weight, the end padding dropped and output_padding s − 1 so the result covers X, then cut
 * to X's (run-time) size.
 */
function convGradInput(b: Builder, a: ConvAttrs, x: Value, w: Value, d: Value): Value {
  const { nsp, group, kernel, strides, dil, pads } = a;
  if (strides.every((s) => s === 1)) {
    const [co, cig] = w.shape as number[];
    const cog = co! / group;
    // [Co, Ci/g, k] → [g, Co/g, Ci/g, k] → [g, Ci/g, Co/g, k] → [Ci, Co/g, k], flipped in space
    let wt = b.reshape(w, [group, cog, cig!, ...kernel]);
    wt = b.transpose(wt, [0, 2, 1, ...kernel.map((_, i) => i + 3)]);
    wt = b.reshape(wt, [group * cig!, cog, ...kernel]);
    const sp = kernel.map((_, i) => i + 2);
    wt = b.op1("Slice", [wt, b.int64(sp.map(() => -1)), b.int64(sp.map(() => -(2 ** 62))), b.int64(sp), b.int64(sp.map(() => -1))]);
    const gpads = [...kernel.map((k, i) => dil[i]! * (k - 1) - pads[i]!), ...kernel.map((k, i) => dil[i]! * (k - 1) - pads[i + nsp]!)];
    check(gpads.every((p) => p >= 0), () => `the Conv gradient needs pads ≤ dilation·(kernel − 1), got pads ${pads}`);
    return b.op1("Conv", [d, wt], { kernel_shape: kernel, strides, dilations: dil, pads: gpads, group });
  }
  const tpads = [...pads.slice(0, nsp), ...Array(nsp).fill(0)];
  const full = b.op1("ConvTranspose", [d, w], { kernel_shape: kernel, strides, dilations: dil, pads: tpads, output_padding: strides.map((s) => s - 1), group });
  const sp = kernel.map((_, i) => i + 2);
  const ends = x.shape.slice(2).every((z) => typeof z === "number") ? b.int64(x.shape.slice(2) as number[]) : b.slice(b.op1("Shape", [x]), [0], [2], [2 + nsp]);
  const cut = b.op1("Slice", [full, b.int64(sp.map(() => 0)), ends, b.int64(sp)]);
  return b.reshapeLike(cut, x);
}

/**
 * dW by unfolding: a Conv of X (each channel alone) with one-hot kernels gives every kernel
 * tap's input patch P [N·Ci, k², Ho, Wo] at dY's own (symbolic) size, and dW = Σₙ dY Pᵀ per group.
 */
function convGradWeight(b: Builder, a: ConvAttrs, x: Value, w: Value, d: Value): Value {
  const { nsp, group, kernel, strides, dil, pads } = a;
  const taps = kernel.reduce((p, k) => p * k, 1);
  const onehot: number[] = [];
  for (let j = 0; j < taps; j++) for (let t = 0; t < taps; t++) onehot.push(j === t ? 1 : 0);
  const e = floatConst(b, x.dtype, [taps, 1, ...kernel], onehot);
  const xs = b.reshape(x, [-1, 1, ...Array(nsp).fill(0)]); // [N·Ci, 1, H, W]
  const patches = b.op1("Conv", [xs, e], { kernel_shape: kernel, strides, dilations: dil, pads }); // [N·Ci, k², Ho, Wo]
  const [co, cig] = w.shape as number[];
  const p = b.reshapeFrom(patches, [[x, 0], group, cig! * taps, -1]); // [N, g, Ci/g·k², L]
  const dy = b.reshape(d, [0, group, co! / group, -1]); // [N, g, Co/g, L]
  const prod = b.matmul(dy, b.transpose(p, [0, 1, 3, 2])); // [N, g, Co/g, Ci/g·k²]
  return b.reshape(b.op1("ReduceSum", [prod, b.int64([0])], { keepdims: 0 }), w.shape as number[]);
}

/**
 * nearest 2× then 3×3 (pad 1) at the low resolution. Output pixel (2i + a, 2j + b) sees input rows
 * {i − 1, i, i} (a = 0) or {i, i, i + 1} (a = 1) under the kernel's three rows, so it is a 2×2
 * convolution of the input with rows (k0, k1 + k2) or (k0 + k1, k2), padded above or below, and the
 * same along the columns: four 2×2 convolutions (16 multiply-adds per output instead of 36 at the
 * high resolution), interleaved by DepthToSpace. The summed kernels are constants onnxruntime folds
 * when it loads the graph. Exact in real arithmetic; float32 rounding differs at the 1e-7 level.
 */
const upsampleConvLowering: Lowering = {
  whyNot: (_n, t) =>
    t.training ? "gradients are taken through it" : t.ep === "cuda" ? "not measured on CUDA, where cuDNN runs the 3×3 convolution at the high resolution" : null,
  fused(b, n) {
    const [x, w, bias] = n.inputs as Value[];
    const part = (k: Value, axis: number, i: number) => b.slice(k, [axis], [i], [i + 1]);
    // the kernel's taps along `axis` for phase 0 or 1
    const taps = (k: Value, axis: number, phase: number) =>
      phase === 0 ? b.concat([part(k, axis, 0), b.add(part(k, axis, 1), part(k, axis, 2))], axis) : b.concat([b.add(part(k, axis, 0), part(k, axis, 1)), part(k, axis, 2)], axis);
    const phases: Value[] = [];
    for (const a of [0, 1])
      for (const c of [0, 1]) {
        const k = taps(taps(w!, 2, a), 3, c); // [Cout, Cin, 2, 2]
        const pads = [a === 0 ? 1 : 0, c === 0 ? 1 : 0, a === 0 ? 0 : 1, c === 0 ? 0 : 1];
        phases.push(b.op1("Conv", bias ? [x!, k, bias] : [x!, k], { kernel_shape: [2, 2], strides: [1, 1], pads }));
      }
    return b.op1("DepthToSpace", [b.concat(phases, 1)], { blocksize: 2, mode: "DCR" });
  },
  primitive(b, n) {
    const [x, w, bias] = n.inputs as Value[];
    return b.op1("Conv", bias ? [b.upsampleNearest2x(x!), w!, bias] : [b.upsampleNearest2x(x!), w!], { kernel_shape: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1] });
  },
};

defineOps(
  {
    // x [B, Cin, H, W], W [Cout, Cin, 3, 3], bias [Cout] → [B, Cout, 2H, 2W]: diffusers' Upsample2D (interpolate ×2, conv)
    op: "Upsample2xConv",
    domain: "sdc",
    infer([xv, wv, bv]) {
      const x = need(xv, "X");
      const w = need(wv, "W");
      checkRank(x, 4, "Upsample2xConv input X");
      check(w.rank === 4 && w.shape[2] === 3 && w.shape[3] === 3 && dimEq(w.shape[1]!, x.shape[1]!), () => `Upsample2xConv weight ${shapeStr(w.shape)} must be [Cout, ${dimStr(x.shape[1]!)}, 3, 3]`);
      if (bv) check(bv.rank === 1 && dimEq(bv.shape[0]!, w.shape[0]!), () => `Upsample2xConv bias ${shapeStr(bv.shape)} must be [${dimStr(w.shape[0]!)}]`);
      return [{ dtype: x.dtype, shape: [x.shape[0]!, w.shape[0]!, dimMul(x.shape[2]!, 2), dimMul(x.shape[3]!, 2)] }];
    },
    lower: upsampleConvLowering,
  },
);
