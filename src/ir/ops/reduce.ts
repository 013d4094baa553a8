/** Reductions (opset 18 form: axes as an input), Softmax, ArgMax. */
import type { Dim } from "../dims.js";
import { attrInt, check, checkDtype, defineOps, need, normAxis, type OpDef } from "./registry.js";

function reduce(op: string): OpDef {
  return {
    op,
    domain: "",
    attrs: { keepdims: "int", noop_with_empty_axes: "int" },
    infer([d, a], attrs) {
      const x = need(d, "data");
      const keep = attrInt(attrs, "keepdims", 1);
      let axes: number[];
      if (a) {
        check(a.known !== null && a.known.every((k) => typeof k === "number"), `${op} axes must be constant`);
        axes = (a.known as number[]).map((ax) => normAxis(ax, x.rank));
      } else axes = [...Array(x.rank).keys()];
      const shape: Dim[] = [];
      x.shape.forEach((dim, i) => {
        if (!axes.includes(i)) shape.push(dim);
        else if (keep) shape.push(1);
      });
      return [{ dtype: x.dtype, shape }];
    },
  };
}

defineOps(
  reduce("ReduceMean"),
  reduce("ReduceSum"),
  reduce("ReduceMax"),
  {
    op: "Softmax",
    domain: "",
    attrs: { axis: "int" },
    infer([d], attrs) {
      const x = need(d, "input");
      normAxis(attrInt(attrs, "axis", -1), x.rank);
      return [{ dtype: x.dtype, shape: [...x.shape] }];
    },
  },
  {
    op: "ArgMax",
    domain: "",
    attrs: { axis: "int", keepdims: "int", select_last_index: "int" },
    infer([d], attrs) {
      const x = need(d, "data");
      checkDtype(x, ["float32", "float16", "int32", "int64"], "ArgMax input");
      const axis = normAxis(attrInt(attrs, "axis", 0), x.rank);
      const keep = attrInt(attrs, "keepdims", 1);
      const shape = x.shape.flatMap((dim, i) => (i !== axis ? [dim] : keep ? [1] : []));
      return [{ dtype: "int64", shape }];
    },
  },
);
