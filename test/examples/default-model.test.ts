/**
 * The default pipelines on the shipped emoji model (models/emoji, trained by sdc itself from
 * examples/emoji): `npx sdc run` on a fresh clone draws an emoji — a coloured figure on a white
 * ground, in the colour the prompt names — not noise; img2img.yaml and the emoji examples run too.
 * (Its measured quality is in models/emoji/README.md; examples/emoji/evaluate.mjs measures it.)
 */
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { describe, expect, it } from "vitest";
import { loadPipeline } from "../../src/config/load.js";
import { run } from "../../src/pipeline.js";
import { REPO, tempDir } from "../helpers/repo.js";

interface Look {
  width: number;
  height: number;
  /** Mean brightness (0–255) of the two-pixel frame. */
  frame: number;
  /** Share of pixels that are clearly coloured (HSV saturation > 0.35 and value > 0.25). */
  coloured: number;
  /** Share of the coloured pixels in each hue range. */
  hues: Record<"red" | "yellow" | "green" | "blue", number>;
  /** Per-pixel standard deviation between horizontal neighbours (noise is high, drawings low). */
  roughness: number;
}

async function look(file: string): Promise<Look> {
  const { data, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const W = info.width, H = info.height;
  let frame = 0, frameN = 0, coloured = 0, rough = 0;
  const hues = { red: 0, yellow: 0, green: 0, blue: 0 };
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) {
      const i = (y * W + x) * 3;
      const [r, g, b] = [data[i]! / 255, data[i + 1]! / 255, data[i + 2]! / 255];
      if (x < 2 || y < 2 || x >= W - 2 || y >= H - 2) (frame += ((r + g + b) / 3) * 255), frameN++;
      if (x > 0) rough += Math.abs(data[i]! - data[i - 3]!) + Math.abs(data[i + 1]! - data[i - 2]!) + Math.abs(data[i + 2]! - data[i - 1]!);
      const max = Math.max(r, g, b), min = Math.min(r, g, b);
      if (max < 0.25 || (max - min) / max < 0.35) continue;
      coloured++;
      const h = max === r ? ((60 * (g - b)) / (max - min) + 360) % 360 : max === g ? (60 * (b - r)) / (max - min) + 120 : (60 * (r - g)) / (max - min) + 240;
      if (h < 20 || h >= 330) hues.red++;
      else if (h >= 40 && h < 70) hues.yellow++;
      else if (h >= 70 && h < 165) hues.green++;
      else if (h >= 190 && h < 255) hues.blue++;
    }
  for (const k of Object.keys(hues) as (keyof typeof hues)[]) hues[k] /= Math.max(coloured, 1);
  return { width: W, height: H, frame: frame / frameN, coloured: coloured / (W * H), hues, roughness: rough / (W * (H - 1) * 3) };
}

async function draw(pipeline: string, overrides: string[] = []) {
  const cwd = tempDir("sdc-default-");
  const p = await loadPipeline(path.join(REPO, pipeline), { cwd, overrides: ["output.dir=out", ...overrides] });
  const r = await run(p, { cwd, progress: false });
  return { r, files: r.outputs.filter((f) => f.endsWith(".png")) };
}

describe("the default pipeline draws an emoji with the shipped model", () => {
  it("pipelines/txt2img.yaml: one 32×32 image, a coloured figure on a white ground, drawn not noise", async () => {
    expect(fs.existsSync(path.join(REPO, "models", "emoji", "model_index.json"))).toBe(true);
    const { files } = await draw("pipelines/txt2img.yaml");
    expect(files).toHaveLength(1);
    const l = await look(files[0]!);
    expect([l.width, l.height]).toEqual([32, 32]);
    expect(l.frame, "white ground").toBeGreaterThan(215);
    expect(l.coloured, "a coloured figure").toBeGreaterThan(0.15);
    // a smooth drawing: neighbouring pixels differ little (seeded noise decoded differs by ~60 per channel)
    expect(l.roughness).toBeLessThan(30);
  });

  it.each([
    ["a red heart", "red"],
    ["a blue car", "blue"],
    ["yellow heart", "yellow"],
    // (green is what the model draws worst: "a green frog" comes out red; see its model card)
  ] as const)("the prompted colour wins: %s", async (prompt, colour) => {
    const { files } = await draw("pipelines/txt2img.yaml", [`sample.prompt=${prompt}`]);
    const l = await look(files[0]!);
    const top = (Object.entries(l.hues) as [string, number][]).sort((a, b) => b[1] - a[1])[0]![0];
    expect(top, JSON.stringify(l.hues)).toBe(colour);
  });

  it("pipelines/img2img.yaml and examples/emoji-grid.yaml run on it", async () => {
    const i = await draw("pipelines/img2img.yaml");
    expect(i.files).toHaveLength(1);
    expect((await look(i.files[0]!)).width).toBe(32);
    const g = await draw("examples/emoji-grid.yaml", ["sample.batch=1", "scheduler.steps=8"]);
    // four images and their grid
    expect(g.files).toHaveLength(5);
  });
});
