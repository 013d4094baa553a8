/**
 * Opening a dataset: the subsets' folders are read (imagefolder metadata or kohya caption files and
 * repeat folders), every path is checked to stay inside data.dir, every image's header is read for
 * its size, and each image is given its bucket. The result lists the samples in a fixed order
 * (subsets in config order; metadata rows in file order; kohya: the folder's own images, then its
 * N_name folders, each sorted by name), which the loader's seeded order is built on.
 *
 * Structural problems (missing folder or metadata, malformed rows, wrong columns, paths leaving the
 * data folder, an empty folder) are collected for all subsets and thrown as one located UserError.
 * Unreadable images are skipped and counted in the summary, or, with `on_bad_image: error`, thrown.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { TrainDataConfig } from "../config/schema.js";
import { formatPath, type Path } from "../config/source.js";
import { type Problem, UserError } from "../util/errors.js";
import { hashValue } from "../util/hash.js";
import { assignBucket, bucketSizes, resizeToCover, type Size, sizeKey } from "./buckets.js";
import { checkDataConfig, type DatasetSpec, DATA_PATH, datasetSpec, type SubsetSpec } from "./config.js";
import { type Cell, type MetaRow, type MetaTable, parseMetadata } from "./metadata.js";
import { capProblems, nameOnly, relativeDisplay, type WhereFn } from "./problems.js";
import { readImageInfo } from "./transform.js";

/** File suffixes the kohya layout takes for images (case-insensitive). */
export const IMAGE_EXTENSIONS = [".png", ".jpg", ".jpeg", ".webp"];

/** `N_name` repeat folders (kohya): N repeats, `name` the class token. */
const REPEAT_FOLDER = /^(\d+)_(.*)$/;

export type CaptionSource = "metadata" | "caption file" | "class token" | "none";

export interface Sample {
  /** Index in `Dataset.samples`. */
  id: number;
  /** The image file, absolute. */
  file: string;
  /** The image file relative to data.dir, with forward slashes. */
  rel: string;
  /** The image file as shown in messages. */
  display: string;
  subset: number;
  /** The caption as found, before dropout, shuffle, prefix and suffix (with several: the first). */
  caption: string;
  /** imagefolder, a caption column holding a list: all of them; each draw picks one (captions.ts). */
  captions?: string[];
  captionFrom: CaptionSource;
  repeats: number;
  /** Upright size (EXIF orientation applied). */
  size: Size;
  /** Index into `Dataset.buckets`. */
  bucket: number;
  /** The size the image is resized to before its bucket is cropped out. */
  resize: Size;
}

export interface SkippedImage {
  file: string;
  reason: string;
}

export interface FolderSummary {
  dir: string;
  repeats: number;
  classToken?: string;
  images: number;
}

export interface SubsetSummary {
  index: number;
  dir: string;
  layout: "imagefolder" | "kohya";
  /** imagefolder: the metadata file read. */
  metadata?: string;
  images: number;
  samplesPerEpoch: number;
  /** kohya: the folders images came from. */
  folders?: FolderSummary[];
}

export interface DatasetSummary {
  images: number;
  samplesPerEpoch: number;
  subsets: SubsetSummary[];
  /** Images left out because they could not be read (or fit no bucket); grows when decoding fails later. */
  skipped: SkippedImage[];
  /** Images without a caption (no caption file, no class token). */
  uncaptioned: number;
  /** imagefolder: image files in the folder that the metadata does not name. */
  unlisted: number;
  /** Folders the kohya layout does not read (not N_name), as shown in messages. */
  ignored: string[];
  buckets: { size: Size; images: number }[];
}

export interface Dataset {
  spec: DatasetSpec;
  samples: Sample[];
  /** Bucket sizes in use, sorted by width then height. */
  buckets: Size[];
  summary: DatasetSummary;
  /** Hash of the sample list and the settings that shape the loader's plan (guards a resume). */
  fingerprint: string;
  display: (abs: string) => string;
}

export interface OpenDatasetOptions {
  /** Where config paths were written (LoadedPipeline.where); without it problems name the option. */
  where?: WhereFn;
  /** How file paths appear in messages (default: relative to the working directory). */
  display?: (abs: string) => string;
  /** The config path of the data section (default train.data). */
  path?: Path;
  /** Image headers read at once (default 8). */
  concurrency?: number;
}

