/** Helpers for passes that replace nodes: splice new nodes in place and redirect uses. */
import { Builder } from "../builder.js";
import type { Graph, Node, Value } from "../graph.js";

/**
 * Replace `node` by what `build` constructs (in the node's scope, at its position). `build`
 * returns the values that take the place of the node's outputs.
 */
export function replaceNode(g: Graph, node: Node, build: (b: Builder) => Value[]): void {
  const at = g.nodes.indexOf(node);
  if (at < 0) throw new Error(`node ${node.name} is not in the graph`);
  const before = g.nodes.length;
  const b = new Builder(g, undefined, node.outputs[0]?.dtype);
  b.enterNodeScope(node.name);
  const repl = build(b);
  const added = g.nodes.splice(before, g.nodes.length - before);
  g.nodes.splice(at, 1, ...added);
  if (repl.length !== node.outputs.length) throw new Error(`${node.name}: replacement gives ${repl.length} values for ${node.outputs.length}`);
  node.outputs.forEach((old, i) => replaceUses(g, old, repl[i]!));
}

export function replaceUses(g: Graph, old: Value, by: Value): void {
  for (const n of g.nodes) n.inputs = n.inputs.map((v) => (v === old ? by : v));
  for (const o of g.outputs) if (o.value === old) o.value = by;
}
