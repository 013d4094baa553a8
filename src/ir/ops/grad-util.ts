/**
 * Pieces the gradient rules of several op families share: reducing a broadcast cotangent back to
 * its input's shape, zeros shaped like a value, and scalars of a value's dtype.
 */
import { dimEq, type Dim } from "../dims.js";
import type { Builder } from "../builder.js";
import type { Value } from "../graph.js";

/** A scalar constant with v's dtype. */
export function like(b: Builder, v: Value, value: number): Value {
  return b.scalar(value, v.dtype);
}

/** Zeros with v's dtype and (run-time) shape. */
export function zerosLike(b: Builder, v: Value): Value {
  return b.op1("Expand", [like(b, v, 0), b.op1("Shape", [v])]);
}

/** Reshape to x's shape: static when x's shape is, else from Shape(x). */
export function reshapeTo(b: Builder, v: Value, x: Value): Value {
  if (v.shape.length === x.shape.length && v.shape.every((d, i) => dimEq(d, x.shape[i]!))) return v;
  if (x.shape.every((d) => typeof d === "number")) return b.reshape(v, x.shape as number[]);
  return b.reshapeLike(v, x);
}

/**
 * The gradient of numpy broadcasting: sum dy (the shape of the broadcast result) over the axes
 * that broadcasting added or stretched from 1, so the result has x's shape.
 */
export function sumTo(b: Builder, dy: Value, x: Value): Value {
  const lead = dy.rank - x.rank;
  const axes: number[] = [];
  dy.shape.forEach((d: Dim, i) => {
    if (i < lead) axes.push(i);
    else if (x.shape[i - lead] === 1 && d !== 1) axes.push(i);
  });
  if (axes.length === 0) return dy;
  return reshapeTo(b, b.op1("ReduceSum", [dy, b.int64(axes)], { keepdims: 1 }), x);
}
