/** Positions, snippets and did-you-mean: the pieces every message is made of. */
import { describe, expect, it } from "vitest";
import { parseSource } from "../../src/config/source.js";
import { closest, editDistance } from "../../src/config/suggest.js";
import { whereInSource } from "../../src/config/origins.js";

describe("parseSource", () => {
  it("indexes keys and values of nested YAML, and JSON the same way", () => {
    const y = parseSource("/x/a.yaml", "a.yaml", "a:\n  b: [1, {c: 2}]\n");
    expect(y.problems).toEqual([]);
    expect(y.value).toEqual({ a: { b: [1, { c: 2 }] } });
    expect(y.source.position(y.source.index.get(["a", "b", 1, "c"].join("\u0001"))!.value)).toEqual({ file: "a.yaml", line: 2, col: 14, endCol: 15 });
    const j = parseSource("/x/c.json", "c.json", '{\n  "a": {"b": [1, 2]}\n}\n');
    expect(j.value).toEqual({ a: { b: [1, 2] } });
    expect(whereInSource(j.source, ["a", "b", 1], "value").at).toEqual({ file: "c.json", line: 2, col: 18, endCol: 19 });
  });

  it("underlines under tab-indented text and points multi-line values at their key", () => {
    const s = parseSource("/x/a.yaml", "a.yaml", "a: [1,\t22]\nb: |\n  one\n  two\n").source;
    expect(whereInSource(s, ["b"], "value").snippet).toBe("  2 | b: |\n    | ^");
    expect(whereInSource(s, ["a", 1], "value").snippet).toBe("  1 | a: [1,\t22]\n    |       \t^^");
  });

  it("reports every syntax problem of a file, not just the first", () => {
    const r = parseSource("/x/a.yaml", "a.yaml", "a: 1\na: 2\nb: 1\nb: 2\n");
    expect(r.problems.map((p) => p.at?.line)).toEqual([2, 4]);
    expect(r.value).toBeUndefined();
  });
});

describe("did-you-mean", () => {
  it("edit distance counts transpositions as one edit", () => {
    expect(editDistance("steps", "stpes")).toBe(1);
    expect(editDistance("kitten", "sitting")).toBe(3);
    expect(editDistance("", "abc")).toBe(3);
  });
  it("suggests only plausible typos, ignoring case and -/_", () => {
    expect(closest("DDIM", ["ddim", "ddpm"])).toBe("ddim");
    expect(closest("dpm_solver++", ["dpm-solver++", "ddpm"])).toBe("dpm-solver++");
    expect(closest("block_out_channel", ["block_out_channels", "layers_per_block"])).toBe("block_out_channels");
    expect(closest("colors", ["scheduler", "sample", "model"])).toBeUndefined();
    expect(closest("xy", ["ab"])).toBeUndefined();
  });
});
