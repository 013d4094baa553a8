/**
 * Conv (2-D and 1-D, NCHW) with strides, dilations, groups and explicit (possibly asymmetric)
 * pads. A symbolic size H becomes ⌊(H + P − span)/s⌋ + 1 = ⌊(H + r)/s⌋ with r = P − span + s:
 * r = 0 is ⌊H/s⌋ (the VAE's asymmetric (0,1) pad), r = s − 1 is ⌈H/s⌉ (3×3 pad 1 stride 2,
 * the U-Net's downsamplers); stride 1 with "same" padding keeps H. Other combinations need
 * static sizes.
 */
import { dimDivRound, dimEq, dimStr, isSym, shapeStr, type Dim } from "../dims.js";
import { attrInt, attrInts, check, checkRank, defineOps, need } from "./registry.js";

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

defineOps({
  op: "Conv",
  domain: "",
  attrs: { kernel_shape: "ints", strides: "ints", pads: "ints", dilations: "ints", group: "int", auto_pad: "string" },
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
});
