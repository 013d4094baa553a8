/**
 * A small bitmap font for the training report's pictures (loss-curve ticks, titles, legend, grid
 * captions), so no font library is needed: printable ASCII, 5x7 pixel glyphs (capitals and digits
 * 7 rows high, lowercase x-height 5 rows), descenders two rows below the baseline, proportional
 * widths for the narrow glyphs (`.`, `:`, `i`, `l`, ...) and one column of spacing. Digits are all
 * 5 wide, so numbers line up. A character outside the table is drawn as `?`.
 */

/** Height of a capital or digit in font pixels (the baseline is below row 6). */
export const CAP_HEIGHT = 7;
/** Height of a text line including descenders. */
export const LINE_HEIGHT = 9;
/** Blank columns between two glyphs. */
export const LETTER_SPACING = 1;

export interface Glyph {
  width: number;
  /** Rows from the top, 7 (or 9 with a descender), each `width` pixels: `true` is ink. */
  rows: boolean[][];
}

// One glyph per entry: rows from the top separated by "|", "#" is ink. Rows 8 and 9 hang below
// the baseline.
const SOURCE: Record<string, string> = {
  " ": "...|...|...|...|...|...|...",
  "!": "#|#|#|#|#|.|#",
  '"': "#.#|#.#|...|...|...|...|...",
  "#": ".#.#.|.#.#.|#####|.#.#.|#####|.#.#.|.#.#.",
  $: "..#..|.####|#.#..|.###.|..#.#|####.|..#..",
  "%": "##...|##..#|...#.|..#..|.#...|#..##|...##",
  "&": ".##..|#..#.|#.#..|.#...|#.#.#|#..#.|.##.#",
  "'": "#|#|.|.|.|.|.",
  "(": "..#|.#.|#..|#..|#..|.#.|..#",
  ")": "#..|.#.|..#|..#|..#|.#.|#..",
  "*": ".....|..#..|#.#.#|.###.|#.#.#|..#..|.....",
  "+": ".....|..#..|..#..|#####|..#..|..#..|.....",
  ",": "..|..|..|..|..|##|##|.#|#.",
  "-": "....|....|....|####|....|....|....",
  ".": "..|..|..|..|..|##|##",
  "/": "....#|....#|...#.|..#..|.#...|#....|#....",
  "0": ".###.|#...#|#..##|#.#.#|##..#|#...#|.###.",
  "1": "..#..|.##..|..#..|..#..|..#..|..#..|.###.",
  "2": ".###.|#...#|....#|...#.|..#..|.#...|#####",
  "3": "#####|...#.|..#..|...#.|....#|#...#|.###.",
  "4": "...#.|..##.|.#.#.|#..#.|#####|...#.|...#.",
  "5": "#####|#....|####.|....#|....#|#...#|.###.",
  "6": "..##.|.#...|#....|####.|#...#|#...#|.###.",
  "7": "#####|....#|...#.|..#..|.#...|.#...|.#...",
  "8": ".###.|#...#|#...#|.###.|#...#|#...#|.###.",
  "9": ".###.|#...#|#...#|.####|....#|...#.|.##..",
  ":": "..|##|##|..|..|##|##",
  ";": "..|##|##|..|..|##|##|.#|#.",
  "<": "...#|..#.|.#..|#...|.#..|..#.|...#",
  "=": ".....|.....|#####|.....|#####|.....|.....",
  ">": "#...|.#..|..#.|...#|..#.|.#..|#...",
  "?": ".###.|#...#|....#|...#.|..#..|.....|..#..",
  "@": ".###.|#...#|#.###|#.#.#|#.###|#....|.###.",
  A: ".###.|#...#|#...#|#####|#...#|#...#|#...#",
  B: "####.|#...#|#...#|####.|#...#|#...#|####.",
  C: ".###.|#...#|#....|#....|#....|#...#|.###.",
  D: "###..|#..#.|#...#|#...#|#...#|#..#.|###..",
  E: "#####|#....|#....|####.|#....|#....|#####",
  F: "#####|#....|#....|####.|#....|#....|#....",
  G: ".###.|#...#|#....|#.###|#...#|#...#|.####",
  H: "#...#|#...#|#...#|#####|#...#|#...#|#...#",
  I: "###|.#.|.#.|.#.|.#.|.#.|###",
  J: "..###|...#.|...#.|...#.|...#.|#..#.|.##..",
  K: "#...#|#..#.|#.#..|##...|#.#..|#..#.|#...#",
  L: "#....|#....|#....|#....|#....|#....|#####",
  M: "#...#|##.##|#.#.#|#.#.#|#...#|#...#|#...#",
  N: "#...#|#...#|##..#|#.#.#|#..##|#...#|#...#",
  O: ".###.|#...#|#...#|#...#|#...#|#...#|.###.",
  P: "####.|#...#|#...#|####.|#....|#....|#....",
  Q: ".###.|#...#|#...#|#...#|#.#.#|#..#.|.##.#",
  R: "####.|#...#|#...#|####.|#.#..|#..#.|#...#",
  S: ".####|#....|#....|.###.|....#|....#|####.",
  T: "#####|..#..|..#..|..#..|..#..|..#..|..#..",
  U: "#...#|#...#|#...#|#...#|#...#|#...#|.###.",
  V: "#...#|#...#|#...#|#...#|#...#|.#.#.|..#..",
  W: "#...#|#...#|#...#|#.#.#|#.#.#|#.#.#|.#.#.",
  X: "#...#|#...#|.#.#.|..#..|.#.#.|#...#|#...#",
  Y: "#...#|#...#|.#.#.|..#..|..#..|..#..|..#..",
  Z: "#####|....#|...#.|..#..|.#...|#....|#####",
  "[": "###|#..|#..|#..|#..|#..|###",
  "\\": "#....|#....|.#...|..#..|...#.|....#|....#",
  "]": "###|..#|..#|..#|..#|..#|###",
  "^": "..#..|.#.#.|#...#|.....|.....|.....|.....",
  _: ".....|.....|.....|.....|.....|.....|#####",
  "`": "#.|.#|..|..|..|..|..",
  a: ".....|.....|.###.|....#|.####|#...#|.####",
  b: "#....|#....|#.##.|##..#|#...#|#...#|####.",
  c: ".....|.....|.###.|#....|#....|#...#|.###.",
  d: "....#|....#|.##.#|#..##|#...#|#...#|.####",
  e: ".....|.....|.###.|#...#|#####|#....|.###.",
  f: "..##|.#..|####|.#..|.#..|.#..|.#..",
  g: ".....|.....|.####|#...#|#...#|#...#|.####|....#|.###.",
  h: "#....|#....|#.##.|##..#|#...#|#...#|#...#",
  i: ".#.|...|##.|.#.|.#.|.#.|###",
  j: "...#|....|..##|...#|...#|...#|...#|#..#|.##.",
  k: "#...|#...|#..#|#.#.|##..|#.#.|#..#",
  l: "##.|.#.|.#.|.#.|.#.|.#.|###",
  m: ".....|.....|##.#.|#.#.#|#.#.#|#.#.#|#.#.#",
  n: ".....|.....|#.##.|##..#|#...#|#...#|#...#",
  o: ".....|.....|.###.|#...#|#...#|#...#|.###.",
  p: ".....|.....|####.|#...#|#...#|#...#|####.|#....|#....",
  q: ".....|.....|.####|#...#|#...#|#...#|.####|....#|....#",
  r: ".....|.....|#.##.|##..#|#....|#....|#....",
  s: ".....|.....|.####|#....|.###.|....#|####.",
  t: ".#..|.#..|####|.#..|.#..|.#..|..##",
  u: ".....|.....|#...#|#...#|#...#|#..##|.##.#",
  v: ".....|.....|#...#|#...#|#...#|.#.#.|..#..",
  w: ".....|.....|#...#|#...#|#.#.#|#.#.#|.#.#.",
  x: ".....|.....|#...#|.#.#.|..#..|.#.#.|#...#",
  y: ".....|.....|#...#|#...#|#...#|#...#|.####|....#|.###.",
  z: ".....|.....|#####|...#.|..#..|.#...|#####",
  "{": "..##|.#..|.#..|#...|.#..|.#..|..##",
  "|": "#|#|#|#|#|#|#",
  "}": "##..|..#.|..#.|...#|..#.|..#.|##..",
  "~": ".....|.....|.#...|#.#.#|...#.|.....|.....",
};