interface Candidate {
  file: string;
  subset: number;
  caption: string;
  captions?: string[];
  captionFrom: CaptionSource;
  repeats: number;
  /** kohya: the folder's entry in the subset summary. */
  folder?: FolderSummary;
  /** For a problem about this image: a metadata row position, else none. */
  problem?: (message: string, hint?: string) => Problem;
}

/**
 * Read `train.data` (data.dir absolute, as loadPipeline leaves it) into a dataset. Option
 * combinations `checkDataConfig` refuses are thrown first, as one UserError.
 */
export async function openDataset(data: TrainDataConfig, opts: OpenDatasetOptions = {}): Promise<Dataset> {
  const where = opts.where ?? nameOnly;
  const display = opts.display ?? relativeDisplay(process.cwd());
  const configProblems = checkDataConfig(data, where, opts.path ?? DATA_PATH);
  if (configProblems.length) throw new UserError(configProblems);
  const spec = datasetSpec(data, opts.path ?? DATA_PATH);
  const showDir = (abs: string) => `${display(abs).replace(/\/$/, "")}/`;
  const problems: Problem[] = [];
  const at = (p: Path) => where(p);

  let realRoot: string;
  try {
    realRoot = fs.realpathSync(spec.root);
    if (!fs.statSync(realRoot).isDirectory()) throw Object.assign(new Error("not a folder"), { code: "ENOTDIR" });
  } catch (e) {
    const missing = (e as NodeJS.ErrnoException).code === "ENOENT";
    throw new UserError({
      message: `the training data folder ${showDir(spec.root)} ${missing ? "does not exist" : "is not a folder"}`,
      ...at([...spec.path, "dir"]),
      hint: "data.dir is relative to the YAML file that names it",
    });
  }
  const inside = (real: string) => real === realRoot || real.startsWith(realRoot + path.sep);

  const summary: DatasetSummary = { images: 0, samplesPerEpoch: 0, subsets: [], skipped: [], uncaptioned: 0, unlisted: 0, ignored: [], buckets: [] };
  const candidates: Candidate[] = [];
  const ctx: ScanContext = { spec, where, display, showDir, inside, problems, summary, candidates };
  for (const subset of spec.subsets) scanSubset(ctx, subset);
  if (problems.length) throw new UserError(capProblems(problems));

  // Image headers: size and orientation, and the first test of readability.
  const infos = await mapLimit(candidates, opts.concurrency ?? 8, async (c) => {
    try {
      return { ok: true as const, info: await readImageInfo(c.file) };
    } catch (e) {
      return { ok: false as const, reason: firstLine((e as Error).message) };
    }
  });
  const predefined = bucketSizes(spec.buckets);
  const bucketIds = new Map<string, Size>();
  const badProblems: Problem[] = [];
  const kept: { c: Candidate; size: Size; bucket: Size }[] = [];
  candidates.forEach((c, i) => {
    const r = infos[i]!;
    if (!r.ok) {
      if (spec.onBadImage === "error") badProblems.push(badImageProblem(c, display(c.file), r.reason));
      else summary.skipped.push({ file: display(c.file), reason: r.reason });
      return;
    }
    const size = { width: r.info.width, height: r.info.height };
    const bucket = assignBucket(size, predefined, spec.buckets);
    if (!bucket) {
      summary.skipped.push({ file: display(c.file), reason: `${size.width}x${size.height} is smaller than one bucket step (${spec.buckets.step} px)` });
      return;
    }
    bucketIds.set(sizeKey(bucket), bucket);
    kept.push({ c, size, bucket });
  });
  if (badProblems.length) throw new UserError(capProblems(badProblems, 10, "unreadable images"));

  const buckets = [...bucketIds.values()].sort((a, b) => a.width - b.width || a.height - b.height);
  const bucketIndex = new Map(buckets.map((b, i) => [sizeKey(b), i]));
  const samples: Sample[] = kept.map(({ c, size, bucket }, id) => ({
    id,
    file: c.file,
    rel: path.relative(spec.root, c.file).split(path.sep).join("/"),
    display: display(c.file),
    subset: c.subset,
    caption: c.caption,
    ...(c.captions ? { captions: c.captions } : {}),
    captionFrom: c.captionFrom,
    repeats: c.repeats,
    size,
    bucket: bucketIndex.get(sizeKey(bucket))!,
    resize: resizeToCover(size, bucket),
  }));

  for (const s of summary.subsets) {
    const mine = samples.filter((x) => x.subset === s.index);
    s.images = mine.length;
    s.samplesPerEpoch = mine.reduce((n, x) => n + x.repeats, 0);
  }
  for (const { c } of kept) if (c.folder) c.folder.images++;
  summary.images = samples.length;
  summary.samplesPerEpoch = samples.reduce((n, x) => n + x.repeats, 0);
  summary.uncaptioned = samples.filter((x) => x.captionFrom === "none").length;
  summary.buckets = buckets.map((size, i) => ({ size, images: samples.filter((x) => x.bucket === i).length }));
  if (samples.length === 0) {
    throw new UserError({
      message: `${candidates.length === 1 ? "the one image" : `none of the ${candidates.length} images`} in ${showDir(spec.root)} can${candidates.length === 1 ? "not" : ""} be used`,
      ...at([...spec.path, "dir"]),
      hint: `the skipped images: ${summary.skipped.slice(0, 3).map((s) => `${s.file} (${s.reason})`).join("; ")}${summary.skipped.length > 3 ? "; …" : ""}`,
    });
  }

  const fingerprint = hashValue({
    // a list of captions enters as the list; a plain caption as before, so existing positions stay valid
    samples: samples.map((s) => [s.rel, s.captions ?? s.caption, s.repeats, s.subset, s.size.width, s.size.height, s.bucket]),
    buckets,
    subsets: spec.subsets.map((s) => s.caption),
    centerCrop: spec.centerCrop,
    randomFlip: spec.randomFlip,
  }).slice(0, 16);
  return { spec, samples, buckets, summary, fingerprint, display };
}

