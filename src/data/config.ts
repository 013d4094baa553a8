/**
 * `train.data` as the data layer uses it: the subsets with their effective settings (a subset's
 * unset keys take the data-level values), and the checks of option combinations that no single
 * key's schema can see (bucket bounds, subset folders, caches that augmentation would make wrong).
 */
import * as path from "node:path";
import type { TrainDataConfig } from "../config/schema.js";
import { formatPath, type Path } from "../config/source.js";
import type { Problem } from "../util/errors.js";
import type { BucketOptions } from "./buckets.js";
import { bucketSizes } from "./buckets.js";
import type { CaptionOptions } from "./captions.js";
import { nameOnly, type WhereFn } from "./problems.js";
import { parseColour, type Rgb } from "./transform.js";

export type Layout = "auto" | "imagefolder" | "kohya";

export interface SubsetSpec {
  /** Position in data.subsets (0 for the single data.dir form). */
  index: number;
  /** The subset's config path: [..., "subsets", i], or the data section itself. */
  path: Path;
  /** The folder, absolute. */
  dir: string;
  layout: Layout;
  metadata?: string;
  imageColumn: string;
  captionColumn: string;
  captionExtension: string;
  /** Set in the config (else: from an N_name folder, or 1). */
  repeats?: number;
  /** Set in the config (else: from an N_name folder). */
  classToken?: string;
  caption: CaptionOptions;
  /** The config path that set an option of this subset (its own key, else the data-level one). */
  optionPath(...key: string[]): Path;
}

export interface DatasetSpec {
  /** data.dir, absolute. */
  root: string;
  /** The config path of the data section. */
  path: Path;
  subsets: SubsetSpec[];
  buckets: BucketOptions;
  centerCrop: boolean;
  randomFlip: boolean;
  background: Rgb;
  onBadImage: "skip" | "error";
  cacheLatents: boolean;
  cacheTextEmbeddings: boolean;
}

export const DATA_PATH: Path = ["train", "data"];

/** The effective settings of `train.data` (data.dir must already be absolute, as loadPipeline makes it). */
export function datasetSpec(data: TrainDataConfig, base: Path = DATA_PATH): DatasetSpec {
  const root = path.resolve(data.dir);
  const captionOf = (over: Partial<TrainDataConfig["caption"]> | undefined): CaptionOptions => {
    const c = { ...data.caption, ...definedOnly(over ?? {}) };
    return { prefix: c.prefix, suffix: c.suffix, dropout: c.dropout, shuffle: c.shuffle, keepTokens: c.keep_tokens };
  };
  const list = data.subsets ?? [{ dir: "." }];
  const subsets = list.map((s, index): SubsetSpec => {
    const own = data.subsets ? [...base, "subsets", index] : base;
    const pick = <K extends keyof typeof s & keyof TrainDataConfig>(k: K) => (s[k] !== undefined ? s[k] : data[k]);
    return {
      index,
      path: own,
      dir: path.resolve(root, s.dir),
      layout: pick("layout") as Layout,
      ...opt("metadata", pick("metadata") as string | undefined),
      imageColumn: pick("image_column") as string,
      captionColumn: pick("caption_column") as string,
      captionExtension: pick("caption_extension") as string,
      ...opt("repeats", pick("repeats") as number | undefined),
      ...opt("classToken", pick("class_token") as string | undefined),
      caption: captionOf("caption" in s ? s.caption : undefined),
      optionPath: (...key: string[]) => {
        let v: unknown = s;
        for (const k of key) v = v && typeof v === "object" ? (v as Record<string, unknown>)[k] : undefined;
        return data.subsets && v !== undefined ? [...own, ...key] : [...base, ...key];
      },
    };
  });
  return {
    root,
    path: base,
    subsets,
    buckets: {
      resolution: data.resolution,
      enabled: data.buckets.enabled,
      step: data.buckets.step,
      minSide: data.buckets.min_side,
      maxSide: data.buckets.max_side,
      noUpscale: data.buckets.no_upscale,
    },
    centerCrop: data.center_crop,
    randomFlip: data.random_flip,
    background: parseColour(data.background),
    onBadImage: data.on_bad_image,
    cacheLatents: data.cache_latents,
    cacheTextEmbeddings: data.cache_text_embeddings,
  };
}

