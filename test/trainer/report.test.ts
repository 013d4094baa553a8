import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { decode } from "fast-png";
import { describe, expect, it } from "vitest";
import { readPngText, type RgbImage, makeGrid, parseParameters } from "../../src/image/image.js";
import { Canvas } from "../../src/trainer/canvas.js";
import { describeEvent } from "../../src/trainer/events.js";
import { fitText, glyph, rasterText, textWidth, wrapText } from "../../src/trainer/font.js";
import { formatDuration, formatLoss, formatLr, formatRate, jsonLine } from "../../src/trainer/format.js";
import { LOSS_CURVE_COLORS, emaCurve, plotLossCurve, renderLossCurve, type LossPoint } from "../../src/trainer/plot.js";
import { TrainLog, lossCurveData, readTrainLog } from "../../src/trainer/train-log.js";
import type { StepReport } from "../../src/trainer/trainer.js";
import { createTrainProgress, type ProgressStream } from "../../src/trainer/train-progress.js";
import { VALIDATION_TEXT_KEY, renderValidationGrid, saveValidationGrid } from "../../src/trainer/validation-grid.js";
import { tempDir } from "../helpers/repo.js";
import { transpileForNode } from "../helpers/transpile.js";

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

  it("draws long runs (more points than a spread argument list takes) with k-step labels", () => {
    const pts = Array.from({ length: 150_000 }, (_, i) => ({ step: i + 1, loss: 0.1 + 0.01 * Math.sin(i) }));
    const { image, layout } = renderLossCurve(pts, { maxStep: 200_000 });
    expect(layout.stepMax).toBe(200_000);
    expect(findText(image, "100k", C.text).length).toBe(1);
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

// ------------------------------------------------------------------------------------------------

// progress and log: a stream that records, a terminal seen through it, a clock moved by hand

/** A stream that records what is written, as a terminal (isTTY) or a pipe. */
function fakeStream(isTTY: boolean, columns = 120): ProgressStream & { out: string } {
  const s = {
    out: "",
    isTTY,
    columns,
    write(text: string) {
      s.out += text;
      return true;
    },
  };
  return s;
}

/**
 * The screen a terminal shows after `text`: "\r", "\n", cursor save/restore (ESC 7 / ESC 8) and the
 * CSI sequences readline and cli-progress use (cursor column G, moves A-D, erase K); others ignored.
 */
function screen(text: string): string[] {
  const lines: string[][] = [[]];
  let row = 0;
  let col = 0;
  let saved: [number, number] = [0, 0];
  const line = () => (lines[row] ??= []);
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (ch === "\x1b") {
      if (text[i + 1] === "7" || text[i + 1] === "8") {
        if (text[i + 1] === "7") saved = [row, col];
        else [row, col] = saved;
        i++;
        continue;
      }
      const m = /^\x1b\[([?\d;]*)([A-Za-z])/.exec(text.slice(i));
      if (!m) continue;
      i += m[0].length - 1;
      const n = m[1] === "" ? undefined : Number(m[1]);
      const l = line();
      switch (m[2]) {
        case "G":
          col = (n ?? 1) - 1;
          break;
        case "K":
          if (n === undefined || n === 0) l.length = Math.min(l.length, col);
          else if (n === 1) for (let k = 0; k <= col && k < l.length; k++) l[k] = " ";
          else l.length = 0;
          break;
        case "A":
          row = Math.max(0, row - (n ?? 1));
          break;
        case "B":
          row += n ?? 1;
          break;
        case "C":
          col += n ?? 1;
          break;
        case "D":
          col = Math.max(0, col - (n ?? 1));
          break;
      }
      continue;
    }
    if (ch === "\r") col = 0;
    else if (ch === "\n") {
      row++;
      col = 0;
    } else {
      const l = line();
      while (l.length < col) l.push(" ");
      l[col++] = ch;
    }
  }
  return Array.from({ length: Math.max(lines.length, row + 1) }, (_, r) => (lines[r] ?? []).join("").trimEnd()).filter((l, r, all) => l !== "" || r < all.length - 1);
}

/** A clock the test moves by hand. */
function manualClock(start = 0) {
  const c = { t: start, now: () => c.t };
  return c;
}

describe("number formats", () => {
  it("reads like the progress line", () => {
    expect(formatLr(1e-4)).toBe("1.00e-04");
    expect(formatLr(2.5e-6)).toBe("2.50e-06");
    expect(formatLoss(0.12344)).toBe("0.1234");
    expect(formatLoss(0.00012)).toBe("1.20e-04");
    expect(formatLoss(NaN)).toBe("nan");
    expect(formatLoss(-Infinity)).toBe("-inf");
    expect(formatRate(3.21)).toBe("3.2 it/s");
    expect(formatRate(0.25)).toBe("4.00 s/it");
    expect(formatDuration(587)).toBe("9m47s");
    expect(formatDuration(45)).toBe("45s");
    expect(formatDuration(7500)).toBe("2h05m");
    expect(formatDuration(2 * 86400 + 3 * 3600)).toBe("2d03h");
  });

  it("JSON keeps non-finite numbers as strings", () => {
    expect(jsonLine({ a: NaN, b: Infinity, c: 1, d: undefined })).toBe('{"a":"NaN","b":"Infinity","c":1}');
  });
});

describe("training progress", () => {
  const step = (i: number) => ({ step: i, loss: 0.5, lr: 1e-4 });

  it("without a terminal prints a line per interval, from the injected clock", () => {
    const stream = fakeStream(false);
    const clock = manualClock(1000);
    const p = createTrainProgress({ total: 2000, stream, now: clock.now, intervalMs: 5000 });
    for (let i = 1; i <= 12; i++) {
      clock.t += 1000;
      p.step(step(i));
    }
    expect(stream.out.split("\n").filter(Boolean)).toEqual([
      "step 5/2000  loss 0.5000  lr 1.00e-04  1.0 it/s  ETA 33m15s",
      "step 10/2000  loss 0.5000  lr 1.00e-04  1.0 it/s  ETA 33m10s",
    ]);
    p.done();
    const lines = stream.out.split("\n").filter(Boolean);
    expect(lines.slice(2)).toEqual(["step 12/2000  loss 0.5000  lr 1.00e-04  1.0 it/s  ETA 33m08s", "done: 12 steps in 12s, loss 0.5000"]);
    expect(stream.out).not.toMatch(/[\r\x1b]/);
  });

  it("measures the rate over the last steps and shows slow runs in s/it", () => {
    const stream = fakeStream(false);
    const clock = manualClock();
    const p = createTrainProgress({ total: 100, stream, now: clock.now, intervalMs: 0, rateWindow: 4 });
    for (let i = 1; i <= 10; i++) {
      clock.t += i <= 6 ? 100 : 4000; // fast, then 4 s a step
      p.step(step(i));
    }
    expect(p.state.rate).toBeCloseTo(0.25, 10);
    expect(stream.out.trimEnd().split("\n").at(-1)).toBe("step 10/100  loss 0.5000  lr 1.00e-04  4.00 s/it  ETA 6m00s");
  });

  it("shows the smoothed loss, and a NaN loss does not poison it", () => {
    const clock = manualClock();
    const p = createTrainProgress({ total: 10, stream: fakeStream(false), now: clock.now, smoothing: 0.5 });
    p.step({ step: 1, loss: 1, lr: 1e-4 });
    expect(p.state.lossEma).toBeCloseTo(1, 12);
    p.step({ step: 2, loss: NaN, lr: 1e-4 });
    p.step({ step: 3, loss: 0, lr: 1e-4 });
    // debiased EMA of [1, 0] with beta 0.5: (0.25 + 0) / 0.75
    expect(p.state.lossEma).toBeCloseTo(1 / 3, 12);
  });

  it("prints notes and events on lines of their own", () => {
    const stream = fakeStream(false);
    const clock = manualClock();
    const p = createTrainProgress({ total: 10, stream, now: clock.now, intervalMs: 5000 });
    p.step(step(1));
    p.note("caching latents");
    p.event({ event: "checkpoint", step: 1, path: "out/step-1.safetensors" });
    p.stop();
    expect(stream.out).toBe("caching latents\nstep 1  checkpoint saved: out/step-1.safetensors\n");
  });

  it("on a terminal draws a bar with step/total, loss, lr, it/s and ETA", () => {
    const stream = fakeStream(true);
    const clock = manualClock();
    const p = createTrainProgress({ total: 10, stream, now: clock.now });
    try {
      for (let i = 1; i <= 3; i++) {
        clock.t += 1000;
        p.step(step(i));
      }
      p.note("non-finite loss at step 3"); // forces a redraw of the current state
      const shown = screen(stream.out);
      const bar = shown.at(-1)!;
      expect(bar).toMatch(/^train \|[█░]+\| 3\/10 · loss 0\.5000 · lr 1\.00e-04 · 1\.0 it\/s · ETA 7s$/);
      expect(bar.match(/█/g)?.length).toBe(Math.round(0.3 * bar.match(/[█░]/g)!.length));
    } finally {
      p.stop();
    }
  });

  it("on a terminal puts notes above the bar, never glued to it", () => {
    const stream = fakeStream(true, 100);
    const clock = manualClock();
    const p = createTrainProgress({ total: 10, stream, now: clock.now });
    try {
      clock.t += 500;
      p.step(step(1));
      p.note("first note");
      clock.t += 500;
      p.step(step(2));
      p.event({ event: "validation", step: 2, loss: 0.25 });
      const shown = screen(stream.out);
      expect(shown).toHaveLength(3);
      expect(shown.slice(0, 2)).toEqual(["first note", "step 2  validation loss 0.2500"]);
      expect(shown[2]).toMatch(/^train \|.*\| 2\/10 /);
    } finally {
      p.stop();
    }
    // stopping leaves the last state readable as a plain line, and the cursor on a fresh line
    const shown = screen(stream.out);
    expect(shown.slice(2)).toEqual(["step 2/10  loss 0.5000  lr 1.00e-04  2.0 it/s  ETA 4s"]);
    expect(stream.out.endsWith("\n")).toBe(true);
    // no terminal modes to restore (line wrap, cursor) if the run dies without stop()
    expect(stream.out).not.toMatch(/\x1b\[\?(7l|25l)/);
  });

  it("with --json prints one JSON object per event and nothing else, even on a terminal", () => {
    const stream = fakeStream(true);
    const clock = manualClock();
    const p = createTrainProgress({ total: 4, stream, json: true, now: clock.now });
    for (let i = 1; i <= 4; i++) {
      clock.t += 250;
      p.step({ step: i, loss: i === 3 ? NaN : 0.5, lr: 1e-4, epoch: 0, gradNorm: 1.5 });
      if (i === 2) {
        p.event({ event: "validation", step: 2, loss: 0.4, grid: "samples/step-2.png" });
        p.event({ event: "checkpoint", step: 2, path: "ckpt/step-2" });
        p.note("a note");
      }
    }
    p.done({ checkpoint: "ckpt/final" });
    p.stop();
    const lines = stream.out.split("\n");
    expect(lines.pop()).toBe("");
    const objs = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(objs.map((o) => o.event)).toEqual(["step", "step", "validation", "checkpoint", "note", "step", "step", "done"]);
    expect(objs[0]).toEqual({ event: "step", step: 1, total: 4, epoch: 0, loss: 0.5, loss_ema: 0.5, lr: 1e-4, grad_norm: 1.5, it_per_s: 4, eta_s: 0.8 });
    expect(objs[5]!.loss).toBe("NaN");
    expect(objs[4]).toEqual({ event: "note", message: "a note" });
    expect(objs[7]).toMatchObject({ event: "done", step: 4, elapsed_s: 1, checkpoint: "ckpt/final" });
    expect(objs[7]!.loss).toBeCloseTo(0.5, 12);
  });

  it("takes the trainer's step reports as they are", () => {
    const stream = fakeStream(false);
    const p = createTrainProgress({ total: 8, stream, json: true, now: () => 0 });
    const report: StepReport = { step: 1, total: 8, epoch: 0, loss: 0.5, lr: 1e-4, gradNorm: null, seconds: 0.2 };
    p.step(report);
    expect(JSON.parse(stream.out)).toEqual({ event: "step", step: 1, total: 8, epoch: 0, loss: 0.5, loss_ema: 0.5, lr: 1e-4 });
  });

  it("a resumed run counts from its start step", () => {
    const stream = fakeStream(false);
    const clock = manualClock();
    const p = createTrainProgress({ total: 1000, startStep: 500, stream, now: clock.now, intervalMs: 1000 });
    clock.t += 2000;
    p.step(step(501));
    expect(stream.out).toBe("step 501/1000  loss 0.5000  lr 1.00e-04  2.00 s/it  ETA 16m38s\n");
  });

  it("describes events for people", () => {
    expect(describeEvent({ event: "nonfinite_loss", step: 7, loss: Infinity, action: "skipped the update" })).toBe("step 7  non-finite loss (inf), skipped the update");
    expect(describeEvent({ event: "images", step: 4, files: ["a.png", "b.png"] })).toBe("step 4  wrote 2 images: a.png, b.png");
    expect(describeEvent({ event: "done", step: 100, elapsed_s: 3725, loss: 0.01 })).toBe("done: 100 steps in 1h02m, loss 0.0100");
  });
});

// ------------------------------------------------------------------------------------------------

describe("training log (JSONL)", () => {
  it("appends one record per step and event, on disk before the log is closed", () => {
    const file = path.join(tempDir("sdc-trainlog-"), "logs", "train.jsonl");
    const clock = manualClock(1_700_000_000_000);
    const log = TrainLog.open(file, { clock: clock.now });
    clock.t += 500;
    log.step({ step: 1, loss: 0.5, lr: 1e-4, epoch: 0, gradNorm: 0.75, samples: 4 });
    // already in the file: a process killed now keeps it
    expect(fs.readFileSync(file, "utf8")).toBe('{"event":"step","step":1,"epoch":0,"loss":0.5,"lr":0.0001,"grad_norm":0.75,"time":1700000000.5,"samples_per_s":8}\n');
    clock.t += 250;
    log.step({ step: 2, loss: NaN, lr: 1e-4, samples: 4 });
    log.event({ event: "nonfinite_loss", step: 2, loss: NaN, action: "skipped the update" });
    log.event({ event: "validation", step: 2, loss: 0.4, grid: "samples/step-2.png" });
    log.event({ event: "checkpoint", step: 2, path: "ckpt/step-2" });
    const recs = readTrainLog(file);
    expect(recs.map((r) => r.event)).toEqual(["step", "step", "nonfinite_loss", "validation", "checkpoint"]);
    expect(recs[1]).toMatchObject({ step: 2, loss: "NaN", samples_per_s: 16 });
    log.close();
    expect(() => log.step({ step: 3, loss: 1, lr: 1 })).toThrow(/closed/);
    const data = lossCurveData(recs);
    expect(data.train.map((p) => p.step)).toEqual([1, 2]);
    expect(data.train[1]!.loss).toBeNaN();
    expect(data.validation).toEqual([{ step: 2, loss: 0.4 }]);
  });

  it("a killed run keeps every record it logged, and its resume continues the log", () => {
    const dir = tempDir("sdc-trainlog-");
    const child = transpileForNode(path.join(import.meta.dirname, "report-log-kill-child.ts"), path.join(dir, "js"));
    const file = path.join(dir, "train.jsonl");
    const run = (...args: string[]) => spawnSync(process.execPath, [child, file, ...args], { encoding: "utf8" });
    const first = run("1", "25");
    expect([first.status, first.signal, first.stderr]).toEqual([null, "SIGKILL", ""]);
    let recs = readTrainLog(file);
    expect(recs.filter((r) => r.event === "step").map((r) => r.step)).toEqual(Array.from({ length: 25 }, (_, i) => i + 1));
    expect(recs[0]).toMatchObject({ step: 1, loss: 1, samples_per_s: 4 });
    expect(recs[0]).not.toHaveProperty("grad_norm");
    // resumed from the checkpoint at 20: steps 21-25 of the killed run go, the new ones follow
    expect(run("21", "30", "20").signal).toBe("SIGKILL");
    recs = readTrainLog(file);
    expect(recs.filter((r) => r.event === "step").map((r) => r.step)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    expect(recs.filter((r) => r.event !== "step").map((r) => `${r.event}:${r.step}`)).toEqual(["checkpoint:10", "checkpoint:20", "resume:20", "checkpoint:30"]);
  });

  it("a new run replaces an old log", () => {
    const file = path.join(tempDir("sdc-trainlog-"), "train.jsonl");
    fs.writeFileSync(file, '{"event":"step","step":1,"loss":1,"lr":1}\n');
    TrainLog.open(file).close();
    expect(fs.readFileSync(file, "utf8")).toBe("");
  });

  it("reopening for a resumed run drops what came after the resume step, then appends", () => {
    const dir = tempDir("sdc-trainlog-");
    const file = path.join(dir, "train.jsonl");
    const first = TrainLog.open(file);
    for (let s = 1; s <= 9; s++) {
      first.step({ step: s, loss: 1 / s, lr: 1e-4 });
      if (s === 6) first.event({ event: "checkpoint", step: 6, path: "ckpt/step-6" });
      if (s === 8) first.event({ event: "note", message: "not here" });
    }
    first.event({ event: "note", message: "after the checkpoint" });
    first.close();
    // killed mid-write: the last line is cut off
    fs.appendFileSync(file, '{"event":"step","st');

    const second = TrainLog.open(file, { resumeStep: 6 });
    for (let s = 7; s <= 8; s++) second.step({ step: s, loss: 1 / s, lr: 1e-4 });
    second.close();
    const recs = readTrainLog(file);
    expect(recs.map((r) => `${r.event}:${r.step ?? ""}`)).toEqual([
      ...[1, 2, 3, 4, 5, 6].map((s) => `step:${s}`),
      "checkpoint:6",
      "resume:6",
      "step:7",
      "step:8",
    ]);
    expect(fs.readFileSync(file, "utf8").endsWith("\n")).toBe(true);
    expect(fs.readdirSync(dir)).toEqual(["train.jsonl"]);
  });

  it("resuming without an old log starts one", () => {
    const file = path.join(tempDir("sdc-trainlog-"), "train.jsonl");
    TrainLog.open(file, { resumeStep: 100 }).close();
    expect(readTrainLog(file)).toMatchObject([{ event: "resume", step: 100 }]);
  });
});

// ------------------------------------------------------------------------------------------------

describe("validation grid", () => {
  const solid = (w: number, h: number, rgb: [number, number, number]): RgbImage => {
    const data = new Uint8Array(w * h * 3);
    for (let i = 0; i < w * h; i++) data.set(rgb, i * 3);
    return { width: w, height: h, data };
  };
  const samples = [
    { image: solid(64, 48, [200, 0, 0]), prompt: "a photo of sks dog", seed: 1 },
    { image: solid(64, 48, [0, 200, 0]), prompt: "a photo of sks dog", seed: 2 },
    { image: solid(64, 48, [0, 0, 200]), prompt: "sks dog, oil painting: Vermeer", seed: 3n },
  ];
  const opts = { step: 200, steps: 20, sampler: "Euler a", cfgScale: 7.5, cols: 3 };

  it("writes the prompts and seeds into the PNG's parameters text", async () => {
    const file = path.join(tempDir("sdc-grid-"), "step-200.png");
    const grid = await saveValidationGrid(file, samples, opts);
    const img = readPng(file);
    expect([img.width, img.height]).toEqual([grid.width, grid.height]);
    const text = readPngText(file);
    const parsed = parseParameters(text.parameters!);
    expect(parsed.prompt).toBe("a photo of sks dog\nsks dog, oil painting: Vermeer");
    expect(parsed.params).toMatchObject({ Steps: "20", Sampler: "Euler a", "CFG scale": "7.5", Seed: "1", Size: "64x48", "Training step": "200", Seeds: "1 2 3" });
    expect(JSON.parse(text[VALIDATION_TEXT_KEY]!)).toEqual({
      step: 200,
      samples: [
        { prompt: "a photo of sks dog", negative_prompt: "", seed: 1 },
        { prompt: "a photo of sks dog", negative_prompt: "", seed: 2 },
        { prompt: "sks dog, oil painting: Vermeer", negative_prompt: "", seed: "3" },
      ],
    });
  });

  it("keeps the images intact, captions each with its seed, and can leave captions out", () => {
    const grid = renderValidationGrid(samples, opts);
    expect(grid.width).toBe(3 * 64);
    // header above, caption below each image: the images' own pixels are all still there
    let y0 = -1; // below the header: the first red row
    for (let y = 0; y < grid.height && y0 < 0; y++) if (near(pixel(grid, 10, y), [200, 0, 0], 0)) y0 = y;
    expect(y0).toBeGreaterThan(0);
    for (const [i, s] of samples.entries()) for (const [x, y] of [[0, 0], [63, 47], [32, 20]] as const) expect(pixel(grid, i * 64 + x, y0 + y)).toEqual([...s.image.data.subarray(0, 3)]);
    expect(findText(grid, "seed 3", [110, 110, 110]).length).toBe(1);
    expect(findText(grid, "step 200", [30, 30, 30]).length).toBe(1);
    const bare = renderValidationGrid(samples, { ...opts, captions: false });
    expect(bare).toEqual(makeGrid(samples.map((s) => s.image), 3));
  });
});
