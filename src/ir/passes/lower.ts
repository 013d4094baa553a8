/**
 * Lowering of sdc's composite ops (GroupNorm, LayerNorm, Attention) into ONNX. Each composite is
 * a rule with a condition: the fused onnxruntime op when the target has a kernel for it and no
 * gradient is needed through it; primitives otherwise. Every decision that did not fuse is
 * recorded in `graph.notes` with its reason, so `sdc inspect` can say why.
 */
import type { Graph, Node } from "../graph.js";
import { EXPANSIONS } from "../ops/composites.js";
import { replaceNode } from "./rewrite.js";

export interface LowerTarget {
  /** Execution provider the graph is meant for. */
  ep: "cpu" | "cuda";
  /** Gradients will be taken through the graph (fused contrib ops have no gradient rules). */
  training: boolean;
  /** Force primitives everywhere (tests compare the two lowerings). */
  primitivesOnly?: boolean;
  /** Force primitives for these composites only (measurements of one fusion at a time). */
  unfused?: string[];
}

interface Rule {
  op: string;
  /** null: fuse; a string: the reason not to. */
  whyNot(n: Node, t: LowerTarget): string | null;
}

const RULES: Rule[] = [
  { op: "Gelu", whyNot: () => null },
  { op: "GroupNorm", whyNot: (_n, t) => (t.training ? "gradients are taken through it" : null) },
  { op: "LayerNorm", whyNot: (_n, t) => (t.training ? "gradients are taken through it" : null) },
  {
    op: "Attention",
    whyNot: (n, t) => {
      if (t.training) return "gradients are taken through it (MultiHeadAttention has no gradient)";
      const q = n.inputs[0]!;
      if (q.dtype !== "float32" && q.dtype !== "float16") return `MultiHeadAttention does not take ${q.dtype}`;
      return null;
    },
  },
];

export function lowerComposites(g: Graph, target: LowerTarget): { fused: number; decomposed: number } {
  let fused = 0;
  let decomposed = 0;
  const reasons = new Map<string, number>();
  for (const n of [...g.nodes]) {
    if (n.domain !== "sdc") continue;
    const rule = RULES.find((r) => r.op === n.op);
    const exp = EXPANSIONS[n.op];
    if (!rule || !exp) throw new Error(`${n.name}: no lowering for composite ${n.op}`);
    const why = target.primitivesOnly || target.unfused?.includes(n.op) ? "primitives requested" : rule.whyNot(n, target);
    replaceNode(g, n, (b) => [why === null ? exp.fused(b, n) : exp.primitive(b, n)]);
    if (why === null) fused++;
    else {
      decomposed++;
      const k = `${n.op} not fused: ${why}`;
      reasons.set(k, (reasons.get(k) ?? 0) + 1);
    }
  }
  for (const [k, c] of reasons) g.notes.push(`${k} (${c}×)`);
  if (fused) g.notes.push(`${fused} composite ops fused into onnxruntime ops`);
  return { fused, decomposed };
}
