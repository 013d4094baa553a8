import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { describe, expect, it } from "vitest";
import {
  encodePng,
  formatParameters,
  imageToTensor,
  loadImage,
  makeGrid,
  modelHash,
  parseParameters,
  readPngText,
  type RgbImage,
  resizeImage,
  samplerName,
  savePng,
  tensorToImages,
} from "../../src/image/image.js";
import { UserError } from "../../src/util/errors.js";
import { FIXTURES, tempDir } from "../helpers/repo.js";
import { readSafetensors } from "../runtime/helpers.js";

const ref = readSafetensors(path.join(FIXTURES, "runtime", "image_processor.safetensors"));

function pattern(width: number, height: number, seed = 1): RgbImage {
  const data = new Uint8Array(width * height * 3);
  let s = seed;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    data[i] = s >>> 24;
  }
  return { width, height, data };
}

async function rejects(p: Promise<unknown>): Promise<UserError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof UserError) return e;
    throw e;
  }
  throw new Error("expected a UserError");
}

describe("tensor <-> image conversions match diffusers' VaeImageProcessor", () => {
  it("postprocess: (x/2+0.5).clamp(0,1)*255, rounded half to even, identical on all 2304 values", () => {
    const input = ref.get("post.input")!;
    const want = ref.get("post.output")!.data as Uint8Array;
    const images = tensorToImages(input.data as Float32Array, input.shape as [number, number, number, number]);
    expect(images.length).toBe(2);
    const got = new Uint8Array(want.length);
    images.forEach((img, b) => got.set(img, b * img.length));
    const diff = [...got].flatMap((v, i) => (v === want[i] ? [] : [i]));
    expect(diff).toEqual([]);
  });

  it("postprocess by hand: ends, middle, clamping, NaN", () => {
    // [1, 3, 2, 2]: planes R = (-1, 1, 0, -5), G = (5, NaN, 0.5, -0.5), B = 0
    const x = new Float32Array([-1, 1, 0, -5, 5, Number.NaN, 0.5, -0.5, 0, 0, 0, 0]);
    const [img] = tensorToImages(x, [1, 3, 2, 2]);
    // 0 -> 0.5 * 255 = 127.5 -> 128 (half to even); 0.5 -> 191.25 -> 191; -0.5 -> 63.75 -> 64
    expect(Array.from(img!)).toEqual([0, 255, 128, 255, 0, 128, 128, 191, 128, 0, 64, 128]);
  });

  it("preprocess: x/255*2-1 in float32, identical to diffusers", () => {
    const pix = ref.get("pre.input")!;
    const want = ref.get("pre.output")!;
    const [H, W] = pix.shape as [number, number];
    const t = imageToTensor({ width: W, height: H, data: pix.data as Uint8Array });
    expect(t.shape).toEqual(want.shape);
    expect(Array.from(t.data)).toEqual(Array.from(want.data as Float32Array));
    expect(Array.from(imageToTensor({ width: 1, height: 1, data: new Uint8Array([0, 255, 51]) }).data)).toEqual([-1, 1, Math.fround(2 * Math.fround(51 / 255) - 1)]);
  });

  it("rejects tensors of the wrong shape", () => {
    expect(() => tensorToImages(new Float32Array(12), [1, 4, 1, 3])).toThrow(/3 channels/);
    expect(() => tensorToImages(new Float32Array(11), [1, 3, 2, 2])).toThrow(/11 values/);
    expect(() => imageToTensor([pattern(2, 2), pattern(3, 2)])).toThrow(/share one size/);
  });
});

