/**
 * Shape ops: Reshape (ONNX's 0 = copy, -1 = infer), Transpose, Concat, Slice, Split, Squeeze,
 * Unsqueeze, Expand, Shape, Gather, GatherND. Shape-carrying inputs must be known at build time
 * (constants, or derived from Shape of a value), so every output shape is static or symbolic.
 */
import { dimDiv, dimEq, dimMul, dimProd, dimStr, isSym, shapeStr, type Dim } from "../dims.js";
import type { Value } from "../graph.js";
import { broadcast } from "./elementwise.js";
import { attrInt, attrInts, check, checkDtype, defineOps, need, normAxis } from "./registry.js";

const INT64_MAX = 2 ** 63 - 1;

function known(v: Value | null, what: string): Dim[] {
  check(!!v && v.known !== null, `${what} must be known at build time (a constant or derived from Shape)`);
  return v!.known!;
}

function knownInts(v: Value | null, what: string): number[] {
  const k = known(v, what);
  check(k.every((d) => typeof d === "number"), `${what} must hold plain integers`);
  return k as number[];
}

defineOps(
  {
    op: "Reshape",
    domain: "",
    attrs: { allowzero: "int" },
    infer([d, s]) {
      const x = need(d, "data");
      checkDtype(need(s, "shape"), ["int64"], "Reshape shape");
      const target = known(s, "Reshape shape");
      const out: (Dim | null)[] = target.map((t, i) => {
        if (t === 0) {
          check(i < x.rank, `Reshape 0 at position ${i} beyond input rank ${x.rank}`);
          return x.shape[i]!;
        }
        if (t === -1) return null;
        check(isSym(t) || t > 0, `Reshape target dimension ${dimStr(t)} is invalid`);
        return t;
      });
      const total = dimProd(x.shape);
      const holes = out.filter((o) => o === null).length;
      check(holes <= 1, "Reshape target has more than one -1");
      if (holes === 1) {
        const rest = dimProd(out.filter((o): o is Dim => o !== null));
        let inferred: Dim;
        try {
          inferred = dimDiv(total, rest);
        } catch {
          check(false, () => `Reshape cannot infer -1: ${shapeStr(x.shape)} is not divisible by ${dimStr(rest)}`);
          throw new Error("unreachable");
        }
        out[out.indexOf(null)] = inferred;
      }
      const shape = out as Dim[];
      check(dimEq(dimProd(shape), total), () => `Reshape from ${shapeStr(x.shape)} to ${shapeStr(shape)} changes the element count`);
      return [{ dtype: x.dtype, shape }];
    },
  },
  {
    op: "Transpose",
    domain: "",
    attrs: { perm: "ints" },
    infer([d], attrs) {
      const x = need(d, "data");
      const perm = attrInts(attrs, "perm", [...Array(x.rank).keys()].reverse());
      check(perm.length === x.rank && [...perm].sort((a, b) => a - b).every((p, i) => p === i), () => `Transpose perm ${perm} is not a permutation of rank ${x.rank}`);
      return [{ dtype: x.dtype, shape: perm.map((p) => x.shape[p]!) }];
    },
  },
  {
    op: "Concat",
    domain: "",
    attrs: { axis: "int" },
    infer(inputs, attrs) {
      const xs = inputs.map((v, i) => need(v, `input ${i}`));
      check(xs.length >= 1, "Concat needs inputs");
      const r = xs[0]!.rank;
      const axis = normAxis(attrInt(attrs, "axis"), r);
      let total: Dim = 0;
      for (const v of xs) {
        check(v.dtype === xs[0]!.dtype, () => `Concat inputs differ in dtype: ${xs[0]!.dtype} vs ${v.dtype}`);
        check(v.rank === r, () => `Concat inputs differ in rank: ${shapeStr(xs[0]!.shape)} vs ${shapeStr(v.shape)}`);
        v.shape.forEach((d, i) => {
          if (i !== axis) check(dimEq(d, xs[0]!.shape[i]!), () => `Concat along axis ${axis}: ${shapeStr(xs[0]!.shape)} and ${shapeStr(v.shape)} differ at dimension ${i}`);
        });
        const d = v.shape[axis]!;
        if (typeof total === "number" && typeof d === "number") total += d;
        else if (dimEq(total, 0)) total = d;
        else if (dimEq(total, d)) total = dimMul(2, d);
        else check(false, () => `Concat of symbolic sizes ${dimStr(total)} and ${dimStr(d)} is not supported`);
      }
      const shape = [...xs[0]!.shape];
      shape[axis] = total;
      const kn = xs.every((v) => v.known !== null) ? xs.flatMap((v) => v.known!) : undefined;
      return [{ dtype: xs[0]!.dtype, shape, known: kn }];
    },
  },
  {
    op: "Slice",
    domain: "",
    infer([d, st, en, ax, sp]) {
      const x = need(d, "data");
      const starts = knownInts(st, "Slice starts");
      const ends = knownInts(en, "Slice ends");
      const axes = ax ? knownInts(ax, "Slice axes") : starts.map((_, i) => i);
      const steps = sp ? knownInts(sp, "Slice steps") : starts.map(() => 1);
      const shape = [...x.shape];
      let kn = x.known ? [...x.known] : undefined;
      axes.forEach((a0, i) => {
        const a = normAxis(a0, x.rank);
        const dim = x.shape[a]!;
        const step = steps[i]!;
        check(step === 1, "Slice supports step 1 only");
        if (isSym(dim)) {
          check(starts[i] === 0 && ends[i]! >= INT64_MAX / 2, () => `Slice of symbolic dimension ${dimStr(dim)} must take all of it`);
          return;
        }
        const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + dim : v, 0), dim);
        const b = clamp(starts[i]!);
        const e = clamp(ends[i]!);
        shape[a] = Math.max(e - b, 0);
        if (kn && x.rank === 1) kn = kn.slice(b, e);
      });
      return [{ dtype: x.dtype, shape, known: kn }];
    },
  },
  {
    // Split-18: equal parts via num_outputs, or explicit sizes in the `split` input.
    op: "Split",
    domain: "",
    attrs: { axis: "int", num_outputs: "int" },
    infer([d, s], attrs) {
      const x = need(d, "input");
      const axis = normAxis(attrInt(attrs, "axis", 0), x.rank);
      const dim = x.shape[axis]!;
      let sizes: Dim[];
      if (s) sizes = knownInts(s, "Split sizes");
      else {
        const n = attrInt(attrs, "num_outputs");
        let part: Dim;
        try {
          part = dimDiv(dim, n);
        } catch {
          check(false, () => `Split of ${dimStr(dim)} into ${n} equal parts`);
          throw new Error("unreachable");
        }
        check(typeof part !== "number" || Number.isInteger(part), () => `Split of ${dimStr(dim)} into ${n} equal parts`);
        sizes = Array(n).fill(part);
      }
      if (sizes.every((z) => typeof z === "number") && typeof dim === "number") {
        const sum = (sizes as number[]).reduce((a, b) => a + b, 0);
        check(sum === dim, () => `Split sizes ${sizes.map(dimStr)} do not add up to ${dim}`);
      }
      return sizes.map((z) => {
        const shape = [...x.shape];
        shape[axis] = z;
        return { dtype: x.dtype, shape };
      });
    },
  },
  {
    op: "Unsqueeze",
    domain: "",
    infer([d, a]) {
      const x = need(d, "data");
      const axes = knownInts(a, "Unsqueeze axes");
      const r = x.rank + axes.length;
      const norm = axes.map((ax) => normAxis(ax, r)).sort((p, q) => p - q);
      const shape: Dim[] = [];
      let j = 0;
      for (let i = 0; i < r; i++) shape.push(norm.includes(i) ? 1 : x.shape[j++]!);
      return [{ dtype: x.dtype, shape, known: x.known ?? undefined }];
    },
  },
  {
    op: "Squeeze",
    domain: "",
    infer([d, a]) {
      const x = need(d, "data");
      const axes = knownInts(a, "Squeeze axes").map((ax) => normAxis(ax, x.rank));
      for (const ax of axes) check(x.shape[ax] === 1, () => `Squeeze axis ${ax} of ${shapeStr(x.shape)} is not 1`);
      return [{ dtype: x.dtype, shape: x.shape.filter((_, i) => !axes.includes(i)), known: x.known ?? undefined }];
    },
  },
  {
    op: "Expand",
    domain: "",
    infer([d, s]) {
      const x = need(d, "input");
      const target = known(s, "Expand shape");
      let shape: Dim[];
      try {
        shape = broadcast(x.shape, target);
      } catch {
        check(false, () => `Expand of ${shapeStr(x.shape)} to ${shapeStr(target)}`);
        throw new Error("unreachable");
      }
      return [{ dtype: x.dtype, shape }];
    },
  },
  {
    // Pad (constant mode): pads = [begin_0, …, begin_n, end_0, …, end_n].
    op: "Pad",
    domain: "",
    attrs: { mode: "string" },
    infer([d, p], attrs) {
      const x = need(d, "data");
      check((attrs.mode ?? "constant") === "constant", "Pad supports constant mode only");
      const pads = knownInts(p, "Pad pads");
      check(pads.length === 2 * x.rank, () => `Pad needs ${2 * x.rank} pads, got ${pads.length}`);
      const shape = x.shape.map((dim, i) => {
        const add = pads[i]! + pads[i + x.rank]!;
        if (add === 0) return dim;
        check(typeof dim === "number", () => `Pad of symbolic dimension ${dimStr(dim)}`);
        return (dim as number) + add;
      });
      return [{ dtype: x.dtype, shape }];
    },
  },
  {
    op: "Shape",
    domain: "",
    attrs: { start: "int", end: "int" },
    infer([d]) {
      const x = need(d, "data");
      return [{ dtype: "int64", shape: [x.rank], known: [...x.shape] }];
    },
  },
  {
    op: "Gather",
    domain: "",
    attrs: { axis: "int" },
    infer([d, i], attrs) {
      const x = need(d, "data");
      const idx = need(i, "indices");
      checkDtype(idx, ["int64", "int32"], "Gather indices");
      const axis = normAxis(attrInt(attrs, "axis", 0), x.rank);
      const shape = [...x.shape.slice(0, axis), ...idx.shape, ...x.shape.slice(axis + 1)];
      let kn: Dim[] | undefined;
      if (x.known && x.rank === 1 && idx.known && idx.known.every((k) => typeof k === "number")) {
        kn = (idx.known as number[]).map((k) => x.known![k < 0 ? k + x.known!.length : k]!);
      }
      return [{ dtype: x.dtype, shape, known: kn }];
    },
  },
  {
    op: "GatherND",
    domain: "",
    attrs: { batch_dims: "int" },
    infer([d, i], attrs) {
      const x = need(d, "data");
      const idx = need(i, "indices");
      checkDtype(idx, ["int64"], "GatherND indices");
      const b = attrInt(attrs, "batch_dims", 0);
      const last = idx.shape[idx.rank - 1]!;
      check(typeof last === "number", "GatherND index depth must be static");
      for (let k = 0; k < b; k++) check(dimEq(x.shape[k]!, idx.shape[k]!), "GatherND batch dimensions differ");
      const shape = [...idx.shape.slice(0, -1), ...x.shape.slice(b + (last as number))];
      return [{ dtype: x.dtype, shape }];
    },
  },
);