function opt<K extends string, V>(key: K, v: V | undefined): { [P in K]?: V } {
  return (v === undefined ? {} : { [key]: v }) as { [P in K]?: V };
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * Problems of option combinations in `train.data`: subset folders outside data.dir, bucket bounds
 * that admit no bucket, and caches that augmentation would make wrong (`cacheRefusals`). Empty when
 * the section is consistent. `where` is the loaded pipeline's (without it, problems name the option).
 */
export function checkDataConfig(data: TrainDataConfig, where: WhereFn = nameOnly, base: Path = DATA_PATH): Problem[] {
  const problems: Problem[] = [];
  const add = (p: Path, message: string, hint: string, mode: "key" | "value" = "value") => problems.push({ message, ...where(p, mode), hint });
  (data.subsets ?? []).forEach((s, i) => {
    const p = [...base, "subsets", i, "dir"];
    if (path.isAbsolute(s.dir) || /^[A-Za-z]:[\\/]/.test(s.dir) || escapes(s.dir))
      add(p, `${formatPath(p)}: "${s.dir}" is not a folder inside data.dir`, "a subset's dir is relative to data.dir and stays inside it (no absolute paths, no '..'); point data.dir at the folder that holds all subsets");
  });
  const b = data.buckets;
  if (b.enabled) {
    const bp = [...base, "buckets"];
    for (const k of ["min_side", "max_side"] as const)
      if (b[k] % b.step !== 0) add([...bp, k], `${formatPath([...bp, k])}: ${b[k]} is not a multiple of the bucket step ${b.step}`, `use a multiple of ${b.step}, e.g. ${Math.max(b.step, b[k] - (b[k] % b.step))}`);
    if (b.min_side > b.max_side) add([...bp, "min_side"], `${formatPath([...bp, "min_side"])}: ${b.min_side} is larger than max_side ${b.max_side}`, "min_side is the smallest bucket side, max_side the largest");
    else if (problems.length === 0 && bucketSizes({ resolution: data.resolution, enabled: true, step: b.step, minSide: b.min_side, maxSide: b.max_side, noUpscale: false }).length === 0)
      add(
        bp,
        `no bucket fits: with sides from ${b.min_side} to ${b.max_side} in steps of ${b.step}, none has an area of at most ${data.resolution}² (resolution)`,
        `lower buckets.min_side to at most ${Math.floor(data.resolution / b.step) * b.step || b.step}, or raise resolution`,
        "key",
      );
  }
  problems.push(...cacheRefusals(data, where, base));
  return problems;
}

function escapes(rel: string): boolean {
  const n = path.posix.normalize(rel.replace(/\\/g, "/"));
  return n === ".." || n.startsWith("../");
}

/**
 * Combinations a cache would make wrong: cached latents hold one crop of each image, so random
 * crops are refused; cached text embeddings hold one embedding per caption, so caption dropout and
 * tag shuffling are refused. Each problem points at the augmentation option that conflicts.
 */
export function cacheRefusals(data: TrainDataConfig, where: WhereFn = nameOnly, base: Path = DATA_PATH): Problem[] {
  const problems: Problem[] = [];
  if (data.cache_latents && !data.center_crop) {
    const p = [...base, "center_crop"];
    problems.push({
      message: "random crops (center_crop: false) cannot be used with cached latents (cache_latents is on): the cache would keep one crop of each image for every epoch",
      ...where(p),
      hint: "set center_crop: true, or cache_latents: false to encode a fresh crop every time",
    });
  }
  if (data.cache_text_embeddings) {
    const spec = datasetSpec({ ...data, dir: data.dir || "." }, base);
    const seen = new Set<string>();
    for (const s of spec.subsets) {
      const conflicts: [string, string][] = [];
      if (s.caption.dropout > 0) conflicts.push(["dropout", `caption dropout (${s.caption.dropout})`]);
      if (s.caption.shuffle) conflicts.push(["shuffle", "tag shuffling"]);
      for (const [key, what] of conflicts) {
        const p = s.optionPath("caption", key);
        const id = formatPath(p);
        if (seen.has(id)) continue;
        seen.add(id);
        problems.push({
          message: `${id}: ${what} cannot be used with cached text embeddings (cache_text_embeddings: true): the cache holds one embedding per caption, encoded once`,
          ...where(p),
          hint: `set cache_text_embeddings: false to encode each drawn caption, or remove caption.${key}`,
        });
      }
    }
  }
  return problems;
}
