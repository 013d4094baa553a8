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

/** Write a file atomically. */
export function writeFileAtomic(target: string, data: string | Uint8Array): void {
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const tmp = tempSibling(target);
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, target);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/**
 * Build a directory atomically: `build(tmpDir)` fills a fresh temporary directory, which then
 * replaces `target`. A failure removes the temporary directory and leaves `target` untouched.
 */
export async function writeDirAtomic(target: string, build: (tmpDir: string) => Promise<void> | void): Promise<void> {
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const tmp = tempSibling(target);
  fs.mkdirSync(tmp);
  try {
    await build(tmp);
    const old = fs.existsSync(target) ? tempSibling(target) : null;
    if (old) fs.renameSync(target, old);
    fs.renameSync(tmp, target);
    if (old) fs.rmSync(old, { recursive: true, force: true });
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
