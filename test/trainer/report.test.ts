import * as fs from "node:fs";
import * as path from "node:path";
import { decode } from "fast-png";
import { describe, expect, it } from "vitest";
import { readPngText, type RgbImage } from "../../src/image/image.js";
import { Canvas } from "../../src/trainer/canvas.js";
import { fitText, glyph, rasterText, textWidth, wrapText } from "../../src/trainer/font.js";
import { LOSS_CURVE_COLORS, emaCurve, plotLossCurve, renderLossCurve, type LossPoint } from "../../src/trainer/plot.js";
import { tempDir } from "../helpers/repo.js";

// ------------------------------------------------------------------------------------------------
// helpers

function readPng(file: string): RgbImage {
  const png = decode(fs.readFileSync(file));
  expect(png.channels).toBe(3);
  expect(png.depth).toBe(8);
  return { width: png.width, height: png.height, data: Uint8Array.from(png.data as Uint8Array) };
}

function pixel(img: RgbImage, x: number, y: number): [number, number, number] {
  const i = (y * img.width + x) * 3;
  return [img.data[i]!, img.data[i + 1]!, img.data[i + 2]!];
}

function near(a: readonly number[], b: readonly number[], tol: number): boolean {
  return a.every((v, k) => Math.abs(v - b[k]!) <= tol);
}

/** Rows of column x whose pixel is (close to) `color`, and their mean. */
function rowsOf(img: RgbImage, x: number, color: readonly number[], tol = 20): { rows: number[]; mean: number } {
  const rows: number[] = [];
  for (let y = 0; y < img.height; y++) if (near(pixel(img, x, y), color, tol)) rows.push(y);
  return { rows, mean: rows.reduce((a, b) => a + b, 0) / rows.length };
}

/** Where `text`, drawn in the bitmap font in exactly `color`, appears in the image (its top-left corners). */
function findText(img: RgbImage, text: string, color: readonly number[]): [number, number][] {
  const ink: [number, number][] = [];
  rasterText(text, 0, 0, (x, y) => ink.push([x, y]));
  const w = textWidth(text);
  const mask = new Uint8Array(img.width * img.height);
  for (let y = 0; y < img.height; y++) for (let x = 0; x < img.width; x++) mask[y * img.width + x] = near(pixel(img, x, y), color, 0) ? 1 : 0;
  const inkSet = new Set(ink.map(([x, y]) => y * 1000 + x));
  const hits: [number, number][] = [];
  for (let y = 0; y + 9 <= img.height; y++)
    for (let x = 0; x + w <= img.width; x++) {
      if (!ink.every(([dx, dy]) => mask[(y + dy) * img.width + x + dx])) continue;
      // and nothing else in the text's box is ink of that colour
      let clean = true;
      for (let dy = 0; dy < 7 && clean; dy++) for (let dx = 0; dx < w && clean; dx++) if (mask[(y + dy) * img.width + x + dx] && !inkSet.has(dy * 1000 + dx)) clean = false;
      if (clean) hits.push([x, y]);
    }
  return hits;
}

// ------------------------------------------------------------------------------------------------

describe("bitmap font", () => {
  it("has the glyphs it was drawn with", () => {
    const rows = (ch: string) => glyph(ch).rows.map((r) => r.map((b) => (b ? "#" : ".")).join(""));
    expect(rows("1")).toEqual(["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."]);
    expect(rows("e")).toEqual([".....", ".....", ".###.", "#...#", "#####", "#....", ".###."]);
    expect(rows("-")).toEqual(["....", "....", "....", "####", "....", "....", "...."]);
    expect(rows(".")).toEqual(["..", "..", "..", "..", "..", "##", "##"]);
    expect(rows("g")).toHaveLength(9); // descender
    expect(rows("é")).toEqual(rows("?"));
    // every printable ASCII character has a glyph of 7 or 9 rows of equal width
    for (let c = 32; c < 127; c++) {
      const g = glyph(String.fromCharCode(c));
      expect([7, 9]).toContain(g.rows.length);
      for (const r of g.rows) expect(r).toHaveLength(g.width);
    }
  });

  it("draws text pixel for pixel, scaled and turned", () => {
    expect(textWidth("1.5")).toBe(5 + 1 + 2 + 1 + 5);
    expect(textWidth("1.5", 2)).toBe(28);
    const c = new Canvas(20, 10, [255, 255, 255]);
    expect(c.text("1-", 2, 1, [0, 0, 0])).toBe(10);
    const ink = (cv: Canvas) => {
      const out: string[] = [];
      for (let y = 0; y < cv.height; y++) {
        let row = "";
        for (let x = 0; x < cv.width; x++) row += cv.get(x, y)[0] === 0 ? "#" : ".";
        out.push(row);
      }
      return out;
    };
    expect(ink(c).slice(0, 9)).toEqual([
      "....................",
      "....#...............",
      "...##...............",
      "....#...............",
      "....#...####........",
      "....#...............",
      "....#...............",
      "...###..............",
      "....................",
    ]);
    const big = new Canvas(10, 14);
    big.text("1", 0, 0, [0, 0, 0], { scale: 2 });
    expect(ink(big).slice(0, 4)).toEqual(["....##....", "....##....", "..####....", "..####...."]);
    const turned = new Canvas(7, 5);
    turned.text("1", 0, 5, [0, 0, 0], { vertical: true }); // reads upwards: the glyph's top is on the left
    expect(ink(turned)).toEqual([".......", "......#", "#######", ".#....#", "......."]);
  });

  it("fits and wraps captions", () => {
    expect(fitText("hello world", textWidth("hello"))).toBe("hel...");
    expect(fitText("hi", 100)).toBe("hi");
    expect(wrapText("a photo of a dog on a couch", textWidth("a photo of a"), 1)).toEqual(["a photo of a", "dog on a", "couch"]);
    expect(wrapText("a photo of a dog on a couch", textWidth("a photo of a"), 1, 1)).toEqual(["a photo of..."]);
  });
});

