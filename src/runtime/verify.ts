/**
 * A compiled folder is checked against its plan.json before a graph is opened: the ONNX file must
 * hash to the sha256 the compiler recorded, and its external data files must be there, inside the
 * folder (no absolute or `..` names, no symbolic link leading out). A folder
 * edited by hand, half-copied, or mixed from two compiles is refused with the file named, instead of
 * running graphs the plan does not describe (a silent wrong result) or failing inside onnxruntime.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Plan } from "../plan/schema.js";
import { UserError } from "../util/errors.js";
import { sha256File } from "../util/hash.js";

type GraphSpec = Plan["graphs"][keyof Plan["graphs"]];

const HINT = "recompile it: sdc compile --force (or sdc run --recompile)";

/** Check one graph's files against the plan; returns the ONNX file's path. */
export function checkGraphFiles(dir: string, spec: Pick<GraphSpec, "file" | "sha256" | "externalData">): string {
  const file = path.join(dir, spec.file);
  if (!fs.existsSync(file)) throw new UserError({ message: "the compiled folder is incomplete: this graph file named in plan.json is missing", subject: file, hint: HINT });
  const got = sha256File(file);
  if (got !== spec.sha256)
    throw new UserError({
      message: `this graph file does not match plan.json (sha256 ${got.slice(0, 12)}…, the plan says ${spec.sha256.slice(0, 12)}…): the compiled folder was changed or half-copied`,
      subject: file,
      hint: HINT,
    });
  for (const ext of spec.externalData) {
    const data = path.join(path.dirname(file), ext);
    if (path.isAbsolute(ext) || ext.split(/[\\/]/).includes(".."))
      throw new UserError({ message: `plan.json names a weights file outside the compiled folder (${ext}); sdc keeps a graph's weights beside it`, subject: path.join(dir, "plan.json"), hint: HINT });
    if (!fs.existsSync(data)) throw new UserError({ message: `the compiled folder is incomplete: the weights file ${ext} that ${spec.file} references is missing`, subject: data, hint: HINT });
    confined(dir, data);
  }
  confined(dir, file);
  return file;
}

/** sdc writes files and hard links into a compiled folder, never symbolic links: one that leads outside it is refused. */
function confined(dir: string, file: string): void {
  if (!fs.lstatSync(file).isSymbolicLink()) return;
  const real = fs.realpathSync(file);
  const root = fs.realpathSync(dir);
  const rel = path.relative(root, real);
  if (rel.startsWith("..") || path.isAbsolute(rel))
    throw new UserError({ message: `this file of the compiled folder is a link that leads outside it (to ${real}); sdc writes no links there`, subject: file, hint: HINT });
}
