/** Decoding and transforms, numerically: exact normalised values, flip, crop boxes, alpha, EXIF, formats. */
import sharp from "sharp";
import { describe, expect, it } from "vitest";
import { cropFlipNormalize, decodeImage, parseColour, readImageInfo, transformImage } from "../../src/data/transform.js";
import { image } from "./helpers.js";

// A 2x2 image: black, white / (128, 64, 32), (10, 20, 30)
const PIXELS = [
  [0, 0, 0],
  [255, 255, 255],
  [128, 64, 32],
  [10, 20, 30],
] as const;
const twoByTwo = () => image(2, 2, (x, y) => PIXELS[y * 2 + x]!);

// x / 255 then 2x - 1 in float32
const N: Record<number, number> = {
  0: -1,
  255: 1,
  128: 0.003921627998352051,
  64: -0.498039186000824,
  32: -0.7490196228027344,
  10: -0.9215686321258545,
  20: -0.843137264251709,
  30: -0.7647058963775635,
};

describe("normalisation", () => {
  it("a 2x2 PNG → exact [3, 2, 2] values in [-1, 1]", async () => {
    const t = await transformImage(await twoByTwo(), {
      background: [255, 255, 255],
      resize: { width: 2, height: 2 },
      crop: { left: 0, top: 0, width: 2, height: 2 },
      flip: false,
    });
    expect(Array.from(t)).toEqual([
      // R plane
      N[0], N[255], N[128], N[10],
      // G plane
      N[0], N[255], N[64], N[20],
      // B plane
      N[0], N[255], N[32], N[30],
    ]);
  });

  it("flip mirrors each row", async () => {
    const img = await decodeImage(await twoByTwo());
    const t = cropFlipNormalize(img, { left: 0, top: 0, width: 2, height: 2 }, true);
    expect(Array.from(t.subarray(0, 4))).toEqual([N[255], N[0], N[10], N[128]]);
  });
});

describe("crop boxes", () => {
  // 4x3 image whose red channel is 10 * (y * 4 + x)
  const grid = () => image(4, 3, (x, y) => [10 * (y * 4 + x), 0, 0]);
  const red = (t: Float32Array, n: number) => Array.from(t.subarray(0, n)).map((v) => Math.round(((v + 1) / 2) * 255));

  it("cut the box out of the resized image", async () => {
    const img = await decodeImage(await grid());
    expect(red(cropFlipNormalize(img, { left: 1, top: 1, width: 2, height: 2 }, false), 4)).toEqual([50, 60, 90, 100]);
    expect(red(cropFlipNormalize(img, { left: 2, top: 0, width: 2, height: 3 }, false), 6)).toEqual([20, 30, 60, 70, 100, 110]);
  });

  it("flip applies after the crop (the box is in unflipped coordinates)", async () => {
    const img = await decodeImage(await grid());
    expect(red(cropFlipNormalize(img, { left: 1, top: 1, width: 2, height: 2 }, true), 4)).toEqual([60, 50, 100, 90]);
  });

  it("a box outside the image is refused", async () => {
    const img = await decodeImage(await grid());
    expect(() => cropFlipNormalize(img, { left: 3, top: 0, width: 2, height: 2 }, false)).toThrow(/does not fit in a 4x3 image/);
  });
});

describe("decoding", () => {
  it("RGBA is composited on white by default, or on the configured colour", async () => {
    const png = await image(2, 1, (x) => (x === 0 ? [200, 100, 50, 255] : [200, 100, 50, 0]));
    expect(Array.from((await decodeImage(png)).data)).toEqual([200, 100, 50, 255, 255, 255]);
    expect(Array.from((await decodeImage(png, { background: parseColour("#102030") })).data)).toEqual([200, 100, 50, 16, 32, 48]);
    const half = await image(1, 1, () => [255, 0, 0, 128]);
    const [r, g, b] = (await decodeImage(half, { background: [0, 0, 0] })).data;
    expect([r, g, b]).toEqual([128, 0, 0]);
  });

  it("greyscale becomes RGB", async () => {
    const grey = await sharp(Buffer.from([0, 100, 200, 255]), { raw: { width: 2, height: 2, channels: 1 } }).png().toBuffer();
    expect(Array.from((await decodeImage(grey)).data)).toEqual([0, 0, 0, 100, 100, 100, 200, 200, 200, 255, 255, 255]);
  });

  it("EXIF orientation is applied (6: rotate 90° clockwise)", async () => {
    // 16x8: left half red, right half blue; upright it is 8x16 with red on top
    const jpg = await image(16, 8, (x) => (x < 8 ? [255, 0, 0] : [0, 0, 255]), "jpeg", 6);
    expect(await readImageInfo(jpg)).toMatchObject({ width: 8, height: 16, orientation: 6, format: "jpeg" });
    const img = await decodeImage(jpg);
    expect([img.width, img.height]).toEqual([8, 16]);
    const at = (x: number, y: number) => Array.from(img.data.subarray((y * 8 + x) * 3, (y * 8 + x) * 3 + 3));
    expect(at(4, 2)[0]).toBeGreaterThan(200);
    expect(at(4, 2)[2]).toBeLessThan(50);
    expect(at(4, 13)[2]).toBeGreaterThan(200);
    expect(at(4, 13)[0]).toBeLessThan(50);
  });

  it("WebP (lossless) and JPEG decode", async () => {
    const webp = await image(2, 2, (x, y) => PIXELS[y * 2 + x]!, "webp");
    expect(Array.from((await decodeImage(webp)).data)).toEqual(PIXELS.flat());
    const jpg = await decodeImage(await image(8, 8, () => [90, 160, 220], "jpeg"));
    for (let i = 0; i < jpg.data.length; i += 3) {
      expect(Math.abs(jpg.data[i]! - 90)).toBeLessThanOrEqual(2);
      expect(Math.abs(jpg.data[i + 2]! - 220)).toBeLessThanOrEqual(2);
    }
  });

  it("resize (lanczos3) keeps a flat colour flat", async () => {
    const img = await decodeImage(await image(10, 6, () => [40, 80, 120]), { resize: { width: 5, height: 3 } });
    expect([img.width, img.height]).toEqual([5, 3]);
    expect(new Set(img.data)).toEqual(new Set([40, 80, 120]));
  });

  it("a corrupt file throws (the loader turns this into a skip or a located error)", async () => {
    await expect(decodeImage(Buffer.from("not an image"))).rejects.toThrow();
    const png = await image(8, 8);
    await expect(decodeImage(png.subarray(0, png.length - 20))).rejects.toThrow();
  });
});
