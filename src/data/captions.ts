/**
 * Captions as a sample is drawn: dropout, tag shuffle, prefix and suffix.
 *
 * In this order (each step drawing from the loader's generator only when it is enabled):
 *  1. dropout: with probability `dropout` (one uniform draw) the caption is the empty string, prefix
 *     and suffix included: the sample trains the unconditional branch;
 *  2. shuffle: the caption is split at commas into tags (trimmed, empty ones dropped); the first
 *     `keep_tokens` tags stay in place, the rest are permuted (randperm), and the tags are joined
 *     with ", ". Without shuffle the caption is left as written;
 *  3. prefix and suffix are added as written, so they are never shuffled or split.
 */
import type { DataRng } from "./rng.js";

export interface CaptionOptions {
  prefix: string;
  suffix: string;
  dropout: number;
  shuffle: boolean;
  keepTokens: number;
}

export const PLAIN_CAPTIONS: CaptionOptions = { prefix: "", suffix: "", dropout: 0, shuffle: false, keepTokens: 0 };

/** Split a caption into its comma-separated tags (trimmed, empty ones dropped). */
export function splitTags(caption: string): string[] {
  return caption
    .split(",")
    .map((t) => t.trim())
    .filter((t) => t !== "");
}

/** The caption of one draw of a sample. */
export function drawCaption(caption: string, opts: CaptionOptions, rng: DataRng): string {
  if (opts.dropout > 0 && rng.uniform() < opts.dropout) return "";
  let text = caption;
  if (opts.shuffle) {
    const tags = splitTags(caption);
    const keep = tags.slice(0, opts.keepTokens);
    text = [...keep, ...rng.shuffle(tags.slice(opts.keepTokens))].join(", ");
  }
  return `${opts.prefix}${text}${opts.suffix}`;
}

/** Whether captions vary from draw to draw (what a text-embedding cache cannot hold). */
export function captionsVary(opts: CaptionOptions): boolean {
  return opts.dropout > 0 || opts.shuffle;
}
