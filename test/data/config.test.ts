/**
 * Bad `train.data` configs: the schema's own errors for the new options (through loadPipeline), and
 * the combinations `checkDataConfig` refuses (bucket bounds, subset folders, caches), each located
 * at the option with a hint. Rendered text pinned with inline snapshots.
 */
import { describe, expect, it } from "vitest";
import { checkDataConfig } from "../../src/data/config.js";
import { isUserError, renderProblems } from "../../src/util/errors.js";
import { HEAD, P, problems } from "../config/helpers.js";
import { image, jsonl, loadTrain, openProblems, trainProject } from "./helpers.js";

const train = (data: string) => `${HEAD}train:\n  target: unet\n  steps: 10\n  data:\n    dir: ../data\n${data.replace(/^(?=.)/gm, "    ")}`;
const schemaProblems = (data: string) => problems({ [P]: train(data), "data/a.png": "" });

/** The data option problems, as loading the pipeline reports them (sdc validate sees them too). */
async function dataProblems(data: string): Promise<string> {
  try {
    const p = await loadTrain(trainProject(data));
    const list = checkDataConfig(p.config.train!.data, p.where);
    return list.length ? renderProblems(list) : "ok";
  } catch (e) {
    if (isUserError(e)) return renderProblems(e.problems);
    throw e;
  }
}

describe("schema", () => {
  it("the old single-folder form still validates, with the new defaults", async () => {
    const p = await loadTrain(trainProject("resolution: 64\nrandom_flip: true\n"));
    const d = p.config.train!.data;
    expect(d).toMatchObject({ layout: "auto", image_column: "file_name", caption_column: "text", caption_extension: ".txt", center_crop: true, cache_latents: true, cache_text_embeddings: false, on_bad_image: "skip", background: "#ffffff" });
    expect(d.buckets).toEqual({ enabled: false, step: 64, min_side: 256, max_side: 1024, no_upscale: false });
    expect(d.caption).toEqual({ prefix: "", suffix: "", dropout: 0, shuffle: false, keep_tokens: 0 });
    expect(d.subsets).toBeUndefined();
    expect(checkDataConfig(d, p.where)).toEqual([]);
  });

  it("unknown layout", async () => {
    expect(await schemaProblems("layout: hf\n")).toMatchInlineSnapshot(`
      "pipelines/p.yaml:9:13: train.data.layout: "hf" is not an allowed value
        9 |     layout: hf
          |             ^^
        hint: allowed: auto, imagefolder, kohya"
    `);
  });

  it("bucket step not a multiple of 8", async () => {
    expect(await schemaProblems("buckets:\n  enabled: true\n  step: 60\n")).toMatchInlineSnapshot(`
      "pipelines/p.yaml:11:13: train.data.buckets.step: 60 is not a multiple of 8
        11 |       step: 60
           |             ^^
        hint: expected an integer from 8 to 1024 — bucket sides are multiples of this many pixels"
    `);
  });

  it("caption dropout above 1, keep_tokens negative", async () => {
    expect(await schemaProblems("caption:\n  dropout: 1.5\n  keep_tokens: -1\n")).toMatchInlineSnapshot(`
      "pipelines/p.yaml:10:16: train.data.caption.dropout: 1.5 is too large
        10 |       dropout: 1.5
           |                ^^^
        hint: expected a number from 0 to 1 — probability that a drawn sample's caption becomes the empty caption

      pipelines/p.yaml:11:20: train.data.caption.keep_tokens: -1 is too small
        11 |       keep_tokens: -1
           |                    ^^
        hint: expected an integer from 0 to 1000 — with shuffle: the first N tags keep their place"
    `);
  });

  it("on_bad_image value, background colour, caption extension", async () => {
    expect(await schemaProblems("on_bad_image: crash\nbackground: red\ncaption_extension: txt\n")).toMatchInlineSnapshot(`
      "pipelines/p.yaml:9:19: train.data.on_bad_image: "crash" is not an allowed value
        9 |     on_bad_image: crash
          |                   ^^^^^
        hint: allowed: skip, error

      pipelines/p.yaml:10:17: train.data.background: a colour is written #rrggbb, e.g. #ffffff for white
        10 |     background: red
           |                 ^^^
        hint: colour transparent images are composited on

      pipelines/p.yaml:11:24: train.data.caption_extension: a caption extension is a file suffix such as .txt
        11 |     caption_extension: txt
           |                        ^^^
        hint: kohya: the extension of caption files next to the images"
    `);
  });

  it("subsets: unknown key, missing dir, empty list", async () => {
    expect(await schemaProblems("subsets:\n  - dir: a\n    repeat: 3\n  - repeats: 2\n")).toMatchInlineSnapshot(`
      "pipelines/p.yaml:11:9: unknown key "repeat" in train.data.subsets[0]
        11 |         repeat: 3
           |         ^^^^^^
        hint: did you mean "repeats"?

      pipelines/p.yaml:12:9: missing required key "dir" in train.data.subsets[1]
        12 |       - repeats: 2
           |         ^^^^^^^^^^
        hint: add dir: <a string> — a folder inside data.dir ('.' for data.dir itself)"
    `);
    expect(await schemaProblems("subsets: []\n")).toMatchInlineSnapshot(`
      "pipelines/p.yaml:9:14: train.data.subsets: needs at least 1 item
        9 |     subsets: []
          |              ^^
        hint: expected a list of mappings"
    `);
  });

  it("a subset's caption section is strict too", async () => {
    expect(await schemaProblems("subsets:\n  - dir: a\n    caption:\n      shufle: true\n")).toMatchInlineSnapshot(`
      "pipelines/p.yaml:12:11: unknown key "shufle" in train.data.subsets[0].caption
        12 |           shufle: true
           |           ^^^^^^
        hint: did you mean "shuffle"?"
    `);
  });
});

