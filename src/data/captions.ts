/**
 * Captions as a sample is drawn: the pick among a sample's captions, dropout, tag shuffle, prefix
 * and suffix.
 *
 * In this order (each step drawing from the loader's generator only when it is enabled):
 *  0. pick: a sample with several captions (a list in its metadata row) takes one of them, uniformly
 *     (one `below(n)` draw), as diffusers' train_text_to_image.py takes `random.choice(caption)`; a
 *     sample with one caption draws nothing, so single-caption datasets draw as before;
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

/** The caption a draw starts from: the caption, or one of several (one draw when there are several). */
export function pickCaption(captions: string | readonly string[], rng: DataRng): string {
  if (typeof captions === "string") return captions;
  if (captions.length === 0) throw new RangeError("a sample has no caption to pick (an empty list)");
  return captions.length === 1 ? captions[0]! : captions[rng.below(captions.length)]!;
}

/** The caption of one draw of a sample (its caption, or its list of captions to pick from). */
export function drawCaption(captions: string | readonly string[], opts: CaptionOptions, rng: DataRng): string {
  const caption = pickCaption(captions, rng);
  if (opts.dropout > 0 && rng.uniform() < opts.dropout) return "";
  let text = caption;
  if (opts.shuffle) {
    const tags = splitTags(caption);
    const keep = tags.slice(0, opts.keepTokens);
    text = [...keep, ...rng.shuffle(tags.slice(opts.keepTokens))].join(", ");
  }
  return `${opts.prefix}${text}${opts.suffix}`;
}

/**
 * Whether captions vary from draw to draw (what a text-embedding cache cannot hold): dropout or
 * shuffle is on, or one of `samples` has several captions to pick from.
 */
export function captionsVary(opts: CaptionOptions, samples: Iterable<{ captions?: readonly string[] }> = []): boolean {
  if (opts.dropout > 0 || opts.shuffle) return true;
  for (const s of samples) if ((s.captions?.length ?? 0) > 1) return true;
  return false;
}