// ------------------------------------------------------------------------------------------------
// Subsets

interface ScanContext {
  spec: DatasetSpec;
  where: WhereFn;
  display: (abs: string) => string;
  showDir: (abs: string) => string;
  inside: (real: string) => boolean;
  problems: Problem[];
  summary: DatasetSummary;
  candidates: Candidate[];
}

function scanSubset(ctx: ScanContext, s: SubsetSpec): void {
  const { problems, where, showDir } = ctx;
  const dirPath = s.optionPath("dir");
  let st: fs.Stats;
  try {
    st = fs.statSync(s.dir);
  } catch {
    problems.push({ message: `the subset folder ${showDir(s.dir)} does not exist`, ...where(dirPath), hint: "a subset's dir is relative to data.dir" });
    return;
  }
  if (!st.isDirectory()) {
    problems.push({ message: `${showDir(s.dir).replace(/\/$/, "")} is not a folder`, ...where(dirPath), hint: "a subset's dir names a folder of images" });
    return;
  }
  if (!ctx.inside(fs.realpathSync(s.dir))) {
    problems.push({
      message: `the subset folder ${showDir(s.dir)} is a symbolic link to a folder outside the data folder ${showDir(ctx.spec.root)}`,
      ...where(dirPath),
      hint: "sdc reads only files inside data.dir: copy or move the images into it",
    });
    return;
  }
  const layout = resolveLayout(ctx, s, dirPath);
  if (layout === undefined) return;
  if (layout.kind === "imagefolder") scanImagefolder(ctx, s, layout.metadata, dirPath);
  else scanKohya(ctx, s, dirPath);
}

