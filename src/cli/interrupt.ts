/**
 * Ctrl-C within a second, even inside a long onnxruntime call.
 *
 * onnxruntime-node runs a session synchronously on the main thread, so while a U-Net call of
 * several seconds runs, the process's own SIGINT handler cannot run: Ctrl-C used to wait for the
 * call (10–70 s at large sizes), and a second Ctrl-C did not help either. A watchdog process, started
 * beside `sdc run` and `sdc watch`, is in the same process group and so gets the terminal's Ctrl-C
 * too. The command itself still stops cleanly between steps when it can (and then tells the watchdog
 * to stand down); if it has not finished a second after the first Ctrl-C, or at once on the second,
 * the watchdog says which step was abandoned and kills it. Nothing is half-written either way:
 * images, compiled folders and checkpoints are written to temporary names and renamed.
 */
import { type ChildProcess, spawn } from "node:child_process";

/** What the watchdog runs (a plain script: it must start in milliseconds and load nothing). */
const WATCHDOG = `
const parent = Number(process.argv[1]);
const graceMs = Number(process.argv[2]);
let done = 0, total = 0, what = "step", interrupts = 0, timer = null;
const say = (m) => process.stderr.write("\\n" + m + "\\n");
function kill() {
  try { process.kill(parent, 0); } catch { process.exit(0); }
  say("stopped" + (done ? " after " + what + " " + done + (total ? " of " + total : "") : "") + ": the " + what + " in progress was abandoned (nothing is half-written)");
  try { process.kill(parent, "SIGKILL"); } catch {}
  process.exit(0);
}
process.on("message", (m) => {
  if (m && m.standDown) { if (timer) clearTimeout(timer); process.exit(0); }
  if (m && typeof m.done === "number") { done = m.done; total = m.total || 0; what = m.what || "step"; }
});
process.on("disconnect", () => process.exit(0));
process.on("SIGINT", () => {
  interrupts++;
  if (interrupts >= 2) kill();
  else if (!timer) timer = setTimeout(kill, graceMs);
});
process.on("SIGTERM", () => process.exit(0));
`;

export interface InterruptWatchdog {
  /** The last finished unit of work (shown if the one after it has to be abandoned). */
  progress(done: number, total: number, what?: string): void;
  /** The command is stopping (or has finished) by itself: no kill. */
  standDown(): void;
}

/**
 * Start the watchdog beside this process. Returns null where it cannot help: when neither stdin nor
 * stderr is a terminal (a Ctrl-C there reaches only this process), unless `force` is set.
 */
export function startInterruptWatchdog(opts: { graceMs?: number; force?: boolean } = {}): InterruptWatchdog | null {
  if (!opts.force && !process.stdin.isTTY && !process.stderr.isTTY) return null;
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, ["-e", WATCHDOG, String(process.pid), String(opts.graceMs ?? 1000)], { stdio: ["ignore", "ignore", "inherit", "ipc"] });
  } catch {
    return null;
  }
  child.on("error", () => {});
  // neither the child nor its channel keeps this process alive
  child.unref();
  (child as ChildProcess & { channel?: { unref(): void } }).channel?.unref();
  const send = (m: Record<string, string | number | boolean | undefined>) => {
    try {
      if (child.connected) child.send(m);
    } catch {
      // the watchdog is gone: nothing to tell it
    }
  };
  return {
    progress: (done, total, what) => send({ done, total, what }),
    standDown: () => {
      send({ standDown: true });
      if (child.connected) child.disconnect();
    },
  };
}
