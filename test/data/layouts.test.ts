/** The layouts: imagefolder (JSON lines, CSV, custom columns), kohya (caption files, N_name folders), subsets. */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { TrainDataSection } from "../../src/config/schema.js";
import { formatSummary, openDataset } from "../../src/data/index.js";
import { relativeDisplay } from "../../src/data/problems.js";
import { image, jsonl, openProject, tempDir, trainProject, writeFiles } from "./helpers.js";

const px = await image(8, 8);
const wide = await image(16, 8);

const captions = (ds: { samples: { rel: string; caption: string; repeats: number }[] }) => ds.samples.map((s) => [s.rel, s.caption, s.repeats]);

describe("imagefolder", () => {
  it("metadata.jsonl: rows in file order, paths relative to the metadata file, extra columns ignored", async () => {
    const ds = await openProject(
      trainProject("", {
        "data/metadata.jsonl": jsonl([
          { file_name: "b.png", text: "second file first", extra: 1 },
          { file_name: "sub/a.png", text: "in a sub-folder" },
        ]),
        "data/b.png": px,
        "data/sub/a.png": wide,
        "data/unlisted.png": px,
      }),
    );
    expect(captions(ds)).toEqual([
      ["b.png", "second file first", 1],
      ["sub/a.png", "in a sub-folder", 1],
    ]);
    expect(ds.samples[1]!.size).toEqual({ width: 16, height: 8 });
    expect(ds.summary.unlisted).toBe(1);
    expect(ds.summary.subsets[0]).toMatchObject({ layout: "imagefolder", metadata: "data/metadata.jsonl", images: 2 });
  });

  it("metadata.csv with quoted fields, a BOM and CRLF line ends; configurable columns", async () => {
    const ds = await openProject(
      trainProject("image_column: image\ncaption_column: caption\n", {
        "data/metadata.csv": '\uFEFFimage,caption\r\na.png,"red, round"\r\nb.png,"a ""quoted"" word"\r\n\r\nc.png,"two\nlines"\r\n',
        "data/a.png": px,
        "data/b.png": px,
        "data/c.png": px,
      }),
    );
    expect(captions(ds)).toEqual([
      ["a.png", "red, round", 1],
      ["b.png", 'a "quoted" word', 1],
      ["c.png", "two\nlines", 1],
    ]);
  });

  it("explicit metadata file and repeats", async () => {
    const ds = await openProject(
      trainProject("metadata: captions/train.jsonl\nrepeats: 3\n", {
        "data/captions/train.jsonl": jsonl([
          { file_name: "x.png", text: "x" },
          { file_name: "../top.png", text: "up one level, still inside data.dir" },
        ]),
        "data/captions/x.png": px,
        "data/top.png": px,
      }),
    );
    expect(captions(ds)).toEqual([
      ["captions/x.png", "x", 3],
      ["top.png", "up one level, still inside data.dir", 3],
    ]);
    expect(ds.summary.samplesPerEpoch).toBe(6);
  });
});

