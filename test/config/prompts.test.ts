/** sample.prompts_file: one prompt per line, located errors for a bad file. */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { firstInvalidUtf8 } from "../../src/config/prompts.js";
import { loadPipeline, validate } from "../../src/config/load.js";
import { project, REPO } from "./helpers.js";

const MODEL = path.join(REPO, "models", "tiny-sd");
const yaml = (extra: string) => `version: 1\nmodel:\n  from: ${JSON.stringify(MODEL)}\nsample:\n${extra}`;

describe("prompts files", () => {
  it("reads one prompt per line, skipping blank lines and # comments (and a BOM)", async () => {
    const cwd = project({ "p.yaml": yaml("  prompts_file: prompts.txt\n"), "prompts.txt": "\uFEFFa cat\r\n# not a prompt\n\n  blue dog  \n" });
    const p = await loadPipeline(path.join(cwd, "p.yaml"), { cwd });
    expect(p.config.sample.prompt).toEqual(["a cat", "blue dog"]);
  });

  it("points at the first invalid UTF-8 byte by line and column", async () => {
    const cwd = project({ "p.yaml": yaml("  prompts_file: prompts.txt\n") });
    fs.writeFileSync(path.join(cwd, "prompts.txt"), Buffer.concat([Buffer.from("ok\nnaïve \xff", "latin1").subarray(0, 3), Buffer.from("naïve "), Buffer.from([0xff]), Buffer.from("\n")]));
    const r = await validate(path.join(cwd, "p.yaml"), { cwd });
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.problems).toHaveLength(1);
      expect(r.problems[0]).toMatchObject({ message: "prompts file is not valid UTF-8 (byte 0xff)", at: { file: "prompts.txt", line: 2, col: 7 } });
    }
  });

  it("says where a missing or empty file was named", async () => {
    const cwd = project({ "p.yaml": yaml("  prompts_file: none.txt\n"), "q.yaml": yaml("  prompts_file: empty.txt\n"), "empty.txt": "# only a comment\n\n" });
    const r1 = await validate(path.join(cwd, "p.yaml"), { cwd });
    const r2 = await validate(path.join(cwd, "q.yaml"), { cwd });
    expect(!r1.ok && r1.problems[0]).toMatchObject({ message: 'prompts file "none.txt" does not exist', at: { file: "p.yaml", line: 5, col: 17 } });
    expect(!r2.ok && r2.problems[0]).toMatchObject({ message: 'prompts file "empty.txt" holds no prompts', at: { file: "q.yaml", line: 5, col: 17 } });
  });

  it("refuses prompt and prompts_file in one file, but lets the command line replace the prompt", async () => {
    const cwd = project({ "p.yaml": yaml("  prompt: a cat\n  prompts_file: list.txt\n"), "q.yaml": yaml("  prompt: a cat\n"), "list.txt": "one\ntwo\n" });
    const r = await validate(path.join(cwd, "p.yaml"), { cwd });
    expect(!r.ok && r.problems[0]).toMatchObject({ message: "sample.prompt and sample.prompts_file are both set", at: { file: "p.yaml", line: 5, col: 3 } });
    const p = await loadPipeline(path.join(cwd, "q.yaml"), { cwd, overrides: ["sample.prompts_file=list.txt"] });
    expect(p.config.sample.prompt).toEqual(["one", "two"]);
  });

  it("validates UTF-8 like the standard (overlong forms, surrogates, truncation)", () => {
    const bad = (...b: number[]) => firstInvalidUtf8(new Uint8Array(b));
    expect(bad(0x61, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80)).toBe(-1);
    expect(bad(0x61, 0xc0, 0x80)).toBe(1); // overlong NUL
    expect(bad(0xe0, 0x80, 0x80)).toBe(0); // overlong 3-byte
    expect(bad(0xed, 0xa0, 0x80)).toBe(0); // surrogate
    expect(bad(0xf4, 0x90, 0x80, 0x80)).toBe(0); // > U+10FFFF
    expect(bad(0x61, 0xe2, 0x82)).toBe(1); // truncated
  });
});
