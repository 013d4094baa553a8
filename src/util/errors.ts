/**
 * Errors a user can act on.
 *
 * A `UserError` carries one or more `Problem`s: each says where (a file position, or a tensor /
 * graph node name), what was expected, and what to do. The CLI renders them and exits with code 2;
 * any other exception is an internal error (exit code 1, stack trace only with --debug).
 */

/** A position in a source file; line and col are 1-based. */
export interface SourcePosition {
  file: string;
  line: number;
  col: number;
  /** End of the offending range (same line), for the caret underline. */
  endCol?: number;
}

export interface Problem {
  /** What is wrong, in one sentence. */
  message: string;
  /** Where, in a file (YAML, JSON config, ...). */
  at?: SourcePosition;
  /** Where, when it is not a file position: a tensor, graph node or weight name. */
  subject?: string;
  /** A caret snippet of the source, already rendered (two lines: source, carets). */
  snippet?: string;
  /** What to do about it. */
  hint?: string;
}

export class UserError extends Error {
  readonly problems: Problem[];
  readonly exitCode = 2;

  constructor(problems: Problem | Problem[] | string) {
    const list: Problem[] =
      typeof problems === "string" ? [{ message: problems }] : Array.isArray(problems) ? problems : [problems];
    super(list.map((p) => renderProblem(p)).join("\n"));
    this.name = "UserError";
    this.problems = list;
  }
}

/** Shorthand: throw a located error about a named thing (file, tensor, node). */
export function fail(message: string, opts: Omit<Problem, "message"> = {}): never {
  throw new UserError({ message, ...opts });
}

export function isUserError(e: unknown): e is UserError {
  return e instanceof UserError;
}

/** `file:line:col: message` (+ snippet and hint lines), the format every tool and editor understands. */
export function renderProblem(p: Problem): string {
  const where = p.at ? `${p.at.file}:${p.at.line}:${p.at.col}: ` : p.subject ? `${p.subject}: ` : "";
  const lines = [`${where}${p.message}`];
  if (p.snippet) lines.push(p.snippet);
  if (p.hint) lines.push(`  hint: ${p.hint}`);
  return lines.join("\n");
}

export function renderProblems(problems: Problem[]): string {
  return problems.map(renderProblem).join("\n\n");
}