// ------------------------------------------------------------------------------------------------

function constant(n: number, loss: number): LossPoint[] {
  return Array.from({ length: n }, (_, i) => ({ step: i + 1, loss }));
}

describe("loss curve", () => {
  const C = LOSS_CURVE_COLORS;

  it("writes a PNG of the requested size", async () => {
    const file = path.join(tempDir("sdc-plot-"), "loss.png");
    await plotLossCurve(constant(50, 0.3), file, { width: 640, height: 320 });
    const bytes = fs.readFileSync(file);
    expect([...bytes.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const img = readPng(file);
    expect([img.width, img.height]).toEqual([640, 320]);
    expect(readPngText(file)).toMatchObject({ Title: "training loss" });
    // the default size
    const { image } = renderLossCurve(constant(5, 1));
    expect([image.width, image.height]).toEqual([800, 400]);
  });

  it("draws a constant loss as a horizontal line in the middle of the plot", async () => {
    const file = path.join(tempDir("sdc-plot-"), "loss.png");
    const layout = await plotLossCurve(constant(300, 0.25), file);
    const img = readPng(file);
    expect(layout.logY).toBe(false);
    const mid = (layout.y0 + layout.y1) / 2 + 0.5;
    expect(layout.y(0.25)).toBeCloseTo(mid, 6);
    for (const step of [10, 100, 150, 290]) {
      const x = Math.floor(layout.x(step));
      const { rows, mean } = rowsOf(img, x, C.ema);
      expect(rows.length).toBeGreaterThanOrEqual(1);
      expect(rows.length).toBeLessThanOrEqual(4);
      expect(Math.abs(mean + 0.5 - mid)).toBeLessThanOrEqual(0.5);
    }
    // no curve colour outside that line
    const x = Math.floor(layout.x(150));
    for (let y = layout.y0 + 1; y < layout.y1; y++) if (Math.abs(y + 0.5 - mid) > 3) expect(near(pixel(img, x, y), C.ema, 60)).toBe(false);
    // labelled ticks around it
    expect(findText(img, "0.25", C.text).length).toBe(1);
    const [tx, ty] = findText(img, "0.25", C.text)[0]!;
    expect(tx + textWidth("0.25")).toBeLessThan(layout.x0);
    expect(Math.abs(ty + 3.5 - mid)).toBeLessThanOrEqual(1);
    expect(findText(img, "step", C.text).length).toBe(1);
    expect(findText(img, "loss", C.text).length).toBeGreaterThanOrEqual(1); // the legend
  });

  it("puts raw, smoothed and validation points where the data says", () => {
    // raw loss alternating between 0.2 and 0.4: the raw line spans both, the EMA sits between
    const pts = Array.from({ length: 200 }, (_, i) => ({ step: i + 1, loss: i % 2 ? 0.4 : 0.2 }));
    const { image, layout } = renderLossCurve(pts, { validation: [{ step: 100, loss: 0.35 }], smoothing: 0.9 });
    // step 150 is a 0.4, step 151 a 0.2: the raw line (thin, light blue, anti-aliased) turns there
    const rawAt = (step: number, loss: number) => {
      const [x, y] = [layout.x(step), layout.y(loss)];
      const blue = (px: number[]) => px[0]! >= 150 && px[2]! - px[0]! >= 15;
      return [-1, 0].some((dx) => [-1, 0, 1].some((dy) => blue(pixel(image, Math.round(x) + dx, Math.floor(y) + dy))));
    };
    expect(rawAt(150, 0.4)).toBe(true);
    expect(rawAt(151, 0.2)).toBe(true);
    expect(rawAt(150, 0.2)).toBe(false);
    const x = Math.floor(layout.x(150));
    const ema = rowsOf(image, x, C.ema).mean + 0.5;
    expect(Math.abs(ema - layout.y(emaCurve(pts.map((p) => p.loss), 0.9)[149]!))).toBeLessThan(3);
    expect(pixel(image, Math.floor(layout.x(100)), Math.floor(layout.y(0.35)))).toEqual([...C.validation]);
  });

  it("switches to a log scale for a loss decaying over decades, and draws exponential decay straight", () => {
    const pts = Array.from({ length: 2000 }, (_, i) => ({ step: i + 1, loss: 2 * Math.exp(-(i + 1) / 250) }));
    const { image, layout } = renderLossCurve(pts, { validation: [500, 1000, 1500].map((s) => ({ step: s, loss: 2 * Math.exp(-s / 250) })) });
    expect(layout.logY).toBe(true);
    expect(findText(image, "0.01", C.text).length).toBe(1);
    expect(findText(image, "0.001", C.text).length).toBe(1);
    // a straight line on a log axis: equal steps in step make equal steps in pixels
    const rowAt = (s: number) => rowsOf(image, Math.floor(layout.x(s)), C.ema).mean;
    const [a, b, c] = [600, 1200, 1800].map(rowAt) as [number, number, number];
    expect(Math.abs(b - a - (c - b))).toBeLessThanOrEqual(1.5);
    expect(c - a).toBeGreaterThan(100);
    // the validation dots are on the exact curve
    for (const s of [500, 1000, 1500]) expect(pixel(image, Math.floor(layout.x(s)), Math.floor(layout.y(2 * Math.exp(-s / 250))))).toEqual([...C.validation]);
    // a loss that only halves stays linear; forcing either way works
    const mild = Array.from({ length: 500 }, (_, i) => ({ step: i, loss: 0.4 - (0.2 * i) / 500 }));
    expect(renderLossCurve(mild).layout.logY).toBe(false);
    expect(renderLossCurve(mild, { logY: true }).layout.logY).toBe(true);
    expect(renderLossCurve(pts, { logY: false }).layout.logY).toBe(false);
  });

  it("marks non-finite losses and keeps the axes to the planned run", () => {
    const pts = constant(100, 0.5);
    pts[40] = { step: 41, loss: NaN };
    const { image, layout } = renderLossCurve(pts, { maxStep: 400 });
    expect(layout.stepMax).toBe(400);
    expect(layout.stepMin).toBe(0);
    expect(pixel(image, Math.floor(layout.x(41)), layout.y0 + 3)).toEqual([...C.nonFinite]);
    expect(findText(image, "non-finite", C.text).length).toBe(1);
    // nothing drawn right of the last step
    const x = Math.floor(layout.x(200));
    for (let y = layout.y0 + 1; y < layout.y1; y++) expect(near(pixel(image, x, y), C.ema, 60)).toBe(false);
  });

  it("copes with nothing to draw", () => {
    expect(() => renderLossCurve([])).not.toThrow();
    expect(() => renderLossCurve([{ step: 1, loss: NaN }])).not.toThrow();
    expect(() => renderLossCurve([{ step: 3, loss: 0 }], { logY: true })).not.toThrow();
  });

  it("is rewritten atomically: the old file is never written into, and no temporary file is left", async () => {
    const dir = tempDir("sdc-plot-");
    const file = path.join(dir, "loss.png");
    await plotLossCurve(constant(10, 1), file);
    const before = fs.readFileSync(file);
    // a second name for the file as it is now: writing into it in place would change it too
    fs.linkSync(file, path.join(dir, "held.png"));
    await plotLossCurve(
      Array.from({ length: 20 }, (_, i) => ({ step: i + 1, loss: 1 / (i + 1) })),
      file,
    );
    expect(fs.readFileSync(path.join(dir, "held.png")).equals(before)).toBe(true);
    expect(fs.statSync(file).ino).not.toBe(fs.statSync(path.join(dir, "held.png")).ino);
    expect(fs.readFileSync(file).equals(before)).toBe(false);
    expect(readPng(file).width).toBe(800);
    expect(fs.readdirSync(dir).sort()).toEqual(["held.png", "loss.png"]);
  });
});
