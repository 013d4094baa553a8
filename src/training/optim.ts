/**
 * Optimizer steps as graph ops, with PyTorch's exact semantics (torch.optim.AdamW and SGD of the
 * single-tensor path, torch.nn.utils.clip_grad_norm_, diffusers' EMAModel). Scalars that PyTorch
 * computes in Python (bias corrections, step sizes, 1 − lr·wd) are computed here in float64 from
 * the `lr` and `step` inputs, then rounded to float32 where they meet a tensor, as PyTorch does.
 */
import type { Builder } from "../ir/builder.js";
import type { Value } from "../ir/graph.js";

export type OptimizerSpec =
  | { type: "adamw"; betas: [number, number]; eps: number; weightDecay: number }
  | { type: "sgd"; momentum: number; weightDecay: number };

/** Optimizer state tensors per parameter, named as torch's optimizer state_dict names them. */
export function stateNames(o: OptimizerSpec): string[] {
  return o.type === "adamw" ? ["exp_avg", "exp_avg_sq"] : o.momentum > 0 ? ["momentum_buffer"] : [];
}

export interface Scalars {
  /** float64 [] learning rate. */
  lr: Value;
  /** int64 [] optimizer step, 1 for the first. */
  step: Value;
}

const f64 = (b: Builder, x: number) => b.scalar(x, "float64");
const toF32 = (b: Builder, v: Value) => b.cast(v, "float32");

/**
 * Per-step scalars shared by every parameter (computed once, not per tensor).
 */
export function stepScalars(b: Builder, o: OptimizerSpec, s: Scalars): Record<string, Value> {
  if (o.type === "sgd") return { negLr: toF32(b, b.op1("Neg", [s.lr])), wd: b.float32(o.weightDecay), momentum: b.float32(o.momentum) };
  const k = b.cast(s.step, "float64");
  const [b1, b2] = o.betas;
  const bc1 = b.sub(f64(b, 1), b.op1("Pow", [f64(b, b1), k]));
  const bc2 = b.sub(f64(b, 1), b.op1("Pow", [f64(b, b2), k]));
  return {
    decay: toF32(b, b.sub(f64(b, 1), b.mul(s.lr, f64(b, o.weightDecay)))),
    negStepSize: toF32(b, b.op1("Neg", [b.div(s.lr, bc1)])),
    bc2Sqrt: toF32(b, b.op1("Sqrt", [bc2])),
    b1: b.float32(b1),
    oneMinusB1: b.float32(1 - b1),
    b2: b.float32(b2),
    oneMinusB2: b.float32(1 - b2),
    eps: b.float32(o.eps),
  };
}

/** One parameter's update: returns the new parameter and the new state tensors (in stateNames order). */
export function applyUpdate(b: Builder, o: OptimizerSpec, c: Record<string, Value>, p: Value, g: Value, state: Value[]): { p: Value; state: Value[] } {
  if (o.type === "sgd") {
    // d = g + wd·p; buf = momentum·buf + d (a zero buffer at step 1 makes buf = d); p ← p − lr·buf
    const d = o.weightDecay ? b.add(b.mul(c.wd!, p), g) : g;
    if (o.momentum === 0) return { p: b.add(b.mul(c.negLr!, d), p), state: [] };
    const buf = b.add(b.mul(state[0]!, c.momentum!), d);
    return { p: b.add(b.mul(c.negLr!, buf), p), state: [buf] };
  }
  // AdamW: decoupled weight decay first, then the moments, then the bias-corrected step
  const [m0, v0] = state;
  const pd = b.mul(p, c.decay!);
  const m = b.add(b.mul(m0!, c.b1!), b.mul(c.oneMinusB1!, g));
  const v = b.add(b.mul(v0!, c.b2!), b.mul(b.mul(c.oneMinusB2!, g), g));
  const denom = b.add(b.div(b.op1("Sqrt", [v]), c.bc2Sqrt!), c.eps!);
  return { p: b.add(pd, b.div(b.mul(c.negStepSize!, m), denom)), state: [m, v] };
}

/** clip_grad_norm_: the global L2 norm of all gradients and, when it exceeds maxNorm, the gradients scaled down. */
export function clipByGlobalNorm(b: Builder, grads: Value[], maxNorm: number): { grads: Value[]; norm: Value } {
  const norms = grads.map((g) => b.reshape(b.op1("Sqrt", [b.op1("ReduceSum", [b.mul(g, g)], { keepdims: 0 })]), [1]));
  const all = norms.length === 1 ? norms[0]! : b.concat(norms, 0);
  const norm = b.op1("Sqrt", [b.op1("ReduceSum", [b.mul(all, all)], { keepdims: 0 })]);
  const coef = b.op1("Min", [b.div(b.float32(maxNorm), b.add(norm, b.float32(1e-6))), b.float32(1)]);
  return { grads: grads.map((g) => b.mul(g, coef)), norm };
}

/** diffusers' EMAModel.step: shadow ← shadow − (1 − decay)·(shadow − p), decay given by the host (float64 []). */
export function emaUpdate(b: Builder, decay: Value, shadow: Value, p: Value, oneMinusDecay?: Value): Value {
  const f = oneMinusDecay ?? toF32(b, b.sub(f64(b, 1), decay));
  return b.sub(shadow, b.mul(f, b.sub(shadow, p)));
}