describe("PNG files", () => {
  const dir = tempDir("sdc-png-");

  it("round-trip pixels exactly and carry text chunks (Latin-1 as tEXt, other text as iTXt)", async () => {
    const img = pattern(37, 23);
    const text = { parameters: "a caf\u00e9, \u732b \u{1F431}\nSteps: 20", Software: "sdc" };
    const file = path.join(dir, "out.png");
    await savePng(file, img.data, img.width, img.height, text);
    const { data, info } = await sharp(file).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height, info.channels]).toEqual([37, 23, 3]);
    expect(Buffer.compare(data, Buffer.from(img.data))).toBe(0);
    expect(readPngText(file)).toEqual(text);
    const bytes = fs.readFileSync(file);
    expect(bytes.includes(Buffer.from("iTXtparameters"))).toBe(true);
    expect(bytes.includes(Buffer.from("tEXtSoftware"))).toBe(true);
    // nothing half-written left behind
    expect(fs.readdirSync(dir).filter((f) => f.startsWith(".sdc-tmp"))).toEqual([]);
  });

  it("reads compressed iTXt and zTXt chunks as other writers make them", async () => {
    const png = Buffer.from(await encodePng(pattern(2, 2).data, 2, 2));
    const crcOf = (b: Buffer) => {
      let c = 0xffffffff;
      for (const x of b) {
        c ^= x;
        for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      }
      return (c ^ 0xffffffff) >>> 0;
    };
    const mk = (type: string, body: Buffer) => {
      const out = Buffer.alloc(12 + body.length);
      out.writeUInt32BE(body.length, 0);
      out.write(type, 4, "latin1");
      body.copy(out, 8);
      out.writeUInt32BE(crcOf(out.subarray(4, 8 + body.length)), 8 + body.length);
      return out;
    };
    const zlib = await import("node:zlib");
    const itxt = Buffer.concat([Buffer.from("parameters\0\x01\0en\0\0", "latin1"), zlib.deflateSync(Buffer.from("\u732b, Steps: 5", "utf8"))]);
    const ztxt = Buffer.concat([Buffer.from("Comment\0\0", "latin1"), zlib.deflateSync(Buffer.from("caf\xe9", "latin1"))]);
    const end = png.length - 12;
    const withChunks = Buffer.concat([png.subarray(0, end), mk("iTXt", itxt), mk("zTXt", ztxt), png.subarray(end)]);
    expect(readPngText(withChunks)).toEqual({ parameters: "\u732b, Steps: 5", Comment: "caf\u00e9" });
  });

  it("fails clearly on missing, foreign or damaged files", async () => {
    expect(() => readPngText(path.join(dir, "missing.png"))).toThrow(/file not found/);
    fs.writeFileSync(path.join(dir, "fake.png"), "GIF89a not a png");
    expect(() => readPngText(path.join(dir, "fake.png"))).toThrow(/not a PNG/);
    const png = Buffer.from(await encodePng(pattern(4, 4).data, 4, 4, { a: "b" }));
    png[40] = png[40]! ^ 0xff; // inside the first chunk after IHDR
    expect(() => readPngText(png)).toThrow(/bad CRC/);
    await expect(encodePng(new Uint8Array(5), 2, 2)).rejects.toThrow(/needs 12 bytes/);
    await expect(encodePng(new Uint8Array(12), 2, 2, { "": "x" })).rejects.toThrow(/PNG text key/);
  });
});

