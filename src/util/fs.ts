/**
 * Writing without half-written results: every artefact goes to a temporary sibling first and is
 * renamed into place, so a crash or a failed compile leaves the previous version intact.
 */
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";

/** A temporary path next to `target` (same filesystem, so rename is atomic). */
export function tempSibling(target: string): string {
  const dir = path.dirname(target);
  return path.join(dir, `.sdc-tmp-${path.basename(target)}-${process.pid}-${randomBytes(4).toString("hex")}`);
}

/**
 * A filesystem error on a temporary path names the user's path instead (`dest`, which fsProblem
 * shows): "out/00001-42.png: no space left on the device", not the hidden temporary's name; so
 * does one that names no path (a failed write() has none).
 */
function onTarget(e: unknown, tmp: string, target: string): unknown {
  const err = e as NodeJS.ErrnoException & { dest?: string };
  if (!(e instanceof Error) || typeof err.code !== "string" || err.dest !== undefined) return e;
  if (typeof err.path !== "string") err.dest = target; // a write's error names no file: it was the one being written
  else {
    const rel = path.relative(tmp, err.path);
    if (rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel))) err.dest = path.join(target, rel);
  }
  return e;
}

/** Write a file atomically. */
export function writeFileAtomic(target: string, data: string | Uint8Array): void {
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const tmp = tempSibling(target);
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, target);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw onTarget(e, tmp, target);
  }
}

/** Markers of a temporary directory: being built, then finished (removed once it is in place). */
const BUILDING = ".sdc-building";
const COMPLETE = ".sdc-complete";

/**
 * Build a directory atomically: `build(tmpDir)` fills a fresh temporary directory, which then
 * replaces `target`. A failure removes the temporary directory and leaves `target` untouched.
 *
 * The swap is two renames (target away, the new one in). A process killed between them leaves no
 * `target` but two finished siblings; `recoverDir` (called here first, and by readers of such
 * folders) puts the newest finished one back, so `target` is always the old or the new version.
 * Siblings of processes that are gone are removed.
 */
export async function writeDirAtomic(target: string, build: (tmpDir: string) => Promise<void> | void): Promise<void> {
  fs.mkdirSync(path.dirname(target), { recursive: true });
  recoverDir(target);
  const tmp = tempSibling(target);
  fs.mkdirSync(tmp);
  try {
    fs.writeFileSync(path.join(tmp, BUILDING), "");
    await build(tmp);
    fs.writeFileSync(path.join(tmp, COMPLETE), "");
    fs.rmSync(path.join(tmp, BUILDING));
    const old = fs.existsSync(target) ? tempSibling(target) : null;
    if (old) fs.renameSync(target, old);
    fs.renameSync(tmp, target);
    fs.rmSync(path.join(target, COMPLETE), { force: true });
    if (old) fs.rmSync(old, { recursive: true, force: true });
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw onTarget(e, tmp, target);
  }
}

/** Whether a process with this id exists (this process counts as alive). */
export function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Mend what a killed `writeDirAtomic` left next to `target`: when `target` is missing, the newest
 * finished sibling (the new version, or the old one it replaced) is renamed into place; siblings of
 * dead processes are then removed. Returns whether `target` was put back.
 */
export function recoverDir(target: string): boolean {
  const dir = path.dirname(target);
  const prefix = `.sdc-tmp-${path.basename(target)}-`;
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => n.startsWith(prefix));
  } catch {
    return false;
  }
  // exactly <prefix><pid>-<8 hex>: a sibling folder's own temporaries (".sdc-tmp-p-2-…" for "p-2") never match
  const dead = names
    .map((n) => ({ n, m: /^(\d+)-[0-9a-f]{8}$/.exec(n.slice(prefix.length)) }))
    .filter((x) => x.m !== null && !processAlive(Number(x.m[1])))
    .map((x) => path.join(dir, x.n));
  if (dead.length === 0) return false;
  let restored = false;
  if (!fs.existsSync(target)) {
    // a finished sibling: the new version (marked complete) before the old one it was replacing
    // (a former target: no marker); one still being built (or just made) is never put in place
    const rank = (d: string) => (fs.existsSync(path.join(d, COMPLETE)) ? 0 : isFormerTarget(d) ? 1 : 2);
    const finished = dead.filter((d) => rank(d) < 2).sort((a, b) => rank(a) - rank(b));
    if (finished[0]) {
      fs.renameSync(finished[0], target);
      fs.rmSync(path.join(target, COMPLETE), { force: true });
      restored = true;
    }
  }
  for (const d of dead) if (d !== target) fs.rmSync(d, { recursive: true, force: true });
  return restored;
}

/** A sibling that was `target` before a swap: a non-empty folder with neither marker. */
function isFormerTarget(d: string): boolean {
  try {
    return fs.statSync(d).isDirectory() && !fs.existsSync(path.join(d, BUILDING)) && fs.readdirSync(d).length > 0;
  } catch {
    return false;
  }
}
