/**
 * `sample.prompts_file`: prompts from a text file, one per line. Blank lines and lines starting
 * with `#` are skipped. Problems point at the file and line:col (invalid UTF-8) or at the YAML key
 * (missing, empty, both prompt sources given).
 */
import * as fs from "node:fs";
import type { Problem } from "../util/errors.js";
import type { Origins } from "./origins.js";

/** Byte offset of the first invalid UTF-8 sequence, or -1. */
export function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i]!;
    const n = c < 0x80 ? 0 : c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 : c >= 0xf0 && c <= 0xf4 ? 3 : -1;
    if (n < 0) return i;
    for (let k = 1; k <= n; k++) {
      const d = b[i + k];
      if (d === undefined || (d & 0xc0) !== 0x80) return i;
    }
    // overlong 3/4-byte forms, surrogates, code points past U+10FFFF
    if ((c === 0xe0 && b[i + 1]! < 0xa0) || (c === 0xed && b[i + 1]! > 0x9f) || (c === 0xf0 && b[i + 1]! < 0x90) || (c === 0xf4 && b[i + 1]! > 0x8f)) return i;
    i += n + 1;
  }
  return -1;
}

export function readPromptsFile(file: string, origins: Origins, display: (p: string) => string, problems: Problem[]): string[] | null {
  const where = origins.where(["sample", "prompts_file"]);
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "does not exist" : code === "EISDIR" ? "is a folder" : `cannot be read (${code ?? String(e)})`;
    problems.push({ message: `prompts file "${display(file)}" ${why}`, ...where, hint: origins.pathHint(["sample", "prompts_file"]) });
    return null;
  }
  const bad = firstInvalidUtf8(bytes);
  if (bad >= 0) {
    const before = bytes.subarray(0, bad);
    const lineStart = before.lastIndexOf(0x0a) + 1;
    const line = before.filter((x) => x === 0x0a).length + 1;
    const col = [...new TextDecoder().decode(bytes.subarray(lineStart, bad))].length + 1;
    problems.push({
      message: `prompts file is not valid UTF-8 (byte 0x${bytes[bad]!.toString(16).padStart(2, "0")})`,
      at: { file: display(file), line, col },
      hint: "save the file as UTF-8",
    });
    return null;
  }
  const prompts = new TextDecoder()
    .decode(bytes)
    .replace(/^\uFEFF/, "")
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
  if (prompts.length === 0) {
    problems.push({ message: `prompts file "${display(file)}" holds no prompts`, ...where, hint: "write one prompt per line; lines starting with # are comments" });
    return null;
  }
  // both in one file is a contradiction; a prompts file given later (a file that extends, or the
  // command line) simply replaces the prompt
  const a = origins.originOf(["sample", "prompt"]);
  const b = origins.originOf(["sample", "prompts_file"]);
  const sameFile = a?.exact && b?.exact && a.origin.kind === "file" && b.origin.kind === "file" && a.origin.source.file === b.origin.source.file;
  if (sameFile) problems.push({ message: "sample.prompt and sample.prompts_file are both set", ...origins.where(["sample", "prompt"], "key"), hint: "keep one of them" });
  return prompts;
}
