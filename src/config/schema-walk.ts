/**
 * Reading the schema back: what lies at a path, and how to say in words what it expects.
 *
 * Error hints quote the schema itself (keys of an object, values of an enum, bounds of a number),
 * so they can never drift from what the parser accepts.
 */
import { z } from "zod";
import type { Path } from "./source.js";

type Def = { type: string; [k: string]: unknown };
const defOf = (s: z.ZodType): Def => (s as unknown as { _zod: { def: Def } })._zod.def;

export interface Unwrapped {
  schema: z.ZodType;
  optional: boolean;
  nullable: boolean;
  defaultValue?: unknown;
}

/** Strip optional / nullable / default / prefault / readonly wrappers. */
export function unwrap(schema: z.ZodType): Unwrapped {
  let s = schema;
  let optional = false;
  let nullable = false;
  let defaultValue: unknown;
  for (;;) {
    const d = defOf(s);
    if (d.type === "optional") optional = true;
    else if (d.type === "nullable") nullable = true;
    else if (d.type === "default" || d.type === "prefault") {
      optional = true;
      if (defaultValue === undefined) {
        const v = d.defaultValue;
        defaultValue = typeof v === "function" ? (v as () => unknown)() : v;
      }
    } else if (d.type !== "readonly" && d.type !== "catch") break;
    s = d.innerType as z.ZodType;
  }
  return { schema: s, optional, nullable, defaultValue };
}

export function objectShape(schema: z.ZodType): Record<string, z.ZodType> | undefined {
  const s = unwrap(schema).schema;
  const d = defOf(s);
  return d.type === "object" ? (d.shape as Record<string, z.ZodType>) : undefined;
}

function unionOptions(s: z.ZodType): z.ZodType[] | undefined {
  const d = defOf(s);
  return d.type === "union" ? (d.options as z.ZodType[]) : undefined;
}

/** The schema at a path, following objects, arrays, tuples and the union member that fits. */
export function schemaAt(root: z.ZodType, path: Path): z.ZodType | undefined {
  let s: z.ZodType | undefined = root;
  for (const seg of path) {
    if (!s) return undefined;
    s = child(s, seg);
  }
  return s;
}

function child(schema: z.ZodType, seg: string | number): z.ZodType | undefined {
  const s = unwrap(schema).schema;
  const d = defOf(s);
  switch (d.type) {
    case "object":
      return (d.shape as Record<string, z.ZodType>)[String(seg)];
    case "array":
      return typeof seg === "number" ? (d.element as z.ZodType) : undefined;
    case "tuple":
      return typeof seg === "number" ? (d.items as z.ZodType[])[seg] : undefined;
    case "union":
      for (const o of d.options as z.ZodType[]) {
        const c = child(o, seg);
        if (c) return c;
      }
      return undefined;
    default:
      return undefined;
  }
}

export function enumValues(schema: z.ZodType): (string | number)[] | undefined {
  const s = unwrap(schema).schema;
  const d = defOf(s);
  if (d.type === "enum") return Object.values(d.entries as Record<string, string | number>);
  if (d.type === "literal") return d.values as (string | number)[];
  const opts = unionOptions(s);
  if (opts) {
    const all = opts.map(enumValues);
    if (all.every((v) => v)) return all.flat() as (string | number)[];
  }
  return undefined;
}

interface Bound {
  value: number;
  inclusive: boolean;
}

/** Bounds of a number or integer schema (ignoring zod's implicit safe-integer limits). */
export function numberBounds(schema: z.ZodType): { int: boolean; min?: Bound; max?: Bound } | undefined {
  const s = unwrap(schema).schema;
  const d = defOf(s);
  if (d.type !== "number") return undefined;
  let int = d.format === "safeint" || d.format === "int32";
  let min: Bound | undefined;
  let max: Bound | undefined;
  for (const c of (d.checks as { _zod: { def: Record<string, unknown> } }[] | undefined) ?? []) {
    const cd = c._zod.def;
    if (cd.check === "number_format" && (cd.format === "safeint" || cd.format === "int32")) int = true;
    if (cd.check === "greater_than") min = { value: cd.value as number, inclusive: cd.inclusive as boolean };
    if (cd.check === "less_than") max = { value: cd.value as number, inclusive: cd.inclusive as boolean };
  }
  return { int, ...(min ? { min } : {}), ...(max ? { max } : {}) };
}

