/**
 * zod issues → located, actionable problems.
 *
 * zod reports what failed as data (code, path, expected); this module maps each issue's path to the
 * text that wrote it (via a `where` function) and words the message and hint from the schema at that
 * path: did-you-mean for unknown keys and enum values, the allowed values, the expected range.
 */
import type { z } from "zod";
import type { Problem } from "../util/errors.js";
import type { Where } from "./origins.js";
import {
  describeNumber,
  describeSchema,
  describeValue,
  descriptionOf,
  enumValues,
  numberBounds,
  objectShape,
  schemaAt,
  valueAt,
} from "./schema-walk.js";
import { formatPath, type Path } from "./source.js";
import { closest } from "./suggest.js";

export type WhereFn = (path: Path, mode: "key" | "value") => Where;

type Issue = z.core.$ZodIssue;

/** Convert every issue of a failed parse (of `input` against `schema`) into problems. */
export function issuesToProblems(schema: z.ZodType, input: unknown, issues: readonly Issue[], where: WhereFn): Problem[] {
  const out: Problem[] = [];
  for (const issue of issues) convert(schema, input, issue, [], where, out);
  return out;
}

function convert(root: z.ZodType, input: unknown, issue: Issue, prefix: Path, where: WhereFn, out: Problem[]): void {
  const path: Path = [...prefix, ...(issue.path as (string | number)[])];
  const schema = schemaAt(root, path);
  const value = valueAt(input, path);
  const name = formatPath(path);
  const push = (message: string, hint: string | undefined, mode: "key" | "value" = "value", at: Path = path) =>
    out.push({ message, ...where(at, mode), ...(hint ? { hint } : {}) });
  const missing = () => {
    const key = String(path[path.length - 1]);
    const parent = path.slice(0, -1);
    const desc = note(schema);
    push(
      `missing required key "${key}"${parent.length ? ` in ${formatPath(parent)}` : ""}`,
      `add ${key}: <${schema ? describeSchema(schema) : "a value"}>${desc ? ` — ${desc}` : ""}`,
      "key",
    );
  };

  switch (issue.code) {
    case "unrecognized_keys": {
      const here = schemaAt(root, path);
      const known = here ? Object.keys(objectShape(here) ?? {}) : [];
      const inWhat = path.length ? ` in ${name}` : " at the top level";
      for (const key of issue.keys) {
        const guess = closest(key, known);
        push(
          `unknown key "${key}"${inWhat}`,
          guess ? `did you mean "${guess}"?` : `allowed keys: ${known.join(", ")}`,
          "key",
          [...path, key],
        );
      }
      return;
    }
    case "invalid_type": {
      if (value === undefined) return missing();
      push(`${name}: expected ${schema ? describeSchema(schema) : issue.expected}, got ${describeValue(value)}`, note(schema));
      return;
    }
    case "invalid_value": {
      if (value === undefined) return missing();
      const allowed = schema ? enumValues(schema) : undefined;
      const values = allowed ?? issue.values.map((v) => v as string | number);
      const guess = typeof value === "string" ? closest(value, values.map(String)) : undefined;
      const list = values.map((v) => String(v)).join(", ");
      if (values.length === 1) {
        push(`${name}: expected ${list}, got ${describeValue(value)}`, note(schema));
        return;
      }
      push(`${name}: ${JSON.stringify(value)} is not an allowed value`, `${guess ? `did you mean "${guess}"? ` : ""}allowed: ${list}`);
      return;
    }
    case "too_small":
    case "too_big": {
      const small = issue.code === "too_small";
      if (issue.origin === "array" || issue.origin === "set") {
        const n = Number(small ? (issue as { minimum: number | bigint }).minimum : (issue as { maximum: number | bigint }).maximum);
        push(`${name}: ${small ? "needs at least" : "takes at most"} ${n} item${n === 1 ? "" : "s"}`, schema ? `expected ${describeSchema(schema)}` : undefined);
        return;
      }
      if (issue.origin === "string") {
        if (small && Number((issue as { minimum: number | bigint }).minimum) === 1) push(`${name}: must not be empty`, note(schema));
        else push(`${name}: ${JSON.stringify(value)} is too ${small ? "short" : "long"}`, undefined);
        return;
      }
      if (!small && Number((issue as { maximum: number | bigint }).maximum) === Number.MAX_SAFE_INTEGER) {
        push(`${name}: ${String(value)} is too large`, `integers in a config go up to ${Number.MAX_SAFE_INTEGER} (2^53 − 1)`);
        return;
      }
      push(`${name}: ${String(value)} is too ${small ? "small" : "large"}`, hintFor(schema));
      return;
    }
    case "not_multiple_of":
      push(`${name}: ${String(value)} is not a multiple of ${String(issue.divisor)}`, hintFor(schema));
      return;
    case "invalid_union": {
      // When the value's type matched exactly one member, its own issues say more than "no member matched".
      const deeper = issue.errors.filter((errs) => errs.every((e) => !(e.code === "invalid_type" && e.path.length === 0)));
      if (deeper.length === 1 && deeper[0]!.length > 0) {
        for (const e of deeper[0]!) convert(root, input, e, path, where, out);
        return;
      }
      if (value === undefined) return missing();
      push(`${name}: expected ${schema ? describeSchema(schema) : "another value"}, got ${describeValue(value)}`, note(schema));
      return;
    }
    case "invalid_format":
    case "custom":
    default:
      push(`${name}: ${issue.message}`, note(schema));
  }
}

/** The schema's description, as a clause for a hint. */
function note(schema: z.ZodType | undefined): string | undefined {
  const d = schema ? descriptionOf(schema) : undefined;
  if (!d) return undefined;
  const s = d.replace(/\.$/, "");
  return /^[A-Z](?![A-Z])/.test(s) ? s[0]!.toLowerCase() + s.slice(1) : s;
}

/** Range (and description) of a number's schema, for hints. */
function hintFor(schema: z.ZodType | undefined): string | undefined {
  if (!schema) return undefined;
  const b = numberBounds(schema);
  const desc = note(schema);
  if (b) return `expected ${describeNumber(b)}${desc ? ` — ${desc}` : ""}`;
  return desc;
}