function resolveLayout(ctx: ScanContext, s: SubsetSpec, dirPath: Path): { kind: "imagefolder"; metadata: string } | { kind: "kohya" } | undefined {
  const { problems, where, showDir } = ctx;
  if (s.metadata !== undefined) {
    const p = s.optionPath("metadata");
    if (path.isAbsolute(s.metadata) || !isWithin(path.resolve(s.dir, s.metadata.replace(/\\/g, "/")), s.dir)) {
      problems.push({ message: `${formatPath(p)}: "${s.metadata}" is not a file inside ${showDir(s.dir)}`, ...where(p), hint: "metadata names a file inside the subset's folder, e.g. metadata.jsonl" });
      return undefined;
    }
    const file = path.resolve(s.dir, s.metadata);
    if (!/\.(jsonl|csv)$/i.test(file)) {
      problems.push({ message: `${formatPath(p)}: "${s.metadata}" is neither a .jsonl nor a .csv file`, ...where(p), hint: "imagefolder metadata is JSON lines (metadata.jsonl) or CSV with a header row (metadata.csv)" });
      return undefined;
    }
    if (!isFile(file)) {
      problems.push({ message: `the metadata file ${ctx.display(file)} does not exist`, ...where(p), hint: `metadata is relative to the subset's folder ${showDir(s.dir)}` });
      return undefined;
    }
    return { kind: "imagefolder", metadata: file };
  }
  if (s.layout === "kohya") return { kind: "kohya" };
  const found = ["metadata.jsonl", "metadata.csv"].map((f) => path.join(s.dir, f)).filter(isFile);
  if (found.length === 2) {
    problems.push({
      message: `${showDir(s.dir)} holds both metadata.jsonl and metadata.csv`,
      ...where(dirPath),
      hint: `set ${formatPath(s.optionPath("metadata"))} to the one to read (e.g. metadata: metadata.jsonl), or remove the other`,
    });
    return undefined;
  }
  if (found.length === 1) return { kind: "imagefolder", metadata: found[0]! };
  if (s.layout === "imagefolder") {
    problems.push({
      message: `no metadata.jsonl or metadata.csv in ${showDir(s.dir)} (layout: imagefolder)`,
      ...where(s.optionPath("layout")),
      hint: 'add metadata.jsonl with one line per image, e.g. {"file_name": "0001.png", "text": "a red circle"}, or use layout: kohya for images with .txt caption files',
    });
    return undefined;
  }
  return { kind: "kohya" };
}

// ------------------------------------------------------------------------------------------------
// imagefolder