function fmtNum(n: number): string {
  return Number.isInteger(n) || Math.abs(n) >= 1e-3 ? String(n) : n.toExponential();
}

/** "an integer from 1 to 10000", "a number > 0 and ≤ 1", "an integer ≥ 0". */
export function describeNumber(b: NonNullable<ReturnType<typeof numberBounds>>): string {
  const noun = b.int ? "an integer" : "a number";
  const { min, max } = b;
  if (min && max && min.inclusive && max.inclusive) return `${noun} from ${fmtNum(min.value)} to ${fmtNum(max.value)}`;
  const parts: string[] = [];
  if (min) parts.push(`${min.inclusive ? "≥" : ">"} ${fmtNum(min.value)}`);
  if (max) parts.push(`${max.inclusive ? "≤" : "<"} ${fmtNum(max.value)}`);
  return parts.length ? `${noun} ${parts.join(" and ")}` : noun;
}

function listDescribe(values: (string | number)[]): string {
  return values.map((v) => (typeof v === "string" ? v : String(v))).join(", ");
}

/** A noun phrase for what the schema accepts: "a string or a list of strings". */
export function describeSchema(schema: z.ZodType): string {
  const u = unwrap(schema);
  const base = describeBare(u.schema);
  return u.nullable ? `${base}, or null` : base;
}

function describeBare(s: z.ZodType): string {
  const d = defOf(s);
  switch (d.type) {
    case "string":
      return "a string";
    case "number":
      return describeNumber(numberBounds(s)!);
    case "boolean":
      return "true or false";
    case "null":
      return "null";
    case "literal":
      return listDescribe(d.values as (string | number)[]);
    case "enum":
      return `one of: ${listDescribe(enumValues(s)!)}`;
    case "object":
      return "a mapping";
    case "record":
      return "a mapping";
    case "tuple":
      return `a list of ${(d.items as unknown[]).length} values: [${(d.items as z.ZodType[]).map(describeSchema).join(", ")}]`;
    case "array":
      return `a list of ${plural(describeSchema(d.element as z.ZodType))}`;
    case "union": {
      const enums = enumValues(s);
      if (enums) return `one of: ${listDescribe(enums)}`;
      return (d.options as z.ZodType[]).map(describeSchema).join(" or ");
    }
    default:
      return d.type;
  }
}

function plural(phrase: string): string {
  const m = /^(an?) (\w+)(.*)$/.exec(phrase);
  if (!m) return phrase.startsWith("one of") ? `values (${phrase})` : phrase;
  const [, , noun, rest] = m;
  if (noun === "list") return `lists${rest}`;
  if (noun === "mapping") return `mappings${rest}`;
  return `${noun}s${rest}`;
}

/** The JS type name of a value, for "got ..." in messages. */
export function describeValue(v: unknown): string {
  if (v === null) return "null (an empty value)";
  if (v === undefined) return "nothing";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a mapping";
  if (typeof v === "string") return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 37)}...` : v)}`;
  if (typeof v === "number") {
    if (Number.isNaN(v)) return "NaN";
    return Number.isInteger(v) ? `the integer ${v}` : `the number ${v}`;
  }
  if (typeof v === "boolean") return `the boolean ${v}`;
  return typeof v;
}

export function valueAt(root: unknown, path: Path): unknown {
  let v = root;
  for (const seg of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<string | number, unknown>)[seg];
  }
  return v;
}

/** The schema's own description (`.describe()`), if any. */
export function descriptionOf(schema: z.ZodType): string | undefined {
  let s: z.ZodType | undefined = schema;
  while (s) {
    const desc = z.globalRegistry.get(s)?.description;
    if (desc) return desc;
    const d = defOf(s);
    s = ["optional", "nullable", "default", "prefault", "readonly"].includes(d.type) ? (d.innerType as z.ZodType) : undefined;
  }
  return undefined;
}
