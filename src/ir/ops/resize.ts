/** Resize (opset 19+): sdc uses it for nearest-neighbour upsampling by integer scales. */
import { dimMul, type Dim } from "../dims.js";
import { check, defineOps, need } from "./registry.js";

defineOps({
  op: "Resize",
  domain: "",
  infer([d, _roi, sc, sz]) {
    const x = need(d, "X");
    check(!sz, "Resize by sizes is not supported: give integer scales");
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