function scanImagefolder(ctx: ScanContext, s: SubsetSpec, metaFile: string, dirPath: Path): void {
  const { problems, where, display, showDir } = ctx;
  const metaDisplay = display(metaFile);
  const metaDir = path.dirname(metaFile);
  const kind = /\.csv$/i.test(metaFile) ? "csv" : "jsonl";
  let text: string;
  try {
    text = fs.readFileSync(metaFile, "utf8");
  } catch (e) {
    problems.push({ message: `cannot read ${metaDisplay}: ${(e as Error).message}`, subject: metaDisplay });
    return;
  }
  const table: MetaTable = parseMetadata(metaDisplay, text, kind);
  const local: Problem[] = [...table.problems];
  const base = path.basename(metaFile);
  const columnHint = (key: "image_column" | "caption_column", columns: string[]) => {
    const p = s.optionPath(key);
    const w = writtenAt(where, p);
    const set = w?.at ? ` (it is set at ${w.at.file}:${w.at.line})` : w?.subject ? ` (it is set by ${w.subject})` : "";
    return `set ${formatPath(p)} to the column that holds the ${key === "image_column" ? "image file names" : "captions"}${columns.length ? `, one of: ${columns.join(", ")}` : ""}${set}`;
  };

  const columns = [
    { key: "image_column" as const, name: s.imageColumn },
    { key: "caption_column" as const, name: s.captionColumn },
  ];
  if (table.header) {
    for (const c of columns)
      if (!table.header.includes(c.name))
        local.push(table.problemAt({ line: 1, col: 1, width: (text.split("\n")[0] ?? "").replace(/^\uFEFF/, "").replace(/\r$/, "").length }, `${base} has no "${c.name}" column; its columns: ${table.header.join(", ")}`, columnHint(c.key, table.header)));
    if (local.length) {
      problems.push(...byPosition(local));
      return;
    }
  }

  const missing = new Map<string, { first: Problem; more: number }>();
  // several captions to a row with cache_text_embeddings: the first such row, and how many more
  let varying: { cell: Cell; count: number; more: number } | undefined;
  const listed = new Set<string>();
  let rowsWithImages = 0;
  for (const row of table.rows) {
    const lacking = columns.filter((c) => !Object.hasOwn(row.values, c.name));
    for (const c of lacking) {
      const m = missing.get(c.name);
      if (m) m.more++;
      else {
        const present = Object.keys(row.values);
        missing.set(c.name, {
          first: table.problemAt(row.cell("") ?? { line: row.line, col: 1, width: 1 }, `line ${row.line} has no "${c.name}" column; its columns: ${present.join(", ") || "(none)"}`, columnHint(c.key, present)),
          more: 0,
        });
      }
    }
    if (lacking.length) continue;
    const fileValue = row.values[s.imageColumn];
    const fileCell = row.cell(s.imageColumn)!;
    if (typeof fileValue !== "string" || fileValue === "") {
      local.push(table.problemAt(fileCell, `"${s.imageColumn}" is ${describe(fileValue)}, expected the path of an image file`, `a relative path from the folder of ${base}, e.g. "0001.png"`));
      continue;
    }
    const caption = readCaption(table, row, s.captionColumn);
    if (!caption.ok) {
      local.push(caption.problem);
      continue;
    }
    if (caption.captions && caption.captions.length > 1 && ctx.spec.cacheTextEmbeddings) {
      if (varying) varying.more++;
      else varying = { cell: row.cell(s.captionColumn)!, count: caption.captions.length, more: 0 };
    }
    const checked = checkRelativeFile(ctx, fileValue, metaDir, s.dir);
    if (!checked.ok) {
      local.push(table.problemAt(fileCell, checked.message, checked.hint));
      continue;
    }
    listed.add(checked.file);
    rowsWithImages++;
    ctx.candidates.push({
      file: checked.file,
      subset: s.index,
      caption: caption.caption,
      ...(caption.captions ? { captions: caption.captions } : {}),
      captionFrom: "metadata",
      repeats: s.repeats ?? 1,
      problem: (message, hint) => table.problemAt(fileCell, message, hint),
    });
  }
  for (const m of missing.values()) {
    if (m.more) m.first.message += ` (and so do ${m.more} more row${m.more === 1 ? "" : "s"})`;
    local.unshift(m.first);
  }
  if (varying) {
    const p = [...ctx.spec.path, "cache_text_embeddings"];
    const w = where(p);
    const set = w.at ? `, set at ${w.at.file}:${w.at.line}` : "";
    local.push(
      table.problemAt(
        varying.cell,
        `"${s.captionColumn}" holds ${varying.count} captions, one picked each time the image is drawn, which cached text embeddings cannot hold (cache_text_embeddings: true${set}): the cache holds one embedding per caption, encoded once${varying.more ? ` (and so ${varying.more === 1 ? "does 1 more row" : `do ${varying.more} more rows`})` : ""}`,
        `set ${formatPath(p)} to false to encode each drawn caption, or give each image one caption`,
      ),
    );
  }
  if (local.length === 0 && rowsWithImages === 0)
    local.push({
      message: `${metaDisplay} names no images`,
      ...where(dirPath),
      hint: `add one line per image to ${base}, e.g. {"${s.imageColumn}": "0001.png", "${s.captionColumn}": "a red circle"}`,
    });
  problems.push(...byPosition(local));
  try {
    for (const e of fs.readdirSync(metaDir, { withFileTypes: true }))
      if (e.isFile() && isImageName(e.name) && !listed.has(path.join(metaDir, e.name))) ctx.summary.unlisted++;
  } catch {
    // counted only when the folder can be listed
  }
  ctx.summary.subsets.push({ index: s.index, dir: showDir(s.dir), layout: "imagefolder", metadata: metaDisplay, images: 0, samplesPerEpoch: 0 });
}

const CAPTION_HINT = 'a caption is a string, e.g. "a red circle on a blue background" ("" for none), or a list of strings to pick one from each time the image is drawn';

type ReadCaption = { ok: true; caption: string; captions?: string[] } | { ok: false; problem: Problem };