describe("loadImage", () => {
  const dir = tempDir("sdc-img-");

  it("reads PNG, JPEG and WebP; same-size PNG pixels arrive unchanged, alpha and grey become RGB", async () => {
    const img = pattern(16, 8, 5);
    const png = path.join(dir, "a.png");
    await savePng(png, img.data, 16, 8);
    const got = await loadImage(png, { width: 16, height: 8 });
    expect(Buffer.compare(Buffer.from(got.data), Buffer.from(img.data))).toBe(0);

    const rgba = new Uint8Array(16 * 8 * 4).map((_, i) => (i * 7) & 255);
    await sharp(rgba, { raw: { width: 16, height: 8, channels: 4 } }).png().toFile(path.join(dir, "rgba.png"));
    const noAlpha = await loadImage(path.join(dir, "rgba.png"));
    expect(Array.from(noAlpha.data.slice(0, 6))).toEqual([0, 7, 14, 28, 35, 42]); // alpha dropped, not composited

    const grey = new Uint8Array(16 * 8).map((_, i) => i);
    await sharp(grey, { raw: { width: 16, height: 8, channels: 1 } }).png().toFile(path.join(dir, "grey.png"));
    const g = await loadImage(path.join(dir, "grey.png"));
    expect(Array.from(g.data.slice(3, 9))).toEqual([1, 1, 1, 2, 2, 2]);

    for (const ext of ["jpg", "webp"]) {
      const f = path.join(dir, `a.${ext}`);
      await sharp(img.data, { raw: { width: 16, height: 8, channels: 3 } }).toFormat(ext === "jpg" ? "jpeg" : "webp").toFile(f);
      const r = await loadImage(f);
      expect([r.width, r.height, r.data.length]).toEqual([16, 8, 16 * 8 * 3]);
    }
  });

  it("defaults to the image size rounded down to a multiple of 8", async () => {
    const f = path.join(dir, "odd.png");
    await savePng(f, pattern(21, 19).data, 21, 19);
    const r = await loadImage(f);
    expect([r.width, r.height]).toEqual([16, 16]);
    expect((await loadImage(f, { multipleOf: 1 })).width).toBe(21);
  });

  it("fits to a requested size by crop, fill or stretch", async () => {
    // left half red, right half blue, 32x16
    const w = 32;
    const h = 16;
    const data = new Uint8Array(w * h * 3);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) data.set(x < w / 2 ? [255, 0, 0] : [0, 0, 255], (y * w + x) * 3);
    const src = { width: w, height: h, data };
    const px = (im: RgbImage, x: number, y: number) => Array.from(im.data.slice((y * im.width + x) * 3, (y * im.width + x) * 3 + 3));

    const crop = await resizeImage(src, 16, 16, "crop"); // the centre 16x16: red | blue
    expect([crop.width, crop.height]).toEqual([16, 16]);
    expect(px(crop, 1, 8)).toEqual([255, 0, 0]);
    expect(px(crop, 14, 8)).toEqual([0, 0, 255]);

    const stretch = await resizeImage(src, 16, 32, "stretch");
    expect([stretch.width, stretch.height]).toEqual([16, 32]);
    expect(px(stretch, 0, 0)).toEqual([255, 0, 0]);
    expect(px(stretch, 15, 31)).toEqual([0, 0, 255]);

    const fill = await resizeImage(src, 32, 32, "fill"); // fits 32x16 in the middle, edges repeated up and down
    expect([fill.width, fill.height]).toEqual([32, 32]);
    expect(px(fill, 0, 0)).toEqual([255, 0, 0]);
    expect(px(fill, 31, 31)).toEqual([0, 0, 255]);

    expect(await resizeImage(src, 32, 16, "crop")).toBe(src); // same size: untouched
  });

  it("names the file when it is missing or not an image", async () => {
    const missing = path.join(dir, "nope.png");
    const e = await rejects(loadImage(missing));
    expect(e.problems[0]!.subject).toBe(missing);
    expect(e.message).toMatch(/init image not found/);
    const junk = path.join(dir, "junk.png");
    fs.writeFileSync(junk, "definitely not an image");
    const e2 = await rejects(loadImage(junk));
    expect(e2.message).toMatch(/cannot read image/);
    expect(e2.problems[0]!.hint).toMatch(/PNG, JPEG or WebP/);
    const tiny = path.join(dir, "tiny.png");
    await savePng(tiny, pattern(4, 4).data, 4, 4);
    expect((await rejects(loadImage(tiny))).message).toMatch(/width must be a positive integer, got 0/);
  });
});

