/**
 * Where things are, for every test: the repository root, the committed fixtures, the bundled CLIP
 * tokenizer; and temporary folders that are removed when the test file that made them ends.
 *
 * A test never writes into the repository: whatever it makes (projects, compiled folders, copies
 * of fixtures it may damage) goes into a `tempDir()`.
 */
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

