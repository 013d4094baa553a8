/**
 * A tiny RGB raster for the training report's pictures: filled rectangles, anti-aliased lines of
 * any width and discs, and text in the bitmap font of ./font.ts. Drawing is clipped to the canvas
 * and, optionally, to a clip rectangle. Coordinates are continuous: pixel (i, j) covers
 * [i, i+1) x [j, j+1), so its centre is (i + 0.5, j + 0.5).
 */
import type { RgbImage } from "../image/image.js";
import { rasterText, type TextOptions } from "./font.js";

export type Rgb = readonly [number, number, number];

export interface Rect {
  x0: number;
  y0: number;
  /** Exclusive. */
  x1: number;
  y1: number;
}

export class Canvas implements RgbImage {
  readonly data: Uint8Array;
  /** Drawing outside this rectangle is dropped (default: the whole canvas). */
  clip: Rect;

  constructor(
    readonly width: number,
    readonly height: number,
    background: Rgb = [255, 255, 255],
  ) {
    if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0)
      throw new RangeError(`canvas size must be positive integers, got ${width}x${height}`);
    this.data = new Uint8Array(width * height * 3);
    this.clip = { x0: 0, y0: 0, x1: width, y1: height };
    this.fillRect(0, 0, width, height, background);
  }

  /** Mix `color` into pixel (x, y) with opacity `alpha` in [0, 1]. */
  blend(x: number, y: number, color: Rgb, alpha = 1): void {
    const c = this.clip;
    if (x < c.x0 || y < c.y0 || x >= c.x1 || y >= c.y1 || x < 0 || y < 0 || x >= this.width || y >= this.height || !(alpha > 0)) return;
    const i = (y * this.width + x) * 3;
    const a = alpha >= 1 ? 1 : alpha;
    for (let k = 0; k < 3; k++) this.data[i + k] = Math.round(this.data[i + k]! + (color[k]! - this.data[i + k]!) * a);
  }

  /** Pixel (x, y) as [r, g, b]. */
  get(x: number, y: number): Rgb {
    const i = (y * this.width + x) * 3;
    return [this.data[i]!, this.data[i + 1]!, this.data[i + 2]!];
  }

  /** Fill whole pixels x..x+w-1, y..y+h-1. */
  fillRect(x: number, y: number, w: number, h: number, color: Rgb, alpha = 1): void {
    for (let yy = Math.max(0, y); yy < Math.min(this.height, y + h); yy++)
      for (let xx = Math.max(0, x); xx < Math.min(this.width, x + w); xx++) this.blend(xx, yy, color, alpha);
  }

  /**
   * Stroke a polyline through `points` ([x, y] pairs), `width` pixels wide with round joins,
   * anti-aliased. Overlapping parts of the same polyline do not darken each other.
   */
  polyline(points: readonly (readonly [number, number])[], width: number, color: Rgb, alpha = 1): void {
    if (points.length === 0) return;
    const hw = width / 2;
    const W = this.width;
    const cov = new Float32Array(W * this.height);
    let bx0 = Infinity;
    let by0 = Infinity;
    let bx1 = -Infinity;
    let by1 = -Infinity;
    const segment = (ax: number, ay: number, bx: number, by: number): void => {
      if (![ax, ay, bx, by].every(Number.isFinite)) return;
      const x0 = Math.max(this.clip.x0, 0, Math.floor(Math.min(ax, bx) - hw - 1));
      const x1 = Math.min(this.clip.x1, W, Math.ceil(Math.max(ax, bx) + hw + 1));
      const y0 = Math.max(this.clip.y0, 0, Math.floor(Math.min(ay, by) - hw - 1));
      const y1 = Math.min(this.clip.y1, this.height, Math.ceil(Math.max(ay, by) + hw + 1));
      if (x0 >= x1 || y0 >= y1) return;
      bx0 = Math.min(bx0, x0);
      by0 = Math.min(by0, y0);
      bx1 = Math.max(bx1, x1);
      by1 = Math.max(by1, y1);
      const dx = bx - ax;
      const dy = by - ay;
      const len2 = dx * dx + dy * dy;
      for (let y = y0; y < y1; y++) {
        const py = y + 0.5;
        for (let x = x0; x < x1; x++) {
          const px = x + 0.5;
          let t = len2 > 0 ? ((px - ax) * dx + (py - ay) * dy) / len2 : 0;
          t = t < 0 ? 0 : t > 1 ? 1 : t;
          const ex = px - (ax + t * dx);
          const ey = py - (ay + t * dy);
          const c = hw + 0.5 - Math.sqrt(ex * ex + ey * ey);
          if (c <= 0) continue;
          const i = y * W + x;
          const v = c >= 1 ? 1 : c;
          if (v > cov[i]!) cov[i] = v;
        }
      }
    };
    if (points.length === 1) segment(points[0]![0], points[0]![1], points[0]![0], points[0]![1]);
    for (let k = 1; k < points.length; k++) segment(points[k - 1]![0], points[k - 1]![1], points[k]![0], points[k]![1]);
    for (let y = by0; y < by1; y++) for (let x = bx0; x < bx1; x++) if (cov[y * W + x]! > 0) this.blend(x, y, color, alpha * cov[y * W + x]!);
  }

  /** A filled, anti-aliased disc of radius `r` centred on (cx, cy). */
  disc(cx: number, cy: number, r: number, color: Rgb, alpha = 1): void {
    for (let y = Math.floor(cy - r - 1); y <= Math.ceil(cy + r + 1); y++)
      for (let x = Math.floor(cx - r - 1); x <= Math.ceil(cx + r + 1); x++) {
        const c = r + 0.5 - Math.hypot(x + 0.5 - cx, y + 0.5 - cy);
        if (c > 0) this.blend(x, y, color, alpha * Math.min(1, c));
      }
  }

  /** Draw text in the bitmap font with the top of its capitals at y; returns its width. */
  text(text: string, x: number, y: number, color: Rgb, opts: TextOptions = {}): number {
    return rasterText(text, Math.round(x), Math.round(y), (px, py) => this.blend(px, py, color), opts);
  }

  /** Run `draw` with drawing limited to `rect` (within the current clip). */
  clipped(rect: Rect, draw: () => void): void {
    const saved = this.clip;
    this.clip = { x0: Math.max(saved.x0, rect.x0), y0: Math.max(saved.y0, rect.y0), x1: Math.min(saved.x1, rect.x1), y1: Math.min(saved.y1, rect.y1) };
    try {
      draw();
    } finally {
      this.clip = saved;
    }
  }
}
