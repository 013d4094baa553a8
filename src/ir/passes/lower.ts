/**
 * Lowering of sdc's composite ops into ONNX. Each composite's op family declares its two
 * expansions and the rule between them (the fused onnxruntime op when the target has a kernel
 * for it and no gradient is needed through it; primitives otherwise); this pass applies them and
 * records in `graph.notes` every decision that did not fuse, with its reason, so `sdc inspect`
 * can say why.
 */
import type { Graph } from "../graph.js";
import { getOp, type LowerTarget } from "../ops/index.js";
import { replaceNode } from "./rewrite.js";

export type { LowerTarget };

export function lowerComposites(g: Graph, target: LowerTarget): { fused: number; decomposed: number } {
  let fused = 0;
  let decomposed = 0;
  const reasons = new Map<string, number>();
  for (const n of [...g.nodes]) {
    if (n.domain !== "sdc") continue;
    const rule = getOp(n.domain, n.op).lower!;
    const why = target.primitivesOnly || target.unfused?.includes(n.op) ? "primitives requested" : rule.whyNot(n, target);
    replaceNode(g, n, (b) => [why === null ? rule.fused(b, n, target) : rule.primitive(b, n)]);
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
