/**
 * Cheap constant folding: an integer node whose contents are fully known at build time (a Shape
 * of a static shape, arithmetic on constant shape vectors) becomes a constant. Weight tensors are
 * never folded: they stay views into the checkpoint file (see the writer).
 */
import { Builder } from "../builder.js";
import type { Graph } from "../graph.js";
import { replaceUses } from "./rewrite.js";

export function foldKnown(g: Graph): number {
  let folded = 0;
  const b = new Builder(g);
  for (const n of [...g.nodes]) {
    if (n.outputs.length !== 1) continue;
    const out = n.outputs[0]!;
    if (out.dtype !== "int64" || !out.known || out.rank > 1 || !out.known.every((d) => typeof d === "number")) continue;
    const c = b.int64(out.rank === 0 ? (out.known[0] as number) : (out.known as number[]));
    replaceUses(g, out, c);
    g.nodes.splice(g.nodes.indexOf(n), 1);
    folded++;
  }
  return folded;
}
