/**
 * Resize (opset 19+): nearest-neighbour upsampling by integer scales, or to given sizes known at
 * build time (a U-Net upsampling to the size of its skip connection).
 */
import { dimMul, type Dim } from "../dims.js";
import { check, defineOps, need } from "./registry.js";

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
    const s = need(sc, "scales");
    check(!!s.data && s.data.kind === "bytes" && s.dtype === "float32", "Resize scales must be a float32 constant");
    const bytes = (s.data as { bytes: Uint8Array }).bytes;
    const scales = Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4));
    check(scales.length === x.rank, `Resize needs ${x.rank} scales, got ${scales.length}`);
    const shape: Dim[] = x.shape.map((dim, i) => {
      const f = scales[i]!;
      check(Number.isInteger(f) && f >= 1, `Resize scale ${f} must be a positive integer`);
      return f === 1 ? dim : dimMul(dim, f);
    });
    return [{ dtype: x.dtype, shape }];
  },
});