const GLYPHS = new Map<string, Glyph>(
  Object.entries(SOURCE).map(([ch, src]) => {
    const rows = src.split("|").map((r) => [...r].map((c) => c === "#"));
    return [ch, { width: rows[0]!.length, rows }];
  }),
);

/** The glyph drawn for a character (`?` for one the font lacks). */
export function glyph(ch: string): Glyph {
  return GLYPHS.get(ch) ?? GLYPHS.get("?")!;
}

/** Whether the font has its own glyph for a character. */
export function hasGlyph(ch: string): boolean {
  return GLYPHS.has(ch);
}

/** Width in output pixels of `text` drawn at `scale` (no trailing spacing). */
export function textWidth(text: string, scale = 1): number {
  let w = 0;
  for (const ch of text) w += glyph(ch).width + LETTER_SPACING;
  return Math.max(0, w - LETTER_SPACING) * scale;
}

/** The longest prefix of `text` that fits in `maxWidth` pixels, with "..." when it was cut. */
export function fitText(text: string, maxWidth: number, scale = 1): string {
  if (textWidth(text, scale) <= maxWidth) return text;
  const chars = [...text];
  while (chars.length > 0 && textWidth(`${chars.join("")}...`, scale) > maxWidth) chars.pop();
  return chars.length > 0 ? `${chars.join("").trimEnd()}...` : "";
}

