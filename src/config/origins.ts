/**
 * Which text each value of the merged config came from.
 *
 * A pipeline is the deep merge of an `extends` chain plus command-line overrides, so one config can
 * hold values written in several files and on the command line. `Origins` records, per path, the
 * layer that last wrote it (the extending file wins, and replacing a value forgets everything the
 * base had below it), so an error about any path points at the text the user has to edit.
 */
import type { Problem, SourcePosition } from "../util/errors.js";
import { type NodeLoc, type Path, pathKey, type Range, type SourceDoc } from "./source.js";

export type Origin = { kind: "file"; source: SourceDoc } | { kind: "cli"; text: string };

/** The location part of a Problem. */
export type Where = Pick<Problem, "at" | "snippet" | "subject">;

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** Point at a node: its key for "key" (and for multi-line values), else its value. */
export function whereInSource(source: SourceDoc, path: Path, mode: "key" | "value"): Where {
  const found = source.lookup(path);
  if (!found) return whereRange(source, { start: 0, end: 0 });
  const range = pickRange(source, found.loc, found.exact ? mode : "key");
  return whereRange(source, range);
}

function pickRange(source: SourceDoc, loc: NodeLoc, mode: "key" | "value"): Range {
  if (mode === "key" && loc.key) return loc.key;
  const v = loc.value;
  const multiLine = source.text.slice(v.start, v.end).trimEnd().includes("\n");
  if (multiLine && loc.key) return loc.key;
  if (loc.path.length === 0) {
    // The whole document: underline its first line only.
    const first = source.text.slice(v.start).search(/\r?\n/);
    return { start: v.start, end: first < 0 ? v.end : v.start + first };
  }
  return v;
}

function whereRange(source: SourceDoc, range: Range): Where {
  const at = source.position(range);
  return { at, snippet: source.snippet(at) };
}

export class Origins {
  private readonly map = new Map<string, { path: Path; origin: Origin }>();

  /**
   * Record a file layer merged over `before` (the merged value so far). Entries come in preorder,
   * so a replaced node forgets its old descendants before its new ones are recorded.
   */
  addFileLayer(source: SourceDoc, before: unknown, layer: unknown): void {
    for (const loc of source.index.values()) {
      const old = valueAt(before, loc.path);
      const nu = valueAt(layer, loc.path);
      if (!(isPlainObject(old) && isPlainObject(nu))) this.forgetUnder(loc.path);
      this.map.set(pathKey(loc.path), { path: loc.path, origin: { kind: "file", source } });
    }
  }

  /** Record a command-line override replacing the value at `path`. */
  addCli(path: Path, text: string): void {
    this.forgetUnder(path);
    // Mappings the override had to create are its own too.
    for (let n = 1; n < path.length; n++) {
      const k = pathKey(path.slice(0, n));
      if (!this.map.has(k)) this.map.set(k, { path: path.slice(0, n), origin: { kind: "cli", text } });
    }
    this.map.set(pathKey(path), { path, origin: { kind: "cli", text } });
  }

  private forgetUnder(path: Path): void {
    const prefix = pathKey(path);
    for (const k of [...this.map.keys()]) {
      if (path.length === 0 ? k !== "" : k.startsWith(`${prefix}\u0001`)) this.map.delete(k);
    }
  }

  /** The origin of a path, or of its nearest recorded ancestor. */
  originOf(path: Path): { origin: Origin; exact: boolean } | undefined {
    for (let n = path.length; n >= 0; n--) {
      const e = this.map.get(pathKey(path.slice(0, n)));
      if (e) return { origin: e.origin, exact: n === path.length };
    }
    return undefined;
  }

  /** Where to point for a problem about `path` ("key" for unknown or misplaced keys). */
  where(path: Path, mode: "key" | "value" = "value"): Where {
    const o = this.originOf(path);
    if (!o) return {};
    if (o.origin.kind === "cli") return { subject: o.origin.text };
    return whereInSource(o.origin.source, path, mode);
  }

  position(path: Path, mode: "key" | "value" = "value"): SourcePosition | undefined {
    return this.where(path, mode).at;
  }

  /** How a relative path at `path` was resolved, as a hint for a path that is not there. */
  pathHint(path: Path): string {
    return this.originOf(path)?.origin.kind === "cli"
      ? "a path given on the command line is relative to the working directory"
      : "paths are relative to the YAML file that names them";
  }

  /** The file that wrote a path (for resolving relative paths); undefined for the command line. */
  fileOf(path: Path): string | undefined {
    const o = this.originOf(path);
    return o?.origin.kind === "file" ? o.origin.source.file : undefined;
  }
}

function valueAt(root: unknown, path: Path): unknown {
  let v = root;
  for (const seg of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<string | number, unknown>)[seg];
  }
  return v;
}
