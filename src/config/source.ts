/**
 * YAML and JSON sources with positions.
 *
 * A config value is only useful to a user if an error about it can point back at the text they wrote.
 * `parseSource` parses a file (JSON is read by the same YAML 1.2 parser, so config.json files get
 * positions too), turns every syntax error, duplicate key and alias bomb into a located `Problem`,
 * and indexes the key and value ranges of every node by its path, so later stages can say
 * `file:line:col` for any path they hold.
 */
import { type Document, isAlias, isMap, isScalar, isSeq, LineCounter, type Node, parseDocument } from "yaml";
import type { Problem, SourcePosition } from "../util/errors.js";

export type Path = readonly (string | number)[];

/** A character range [start, end) in a source text. */
export interface Range {
  start: number;
  end: number;
}

/** Where a node sits: its key (for mapping entries) and its value. */
export interface NodeLoc {
  path: Path;
  key?: Range;
  value: Range;
}

/** Expansions of aliases allowed while converting a document: real configs use a handful. */
export const MAX_ALIAS_COUNT = 100;

export function pathKey(path: Path): string {
  return path.map(String).join("\u0001");
}

export function formatPath(path: Path): string {
  let out = "";
  for (const seg of path) out += typeof seg === "number" ? `[${seg}]` : out ? `.${seg}` : seg;
  return out || "(top level)";
}

/** A parsed file: its text, positions and a path → node location index. */
export class SourceDoc {
  readonly lineCounter = new LineCounter();
  readonly index = new Map<string, NodeLoc>();
  doc!: Document.Parsed;

  constructor(
    /** Absolute path. */
    readonly file: string,
    /** The name shown in messages (relative to the working directory when inside it). */
    readonly display: string,
    readonly text: string,
  ) {}

  /** The location of a path, or of its nearest indexed ancestor (for keys that are absent). */
  lookup(path: Path): { loc: NodeLoc; exact: boolean; depth: number } | undefined {
    for (let n = path.length; n >= 0; n--) {
      const loc = this.index.get(pathKey(path.slice(0, n)));
      if (loc) return { loc, exact: n === path.length, depth: n };
    }
    return undefined;
  }

  position(range: Range): SourcePosition {
    const start = this.lineCounter.linePos(range.start);
    const end = this.lineCounter.linePos(Math.max(range.start, range.end));
    // A range running past its first line is underlined to the end of that line.
    const endCol = end.line === start.line ? end.col : this.lineText(start.line).length + 1;
    return { file: this.display, line: start.line, col: start.col, endCol: Math.max(endCol, start.col + 1) };
  }

  lineText(line: number): string {
    const starts = this.lineCounter.lineStarts;
    const from = starts[line - 1] ?? this.text.length;
    const to = line < starts.length ? starts[line]! : this.text.length;
    return this.text.slice(from, to).replace(/\r?\n$/, "");
  }

  /** Source line and a caret underline, with a line-number gutter. */
  snippet(pos: SourcePosition): string {
    const text = this.lineText(pos.line);
    const gutter = String(pos.line);
    const pad = " ".repeat(gutter.length);
    // Keep tabs in the caret line's prefix so the carets line up under tab-indented text.
    const prefix = text.slice(0, pos.col - 1).replace(/[^\t]/g, " ");
    const width = Math.max(1, Math.min((pos.endCol ?? pos.col + 1) - pos.col, text.length - pos.col + 1));
    return `  ${gutter} | ${text}\n  ${pad} | ${prefix}${"^".repeat(width)}`;
  }

  problem(range: Range, message: string, hint?: string): Problem {
    const at = this.position(range);
    return { message, at, snippet: this.snippet(at), ...(hint ? { hint } : {}) };
  }
}

export interface ParsedSource {
  source: SourceDoc;
  /** The document as plain data; undefined when it could not be parsed. */
  value: unknown;
  problems: Problem[];
}

