/**
 * Reading JSON files a user supplies (tokenizer and model configs), failing with the file, line and
 * column of the first syntax error. Node's JSON.parse messages carry no position on every version,
 * so a small scanner finds it.
 */
import * as fs from "node:fs";
import { fail } from "./errors.js";

/** Parse `text` read from `file`; a syntax error becomes a located UserError. */
export function parseJson(file: string, text: string, hint = "fix the file or copy it again from where it came from"): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    const offset = jsonErrorOffset(text);
    const before = text.slice(0, Math.max(0, offset)).split("\n");
    const line = before.length;
    const col = before[before.length - 1]!.length + 1;
    const src = text.split("\n")[line - 1] ?? "";
    return fail(`invalid JSON: ${(e as Error).message.split("\n")[0]}`, {
      at: { file, line, col },
      snippet: `  ${src}\n  ${" ".repeat(col - 1)}^`,
      hint,
    });
  }
}

/** Read and parse a JSON file that must hold an object. */
export function readJsonObject(file: string, hint?: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return fail(code === "ENOENT" ? "file not found" : `cannot read file: ${(e as Error).message}`, { subject: file, ...(hint ? { hint } : {}) });
  }
  const value = parseJson(file, text, hint);
  if (!value || typeof value !== "object" || Array.isArray(value))
    fail(`expected a JSON object, found ${Array.isArray(value) ? "an array" : JSON.stringify(value)}`, { at: { file, line: 1, col: 1 }, ...(hint ? { hint } : {}) });
  return value as Record<string, unknown>;
}

/** Offset of the first JSON syntax error in `s` (s.length for unexpected end), or -1 if valid. */
export function jsonErrorOffset(s: string): number {
  let i = 0;
  const n = s.length;
  const ws = () => {
    while (i < n && (s[i] === " " || s[i] === "\t" || s[i] === "\n" || s[i] === "\r")) i++;
  };
  const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
  const str = () => {
    i++; // opening quote
    while (i < n) {
      const c = s.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return;
      }
      if (c === 0x5c) {
        const e = s[i + 1];
        if (e === "u") {
          if (!/^[0-9a-fA-F]{4}$/.test(s.slice(i + 2, i + 6))) throw i;
          i += 6;
        } else if (e !== undefined && '"\\/bfnrt'.includes(e)) i += 2;
        else throw i;
        continue;
      }
      if (c < 0x20) throw i;
      i++;
    }
    throw n;
  };
  const value = (depth: number): void => {
    if (depth > 1000) throw i;
    ws();
    const c = s[i];
    if (c === "{" || c === "[") {
      const close = c === "{" ? "}" : "]";
      i++;
      ws();
      if (s[i] === close) {
        i++;
        return;
      }
      for (;;) {
        if (c === "{") {
          ws();
          if (s[i] !== '"') throw i;
          str();
          ws();
          if (s[i] !== ":") throw i;
          i++;
        }
        value(depth + 1);
        ws();
        if (s[i] === ",") {
          i++;
          continue;
        }
        if (s[i] === close) {
          i++;
          return;
        }
        throw i;
      }
    }
    if (c === '"') return str();
    for (const lit of ["true", "false", "null"]) {
      if (s.startsWith(lit, i)) {
        i += lit.length;
        return;
      }
    }
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(s);
    if (!m || m[0].length === 0) throw i;
    i += m[0].length;
  };
  try {
    value(0);
    ws();
    if (i < n) throw i;
    return -1;
  } catch (at) {
    if (typeof at === "number") return at;
    throw at;
  }
}
