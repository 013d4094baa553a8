import { describe, expect, it } from "vitest";
import { UserError } from "../../src/util/errors.js";
import { jsonErrorOffset, parseJson } from "../../src/util/json.js";

describe("jsonErrorOffset", () => {
  it("agrees with JSON.parse on what is valid", () => {
    const valid = ['{"a": [1, -2.5e3, true, null, "x\\u00e9\\n"]}', "[]", " 0 ", '"s"', '{"a":{"b":{}}}'];
    const invalid = ["{", '{"a" 1}', "[1,]", "{'a': 1}", "01", '"\\x"', "[1 2]", "nul", '"a\nb"', "{} x", ""];
    for (const s of valid) expect(jsonErrorOffset(s), s).toBe(-1);
    for (const s of invalid) {
      expect(() => JSON.parse(s), s).toThrow();
      expect(jsonErrorOffset(s), s).toBeGreaterThanOrEqual(0);
    }
  });

  it("points at the offending character", () => {
    expect(jsonErrorOffset('{"a": 1,\n "b": oops}')).toBe(15);
    expect(jsonErrorOffset("[1,]")).toBe(3);
    expect(jsonErrorOffset('{"a": 1')).toBe(7);
  });
});

describe("parseJson", () => {
  it("fails with file, line, column and a caret", () => {
    let err: unknown;
    try {
      parseJson("cfg.json", '{\n  "a": 1,\n  "b": [1,, 2]\n}');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UserError);
    const p = (err as UserError).problems[0]!;
    expect(p.at).toEqual({ file: "cfg.json", line: 3, col: 11 });
    expect(p.snippet).toBe('    "b": [1,, 2]\n            ^');
  });
});
