/**
 * The IR checker, run after building and after every pass: values are defined before use, names
 * are unique, and every node's recorded output types equal what its op's shape rule gives now.
 * An error names the node (scoped like the checkpoint key), its op, and expected vs actual.
 */
import { dimEq, hasOpaque, shapeStr, type Dim } from "./dims.js";
import type { Graph, Value } from "./graph.js";
import { getOp } from "./ops/index.js";

export class VerifyError extends Error {
  constructor(readonly problems: string[]) {
    super(`graph check failed:\n  ${problems.slice(0, 20).join("\n  ")}${problems.length > 20 ? `\n  … and ${problems.length - 20} more` : ""}`);
    this.name = "VerifyError";
  }
}

export function verify(g: Graph, opts: { final?: boolean } = {}): void {
  const problems: string[] = [];
  const defined = new Set<Value>();
  const names = new Map<string, string>();
  const claim = (name: string, what: string) => {
    const prev = names.get(name);
    if (prev) problems.push(`name ${name} is used twice (${prev}; ${what})`);
    else names.set(name, what);
  };
  for (const io of g.inputs) {
    defined.add(io.value);
    claim(io.value.name, `input ${io.name}`);
  }
  for (const [name, v] of g.constants) {
    if (v.name !== name) problems.push(`constant ${name} is named ${v.name}`);
    if (!v.data) problems.push(`constant ${name} has no data`);
    defined.add(v);
    claim(name, "constant");
  }
  for (const n of g.nodes) {
    const where = `${n.name} (${n.domain ? n.domain + "::" : ""}${n.op})`;
    n.inputs.forEach((v, i) => {
      if (v && !defined.has(v)) problems.push(`${where}: input ${i} (${v.name}) is not defined before use`);
    });
    if (opts.final && n.domain === "sdc") problems.push(`${where}: composite op left unlowered`);
    let types;
    try {
      types = getOp(n.domain, n.op).infer(n.inputs, n.attrs);
    } catch (e) {
      problems.push(`${where}: ${(e as Error).message}`);
      types = null;
    }
    n.outputs.forEach((v, i) => {
      if (v.producer !== n) problems.push(`${where}: output ${i} does not point back at its node`);
      const t = types?.[i];
      if (types && !t) problems.push(`${where}: op gives ${types.length} outputs, node has ${n.outputs.length}`);
      else if (t && (t.dtype !== v.dtype || !sameShape(t.shape, v.shape)))
        problems.push(`${where}: output ${i} expected ${t.dtype}${shapeStr(t.shape)}, recorded ${v.dtype}${shapeStr(v.shape)}`);
      defined.add(v);
      claim(v.name, where);
    });
  }
  for (const io of g.outputs) if (!defined.has(io.value)) problems.push(`graph output ${io.name} is not computed`);
  if (problems.length) throw new VerifyError(problems);
}

/** Shapes equal, where a size known only at run time (minted anew by each shape inference) matches any other such size. */
function sameShape(want: readonly Dim[], got: readonly Dim[]): boolean {
  return want.length === got.length && want.every((d, i) => dimEq(d, got[i]!) || (hasOpaque([d]) && hasOpaque([got[i]!])));
}