describe("makeGrid", () => {
  it("lays images out row by row, black where there is none", () => {
    const imgs = [1, 2, 3].map((v) => ({ width: 2, height: 1, data: new Uint8Array(6).fill(v) }));
    const g = makeGrid(imgs, 2);
    expect([g.width, g.height]).toEqual([4, 2]);
    const row = (y: number) => Array.from(g.data.slice(y * 12, (y + 1) * 12));
    expect(row(0)).toEqual([1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
    expect(row(1)).toEqual([3, 3, 3, 3, 3, 3, 0, 0, 0, 0, 0, 0]);
    // default: as square as possible (4 -> 2x2, 5 -> 3 columns, 2 -> 2 columns)
    const mk = (n: number) => Array.from({ length: n }, () => pattern(3, 2));
    expect(makeGrid(mk(4)).width).toBe(6);
    expect(makeGrid(mk(5)).width).toBe(9);
    expect(makeGrid(mk(2)).width).toBe(6);
    expect(() => makeGrid([pattern(2, 2), pattern(2, 3)])).toThrow(/share one size/);
  });
});

describe("generation parameters", () => {
  const base = {
    prompt: "a photo of an astronaut, riding a horse: on mars",
    negativePrompt: "blurry, low quality",
    steps: 20,
    sampler: samplerName("euler-ancestral"),
    cfgScale: 7.5,
    seed: 1,
    width: 512,
    height: 768,
    modelHash: "6ce0161689",
    modelName: "v1-5-pruned-emaonly",
  };

  it("are written in the AUTOMATIC1111 form", () => {
    expect(formatParameters(base)).toBe(
      "a photo of an astronaut, riding a horse: on mars\nNegative prompt: blurry, low quality\n" +
        "Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 1, Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly",
    );
    expect(formatParameters({ ...base, negativePrompt: "", modelHash: undefined, modelName: undefined, extra: { "Clip skip": 2, Version: "sdc 0.1.0, beta" } })).toBe(
      "a photo of an astronaut, riding a horse: on mars\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 1, Size: 512x768, Clip skip: 2, Version: \"sdc 0.1.0, beta\"",
    );
  });

  it("round-trip through the parser, including quoted values and multi-line prompts", () => {
    const p = { ...base, prompt: "line one, \u732b\nline two", negativePrompt: "bad\nworse", seed: 18446744073709551615n, denoisingStrength: 0.75, modelName: "my: model, v2", extra: { "Schedule type": "Karras" } };
    const parsed = parseParameters(formatParameters(p));
    expect(parsed.prompt).toBe(p.prompt);
    expect(parsed.negativePrompt).toBe(p.negativePrompt);
    expect(parsed.params).toEqual({
      Steps: "20",
      Sampler: "Euler a",
      "CFG scale": "7.5",
      Seed: "18446744073709551615",
      Size: "512x768",
      "Size-1": "512",
      "Size-2": "768",
      "Model hash": "6ce0161689",
      Model: "my: model, v2",
      "Denoising strength": "0.75",
      "Schedule type": "Karras",
    });
    // a text with no settings line is all prompt
    expect(parseParameters("just a prompt\nwith two lines")).toEqual({ prompt: "just a prompt\nwith two lines", negativePrompt: "", params: {} });
  });

  it("map sdc scheduler names to the UI's sampler names", () => {
    expect(["ddim", "pndm", "lms", "euler", "euler-ancestral", "heun", "dpm-solver++", "unipc", "ddpm", "lcm"].map((s) => samplerName(s))).toEqual([
      "DDIM",
      "PLMS",
      "LMS",
      "Euler",
      "Euler a",
      "Heun",
      "DPM++ 2M",
      "UniPC",
      "DDPM",
      "LCM",
    ]);
    expect(samplerName("dpm-solver++", { karras: true })).toBe("DPM++ 2M Karras");
    expect(samplerName("lms", { karras: true })).toBe("LMS Karras");
    expect(samplerName("euler", { karras: true })).toBe("Euler");
  });

  it("model hash is the first 10 hex digits of the file's SHA-256", async () => {
    const f = path.join(tempDir("sdc-hash-"), "m.bin");
    fs.writeFileSync(f, "abc");
    expect(await modelHash(f)).toBe("ba7816bf8f"); // sha256("abc") = ba7816bf8f01cfea...
    await expect(modelHash(f + ".missing")).rejects.toThrow(UserError);
  });
});
