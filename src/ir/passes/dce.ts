/** Dead-code elimination: drop nodes nothing reads and constants no node uses. */
import type { Graph, Value } from "../graph.js";

export function dce(g: Graph): number {
  const live = new Set<Value>(g.outputs.map((o) => o.value));
  const kept = [];
  let removed = 0;
  for (let i = g.nodes.length - 1; i >= 0; i--) {
    const n = g.nodes[i]!;
    if (n.outputs.some((v) => live.has(v))) {
      kept.push(n);
      for (const v of n.inputs) if (v) live.add(v);
    } else removed++;
  }
  g.nodes = kept.reverse();
  for (const [name, v] of g.constants) if (!live.has(v)) g.constants.delete(name);
  return removed;
}
