/**
 * Where things are, for every test: the repository root, the committed fixtures, the bundled CLIP
 * tokenizer; and temporary folders that are removed when the test file that made them ends.
 *
 * A test never writes into the repository: whatever it makes (projects, compiled folders, copies
 * of fixtures it may damage) goes into a `tempDir()`.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll } from "vitest";

export const REPO = path.resolve(import.meta.dirname, "..", "..");
/** test/fixtures: the committed inputs and reference outputs (see the README in each folder). */
export const FIXTURES = path.join(REPO, "test", "fixtures");
/** test/fixtures/models: the tiny diffusers checkpoints and their reference outputs. */
export const MODEL_FIXTURES = path.join(FIXTURES, "models");
/** models/clip-tokenizer: the CLIP tokenizer sdc ships (sd1/, sd2/), the one copy of CLIP's vocabulary. */
export const CLIP_TOKENIZER = path.join(REPO, "models", "clip-tokenizer");

const made: string[] = [];
// Registered when a test file first imports this module: runs after that file's tests.
afterAll(() => {
  for (const d of made.splice(0)) fs.rmSync(d, { recursive: true, force: true, maxRetries: 3 });
});

/** A fresh empty folder in the OS temp dir, removed (with its contents) after the current test file. */
export function tempDir(prefix = "sdc-test-"): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix.endsWith("-") ? prefix : `${prefix}-`));
  made.push(dir);
  return dir;
}

/**
 * The package as `npm install` leaves it, built from the current sources into a temp folder (the
 * repository's own dist/ is neither read, as it may be stale, nor written): package.json, bin/,
 * dist/ from tsconfig.build.json, and links to the repository's models/ and node_modules/.
 * Returns the path of its bin/sdc.js.
 */
export function buildPackage(): string {
  const dir = tempDir("sdc-pkg-");
  const tsc = path.join(REPO, "node_modules", "typescript", "bin", "tsc");
  execFileSync(process.execPath, [tsc, "-p", "tsconfig.build.json", "--outDir", path.join(dir, "dist")], { cwd: REPO, stdio: "pipe" });
  fs.copyFileSync(path.join(REPO, "package.json"), path.join(dir, "package.json"));
  fs.cpSync(path.join(REPO, "bin"), path.join(dir, "bin"), { recursive: true });
  for (const d of ["models", "node_modules"]) fs.symlinkSync(path.join(REPO, d), path.join(dir, d), "junction");
  return path.join(dir, "bin", "sdc.js");
}
