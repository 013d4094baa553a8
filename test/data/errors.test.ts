/**
 * Every bad dataset gives a located error (file:line:col with a caret, or the file, or the option
 * in the pipeline) that says what was expected and what to do. The rendered text is pinned.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { formatSummary } from "../../src/data/dataset.js";
import { image, jsonl, openProblems, openProject, trainProject } from "./helpers.js";

const px = await image(4, 4);

describe("imagefolder", () => {
  it("missing metadata (layout: imagefolder)", async () => {
    const cwd = trainProject("layout: imagefolder\n", { "data/a.png": px });
    expect(await openProblems(cwd)).toMatchInlineSnapshot(`
      "pipelines/p.yaml:9:13: no metadata.jsonl or metadata.csv in data/ (layout: imagefolder)
        9 |     layout: imagefolder
          |             ^^^^^^^^^^^
        hint: add metadata.jsonl with one line per image, e.g. {"file_name": "0001.png", "text": "a red circle"}, or use layout: kohya for images with .txt caption files"
    `);
  });

  it("metadata file named in the config does not exist", async () => {
    const cwd = trainProject("metadata: captions.jsonl\n", { "data/a.png": px });
    expect(await openProblems(cwd)).toMatchInlineSnapshot(`
      "pipelines/p.yaml:9:15: the metadata file data/captions.jsonl does not exist
        9 |     metadata: captions.jsonl
          |               ^^^^^^^^^^^^^^
        hint: metadata is relative to the subset's folder data/"
    `);
  });

  it("wrong caption column (JSON lines): names the line and lists the columns present", async () => {
    const cwd = trainProject("", {
      "data/metadata.jsonl": jsonl([
        { file_name: "a.png", caption: "a cat" },
        { file_name: "b.png", caption: "a dog" },
        { file_name: "c.png", caption: "a fox" },
      ]),
      "data/a.png": px,
      "data/b.png": px,
      "data/c.png": px,
    });
    expect(await openProblems(cwd)).toMatchInlineSnapshot(`
      "data/metadata.jsonl:1:1: line 1 has no "text" column; its columns: file_name, caption (and so do 2 more rows)
        1 | {"file_name":"a.png","caption":"a cat"}
          | ^
        hint: set train.data.caption_column to the column that holds the captions, one of: file_name, caption"
    `);
  });

  it("wrong image column (CSV): points at the header", async () => {
    const cwd = trainProject("caption_column: caption\n", { "data/metadata.csv": "image,caption\na.png,a cat\n", "data/a.png": px });
    expect(await openProblems(cwd)).toMatchInlineSnapshot(`
      "data/metadata.csv:1:1: metadata.csv has no "file_name" column; its columns: image, caption
        1 | image,caption
          | ^^^^^^^^^^^^^
        hint: set train.data.image_column to the column that holds the image file names, one of: image, caption"
    `);
  });

  it("malformed JSON line", async () => {
    const cwd = trainProject("", {
      "data/metadata.jsonl": '{"file_name": "a.png", "text": "a cat"}\n{"file_name": "b.png", "text": "a dog",}\n{"file_name": "c.png" "text": "x"}\n',
      "data/a.png": px,
      "data/b.png": px,
    });
    expect(await openProblems(cwd)).toMatchInlineSnapshot(`
      "data/metadata.jsonl:2:40: malformed JSON: unexpected '}'
        2 | {"file_name": "b.png", "text": "a dog",}
          |                                        ^
        hint: each line of a .jsonl file is one JSON object, e.g. {"file_name": "0001.png", "text": "a red circle"}

      data/metadata.jsonl:3:23: malformed JSON: unexpected '"'
        3 | {"file_name": "c.png" "text": "x"}
          |                       ^
        hint: each line of a .jsonl file is one JSON object, e.g. {"file_name": "0001.png", "text": "a red circle"}"
    `);
  });

  it("a row naming a missing file, a non-string caption", async () => {
    const cwd = trainProject("", {
      "data/metadata.jsonl": jsonl([
        { file_name: "a.png", text: "a cat" },
        { file_name: "missing.png", text: "a dog" },
        { file_name: "a.png", text: null },
      ]),
      "data/a.png": px,
    });
    expect(await openProblems(cwd)).toMatchInlineSnapshot(`
      "data/metadata.jsonl:2:14: "missing.png" does not exist (looked for data/missing.png)
        2 | {"file_name":"missing.png","text":"a dog"}
          |              ^^^^^^^^^^^^^
        hint: fix the file name, add the image, or remove this row

      data/metadata.jsonl:3:29: "text" is null, expected the caption text or a list of captions
        3 | {"file_name":"a.png","text":null}
          |                             ^^^^
        hint: a caption is a string, e.g. "a red circle on a blue background" ("" for none), or a list of strings to pick one from each time the image is drawn"
    `);
  });

  it("a list of captions: empty, an item that is not a string; a number", async () => {
    const cwd = trainProject("", {
      "data/metadata.jsonl": [
        '{"file_name": "a.png", "text": ["a cat", "a cat, sitting"]}',
        '{"file_name": "a.png", "text": []}',
        '{"file_name": "a.png", "text": ["a cat", 3, null]}',
        '{"file_name": "a.png", "text": ["a cat", ["nested"]]}',
        '{"file_name": "a.png", "text": 7}',
        "",
      ].join("\n"),
      "data/a.png": px,
    });
    expect(await openProblems(cwd)).toMatchInlineSnapshot(`
      "data/metadata.jsonl:2:32: "text" is an empty list, expected at least one caption
        2 | {"file_name": "a.png", "text": []}
          |                                ^^
        hint: give the image one caption or more, e.g. ["a red circle"], or "" for no caption

      data/metadata.jsonl:3:42: item 2 of "text" is number 3, expected a caption string
        3 | {"file_name": "a.png", "text": ["a cat", 3, null]}
          |                                          ^
        hint: every item of a list of captions is a string, e.g. ["a red circle", "a circle, red"]

      data/metadata.jsonl:4:42: item 2 of "text" is a list, expected a caption string
        4 | {"file_name": "a.png", "text": ["a cat", ["nested"]]}
          |                                          ^^^^^^^^^^
        hint: every item of a list of captions is a string, e.g. ["a red circle", "a circle, red"]

      data/metadata.jsonl:5:32: "text" is number 7, expected the caption text or a list of captions
        5 | {"file_name": "a.png", "text": 7}
          |                                ^
        hint: a caption is a string, e.g. "a red circle on a blue background" ("" for none), or a list of strings to pick one from each time the image is drawn"
    `);
  });

  it("path traversal and absolute paths", async () => {
    const cwd = trainProject("", {
      "data/metadata.jsonl": jsonl([
        { file_name: "a.png", text: "ok" },
        { file_name: "../outside.png", text: "escape" },
        { file_name: "sub/../../outside.png", text: "escape" },
        { file_name: "/etc/passwd", text: "absolute" },
      ]),
      "data/a.png": px,
      "outside.png": px,
    });
    expect(await openProblems(cwd)).toMatchInlineSnapshot(`
      "data/metadata.jsonl:2:14: "../outside.png" points outside the data folder data/
        2 | {"file_name":"../outside.png","text":"escape"}
          |              ^^^^^^^^^^^^^^^^
        hint: sdc reads only images inside the data folder: copy the image into it and name it relative to the metadata file

      data/metadata.jsonl:3:14: "sub/../../outside.png" points outside the data folder data/
        3 | {"file_name":"sub/../../outside.png","text":"escape"}
          |              ^^^^^^^^^^^^^^^^^^^^^^^
        hint: sdc reads only images inside the data folder: copy the image into it and name it relative to the metadata file

      data/metadata.jsonl:4:14: "/etc/passwd" is an absolute path; image paths are relative to the metadata file's folder data/
        4 | {"file_name":"/etc/passwd","text":"absolute"}
          |              ^^^^^^^^^^^^^
        hint: write the path relative to the folder of the metadata file, and keep the images inside it"
    `);
  });

  it("symbolic link pointing outside the data folder", async () => {
    const cwd = trainProject("", {
      "data/metadata.jsonl": jsonl([
        { file_name: "a.png", text: "ok" },
        { file_name: "link.png", text: "escape" },
      ]),
      "data/a.png": px,
      "outside/secret.png": px,
    });
    fs.symlinkSync("../outside/secret.png", path.join(cwd, "data", "link.png"));
    expect(await openProblems(cwd)).toMatchInlineSnapshot(`
      "data/metadata.jsonl:2:14: "link.png" is a symbolic link to a file outside the data folder data/
        2 | {"file_name":"link.png","text":"escape"}
          |              ^^^^^^^^^^
        hint: sdc reads only files inside data.dir: copy the image into the data folder instead of linking to it"
    `);
  });

  it("CSV row with a missing field, unterminated quote", async () => {
    const cwd = trainProject("", { "data/metadata.csv": 'file_name,text\na.png\nb.png,"never closed\n', "data/a.png": px, "data/b.png": px });
    expect(await openProblems(cwd)).toMatchInlineSnapshot(`
      "data/metadata.csv:2:1: row on line 2 has 1 field, the header has 2 (file_name, text)
        2 | a.png
          | ^^^^^
        hint: give every row one value per header column; quote values that contain commas: "a, b"

      data/metadata.csv:3:7: this quoted field is never closed
        3 | b.png,"never closed
          |       ^
        hint: end it with a double quote; write a quote inside a quoted field as """
    `);
  });
});

describe("kohya", () => {
  it("symbolic link pointing outside the data folder", async () => {
    const cwd = trainProject("", { "data/10_cat/a.png": px, "outside/secret.png": px });
    fs.symlinkSync("../../outside/secret.png", path.join(cwd, "data", "10_cat", "b.png"));
    expect(await openProblems(cwd)).toMatchInlineSnapshot(`
      "data/10_cat/b.png: symbolic link to "../../outside/secret.png", outside the data folder data/
        hint: sdc reads only files inside data.dir: copy the file into the data folder instead of linking to it, or remove the link"
    `);
  });

  it("symbolic link to a folder outside", async () => {
    const cwd = trainProject("", { "data/a.png": px, "outside/x/secret.png": px });
    fs.symlinkSync("../outside/x", path.join(cwd, "data", "5_x"));
    expect(await openProblems(cwd)).toMatchInlineSnapshot(`
      "data/5_x: symbolic link to "../outside/x", outside the data folder data/
        hint: sdc reads only files inside data.dir: copy the folder's files into the data folder instead of linking to them, or remove the link"
    `);
  });
});

describe("folders", () => {
  it("empty folder", async () => {
    const cwd = trainProject("", { "data/notes.md": "nothing to see" });
    expect(await openProblems(cwd)).toMatchInlineSnapshot(`
      "pipelines/p.yaml:8:10: no training images in data/
        8 |     dir: ../data
          |          ^^^^^^^
        hint: put the images there with a metadata.jsonl or metadata.csv naming them and their captions (imagefolder layout), or with same-named .txt caption files, optionally in N_name repeat folders such as "10_sks dog/" (kohya layout); sdc reads .png, .jpg, .jpeg and .webp"
    `);
  });

  it("empty subset among others, subset folder missing, subset escaping data.dir", async () => {
    const cwd = trainProject("subsets:\n  - dir: cats\n  - dir: empty\n  - dir: nowhere\n", { "data/cats/a.png": px, "data/empty/.keep": "" });
    expect(await openProblems(cwd)).toMatchInlineSnapshot(`
      "pipelines/p.yaml:11:14: no training images in data/empty/
        11 |       - dir: empty
           |              ^^^^^
        hint: put the images there with a metadata.jsonl or metadata.csv naming them and their captions (imagefolder layout), or with same-named .txt caption files, optionally in N_name repeat folders such as "10_sks dog/" (kohya layout); sdc reads .png, .jpg, .jpeg and .webp

      pipelines/p.yaml:12:14: the subset folder data/nowhere/ does not exist
        12 |       - dir: nowhere
           |              ^^^^^^^
        hint: a subset's dir is relative to data.dir"
    `);
  });

  it("both metadata.jsonl and metadata.csv", async () => {
    const cwd = trainProject("", { "data/metadata.jsonl": jsonl([{ file_name: "a.png", text: "x" }]), "data/metadata.csv": "file_name,text\na.png,x\n", "data/a.png": px });
    expect(await openProblems(cwd)).toMatchInlineSnapshot(`
      "pipelines/p.yaml:8:10: data/ holds both metadata.jsonl and metadata.csv
        8 |     dir: ../data
          |          ^^^^^^^
        hint: set train.data.metadata to the one to read (e.g. metadata: metadata.jsonl), or remove the other"
    `);
  });

  it("metadata naming no images", async () => {
    const cwd = trainProject("", { "data/metadata.jsonl": "\n\n", "data/a.png": px });
    expect(await openProblems(cwd)).toMatchInlineSnapshot(`
      "pipelines/p.yaml:8:10: data/metadata.jsonl names no images
        8 |     dir: ../data
          |          ^^^^^^^
        hint: add one line per image to metadata.jsonl, e.g. {"file_name": "0001.png", "text": "a red circle"}"
    `);
  });
});

describe("unreadable images", () => {
  const files = {
    "data/metadata.jsonl": jsonl([
      { file_name: "a.png", text: "good" },
      { file_name: "bad.png", text: "corrupt" },
    ]),
    "data/a.png": px,
    "data/bad.png": "this is not a PNG file",
  };

  it("are skipped and counted by default", async () => {
    const ds = await openProject(trainProject("", files));
    expect(ds.samples.map((s) => s.rel)).toEqual(["a.png"]);
    expect(ds.summary.skipped).toHaveLength(1);
    expect(ds.summary.skipped[0]!.file).toBe("data/bad.png");
    expect(formatSummary(ds).map((l) => l.replace(/: (Input|unsupported).*/, ": <sharp's reason>"))).toMatchInlineSnapshot(`
      [
        "data: 1 image in 1 subset, 1 sample per epoch, 1 bucket",
        "  data/: imagefolder (data/metadata.jsonl), 1 image, 1 sample per epoch",
        "  buckets: 512x512 (1)",
        "  skipped 1 image:",
        "    data/bad.png: <sharp's reason>",
      ]
    `);
  });

  it("fail the run with on_bad_image: error, located at the metadata row", async () => {
    const out = await openProblems(trainProject("on_bad_image: error\n", files));
    expect(out.replace(/: (Input|unsupported)[^\n]*/, ": <sharp's reason>")).toMatchInlineSnapshot(`
      "data/metadata.jsonl:2:14: cannot read the image data/bad.png: <sharp's reason>
        2 | {"file_name":"bad.png","text":"corrupt"}
          |              ^^^^^^^^^
        hint: replace or remove the file, or set on_bad_image: skip to leave unreadable images out"
    `);
  });

  it("kohya: named by file", async () => {
    const out = await openProblems(trainProject("on_bad_image: error\n", { "data/a.png": px, "data/bad.png": "garbage" }));
    expect(out.replace(/: (Input|unsupported)[^\n]*/, ": <sharp's reason>")).toMatchInlineSnapshot(`
      "data/bad.png: cannot read the image: <sharp's reason>
        hint: replace or remove the file, or set on_bad_image: skip to leave unreadable images out"
    `);
  });

  it("all images unreadable", async () => {
    const out = await openProblems(trainProject("", { "data/bad.png": "garbage" }));
    expect(out.replace(/\(Input[^)]*\)|\(unsupported[^)]*\)/, "(<sharp's reason>)")).toMatchInlineSnapshot(`
      "pipelines/p.yaml:8:10: the one image in data/ cannot be used
        8 |     dir: ../data
          |          ^^^^^^^
        hint: the skipped images: data/bad.png (<sharp's reason>)"
    `);
  });
});
