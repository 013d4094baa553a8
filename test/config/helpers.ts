/**
 * Test projects in a temporary folder: the config-only model fixture copied to models/tiny-sd, plus
 * the files a test writes (pipelines, broken model files). Messages name files relative to that
 * folder, so snapshots hold no machine-specific paths.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { type LoadedPipeline, type LoadOptions, loadPipeline } from "../../src/config/load.js";
import { isUserError, renderProblems } from "../../src/util/errors.js";
import { FIXTURES, tempDir } from "../helpers/repo.js";

export { REPO } from "../helpers/repo.js";
/** test/fixtures/config: the config-only model folder and the libraries' recorded defaults. */
export const CONFIG_FIXTURES = path.join(FIXTURES, "config");

/** A fresh project folder; `files` maps relative paths to contents (null deletes a fixture file). */
export function project(files: Record<string, string | Buffer | null> = {}): string {
  const dir = tempDir("sdc-config-");
  fs.cpSync(path.join(CONFIG_FIXTURES, "models"), path.join(dir, "models"), { recursive: true });
  for (const [rel, content] of Object.entries(files)) {
    const p = path.join(dir, rel);
    if (content === null) fs.rmSync(p, { recursive: true, force: true });
    else {
      fs.mkdirSync(path.dirname(p), { recursive: true });
      fs.writeFileSync(p, content);
    }
  }
  return dir;
}

/** The default pipeline file name used by the tests. */
export const P = "pipelines/p.yaml";

/** The head every test pipeline shares: a valid tiny SD model. */
export const HEAD = "version: 1\nmodel:\n  from: ../models/tiny-sd\n";

/** Load `entry` in a project made of `files`; the rendered problems, or "ok". */
export async function problems(files: Record<string, string | Buffer | null>, opts: LoadOptions = {}, entry = P): Promise<string> {
  const cwd = project(files);
  try {
    await loadPipeline(entry, { cwd, ...opts });
    return "ok";
  } catch (e) {
    if (isUserError(e)) return renderProblems(e.problems);
    throw e;
  }
}

export async function load(files: Record<string, string | Buffer | null>, opts: LoadOptions = {}, entry = P): Promise<{ cwd: string; p: LoadedPipeline }> {
  const cwd = project(files);
  return { cwd, p: await loadPipeline(entry, { cwd, ...opts }) };
}
