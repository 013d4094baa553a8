/** Paths: locations inside the sdc package (the bundled models/ folder), and paths as shown to a person. */
import * as path from "node:path";
import { fileURLToPath } from "node:url";

/** The package root: src/util/ and dist/util/ are both two levels below it. */
export function packageRoot(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
}

/** A path as shown in messages: relative to the working directory when inside it. */
export function displayPath(abs: string, cwd: string): string {
  const rel = path.relative(cwd, abs);
  return rel && !rel.startsWith("..") && !path.isAbsolute(rel) ? rel.split(path.sep).join("/") : abs;
}
