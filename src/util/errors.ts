/**
 * Errors a user can act on.
 *
 * A `UserError` carries one or more `Problem`s: each says where (a file position, or a tensor /
 * graph node name), what was expected, and what to do. The CLI renders them and exits with code 2;
 * any other exception is an internal error (exit code 1, stack trace only with --debug).
 */
import * as fs from "node:fs";

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

function isFile(p: string): boolean {
  try {
    return !fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Filesystem errors that are about the path a user gave, not about sdc: what each means and what to do. */
const FS_ERRORS: Record<string, { message: string; hint: string }> = {
  EISDIR: { message: "is a folder, where a file is needed", hint: "give a file name (e.g. inside that folder), not the folder" },
  ENOTDIR: { message: "a part of this path is a file, where a folder is needed", hint: "check the path: one of its folders is an existing file" },
  EROFS: { message: "is on a read-only file system", hint: "write somewhere writable (another folder or disk)" },
  EACCES: { message: "permission denied", hint: "check the permissions of the path and its folders, or choose another path" },
  EPERM: { message: "operation not permitted", hint: "check the permissions of the path and its folders, or choose another path" },
  ENOSPC: { message: "no space left on the device", hint: "free some space on that disk, or choose another folder (on another disk)" },
  EDQUOT: { message: "disk quota exceeded", hint: "free some space, or choose another folder (on another disk)" },
};

/**
 * A filesystem error (EISDIR, ENOTDIR, EROFS, EACCES, EPERM, ENOSPC, EDQUOT) as a Problem naming the
 * path (a rename's destination, which is the user's path, over its temporary source); null for any
 * other error. `subject` overrides the path shown (e.g. the flag that gave it).
 */
export function fsProblem(e: unknown, opts: { subject?: string; display?: (p: string) => string } = {}): Problem | null {
  const err = e as NodeJS.ErrnoException & { dest?: string };
  if (!(e instanceof Error) || typeof err.code !== "string") return null;
  // mkdir -p through an existing file says EEXIST: the same mistake as ENOTDIR
  const mkdirThroughFile = err.code === "EEXIST" && err.syscall === "mkdir" && typeof err.path === "string" && isFile(err.path);
  const kind = mkdirThroughFile ? FS_ERRORS.ENOTDIR : FS_ERRORS[err.code];
  if (!kind) return null;
  const file = err.dest ?? err.path;
  const shown = file !== undefined ? (opts.display ? opts.display(file) : file) : undefined;
  const subject = opts.subject ?? shown;
  const message = `${kind.message} (${err.code}${opts.subject && shown ? ` on ${shown}` : ""})`;
  return { message, ...(subject ? { subject } : {}), hint: kind.hint };
}
