/**
 * Shape ops: Reshape (ONNX's 0 = copy, -1 = infer), Transpose, Concat, Slice, Split, Squeeze,
 * Unsqueeze, Expand, Shape, Gather, GatherND, ScatterND, ScatterElements. Shape-carrying inputs must be known at build time
 * (constants, or derived from Shape of a value), so every output shape is static or symbolic.
 */
import { dimDiv, dimEq, dimMul, dimOpaque, dimProd, dimStr, hasOpaque, isSym, shapeStr, type Dim } from "../dims.js";
import type { Value } from "../graph.js";
import { reshapeTo, sumTo, zerosLike } from "./grad-util.js";
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
      if (holes === 1 && hasOpaque(x.shape)) out[out.indexOf(null)] = dimOpaque("reshape");
      else if (holes === 1) {
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
      // a size known only at run time (see dimOpaque): onnxruntime checks the count there
      if (!hasOpaque(x.shape) && !hasOpaque(shape))
        check(dimEq(dimProd(shape), total), () => `Reshape from ${shapeStr(x.shape)} to ${shapeStr(shape)} changes the element count`);
      return [{ dtype: x.dtype, shape }];
    },
    grad: ({ b, x: [p], dy: [d] }) => [reshapeTo(b, d!, p!), null],
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
    grad({ b, node, x: [p], dy: [d] }) {
      const perm = attrInts(node.attrs, "perm", [...Array(p!.rank).keys()].reverse());
      const inv: number[] = [];
      perm.forEach((q, i) => (inv[q] = i));
      return [b.transpose(d!, inv)];
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
    // the pieces of dY at each input's offset along the axis
    grad({ b, node, x, dy: [d], wants }) {
      if (x.length === 1) return [d!];
      const axis = normAxis(attrInt(node.attrs, "axis"), d!.rank);
      const sizes = x.map((v) => v!.shape[axis]!);
      let parts: Value[];
      if (sizes.every((z) => typeof z === "number")) parts = b.op("Split", [d!, b.int64(sizes as number[])], { axis });
      else {
        check(sizes.every((z) => dimEq(z, sizes[0]!)), () => `the Concat gradient needs static or equal sizes along the axis, got ${sizes.map(dimStr).join(", ")}`);
        parts = b.split(d!, x.length, axis);
      }
      return parts.map((v, i) => (wants[i] ? v : null));
    },
  },
  {
    // Static sizes take any step (−1 flips). A symbolic size is taken whole, or cut to a size
    // that came from another value's Shape (an end known only symbolically).
    op: "Slice",
    domain: "",
    infer([d, st, en, ax, sp]) {
      const x = need(d, "data");
      const starts = knownInts(st, "Slice starts");
      const ends = known(en, "Slice ends");
      const axes = ax ? knownInts(ax, "Slice axes") : starts.map((_, i) => i);
      const steps = sp ? knownInts(sp, "Slice steps") : starts.map(() => 1);
      const shape = [...x.shape];
      let kn = x.known ? [...x.known] : undefined;
      axes.forEach((a0, i) => {
        const a = normAxis(a0, x.rank);
        const dim = x.shape[a]!;
        const step = steps[i]!;
        const end = ends[i]!;
        check(step !== 0, "Slice step 0");
        if (isSym(end)) {
          check(starts[i] === 0 && step === 1, () => `Slice to the run-time size ${dimStr(end)} must start at 0 with step 1`);
          shape[a] = end;
          kn = undefined;
          return;
        }
        if (isSym(dim)) {
          check(starts[i] === 0 && end >= INT64_MAX / 2 && step === 1, () => `Slice of symbolic dimension ${dimStr(dim)} must take all of it`);
          return;
        }
        if (step > 0) {
          const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + dim : v, 0), dim);
          const b = clamp(starts[i]!);
          const e = clamp(end);
          shape[a] = Math.max(Math.ceil((e - b) / step), 0);
          if (kn && x.rank === 1) kn = step === 1 ? kn.slice(b, e) : undefined;
        } else {
          const clamp = (v: number, lo: number) => Math.min(Math.max(v < 0 ? v + dim : v, lo), dim - 1);
          const b = clamp(starts[i]!, 0);
          const e = end < -dim ? -1 : clamp(end, -1);
          shape[a] = Math.max(Math.ceil((b - e) / -step), 0);
          kn = undefined;
        }
      });
      return [{ dtype: x.dtype, shape, known: kn }];
    },
    // dY padded back with zeros to X's shape
    grad({ b, node, x: [p, st, , ax, sp], dy: [d] }) {
      const x = p!;
      const starts = knownInts(st!, "Slice starts");
      const axes = (ax ? knownInts(ax, "Slice axes") : starts.map((_, i) => i)).map((a) => normAxis(a, x.rank));
      check(!sp || knownInts(sp, "Slice steps").every((z) => z === 1), `${node.name}: the Slice gradient takes step 1 only`);
      const begin = Array(x.rank).fill(0);
      axes.forEach((a, i) => {
        const dim = x.shape[a]!;
        const s0 = starts[i]!;
        begin[a] = typeof dim === "number" ? Math.min(Math.max(s0 < 0 ? s0 + dim : s0, 0), dim) : s0;
      });
      if (x.shape.every((z) => typeof z === "number") && d!.shape.every((z) => typeof z === "number")) {
        const end = x.shape.map((z, i) => (z as number) - begin[i]! - (d!.shape[i] as number));
        return [b.op1("Pad", [d!, b.int64([...begin, ...end])]), null, null, null, null];
      }
      // sizes known at run time: end pads = shape(X) − shape(dY) − begin
      const end = b.sub(b.sub(b.op1("Shape", [x]), b.op1("Shape", [d!])), b.int64(begin));
      const padded = b.op1("Pad", [d!, b.concat([b.int64(begin), end], 0)]);
      return [b.reshapeLike(padded, x), null, null, null, null];
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
    grad({ b, node, y, dy }) {
      const axis = normAxis(attrInt(node.attrs, "axis", 0), y[0]!.rank);
      return [b.concat(dy.map((v, i) => v ?? zerosLike(b, y[i]!)), axis), null];
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
    grad: ({ b, x: [p], dy: [d] }) => [reshapeTo(b, d!, p!), null],
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
    grad: ({ b, x: [p], dy: [d] }) => [reshapeTo(b, d!, p!), null],
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
    grad: ({ b, x: [p], dy: [d] }) => [sumTo(b, d!, p!), null],
  },
  {
    // Pad (constant mode): pads = [begin_0, …, begin_n, end_0, …, end_n].
    op: "Pad",
    domain: "",
    attrs: { mode: "string" },
    infer([d, p], attrs) {
      const x = need(d, "data");
      check((attrs.mode ?? "constant") === "constant", "Pad supports constant mode only");
      // pads computed at run time: every padded size is known only then
      if (need(p, "pads").known === null) return [{ dtype: x.dtype, shape: x.shape.map(() => dimOpaque("pad")) }];
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
    // the padded border dropped again
    grad({ b, x: [p, pv], dy: [d] }) {
      const x = p!;
      const pads = knownInts(pv!, "Pad pads");
      const ends = x.shape.map((z, i) => (typeof z === "number" ? pads[i]! + z : INT64_MAX));
      return [b.op1("Slice", [d!, b.int64(pads.slice(0, x.rank)), b.int64(ends), b.int64([...x.shape.keys()])]), null, null];
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
    // rows of dY added into zeros at the gathered indices (an embedding table's gradient)
    grad({ b, node, x: [p, i], dy: [d] }) {
      check(normAxis(attrInt(node.attrs, "axis", 0), p!.rank) === 0, `${node.name}: the Gather gradient takes axis 0 only`);
      const idx = b.unsqueeze(i!.dtype === "int64" ? i! : b.cast(i!, "int64"), [-1]);
      return [b.op1("ScatterND", [zerosLike(b, p!), idx, d!], { reduction: "add" }), null];
    },
  },
  {
    op: "ScatterND",
    domain: "",
    attrs: { reduction: "string" },
    infer([d, i, u]) {
      const x = need(d, "data");
      const idx = need(i, "indices");
      const upd = need(u, "updates");
      checkDtype(idx, ["int64"], "ScatterND indices");
      const k = idx.shape[idx.rank - 1]!;
      check(typeof k === "number" && k <= x.rank, "ScatterND index depth must be static and at most the data's rank");
      const want = [...idx.shape.slice(0, -1), ...x.shape.slice(k as number)];
      check(upd.dtype === x.dtype && upd.rank === want.length && upd.shape.every((z, j) => dimEq(z, want[j]!)), () => `ScatterND updates ${shapeStr(upd.shape)} must be ${shapeStr(want)}`);
      return [{ dtype: x.dtype, shape: [...x.shape] }];
    },
  },
  {
    // ScatterElements-18: data with updates written (or reduced) at `indices` along `axis`; indices
    // and updates have one shape, of data's rank. Token merging uses it: its gradient is not needed.
    op: "ScatterElements",
    domain: "",
    attrs: { axis: "int", reduction: "string" },
    infer([d, i, u], attrs) {
      const x = need(d, "data");
      const idx = need(i, "indices");
      const upd = need(u, "updates");
      checkDtype(idx, ["int64", "int32"], "ScatterElements indices");
      normAxis(attrInt(attrs, "axis", 0), x.rank);
      check(["none", "add", "mul", "max", "min"].includes(String(attrs.reduction ?? "none")), () => `ScatterElements reduction ${String(attrs.reduction)}`);
      check(idx.rank === x.rank && upd.rank === x.rank, () => `ScatterElements indices ${shapeStr(idx.shape)} and updates ${shapeStr(upd.shape)} must have the data's rank ${x.rank}`);
      check(upd.dtype === x.dtype && idx.shape.every((z, j) => dimEq(z, upd.shape[j]!)), () => `ScatterElements updates ${shapeStr(upd.shape)} must match indices ${shapeStr(idx.shape)} and the data's dtype`);
      return [{ dtype: x.dtype, shape: [...x.shape] }];
    },
  },
  {
    // DepthToSpace: [B, C·s², H, W] → [B, C, H·s, W·s]; DCR takes channel (i·s + j)·C + c to (c, h·s + i, w·s + j)
    op: "DepthToSpace",
    domain: "",
    attrs: { blocksize: "int", mode: "string" },
    infer([d], attrs) {
      const x = need(d, "input");
      const s = attrInt(attrs, "blocksize");
      check(x.rank === 4, () => `DepthToSpace input must have rank 4, got ${shapeStr(x.shape)}`);
      const c = x.shape[1]!;
      check(typeof c === "number" && c % (s * s) === 0, () => `DepthToSpace of ${dimStr(c)} channels with blocksize ${s}`);
      return [{ dtype: x.dtype, shape: [x.shape[0]!, c / (s * s), dimMul(x.shape[2]!, s), dimMul(x.shape[3]!, s)] }];
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