/** A row's caption: a string, or (JSON lines) a non-empty list of strings (`caption` is then the first). */
function readCaption(table: MetaTable, row: MetaRow, column: string): ReadCaption {
  const value = row.values[column];
  const cell = row.cell(column)!;
  if (typeof value === "string") return { ok: true, caption: value };
  if (!Array.isArray(value)) return { ok: false, problem: table.problemAt(cell, `"${column}" is ${describe(value)}, expected the caption text or a list of captions`, CAPTION_HINT) };
  if (value.length === 0) return { ok: false, problem: table.problemAt(cell, `"${column}" is an empty list, expected at least one caption`, 'give the image one caption or more, e.g. ["a red circle"], or "" for no caption') };
  const bad = value.findIndex((v) => typeof v !== "string");
  if (bad >= 0)
    return {
      ok: false,
      problem: table.problemAt(row.itemCell(column, bad) ?? cell, `item ${bad + 1} of "${column}" is ${describe(value[bad])}, expected a caption string`, `every item of a list of captions is a string, e.g. ["a red circle", "a circle, red"]`),
    };
  const captions = value as string[];
  return { ok: true, caption: captions[0]!, captions };
}

type Checked = { ok: true; file: string } | { ok: false; message: string; hint: string };

/** A file named in metadata: relative, inside the folder, present, and (through links) inside data.dir. */
function checkRelativeFile(ctx: ScanContext, name: string, baseDir: string, subsetDir: string): Checked {
  const folder = ctx.showDir(subsetDir);
  if (path.isAbsolute(name) || /^[A-Za-z]:[\\/]/.test(name) || name.startsWith("\\\\"))
    return { ok: false, message: `"${name}" is an absolute path; image paths are relative to the metadata file's folder ${ctx.showDir(baseDir)}`, hint: "write the path relative to the folder of the metadata file, and keep the images inside it" };
  if (!isWithin(path.resolve(baseDir, name.replace(/\\/g, "/")), subsetDir))
    return { ok: false, message: `"${name}" points outside the data folder ${folder}`, hint: "sdc reads only images inside the data folder: copy the image into it and name it relative to the metadata file" };
  const file = path.resolve(baseDir, name);
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") {
      let dangling = false;
      try {
        dangling = fs.lstatSync(file).isSymbolicLink();
      } catch {
        // absent
      }
      return dangling
        ? { ok: false, message: `"${name}" is a symbolic link to a file that does not exist`, hint: "fix or remove the link, or remove this row" }
        : { ok: false, message: `"${name}" does not exist (looked for ${ctx.display(file)})`, hint: "fix the file name, add the image, or remove this row" };
    }
    return { ok: false, message: `"${name}" cannot be read: ${(e as Error).message}`, hint: "check the file's permissions" };
  }
  if (!st.isFile()) return { ok: false, message: `"${name}" is a folder, not an image file`, hint: "name an image file, e.g. \"0001.png\"" };
  const real = fs.realpathSync(file);
  if (!ctx.inside(real))
    return {
      ok: false,
      message: `"${name}" is a symbolic link to a file outside the data folder ${ctx.showDir(ctx.spec.root)}`,
      hint: "sdc reads only files inside data.dir: copy the image into the data folder instead of linking to it",
    };
  return { ok: true, file };
}

// ------------------------------------------------------------------------------------------------
// kohya

interface Group {
  dir: string;
  repeats: number;
  classToken?: string;
}

