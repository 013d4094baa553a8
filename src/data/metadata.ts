/**
 * Hugging Face imagefolder metadata: `metadata.jsonl` (one JSON object per line) and `metadata.csv`
 * (a header row, then one row per image), read with the position of every value, so a problem with
 * a row points at its line and column.
 */
import { jsonErrorOffset } from "../util/json.js";
import type { Problem } from "../util/errors.js";
import { lineProblem } from "./problems.js";

/** Where a value sits: 1-based line and column, and its width in characters. */
export interface Cell {
  line: number;
  col: number;
  width: number;
}

export interface MetaRow {
  /** The line the row starts on (1-based). */
  line: number;
  values: Record<string, unknown>;
  /** Position of a column's value in the row (undefined: the column is absent). */
  cell(column: string): Cell | undefined;
  /** JSON lines: position of item `index` of a column's list value (undefined: no such item). */
  itemCell(column: string, index: number): Cell | undefined;
}

export interface MetaTable {
  kind: "jsonl" | "csv";
  /** The file as shown in messages. */
  display: string;
  /** CSV: the header's column names. */
  header?: string[];
  rows: MetaRow[];
  /** A problem at a position of this file (caret snippet included). */
  problemAt(cell: Cell, message: string, hint?: string): Problem;
  problems: Problem[];
}

const JSONL_HINT = 'each line of a .jsonl file is one JSON object, e.g. {"file_name": "0001.png", "text": "a red circle"}';

export function parseMetadata(display: string, text: string, kind: "jsonl" | "csv"): MetaTable {
  const body = text.startsWith("\uFEFF") ? text.slice(1) : text;
  const lines = body.split("\n");
  const problemAt = (cell: Cell, message: string, hint?: string) =>
    lineProblem(display, cell.line, lines[cell.line - 1] ?? "", cell.col, cell.width, message, hint);
  return kind === "jsonl" ? parseJsonl(display, lines, problemAt) : parseCsv(display, body, lines, problemAt);
}

// ------------------------------------------------------------------------------------------------
// JSON lines

function parseJsonl(display: string, lines: string[], problemAt: MetaTable["problemAt"]): MetaTable {
  const rows: MetaRow[] = [];
  const problems: Problem[] = [];
  lines.forEach((raw, i) => {
    const text = raw.replace(/\r$/, "");
    if (text.trim() === "") return;
    const line = i + 1;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      const off = jsonErrorOffset(text);
      const at = off < 0 ? 0 : off;
      const what = at >= text.length ? "the line ends before the JSON object is complete" : `unexpected '${text[at]}'`;
      problems.push(problemAt({ line, col: at + 1, width: 1 }, `malformed JSON: ${what}`, JSONL_HINT));
      return;
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      const first = text.search(/\S/);
      problems.push(problemAt({ line, col: first + 1, width: text.trim().length }, `line ${line} is ${Array.isArray(value) ? "an array" : JSON.stringify(value)}, not a JSON object`, JSONL_HINT));
      return;
    }
    let members: Map<string, Cell> | undefined;
    const cell = (column: string) => {
      members ??= memberCells(text, line);
      return members.get(column);
    };
    rows.push({
      line,
      values: value as Record<string, unknown>,
      cell,
      itemCell: (column, index) => {
        const at = cell(column);
        return at && text[at.col - 1] === "[" ? itemCells(text, at)[index] : undefined;
      },
    });
  });
  return { kind: "jsonl", display, rows, problemAt, problems };
}

/** A cursor over one line of valid JSON that steps over whitespace, strings and whole values. */
function jsonCursor(s: string, from = 0) {
  const c = {
    i: from,
    ws() {
      while (c.i < s.length && /\s/.test(s[c.i]!)) c.i++;
    },
    str() {
      const start = c.i++;
      while (c.i < s.length && s[c.i] !== '"') c.i += s[c.i] === "\\" ? 2 : 1;
      c.i++;
      return s.slice(start, c.i);
    },
    skipValue() {
      if (s[c.i] === '"') return void c.str();
      if (s[c.i] === "{" || s[c.i] === "[") {
        let depth = 0;
        while (c.i < s.length) {
          const ch = s[c.i];
          if (ch === '"') {
            c.str();
            continue;
          }
          if (ch === "{" || ch === "[") depth++;
          else if (ch === "}" || ch === "]") depth--;
          c.i++;
          if (depth === 0) return;
        }
        return;
      }
      while (c.i < s.length && !/[\s,}\]]/.test(s[c.i]!)) c.i++;
    },
  };
  return c;
}

