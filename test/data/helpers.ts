/**
 * Dataset test helpers: temporary folders (removed after each file's tests), small images written
 * with sharp, and pipelines over a data folder loaded the way the trainer will load them. Messages
 * name files relative to the temporary folder, so snapshots hold no machine paths.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import { afterAll } from "vitest";
import { type LoadedPipeline, loadPipeline } from "../../src/config/load.js";
import { type Dataset, openDataset, type OpenDatasetOptions } from "../../src/data/dataset.js";
import { relativeDisplay } from "../../src/data/problems.js";
import { isUserError, renderProblems } from "../../src/util/errors.js";
import { HEAD, P, project } from "../config/helpers.js";

const made: string[] = [];
afterAll(() => {
  for (const d of made.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

export function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sdc-data-"));
  made.push(dir);
  return dir;
}

/** Write files (relative path → text or bytes) under `dir`. */
export function writeFiles(dir: string, files: Record<string, string | Uint8Array>): void {
  for (const [rel, content] of Object.entries(files)) {
    const p = path.join(dir, rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, content);
  }
}

export type Pixel = readonly [number, number, number] | readonly [number, number, number, number];

/** An image of `width` x `height` whose pixel (x, y) is `at(x, y)` (RGB or RGBA). */
export async function image(
  width: number,
  height: number,
  at: (x: number, y: number) => Pixel = () => [128, 64, 32],
  format: "png" | "jpeg" | "webp" = "png",
  orientation?: number,
): Promise<Buffer> {
  const channels = at(0, 0).length as 3 | 4;
  const data = Buffer.alloc(width * height * channels);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) at(x, y).forEach((v, c) => (data[(y * width + x) * channels + c] = v));
  let s = sharp(data, { raw: { width, height, channels } });
  if (orientation) s = s.withMetadata({ orientation });
  return format === "png" ? s.png().toBuffer() : format === "jpeg" ? s.jpeg({ quality: 95 }).toBuffer() : s.webp({ lossless: true }).toBuffer();
}

export const jsonl = (rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join("\n") + "\n";

/** A project: the tiny model, pipelines/p.yaml training on ../data with `data` YAML lines, and files. */
export function trainProject(dataYaml: string, files: Record<string, string | Uint8Array> = {}): string {
  const yaml = `${HEAD}train:\n  target: unet\n  steps: 10\n  data:\n    dir: ../data\n${dataYaml.replace(/^(?=.)/gm, "    ")}`;
  const cwd = project({ [P]: yaml });
  made.push(cwd);
  fs.mkdirSync(path.join(cwd, "data"), { recursive: true });
  writeFiles(cwd, files);
  return cwd;
}

export async function loadTrain(cwd: string): Promise<LoadedPipeline> {
  return loadPipeline(P, { cwd });
}

/** Open the project's dataset as the trainer will. */
export async function openProject(cwd: string, opts: OpenDatasetOptions = {}): Promise<Dataset> {
  const p = await loadTrain(cwd);
  return openDataset(p.config.train!.data, { where: p.where, display: relativeDisplay(cwd), ...opts });
}

/** The rendered problems of opening the project's dataset, or "ok". */
export async function openProblems(cwd: string, opts: OpenDatasetOptions = {}): Promise<string> {
  try {
    await openProject(cwd, opts);
    return "ok";
  } catch (e) {
    if (isUserError(e)) return renderProblems(e.problems);
    throw e;
  }
}
