/**
 * examples/emoji/make-dataset.mjs on a small subset: the imagefolder it writes (images composited
 * on white, metadata rows naming exactly the files, captions), the held-out prompts, and that two
 * runs give the same bytes. Needs the devDependencies emoji-datasource-twitter and emojilib.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import { createRequire } from "node:module";
import * as path from "node:path";
import sharp from "sharp";
import { describe, expect, it } from "vitest";
import { REPO, tempDir } from "../helpers/repo.js";

const SCRIPT = path.join(REPO, "examples", "emoji", "make-dataset.mjs");
const require = createRequire(import.meta.url);

/** The emoji-datasource-twitter folder; throws (the test fails) when the devDependencies are missing. */
function twitterPackage(): string {
  try {
    require.resolve("emojilib");
    return path.dirname(require.resolve("emoji-datasource-twitter/package.json"));
  } catch {
    throw new Error("emoji-datasource-twitter and emojilib are not installed: they are devDependencies of sdc, run `npm install`");
  }
}

function build(dir: string, ...args: string[]): string {
  return execFileSync(process.execPath, [SCRIPT, dir, ...args], { cwd: REPO, encoding: "utf8", stdio: "pipe" });
}

interface Row { file_name: string; text: string; captions: string[]; name: string; unified: string; category: string; colour: string | null }
const readJsonl = <T>(file: string): T[] => fs.readFileSync(file, "utf8").trim().split("\n").map((l) => JSON.parse(l) as T);

describe("emoji data set", () => {
  it("writes an imagefolder of distinct emoji on white with varied captions and held-out prompts", async () => {
    const pkg = twitterPackage();
    const dir = tempDir("sdc-emoji-");
    const out = build(dir, "--limit", "60");
    expect(out).toMatch(/wrote 60 images \(64x64\)/);

    const rows = readJsonl<Row>(path.join(dir, "metadata.jsonl"));
    expect(rows).toHaveLength(60);
    // Metadata rows <-> files, one to one.
    const pngs = fs.readdirSync(dir).filter((f) => f.endsWith(".png")).sort();
    expect(rows.map((r) => r.file_name).sort()).toEqual(pngs);
    expect(new Set(rows.map((r) => r.file_name)).size).toBe(rows.length);

    // No flags, skin tones, keycaps or components; several categories in the spread subset.
    for (const r of rows) {
      const cps = r.unified.split("-").map((h) => parseInt(h, 16));
      expect(cps.some((c) => (c >= 0x1f1e6 && c <= 0x1f1ff) || (c >= 0x1f3fb && c <= 0x1f3ff) || c === 0x20e3), r.unified).toBe(false);
      expect(r.name).not.toMatch(/^flag:|skin tone|keycap/);
      expect(["Flags", "Component"]).not.toContain(r.category);
    }
    expect(new Set(rows.map((r) => r.category)).size).toBeGreaterThanOrEqual(6);

    // Captions: three per image, non-empty, distinct, text is the first; varied across the set.
    for (const r of rows) {
      expect(r.captions).toHaveLength(3);
      expect(new Set(r.captions).size).toBe(3);
      for (const c of r.captions) expect(c.trim().length).toBeGreaterThan(0);
      expect(r.text).toBe(r.captions[0]);
      for (const c of r.captions) expect(c).toContain(r.name);
    }
    expect(new Set(rows.map((r) => r.text)).size).toBe(rows.length);
    // The seeded order puts each of the three templates first for some images.
    const first = new Set(rows.map((r) => (r.text.includes(" emoji, ") || r.text.endsWith(" emoji") ? (r.text.endsWith(" emoji") ? "category" : "keywords") : "subcategory")));
    expect(first.size).toBe(3);
    expect(rows.filter((r) => r.colour).length).toBeGreaterThan(rows.length / 2);

    // Images: 64x64 RGB; every pixel transparent in the Twemoji source is white, so the corners
    // are white except where the artwork reaches them.
    const emojiJson = JSON.parse(fs.readFileSync(path.join(pkg, "emoji.json"), "utf8")) as { unified: string; image: string }[];
    const source = new Map(emojiJson.map((e) => [e.unified, path.join(pkg, "img", "twitter", "64", e.image)]));
    let whiteCorners = 0;
    for (const r of rows) {
      const { data, info } = await sharp(path.join(dir, r.file_name)).raw().toBuffer({ resolveWithObject: true });
      expect([info.width, info.height, info.channels]).toEqual([64, 64, 3]);
      const src = await sharp(source.get(r.unified)!).ensureAlpha().raw().toBuffer();
      for (let p = 0; p < 64 * 64; p++) {
        if (src[p * 4 + 3] === 0) expect([data[p * 3], data[p * 3 + 1], data[p * 3 + 2]]).toEqual([255, 255, 255]);
      }
      const corners = [0, 63, 64 * 63, 64 * 64 - 1].every((p) => data[p * 3] === 255 && data[p * 3 + 1] === 255 && data[p * 3 + 2] === 255);
      if (corners) whiteCorners++;
    }
    expect(whiteCorners).toBeGreaterThan(rows.length * 0.8);

    // Held-out prompts: one per line, the same as held_out.jsonl, none a training caption.
    const prompts = fs.readFileSync(path.join(dir, "held_out_prompts.txt"), "utf8").trim().split("\n");
    const held = readJsonl<{ prompt: string; file_name: string; category: string; colour: string | null }>(path.join(dir, "held_out.jsonl"));
    expect(held.map((h) => h.prompt)).toEqual(prompts);
    expect(prompts.length).toBe(60);
    expect(new Set(prompts).size).toBe(prompts.length);
    const training = new Set(rows.flatMap((r) => r.captions));
    for (const p of prompts) expect(training.has(p), p).toBe(false);
    const byFile = new Map(rows.map((r) => [r.file_name, r]));
    for (const h of held) {
      expect(byFile.get(h.file_name)?.category).toBe(h.category);
      expect(byFile.get(h.file_name)?.colour).toBe(h.colour);
    }
  });

  it("is deterministic and writes 32x32 images with --size 32", async () => {
    twitterPackage();
    const a = tempDir("sdc-emoji-");
    const b = tempDir("sdc-emoji-");
    build(a, "--limit", "12", "--size", "32");
    build(b, "--limit", "12", "--size", "32");
    const list = (d: string) => (fs.readdirSync(d, { recursive: true }) as string[]).filter((f) => fs.statSync(path.join(d, f)).isFile()).sort();
    const files = list(a);
    expect(list(b)).toEqual(files);
    // 12 images, metadata.jsonl, held_out.jsonl, held_out_prompts.txt, and the held-out imagefolder
    expect(files.filter((f) => !f.startsWith("holdout"))).toHaveLength(12 + 3);
    const holdout = files.filter((f) => f.startsWith(`holdout${path.sep}`));
    expect(holdout).toContain(path.join("holdout", "metadata.jsonl"));
    const heldRows = fs.readFileSync(path.join(a, "held_out.jsonl"), "utf8").trim().split("\n").filter(Boolean);
    expect(holdout).toHaveLength(heldRows.length + 1);
    for (const f of files) expect(fs.readFileSync(path.join(b, f)).equals(fs.readFileSync(path.join(a, f))), f).toBe(true);
    const png = files.find((f) => f.endsWith(".png"))!;
    const m = await sharp(path.join(a, png)).metadata();
    expect([m.width, m.height]).toEqual([32, 32]);
  });
});