describe("kohya", () => {
  it("caption files, N_name repeat folders and the class token as fallback caption", async () => {
    const ds = await openProject(
      trainProject("", {
        "data/10_sks dog/1.png": px,
        "data/10_sks dog/1.txt": "sks dog on a sofa\nsecond line is ignored\n",
        "data/10_sks dog/2.jpg": await image(8, 8, () => [1, 2, 3], "jpeg"),
        "data/10_sks dog/3.webp": await image(8, 8, () => [1, 2, 3], "webp"),
        "data/10_sks dog/3.txt": "",
        "data/1_dog/4.PNG": px,
        "data/1_dog/4.txt": "\uFEFF  a dog  \n",
        "data/loose.png": px,
        "data/notes/5.png": px,
        "data/10_sks dog/nested/6.png": px,
        "data/.hidden.png": px,
      }),
    );
    expect(ds.samples.map((s) => [s.rel, s.caption, s.captionFrom, s.repeats])).toEqual([
      ["loose.png", "", "none", 1],
      ["10_sks dog/1.png", "sks dog on a sofa", "caption file", 10],
      ["10_sks dog/2.jpg", "sks dog", "class token", 10],
      ["10_sks dog/3.webp", "sks dog", "class token", 10],
      ["1_dog/4.PNG", "a dog", "caption file", 1],
    ]);
    expect(ds.summary.samplesPerEpoch).toBe(1 + 30 + 1);
    expect(ds.summary.uncaptioned).toBe(1);
    expect(formatSummary(ds)).toMatchInlineSnapshot(`
      [
        "data: 5 images in 1 subset, 32 samples per epoch, 1 bucket",
        "  data/: kohya, 5 images, 32 samples per epoch",
        "    data/: 1 image × 1",
        "    data/10_sks dog/: 3 images × 10, class token "sks dog"",
        "    data/1_dog/: 1 image × 1, class token "dog"",
        "  buckets: 512x512 (5)",
        "  1 image without a caption (no caption file, no class token): trained with the empty caption",
        "  ignored data/notes/ (not an N_name repeat folder)",
        "  ignored data/10_sks dog/nested/ (inside a repeat folder)",
      ]
    `);
  });

  it("a subset folder named N_name; explicit repeats and class_token win over the folder name", async () => {
    const cwd = trainProject("subsets:\n  - dir: 5_cat\n  - dir: 5_cat\n    repeats: 2\n    class_token: kitty\n", { "data/5_cat/a.png": px });
    const ds = await openProject(cwd);
    expect(ds.samples.map((s) => [s.subset, s.caption, s.repeats])).toEqual([
      [0, "cat", 5],
      [1, "kitty", 2],
    ]);
  });

  it("caption_extension", async () => {
    const ds = await openProject(trainProject("caption_extension: .caption\n", { "data/a.png": px, "data/a.caption": "from .caption", "data/a.txt": "from .txt" }));
    expect(captions(ds)).toEqual([["a.png", "from .caption", 1]]);
  });

  it("symbolic links inside the data folder are followed", async () => {
    const cwd = trainProject("", { "data/store/a.png": px, "data/store/a.txt": "stored" });
    fs.mkdirSync(path.join(cwd, "data", "3_linked"));
    fs.symlinkSync("../store/a.png", path.join(cwd, "data", "3_linked", "a.png"));
    const ds = await openProject(cwd);
    expect(captions(ds)).toEqual([["3_linked/a.png", "linked", 3]]);
    expect(ds.summary.ignored).toEqual(["data/store/ (not an N_name repeat folder)"]);
  });
});

describe("subsets and auto-detection", () => {
  it("each subset with its own layout, repeats and caption settings; data-level values are defaults", async () => {
    const cwd = trainProject(
      [
        "caption:",
        "  prefix: 'photo, '",
        "subsets:",
        "  - dir: hf",
        "  - dir: kohya",
        "    repeats: 4",
        "    caption:",
        "      suffix: ', kohya'",
        "",
      ].join("\n"),
      {
        "data/hf/metadata.jsonl": jsonl([{ file_name: "a.png", text: "from jsonl" }]),
        "data/hf/a.png": px,
        "data/kohya/b.png": px,
        "data/kohya/b.txt": "from txt",
      },
    );
    const ds = await openProject(cwd);
    expect(ds.samples.map((s) => [s.rel, s.subset, s.caption, s.repeats])).toEqual([
      ["hf/a.png", 0, "from jsonl", 1],
      ["kohya/b.png", 1, "from txt", 4],
    ]);
    expect(ds.spec.subsets.map((s) => [s.caption.prefix, s.caption.suffix])).toEqual([
      ["photo, ", ""],
      ["photo, ", ", kohya"],
    ]);
    expect(ds.summary.subsets.map((s) => [s.dir, s.layout, s.samplesPerEpoch])).toEqual([
      ["data/hf/", "imagefolder", 1],
      ["data/kohya/", "kohya", 4],
    ]);
  });

  it("layout: kohya ignores a metadata file", async () => {
    const ds = await openProject(trainProject("layout: kohya\n", { "data/metadata.jsonl": jsonl([{ file_name: "a.png", text: "json" }]), "data/a.png": px, "data/a.txt": "txt" }));
    expect(captions(ds)).toEqual([["a.png", "txt", 1]]);
  });

  it("opens without a pipeline: problems then name the option", async () => {
    const dir = tempDir();
    writeFiles(dir, { "a.png": px });
    const data = TrainDataSection.parse({ dir, layout: "imagefolder" });
    await expect(openDataset(data, { display: relativeDisplay(dir) })).rejects.toThrowErrorMatchingInlineSnapshot(`
      [UserError: train.data.layout: no metadata.jsonl or metadata.csv in ./ (layout: imagefolder)
        hint: add metadata.jsonl with one line per image, e.g. {"file_name": "0001.png", "text": "a red circle"}, or use layout: kohya for images with .txt caption files]
    `);
  });

  it("EXIF orientation: the upright size is used for buckets", async () => {
    const ds = await openProject(trainProject("", { "data/r.jpg": await image(16, 8, () => [9, 9, 9], "jpeg", 6) }));
    expect(ds.samples[0]!.size).toEqual({ width: 8, height: 16 });
  });
});
