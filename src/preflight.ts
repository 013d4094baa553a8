/**
 * What `sdc run` would otherwise find only late (after compiling, denoising or training), checked
 * before any work: `sdc validate` runs the same checks, so a pipeline it passes does not fail on
 * them later.
 *
 *  - something to run: an inline architecture has weights only when a train section makes them;
 *  - CUDA present when `runtime.device` is cuda;
 *  - a size far from the model's native one (a note: slow, and drawn badly);
 *  - the init image: there, decodable, and how it will be fitted to the requested size (a note);
 *  - the latents file: a tensor of the run's shape;
 *  - the folders it writes (images, compiled graphs, checkpoints): creatable and writable.
 *
 * Problems are reported together, each located where the value was written (a file position or the
 * command-line flag); notes are returned for the caller to print.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import sharp, { type Metadata } from "sharp";
import { defaultCompiledDir } from "./compiler/compile.js";
import type { LoadedPipeline } from "./config/load.js";
import type { Path } from "./config/source.js";
import { vaeScaleFactor } from "./models/arch.js";
import { CUDA_HINT, cudaUnavailableReason } from "./runtime/session.js";
import { imageCount } from "./runtime/settings.js";
import { readLatents } from "./runtime/stages/initial-latents.js";
import { isUserError, type Problem, UserError } from "./util/errors.js";
import { displayPath } from "./util/paths.js";

export interface PreflightOptions {
  cwd?: string;
  /** The compiled folder the run will use (default compiled/<name> under cwd). */
  compiledDir?: string;
}

/** Check the pipeline as the run will use it; throws a UserError listing every problem, returns notes. */
export async function preflight(p: LoadedPipeline, o: PreflightOptions = {}): Promise<string[]> {
  const cwd = o.cwd ?? process.cwd();
  const show = (f: string) => displayPath(f, cwd);
  const problems: Problem[] = [];
  const notes: string[] = [];
  const c = p.config;

  if (p.model.kind === "inline" && !c.train)
    problems.push({
      message: "an inline architecture has no weights, so there is nothing to run",
      ...p.where(["model"], "key"),
      hint: "point model.from at a diffusers folder or a .safetensors checkpoint, or add a train section to train the architecture from scratch",
    });

  const noCuda = c.runtime.device === "cuda" ? cudaUnavailableReason() : null;
  if (noCuda) problems.push({ message: `runtime.device is cuda, but ${noCuda}`, ...p.where(["runtime", "device"]), hint: CUDA_HINT });

  if (!c.train) {
    const images = imageCount({ prompts: Array.isArray(c.sample.prompt) ? c.sample.prompt : [c.sample.prompt], batch: c.sample.batch });
    const factor = vaeScaleFactor(p.model.vae);
    // far from the size the model was trained at: slow, and a model draws badly off its size
    const ss = p.model.unet.sample_size;
    const [nh, nw] = ss === null ? [0, 0] : (Array.isArray(ss) ? ss : [ss, ss]).map((x) => x * factor);
    const ratio = ss === null ? 1 : (c.sample.width * c.sample.height) / (nw! * nh!);
    if (ratio >= 4 || ratio <= 1 / 4)
      notes.push(
        `${c.sample.width}×${c.sample.height} is ${ratio >= 1 ? `${ratio.toFixed(0)}× the` : `1/${(1 / ratio).toFixed(0)} of the`} pixels of the model's native ${nw}×${nh}: ` +
          (ratio >= 1 ? `each U-Net step takes roughly ${ratio >= 10 ? ratio.toFixed(0) : ratio.toFixed(1)}× as long (or longer: attention grows with the square of the pixel count), and ` : "") +
          "models draw best near their native size (set sample.width and sample.height)",
      );
    if (c.sample.init_image) await checkInitImage(c.sample.init_image, c.sample.width, c.sample.height, p.where(["sample", "init_image"]), show, problems, notes);
    if (c.sample.latents) {
      try {
        readLatents(c.sample.latents, [images, p.model.unet.in_channels, c.sample.height / factor, c.sample.width / factor]);
      } catch (e) {
        if (!isUserError(e)) throw e;
        for (const q of e.problems) problems.push({ ...q, ...p.where(["sample", "latents"]), message: `latents file "${show(c.sample.latents)}": ${q.message}` });
      }
    }
  }

  writableFolder(c.output.dir, "output folder", ["output", "dir"], p, show, problems);
  writableFolder(o.compiledDir !== undefined ? path.resolve(cwd, o.compiledDir) : defaultCompiledDir(p, cwd), "compiled folder", null, p, show, problems);
  if (c.train?.checkpointing.dir) writableFolder(c.train.checkpointing.dir, "checkpoint folder", ["train", "checkpointing", "dir"], p, show, problems);

  if (problems.length) throw new UserError(problems);
  return notes;
}