/**
 * Break `text` into at most `maxLines` lines of at most `maxWidth` pixels, at spaces where it can
 * (a word too long for a line is cut); the last line ends in "..." when text was left over.
 */
export function wrapText(text: string, maxWidth: number, scale = 1, maxLines = Infinity): string[] {
  const lines: string[] = [];
  let rest = text.replace(/\s+/g, " ").trim();
  while (rest !== "" && lines.length < maxLines) {
    if (lines.length === maxLines - 1) {
      lines.push(fitText(rest, maxWidth, scale));
      break;
    }
    if (textWidth(rest, scale) <= maxWidth) {
      lines.push(rest);
      break;
    }
    const chars = [...rest];
    let n = chars.length;
    while (n > 1 && textWidth(chars.slice(0, n).join(""), scale) > maxWidth) n--;
    const space = chars.slice(0, n + 1).lastIndexOf(" ");
    const cut = space > 0 ? space : n;
    lines.push(chars.slice(0, cut).join("").trimEnd());
    rest = chars.slice(cut).join("").trimStart();
  }
  return lines;
}

/** Receives every inked output pixel of a text (may be outside the target; the caller clips). */
export type PlotPixel = (x: number, y: number) => void;

export interface TextOptions {
  /** Integer magnification: each font pixel becomes scale x scale output pixels (default 1). */
  scale?: number;
  /** Draw the text rotated a quarter turn counter-clockwise, reading upwards; (x, y) is then the bottom-left corner. */
  vertical?: boolean;
}

/**
 * Rasterise `text` with its top-left corner (the top of the capitals) at (x, y), calling `plot`
 * for every inked pixel. Returns the advance in output pixels.
 */
export function rasterText(text: string, x: number, y: number, plot: PlotPixel, opts: TextOptions = {}): number {
  const s = Math.max(1, Math.round(opts.scale ?? 1));
  let pen = 0;
  for (const ch of text) {
    const g = glyph(ch);
    g.rows.forEach((row, gy) => {
      row.forEach((ink, gx) => {
        if (!ink) return;
        for (let dy = 0; dy < s; dy++)
          for (let dx = 0; dx < s; dx++) {
            const u = (pen + gx) * s + dx; // along the text
            const v = gy * s + dy; // down the glyph
            if (opts.vertical) plot(x + v, y - 1 - u);
            else plot(x + u, y + v);
          }
      });
    });
    pen += g.width + LETTER_SPACING;
  }
  return Math.max(0, pen - LETTER_SPACING) * s;
}
