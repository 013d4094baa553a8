/**
 * One temp folder per test run: every worker (and every process a test starts) gets it as its temp dir,
 * so whatever lands in the OS temp dir during the run — tests' temp folders, which they remove
 * themselves, and files they cannot control, such as the empty `mat-debug-<pid>.log` onnxruntime
 * leaves in the temp dir of each process that opens a session — goes with the folder at the end.
 * Test folders still there at the end are named: a test that does not clean up is a bug.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

/** What others leave in a temp dir, not the tests: onnxruntime's per-process debug log and session file. */
const NOT_OURS = /^(mat-debug-\d+\.log|\.ses)$/;

export default function setup(): () => void {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "sdc-vitest-"));
  const vars = ["TMPDIR", "TMP", "TEMP"] as const; // os.tmpdir() reads TMPDIR on POSIX, TEMP/TMP on Windows
  const before = vars.map((v) => process.env[v]);
  for (const v of vars) process.env[v] = root;
  return () => {
    vars.forEach((v, i) => {
      if (before[i] === undefined) delete process.env[v];
      else process.env[v] = before[i];
    });
    const left = fs.readdirSync(root).filter((f) => !NOT_OURS.test(f));
    fs.rmSync(root, { recursive: true, force: true, maxRetries: 3 });
    if (left.length) console.warn(`tests left ${left.length} entries in the temp dir (removed now): ${left.join(", ")}`);
  };
}