async function checkInitImage(file: string, width: number, height: number, where: Partial<Problem>, show: (f: string) => string, problems: Problem[], notes: string[]): Promise<void> {
  let meta: Metadata;
  try {
    meta = await sharp(file).metadata();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" || !fs.existsSync(file) ? "does not exist" : `cannot be decoded as an image (${(e as Error).message})`;
    problems.push({ message: `init image "${show(file)}" ${why}`, ...where, hint: "use a PNG, JPEG or WebP file" });
    return;
  }
  // EXIF orientation 5–8 swaps the sides (loadImage rotates first)
  const swap = (meta.orientation ?? 1) >= 5;
  const w = (swap ? meta.height : meta.width) ?? 0;
  const h = (swap ? meta.width : meta.height) ?? 0;
  if (w < 1 || h < 1) {
    problems.push({ message: `init image "${show(file)}" has no pixels (${w}×${h})`, ...where });
    return;
  }
  if (w === width && h === height) return;
  const from = w / h, to = width / height;
  const distortion = Math.max(from, to) / Math.min(from, to);
  const scale = Math.max(width / w, height / h);
  notes.push(
    `init image ${show(file)} is ${w}×${h}: it is stretched to ${width}×${height}` +
      (distortion > 1.01 ? ` (its aspect ratio ${from.toFixed(2)} becomes ${to.toFixed(2)}: set sample.width and sample.height to keep it)` : "") +
      (scale >= 4 ? ` (upscaled ${scale.toFixed(0)}×: expect a blurry start)` : ""),
  );
}

/** A folder the run will create or write into: its nearest existing ancestor must be a writable folder. */
function writableFolder(dir: string, what: string, at: Path | null, p: LoadedPipeline, show: (f: string) => string, problems: Problem[]): void {
  const where = at ? p.where(at) : { subject: show(dir) };
  let d = path.resolve(dir);
  for (;;) {
    let st: fs.Stats;
    try {
      st = fs.statSync(d);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // ENOTDIR: a part of the path is a file; going up finds it
      if ((code === "ENOENT" || code === "ENOTDIR") && path.dirname(d) !== d) {
        d = path.dirname(d);
        continue;
      }
      problems.push({ message: `${what} "${show(dir)}" cannot be checked (${code ?? String(e)})`, ...where });
      return;
    }
    if (!st.isDirectory()) {
      problems.push({
        message: d === path.resolve(dir) ? `${what} "${show(dir)}" is a file, where a folder is needed` : `${what} "${show(dir)}" cannot be made: ${show(d)} is a file`,
        ...where,
        hint: "choose another folder, or move the file",
      });
      return;
    }
    try {
      fs.accessSync(d, fs.constants.W_OK);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      problems.push({ message: `${what} "${show(dir)}" cannot be written: ${show(d)} is read-only (${code ?? "EACCES"})`, ...where, hint: "choose a folder you can write to" });
    }
    return;
  }
}