/** Positions of the values of a valid JSON object's top-level members. */
function memberCells(s: string, line: number): Map<string, Cell> {
  const out = new Map<string, Cell>();
  const c = jsonCursor(s);
  c.ws();
  if (s[c.i] !== "{") return out;
  out.set("", { line, col: c.i + 1, width: 1 }); // the object itself
  c.i++;
  for (;;) {
    c.ws();
    if (s[c.i] !== '"') return out;
    const key = JSON.parse(c.str()) as string;
    c.ws();
    c.i++; // ':'
    c.ws();
    const start = c.i;
    c.skipValue();
    if (!out.has(key)) out.set(key, { line, col: start + 1, width: Math.max(1, c.i - start) });
    c.ws();
    if (s[c.i] !== ",") return out;
    c.i++;
  }
}

/** Positions of the items of the JSON array at `array` (its '[') in a valid JSON line. */
function itemCells(s: string, array: Cell): Cell[] {
  const out: Cell[] = [];
  const c = jsonCursor(s, array.col); // just past '['
  for (;;) {
    c.ws();
    if (c.i >= s.length || s[c.i] === "]") return out;
    const start = c.i;
    c.skipValue();
    out.push({ line: array.line, col: start + 1, width: Math.max(1, c.i - start) });
    c.ws();
    if (s[c.i] !== ",") return out;
    c.i++;
  }
}

// ------------------------------------------------------------------------------------------------
// CSV (RFC 4180: comma-separated, fields in double quotes may hold commas, newlines and "" quotes)

interface CsvField {
  value: string;
  cell: Cell;
}

function parseCsv(display: string, text: string, lines: string[], problemAt: MetaTable["problemAt"]): MetaTable {
  const problems: Problem[] = [];
  const records: { line: number; fields: CsvField[] }[] = [];
  let i = 0;
  let line = 1;
  let col = 1;
  const n = text.length;
  const advance = () => {
    if (text[i] === "\n") {
      line++;
      col = 1;
    } else col++;
    i++;
  };
  outer: while (i < n) {
    const recLine = line;
    const fields: CsvField[] = [];
    for (;;) {
      const start = { line, col };
      let value = "";
      if (text[i] === '"') {
        advance();
        for (;;) {
          if (i >= n) {
            problems.push(problemAt({ ...start, width: 1 }, "this quoted field is never closed", 'end it with a double quote; write a quote inside a quoted field as ""'));
            break outer;
          }
          if (text[i] === '"') {
            if (text[i + 1] === '"') {
              value += '"';
              advance();
              advance();
              continue;
            }
            advance();
            break;
          }
          value += text[i];
          advance();
        }
        if (i < n && text[i] !== "," && text[i] !== "\n" && !(text[i] === "\r" && text[i + 1] === "\n")) {
          problems.push(problemAt({ line, col, width: 1 }, `unexpected '${text[i]}' after a quoted field`, "a quoted field ends at a comma or the end of the line"));
          break outer;
        }
      } else {
        while (i < n && text[i] !== "," && text[i] !== "\n") {
          if (text[i] === "\r" && text[i + 1] === "\n") break;
          value += text[i];
          advance();
        }
      }
      const width = line === start.line ? Math.max(1, col - start.col) : 1;
      fields.push({ value, cell: { ...start, width } });
      if (i < n && text[i] === ",") {
        advance();
        continue;
      }
      if (text[i] === "\r") advance();
      if (i < n) advance(); // the newline
      break;
    }
    if (fields.length === 1 && fields[0]!.value === "" && lines[recLine - 1]?.replace(/\r$/, "").trim() === "") continue; // blank line
    records.push({ line: recLine, fields });
  }
  const header = records[0]?.fields.map((f) => f.value) ?? [];
  const rows: MetaRow[] = [];
  for (const rec of records.slice(1)) {
    if (rec.fields.length !== header.length) {
      const at = rec.fields[Math.min(rec.fields.length, header.length) - 1]?.cell ?? { line: rec.line, col: 1, width: 1 };
      problems.push(
        problemAt(
          at,
          `row on line ${rec.line} has ${rec.fields.length} field${rec.fields.length === 1 ? "" : "s"}, the header has ${header.length} (${header.join(", ")})`,
          'give every row one value per header column; quote values that contain commas: "a, b"',
        ),
      );
      continue;
    }
    const values: Record<string, unknown> = {};
    const cells = new Map<string, Cell>();
    header.forEach((h, k) => {
      if (Object.hasOwn(values, h)) return;
      Object.defineProperty(values, h, { value: rec.fields[k]!.value, enumerable: true, writable: true, configurable: true });
      cells.set(h, rec.fields[k]!.cell);
    });
    rows.push({ line: rec.line, values, cell: (c) => cells.get(c), itemCell: () => undefined });
  }
  return { kind: "csv", display, header, rows, problemAt, problems };
}
