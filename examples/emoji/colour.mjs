/**
 * Colour words for the emoji data set and its evaluation: one binning (hue, saturation, value
 * thresholds) used both to label the training images (make-dataset.mjs) and to measure which colour
 * a generated image shows (evaluate.mjs).
 */

export const COLOURS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey"];

/** The colour word of one pixel (r, g, b in [0, 1]). */
export function colourWord(r, g, b) {
  const max = Math.max(r, g, b), min = Math.min(r, g, b);
  const v = max, s = max === 0 ? 0 : (max - min) / max;
  if (v < 0.2) return "black";
  if (s < 0.18) return v > 0.85 ? "white" : "grey";
  let h;
  if (max === r) h = (60 * ((g - b) / (max - min)) + 360) % 360;
  else if (max === g) h = 60 * ((b - r) / (max - min)) + 120;
  else h = 60 * ((r - g) / (max - min)) + 240;
  if (h >= 15 && h < 45 && v < 0.65) return "brown";
  if (h < 15 || h >= 345) return "red";
  if (h < 40) return "orange";
  if (h < 70) return "yellow";
  if (h < 165) return "green";
  if (h < 255) return "blue";
  if (h < 290) return "purple";
  return "pink";
}

/**
 * The most frequent colour word among the chosen pixels, with its share; `pixels` is RGB or RGBA
 * bytes (`channels` per pixel) and `keep(word, i)` picks the pixels that count. Undefined when none do.
 */
export function colourCounts(pixels, channels, keep) {
  const counts = new Map();
  let n = 0;
  for (let i = 0; i < pixels.length; i += channels) {
    const c = colourWord(pixels[i] / 255, pixels[i + 1] / 255, pixels[i + 2] / 255);
    if (!keep(c, i)) continue;
    n++;
    counts.set(c, (counts.get(c) ?? 0) + 1);
  }
  let best, bestN = 0;
  for (const c of COLOURS) {
    const k = counts.get(c) ?? 0;
    if (k > bestN) [best, bestN] = [c, k];
  }
  return { colour: best, share: n > 0 ? bestN / n : 0, counted: n };
}

/** The dominant colour of an RGBA image's opaque pixels, or undefined when no colour has 40% of them (the data set's label). */
export function dominantOpaqueColour(rgba) {
  const { colour, share } = colourCounts(rgba, 4, (_c, i) => rgba[i + 3] >= 128);
  return share >= 0.4 ? colour : undefined;
}

/** The dominant colour of an RGB image on white, ignoring the white background (what a generated image shows). */
export function dominantNonWhiteColour(rgb) {
  return colourCounts(rgb, 3, (c) => c !== "white").colour;
}
