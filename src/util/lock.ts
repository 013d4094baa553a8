/**
 * Two sdc processes on one compiled folder: an advisory lock, and private views for runs.
 *
 * `withDirLock(dir, fn)` runs `fn` while holding `.sdc-lock-<name>` beside the folder: a file made
 * with O_EXCL that holds the owner's pid and process start time. A compile holds it from reading the
 * old folder to swapping in the new one; a run holds it while it compiles (when stale) and takes
 * `snapshotDir`, a private folder of hard links to the compiled files. Compiles replace the folder
 * by renames and never write into a file in place, so the links keep the run's plan and graphs
 * as they were, however the folder changes while it samples; the run removes its view at the end.
 *
 * A lock whose owner is gone (no such pid, or the pid now belongs to a process started at another
 * time) is stale and is taken over; so are views of dead processes (swept when a lock is taken).
 * The lock is re-entrant within one async call chain (a run's compile inside the run's lock).
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { UserError } from "./errors.js";
import { processAlive } from "./fs.js";

interface Owner {
  pid: number;
  /** Start time of the owning process (clock ticks since boot, Linux), null where unknown. */
  started: number | null;
  host: string;
  token: string;
}

const held = new AsyncLocalStorage<ReadonlySet<string>>();

/** The lock file of a folder: a sibling, so it survives the folder's swaps. */
export function lockFile(target: string): string {
  return path.join(path.dirname(target), `.sdc-lock-${path.basename(target)}`);
}

/** A process's start time in clock ticks since boot (/proc/<pid>/stat, field 22), or null. */
export function processStartTime(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    // the command name (field 2) is in parentheses and may hold spaces: count fields after the last ')'
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const v = Number(rest[22 - 3]);
    return Number.isFinite(v) ? v : null;
  } catch {
    return null;
  }
}

/** Whether the owner recorded in a lock file still runs (on another host: assumed so). */
export function ownerAlive(o: Owner): boolean {
  if (o.host !== os.hostname()) return true;
  if (!processAlive(o.pid)) return false;
  if (o.started === null) return true;
  const now = processStartTime(o.pid);
  return now === null || now === o.started;
}

function readOwner(file: string): { text: string; owner: Owner | null } | null {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    return null;
  }
  try {
    const o = JSON.parse(text) as Owner;
    return { text, owner: typeof o.pid === "number" ? o : null };
  } catch {
    return { text, owner: null };
  }
}

/**
 * Remove a stale lock only if it is still the one judged stale: it is renamed away first and
 * compared, and put back (link, which never overwrites) if another process re-took it in between.
 */
function breakStale(file: string, staleText: string): void {
  const moved = `${file}.stale-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    fs.renameSync(file, moved);
  } catch {
    return; // someone else broke it
  }
  let text = "";
  try {
    text = fs.readFileSync(moved, "utf8");
  } catch {
    text = staleText;
  }
  if (text !== staleText) {
    try {
      fs.linkSync(moved, file);
    } catch {
      // a third process holds it now: the one we moved will find its lock gone on release
    }
  }
  fs.rmSync(moved, { force: true });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface LockOptions {
  /** Told once when the lock is held by another process (after about a second). */
  log?: (line: string) => void;
  /** Give up after this long (default 30 min). */
  timeoutMs?: number;
  /** Shown in messages instead of the folder's path. */
  display?: (p: string) => string;
}

async function acquire(target: string, o: LockOptions): Promise<() => void> {
  const file = lockFile(target);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const me: Owner = { pid: process.pid, started: processStartTime(process.pid), host: os.hostname(), token: randomBytes(8).toString("hex") };
  const text = JSON.stringify(me);
  const t0 = Date.now();
  let told = false;
  let wait = 10;
  for (;;) {
    try {
      fs.writeFileSync(file, text, { flag: "wx" });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    const cur = readOwner(file);
    if (cur === null) continue; // released between our attempt and the read
    if (cur.owner === null) {
      // written but not yet filled, or damaged: stale once it has been so for a while
      if (Date.now() - statMtime(file) > 5000) breakStale(file, cur.text);
    } else if (!ownerAlive(cur.owner)) {
      breakStale(file, cur.text);
      continue;
    }
    const show = o.display ?? ((p: string) => p);
    if (!told && Date.now() - t0 > 1000 && cur.owner) {
      told = true;
      o.log?.(`waiting for sdc (pid ${cur.owner.pid}${cur.owner.pid === process.pid ? ", this process" : ""}) to finish with ${show(target)}`);
    }
    if (Date.now() - t0 > (o.timeoutMs ?? 30 * 60_000))
      throw new UserError({
        message: `${show(target)} stayed locked by another sdc process (pid ${cur.owner?.pid ?? "unknown"}) for ${Math.round((Date.now() - t0) / 1000)} s`,
        subject: show(file),
        hint: "wait for that process to finish; if no sdc process is running, delete the lock file",
      });
    await sleep(wait);
    wait = Math.min(wait * 2, 200);
  }
  sweepSnapshots(target);
  return () => {
    const cur = readOwner(file);
    if (cur?.owner?.token === me.token) fs.rmSync(file, { force: true });
  };
}

function statMtime(file: string): number {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return Date.now();
  }
}

/** Run `fn` holding `target`'s lock (re-entrant: a nested call in the same call chain runs at once). */
export async function withDirLock<T>(target: string, fn: () => Promise<T> | T, o: LockOptions = {}): Promise<T> {
  const file = lockFile(path.resolve(target));
  const mine = held.getStore();
  if (mine?.has(file)) return fn();
  const release = await acquire(path.resolve(target), o);
  try {
    return await held.run(new Set([...(mine ?? []), file]), fn);
  } finally {
    release();
  }
}

const SNAPSHOT = ".sdc-run-";

/** A private view of a folder: hard links to its files (copies where links are refused). */
export function snapshotDir(target: string): { dir: string; remove(): void } {
  const dir = path.join(path.dirname(target), `${SNAPSHOT}${path.basename(target)}-${process.pid}-${randomBytes(4).toString("hex")}`);
  const link = (from: string, to: string) => {
    fs.mkdirSync(to);
    for (const e of fs.readdirSync(from, { withFileTypes: true })) {
      const a = path.join(from, e.name);
      const b = path.join(to, e.name);
      if (e.isDirectory()) link(a, b);
      else
        try {
          fs.linkSync(a, b);
        } catch {
          fs.copyFileSync(a, b);
        }
    }
  };
  try {
    link(target, dir);
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return { dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** Remove the views of runs whose process is gone. */
export function sweepSnapshots(target: string): void {
  const prefix = `${SNAPSHOT}${path.basename(target)}-`;
  let names: string[];
  try {
    names = fs.readdirSync(path.dirname(target)).filter((n) => n.startsWith(prefix));
  } catch {
    return;
  }
  for (const n of names) {
    const m = /^(\d+)-[0-9a-f]{8}$/.exec(n.slice(prefix.length));
    if (m && !processAlive(Number(m[1]))) fs.rmSync(path.join(path.dirname(target), n), { recursive: true, force: true });
  }
}
