/** Locations inside the sdc package (the bundled models/ folder), from this module's location. */
import * as path from "node:path";
import { fileURLToPath } from "node:url";

/** The package root: src/util/ and dist/util/ are both two levels below it. */
export function packageRoot(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
}
