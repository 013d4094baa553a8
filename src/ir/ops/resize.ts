/**
 * Resize (opset 19+): nearest-neighbour upsampling by integer scales, or to given sizes known at
 * build time (a U-Net upsampling to the size of its skip connection), and its gradient.
 */
import { dimEq, dimMul, type Dim } from "../dims.js";
import type { Value } from "../graph.js";
import { check, defineOps, need } from "./registry.js";

function scalesOf(s: Value): number[] {
  check(!!s.data && s.data.kind === "bytes" && s.dtype === "float32", "Resize scales must be a float32 constant");
  const bytes = (s.data as { bytes: Uint8Array }).bytes;
  return Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4));
}

defineOps({
  op: "Resize",
  domain: "",
  attrs: { mode: "string", coordinate_transformation_mode: "string", nearest_mode: "string", cubic_coeff_a: "float", exclude_outside: "int", extrapolation_value: "float", antialias: "int", keep_aspect_ratio_policy: "string", axes: "ints" },
  infer([d, _roi, sc, sz]) {
    const x = need(d, "X");
    if (sz) {
      check(!sc, "Resize takes scales or sizes, not both");
      check(sz.known !== null && sz.known.length === x.rank, `Resize sizes must be known at build time, one per dimension of ${x.rank}`);
      return [{ dtype: x.dtype, shape: [...sz.known!] }];
    }
    const scales = scalesOf(need(sc, "scales"));
    check(scales.length === x.rank, `Resize needs ${x.rank} scales, got ${scales.length}`);
    const shape: Dim[] = x.shape.map((dim, i) => {
      const f = scales[i]!;
      check(Number.isInteger(f) && f >= 1, `Resize scale ${f} must be a positive integer`);
      return f === 1 ? dim : dimMul(dim, f);
    });
    return [{ dtype: x.dtype, shape }];
  },
  /**
   * Nearest upsampling (floor, asymmetric) by an integer factor f repeats each input element
   * f×f times, so dX sums dY over f×f blocks. A resize to a skip connection's size is 2× cut to
   * that size (floor(i·h/H) = floor(i/2) for H = 2h − 1, the only other size a U-Net asks for):
   * dY is padded back to 2× with zeros first, and onnxruntime checks that size at run time.
   */
  grad({ b, node, x: [x, , sc], dy: [d] }) {
    const mode = node.attrs.mode ?? "nearest";
    check(mode === "nearest" && (node.attrs.nearest_mode ?? "round_prefer_floor") === "floor" && node.attrs.coordinate_transformation_mode === "asymmetric", `${node.name}: the Resize gradient covers nearest (floor, asymmetric) upsampling only`);
    const rank = x!.rank;
    const f = sc ? scalesOf(sc).map((s) => s) : Array(rank).fill(1).map((_, i) => (i < 2 ? 1 : 2));
    check(f[0] === 1 && f[1] === 1, `${node.name}: the Resize gradient upsamples spatial axes only`);
    const full = x!.shape.map((z, i) => dimMul(z, f[i]!));
    let dy = d!;
    if (!d!.shape.every((z, i) => dimEq(z, full[i]!))) {
      const target = b.mul(b.op1("Shape", [x!]), b.int64(f));
      const ends = b.sub(target, b.op1("Shape", [d!]));
      dy = b.op1("Pad", [d!, b.concat([b.int64(Array(rank).fill(0)), ends], 0)]);
    }
    // [N, C, h·f, w·f] → [N, C, h, f, w, f], summed over the f axes
    const spec: (number | [Value, number])[] = [[x!, 0], [x!, 1]];
    for (let i = 2; i < rank; i++) spec.push([x!, i], f[i]!);
    const blocks = b.reshapeFrom(dy, spec);
    const axes = [...Array(rank - 2).keys()].map((i) => 3 + 2 * i);
    return [b.op1("ReduceSum", [blocks, b.int64(axes)], { keepdims: 0 }), null, null, null];
  },
});