function scanKohya(ctx: ScanContext, s: SubsetSpec, dirPath: Path): void {
  const { problems, where, showDir } = ctx;
  const own = REPEAT_FOLDER.exec(path.basename(s.dir));
  const groups: Group[] = [{ dir: s.dir, repeats: s.repeats ?? (own ? Number(own[1]) : 1), ...classToken(s.classToken ?? own?.[2]) }];
  const first = listFolder(ctx, s.dir);
  for (const d of first.dirs) {
    const m = REPEAT_FOLDER.exec(path.basename(d));
    if (!m || Number(m[1]) < 1) {
      ctx.summary.ignored.push(`${showDir(d)} (not an N_name repeat folder)`);
      continue;
    }
    groups.push({ dir: d, repeats: s.repeats ?? Number(m[1]), ...classToken(s.classToken ?? m[2]) });
  }
  const folders: FolderSummary[] = [];
  let found = 0;
  groups.forEach((g, gi) => {
    const listing = gi === 0 ? first : listFolder(ctx, g.dir);
    if (gi > 0) for (const d of listing.dirs) ctx.summary.ignored.push(`${showDir(d)} (inside a repeat folder)`);
    const folder: FolderSummary = { dir: showDir(g.dir), repeats: g.repeats, ...(g.classToken !== undefined ? { classToken: g.classToken } : {}), images: 0 };
    if (listing.images.length) folders.push(folder);
    for (const img of listing.images) {
      found++;
      const cap = readCaptionFile(ctx, img, s.captionExtension);
      if (cap === null) continue; // a problem was recorded
      const caption = cap !== undefined && cap !== "" ? { caption: cap, captionFrom: "caption file" as const } : g.classToken !== undefined ? { caption: g.classToken, captionFrom: "class token" as const } : { caption: cap ?? "", captionFrom: cap === undefined ? ("none" as const) : ("caption file" as const) };
      ctx.candidates.push({ file: img, subset: s.index, repeats: g.repeats, folder, ...caption });
    }
  });
  if (found === 0)
    problems.push({
      message: `no training images in ${showDir(s.dir)}`,
      ...where(dirPath),
      hint: "put the images there with a metadata.jsonl or metadata.csv naming them and their captions (imagefolder layout), or with same-named .txt caption files, optionally in N_name repeat folders such as \"10_sks dog/\" (kohya layout); sdc reads .png, .jpg, .jpeg and .webp",
    });
  ctx.summary.subsets.push({ index: s.index, dir: showDir(s.dir), layout: "kohya", images: 0, samplesPerEpoch: 0, folders });
}

function classToken(t: string | undefined): { classToken?: string } {
  return t === undefined ? {} : { classToken: t };
}

/** Image files and sub-folders of a folder, sorted by name; links leaving data.dir are problems. */
function listFolder(ctx: ScanContext, dir: string): { images: string[]; dirs: string[] } {
  const images: string[] = [];
  const dirs: string[] = [];
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch (e) {
    ctx.problems.push({ message: `cannot list ${ctx.showDir(dir)}: ${(e as Error).message}`, subject: ctx.showDir(dir), hint: "check the folder's permissions" });
    return { images, dirs };
  }
  const names = entries.filter((e) => !e.name.startsWith(".")).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of names) {
    const full = path.join(dir, e.name);
    let isDir = e.isDirectory();
    let isFile = e.isFile();
    if (e.isSymbolicLink()) {
      let real: string;
      try {
        real = fs.realpathSync(full);
      } catch {
        if (isImageName(e.name)) ctx.problems.push({ message: "symbolic link to a file that does not exist", subject: ctx.display(full), hint: "fix or remove the link" });
        continue;
      }
      if (!ctx.inside(real)) {
        const folder = fs.statSync(real).isDirectory();
        if (isImageName(e.name) || folder)
          ctx.problems.push({
            message: `symbolic link to ${JSON.stringify(safeReadlink(full))}, outside the data folder ${ctx.showDir(ctx.spec.root)}`,
            subject: ctx.display(full),
            hint: `sdc reads only files inside data.dir: copy the ${folder ? "folder's files" : "file"} into the data folder instead of linking to ${folder ? "them" : "it"}, or remove the link`,
          });
        continue;
      }
      const st = fs.statSync(real);
      isDir = st.isDirectory();
      isFile = st.isFile();
    }
    if (isDir) dirs.push(full);
    else if (isFile && isImageName(e.name)) images.push(full);
  }
  return { images, dirs };
}

/** The first line of an image's caption file, trimmed; undefined when there is none, null after a problem. */
function readCaptionFile(ctx: ScanContext, image: string, ext: string): string | undefined | null {
  const file = image.slice(0, image.length - path.extname(image).length) + ext;
  let real: string;
  try {
    real = fs.realpathSync(file);
  } catch {
    return undefined;
  }
  if (!ctx.inside(real)) {
    ctx.problems.push({
      message: `symbolic link to ${JSON.stringify(safeReadlink(file))}, outside the data folder ${ctx.showDir(ctx.spec.root)}`,
      subject: ctx.display(file),
      hint: "sdc reads only files inside data.dir: copy the caption file into the data folder instead of linking to it",
    });
    return null;
  }
  try {
    const text = fs.readFileSync(real, "utf8").replace(/^\uFEFF/, "");
    return (text.split(/\r?\n/)[0] ?? "").trim();
  } catch (e) {
    ctx.problems.push({ message: `cannot read the caption file: ${(e as Error).message}`, subject: ctx.display(file), hint: "check the file's permissions" });
    return null;
  }
}

