/**
 * The project the kill and disk-full trials work in: two pipelines on models/tiny-sd that differ
 * only in precision (fp32 vs fp16 weights written anew), so switching between them rebuilds every
 * graph and a compile writes for a while.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { REPO, tempDir } from "../helpers/repo.js";

export function twoPrecisionProject(prefix: string, steps: number): string {
  const dir = tempDir(prefix);
  const model = JSON.stringify(path.join(REPO, "models", "tiny-sd"));
  const yaml = (precision: string) =>
    `version: 1\nname: p\nmodel:\n  from: ${model}\nscheduler:\n  type: euler\n  steps: ${steps}\nsample:\n  prompt: a red fox\n  width: 32\n  height: 32\noutput:\n  dir: out\nruntime:\n  device: cpu\n  precision: ${precision}\n  threads: 1\n`;
  fs.writeFileSync(path.join(dir, "a.yaml"), yaml("fp32"));
  fs.writeFileSync(path.join(dir, "b.yaml"), yaml("fp16"));
  return dir;
}