describe("checkDataConfig", () => {
  it("latent cache with random crops: located at center_crop", async () => {
    expect(await dataProblems("center_crop: false\n")).toMatchInlineSnapshot(`
      "pipelines/p.yaml:9:18: random crops (center_crop: false) cannot be used with cached latents (cache_latents is on): the cache would keep one crop of each image for every epoch
        9 |     center_crop: false
          |                  ^^^^^
        hint: set center_crop: true, or cache_latents: false to encode a fresh crop every time"
    `);
    expect(await dataProblems("center_crop: false\ncache_latents: false\n")).toBe("ok");
  });

  it("text-embedding cache with caption dropout or shuffle: located at each option (inherited ones once)", async () => {
    const yaml = ["cache_text_embeddings: true", "caption:", "  dropout: 0.1", "subsets:", "  - dir: a", "  - dir: b", "    caption:", "      shuffle: true", ""].join("\n");
    expect(await dataProblems(yaml)).toMatchInlineSnapshot(`
      "pipelines/p.yaml:11:16: train.data.caption.dropout: caption dropout (0.1) cannot be used with cached text embeddings (cache_text_embeddings: true): the cache holds one embedding per caption, encoded once
        11 |       dropout: 0.1
           |                ^^^
        hint: set cache_text_embeddings: false to encode each drawn caption, or remove caption.dropout

      pipelines/p.yaml:16:20: train.data.subsets[1].caption.shuffle: tag shuffling cannot be used with cached text embeddings (cache_text_embeddings: true): the cache holds one embedding per caption, encoded once
        16 |           shuffle: true
           |                    ^^^^
        hint: set cache_text_embeddings: false to encode each drawn caption, or remove caption.shuffle"
    `);
    expect(await dataProblems("cache_text_embeddings: true\ncaption:\n  prefix: 'x, '\n")).toBe("ok");
  });

  it("text-embedding cache with a list of captions: located at the first such row, with where the cache is turned on", async () => {
    const px = await image(4, 4);
    const rows = jsonl([
      { file_name: "a.png", text: ["a cat"] },
      { file_name: "a.png", text: ["a cat", "a cat, sitting"] },
      { file_name: "a.png", text: "a cat" },
      { file_name: "a.png", text: ["a", "b", "c"] },
    ]);
    const cwd = trainProject("cache_text_embeddings: true\n", { "data/metadata.jsonl": rows, "data/a.png": px });
    expect(await openProblems(cwd)).toMatchInlineSnapshot(`
      "data/metadata.jsonl:2:29: "text" holds 2 captions, one picked each time the image is drawn, which cached text embeddings cannot hold (cache_text_embeddings: true, set at pipelines/p.yaml:9): the cache holds one embedding per caption, encoded once (and so does 1 more row)
        2 | {"file_name":"a.png","text":["a cat","a cat, sitting"]}
          |                             ^^^^^^^^^^^^^^^^^^^^^^^^^^
        hint: set train.data.cache_text_embeddings to false to encode each drawn caption, or give each image one caption"
    `);
    // one caption to each row (one-item lists too): the cache can hold them
    const single = trainProject("cache_text_embeddings: true\n", { "data/metadata.jsonl": jsonl([{ file_name: "a.png", text: ["a cat"] }, { file_name: "a.png", text: "a dog" }]), "data/a.png": px });
    expect(await openProblems(single)).toBe("ok");
    // without the cache the same rows open
    expect(await openProblems(trainProject("", { "data/metadata.jsonl": rows, "data/a.png": px }))).toBe("ok");
  });

  it("bucket bounds", async () => {
    expect(await dataProblems("buckets:\n  enabled: true\n  min_side: 1100\n  max_side: 1000\n")).toMatchInlineSnapshot(`
      "pipelines/p.yaml:11:17: train.data.buckets.min_side: 1100 is not a multiple of the bucket step 64
        11 |       min_side: 1100
           |                 ^^^^
        hint: use a multiple of 64, e.g. 1088

      pipelines/p.yaml:11:17: train.data.buckets.min_side: 1100 is larger than max_side 1000
        11 |       min_side: 1100
           |                 ^^^^
        hint: min_side is the smallest bucket side, max_side the largest

      pipelines/p.yaml:12:17: train.data.buckets.max_side: 1000 is not a multiple of the bucket step 64
        12 |       max_side: 1000
           |                 ^^^^
        hint: use a multiple of 64, e.g. 960"
    `);
    expect(await dataProblems("buckets:\n  enabled: true\n  step: 64\n  min_side: 200\n")).toMatchInlineSnapshot(`
      "pipelines/p.yaml:12:17: train.data.buckets.min_side: 200 is not a multiple of the bucket step 64
        12 |       min_side: 200
           |                 ^^^
        hint: use a multiple of 64, e.g. 192"
    `);
    expect(await dataProblems("resolution: 64\nbuckets:\n  enabled: true\n")).toMatchInlineSnapshot(`
      "pipelines/p.yaml:10:5: no bucket fits: with sides from 256 to 1024 in steps of 64, none has an area of at most 64² (resolution)
        10 |     buckets:
           |     ^^^^^^^
        hint: lower buckets.min_side to at most 64, or raise resolution"
    `);
    expect(await dataProblems("buckets:\n  min_side: 1100\n  max_side: 1000\n")).toBe("ok"); // not enabled: not checked
  });

  it("subset folders outside data.dir", async () => {
    expect(await dataProblems("subsets:\n  - dir: ../elsewhere\n  - dir: /abs/path\n  - dir: ok/../fine\n")).toMatchInlineSnapshot(`
      "pipelines/p.yaml:10:14: train.data.subsets[0].dir: "../elsewhere" is not a folder inside data.dir
        10 |       - dir: ../elsewhere
           |              ^^^^^^^^^^^^
        hint: a subset's dir is relative to data.dir and stays inside it (no absolute paths, no '..'); point data.dir at the folder that holds all subsets

      pipelines/p.yaml:11:14: train.data.subsets[1].dir: "/abs/path" is not a folder inside data.dir
        11 |       - dir: /abs/path
           |              ^^^^^^^^^
        hint: a subset's dir is relative to data.dir and stays inside it (no absolute paths, no '..'); point data.dir at the folder that holds all subsets"
    `);
  });
});

describe("options named in dataset errors", () => {
  it("a wrong image_column written in the pipeline: the hint says where", async () => {
    const cwd = trainProject("image_column: path\n", { "data/metadata.jsonl": jsonl([{ file_name: "a.png", text: "x" }]), "data/a.png": await image(4, 4) });
    expect(await openProblems(cwd)).toMatchInlineSnapshot(`
      "data/metadata.jsonl:1:1: line 1 has no "path" column; its columns: file_name, text
        1 | {"file_name":"a.png","text":"x"}
          | ^
        hint: set train.data.image_column to the column that holds the image file names, one of: file_name, text (it is set at pipelines/p.yaml:9)"
    `);
  });
});