// ------------------------------------------------------------------------------------------------

function badImageProblem(c: Candidate, display: string, reason: string): Problem {
  const message = `cannot read the image ${display}: ${reason}`;
  const hint = "replace or remove the file, or set on_bad_image: skip to leave unreadable images out";
  return c.problem ? c.problem(message, hint) : { message: `cannot read the image: ${reason}`, subject: display, hint };
}

export function isImageName(name: string): boolean {
  return IMAGE_EXTENSIONS.includes(path.extname(name).toLowerCase());
}

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

function isWithin(p: string, dir: string): boolean {
  const rel = path.relative(dir, p);
  return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel));
}

function safeReadlink(p: string): string {
  try {
    return fs.readlinkSync(p);
  } catch {
    return "?";
  }
}

/** Problems of one file in line order (others keep their place at the end). */
function byPosition(list: Problem[]): Problem[] {
  return [...list].sort((a, b) => (a.at && b.at ? a.at.line - b.at.line || a.at.col - b.at.col : a.at ? -1 : b.at ? 1 : 0));
}

/** Where an option is written, or undefined when the pipeline leaves it at its default. */
function writtenAt(where: WhereFn, p: Path): ReturnType<WhereFn> | undefined {
  const w = where(p);
  const parent = where(p.slice(0, -1), "key");
  if (!w.at) return w.subject && !w.subject.startsWith("train.") ? w : undefined;
  return parent.at && parent.at.line === w.at.line && parent.at.col === w.at.col ? undefined : w;
}

function describe(v: unknown): string {
  if (v === undefined) return "missing";
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "an object";
  if (typeof v === "string") return "empty";
  return `${typeof v} ${JSON.stringify(v)}`;
}

function firstLine(s: string): string {
  return s.split("\n")[0]!.trim();
}

/** Map with at most `limit` calls in flight; results in input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}

/** "1 image", "2 images". */
function count(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** The summary as lines for a person. */
export function formatSummary(ds: Pick<Dataset, "summary">): string[] {
  const s = ds.summary;
  const lines = [`data: ${count(s.images, "image")} in ${count(s.subsets.length, "subset")}, ${count(s.samplesPerEpoch, "sample")} per epoch, ${count(s.buckets.length, "bucket")}`];
  for (const sub of s.subsets) {
    lines.push(`  ${sub.dir}: ${sub.layout}${sub.metadata ? ` (${sub.metadata})` : ""}, ${count(sub.images, "image")}, ${count(sub.samplesPerEpoch, "sample")} per epoch`);
    const folders = sub.folders ?? [];
    if (folders.length > 1 || (folders.length === 1 && folders[0]!.dir !== sub.dir))
      for (const f of folders) lines.push(`    ${f.dir}: ${count(f.images, "image")} × ${f.repeats}${f.classToken !== undefined ? `, class token "${f.classToken}"` : ""}`);
  }
  lines.push(`  buckets: ${s.buckets.map((b) => `${b.size.width}x${b.size.height} (${b.images})`).join(", ")}`);
  if (s.uncaptioned) lines.push(`  ${count(s.uncaptioned, "image")} without a caption (no caption file, no class token): trained with the empty caption`);
  if (s.unlisted) lines.push(`  ${count(s.unlisted, "image file")} in imagefolder folders not named by the metadata (not used)`);
  for (const i of s.ignored) lines.push(`  ignored ${i}`);
  if (s.skipped.length) {
    lines.push(`  skipped ${count(s.skipped.length, "image")}:`);
    for (const k of s.skipped.slice(0, 10)) lines.push(`    ${k.file}: ${k.reason}`);
    if (s.skipped.length > 10) lines.push(`    … and ${s.skipped.length - 10} more`);
  }
  return lines;
}