/** Parse YAML (or JSON) text, collecting every problem instead of stopping at the first. */
export function parseSource(file: string, display: string, text: string): ParsedSource {
  const source = new SourceDoc(file, display, text);
  const doc = parseDocument(text, {
    lineCounter: source.lineCounter,
    prettyErrors: false,
    uniqueKeys: true,
    keepSourceTokens: false,
  });
  source.doc = doc;
  const problems: Problem[] = [];
  const duplicates = new Map<number, Range>();
  if (doc.contents) indexNode(source, doc.contents, [], undefined, problems, duplicates);
  const json = /\.json$/i.test(file);
  for (const e of [...doc.errors, ...doc.warnings]) {
    const [start, end] = e.pos;
    if (e.code === "DUPLICATE_KEY") {
      const key = wordAt(text, start);
      const first = duplicates.get(start);
      const line = first ? source.position(first).line : undefined;
      problems.push(
        source.problem(
          { start, end: start + Math.max(key.length, end - start) },
          `duplicate key${key ? ` "${key}"` : ""}${line ? `: it is already set on line ${line}` : ""}`,
          "keep one of the two entries",
        ),
      );
      continue;
    }
    problems.push(source.problem({ start, end }, yamlMessage(e.code, e.message, json), yamlHint(e.code, json)));
  }
  if (problems.length > 0) return { source, value: undefined, problems };

  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (e) {
    const bomb = /alias count/i.test(String((e as Error).message));
    const all = aliases(doc);
    const alias = (bomb ? all[0] : all.find((a) => !a.resolved) ?? all[0])?.range;
    problems.push(
      source.problem(
        alias ?? { start: 0, end: 1 },
        bomb
          ? `aliases expand to too much data (more than ${MAX_ALIAS_COUNT} alias expansions)`
          : `alias ${alias ? JSON.stringify(text.slice(alias.start, alias.end)) : ""} refers to no anchor`.replace("  ", " "),
        bomb
          ? "this looks like an alias bomb; write the values out or use fewer nested aliases"
          : "an alias (*name) must refer to an anchor (&name) defined before it",
      ),
    );
    return { source, value: undefined, problems };
  }
  return { source, value, problems };
}

function wordAt(text: string, at: number): string {
  return /^[^\s:,{}[\]]+/.exec(text.slice(at))?.[0]?.replace(/^["']|["']$/g, "") ?? "";
}

function yamlMessage(code: string, message: string, json: boolean): string {
  switch (code) {
    case "TAG_RESOLVE_FAILED":
      return `unknown YAML tag ${message.replace(/^.*?:\s*/, "")}`;
    case "MULTIPLE_DOCS":
      return "a pipeline file holds one YAML document, but this one holds several (---)";
    case "TAB_AS_INDENT":
      return "YAML does not allow tabs for indentation";
    default:
      return `${json ? "JSON" : "YAML"} syntax error: ${message.replace(/\s+/g, " ").replace(/\.$/, "")}`;
  }
}

function yamlHint(code: string, json: boolean): string | undefined {
  if (json && code !== "TAG_RESOLVE_FAILED") return "check the commas, brackets and quotes around this point";
  switch (code) {
    case "MULTIPLE_DOCS":
      return "remove the extra documents, or split them into separate files";
    case "TAB_AS_INDENT":
      return "indent with spaces";
    case "BAD_INDENT":
    case "MISSING_CHAR":
    case "UNEXPECTED_TOKEN":
      return "check the indentation and the brackets/quotes around this point";
    case "TAG_RESOLVE_FAILED":
      return "sdc configs use plain YAML values; remove the tag";
    case "BLOCK_AS_IMPLICIT_KEY":
      return "put a nested mapping on its own indented lines";
    default:
      return undefined;
  }
}

function rangeOf(node: Node | null | undefined): Range | undefined {
  if (!node?.range) return undefined;
  return { start: node.range[0], end: node.range[1] };
}

function indexNode(
  source: SourceDoc,
  node: unknown,
  path: (string | number)[],
  key: Range | undefined,
  problems: Problem[],
  duplicates: Map<number, Range>,
): void {
  const value = rangeOf(node as Node | null);
  // An empty value (`key:` with nothing after it) has a zero-width range: point at its key instead.
  const loc: NodeLoc = { path, value: value && value.end > value.start ? value : key ?? value ?? { start: 0, end: 0 } };
  if (key) loc.key = key;
  source.index.set(pathKey(path), loc);
  if (isAlias(node)) return; // errors under an alias point at the alias
  if (isMap(node)) {
    const seen = new Map<string, Range>();
    for (const pair of node.items) {
      const k = pair.key as Node | null;
      const kr = rangeOf(k);
      if (!isScalar(k) || (typeof k.value !== "string" && typeof k.value !== "number")) {
        if (kr) problems.push(source.problem(kr, "mapping keys must be plain names", "write the key as a plain word, e.g. `steps:`"));
        continue;
      }
      const name = String(k.value);
      const first = seen.get(name);
      if (first && kr) {
        duplicates.set(kr.start, first);
        continue; // an error anyway; positions point at the first entry
      }
      if (kr) seen.set(name, kr);
      indexNode(source, pair.value, [...path, name], kr, problems, duplicates);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => indexNode(source, item, [...path, i], undefined, problems, duplicates));
  }
}

function aliases(doc: Document.Parsed): { range: Range; resolved: boolean }[] {
  const out: { range: Range; resolved: boolean }[] = [];
  const visit = (node: unknown): void => {
    if (isAlias(node)) {
      const range = rangeOf(node);
      if (range) out.push({ range, resolved: node.resolve(doc) !== undefined });
    } else if (isMap(node)) for (const p of node.items) visit(p.value);
    else if (isSeq(node)) for (const item of node.items) visit(item);
  };
  visit(doc.contents);
  return out;
}
