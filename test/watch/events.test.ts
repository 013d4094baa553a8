/**
 * The printed form of watch events that the end-to-end tests do not reach (run lines, watched-set
 * changes, up-to-date compiles, internal errors) and their JSON form: paths relative to the
 * working directory, no plan inside.
 */
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import type { CompileResult } from "../../src/compiler/compile.js";
import type { RunResult } from "../../src/runtime/run.js";
import { eventJson, formatEvent, type WatchEvent } from "../../src/watch/events.js";

const CWD = path.resolve("/proj");
const at = (rel: string) => path.join(CWD, rel);
const runResult: RunResult = { outputs: [at("out/p/00003-42.png")], summary: "", cancelled: false, ep: "cpu", seconds: 2.5, itPerSec: 8.04 };
const compileResult = (over: Partial<CompileResult>): CompileResult =>
  ({ dir: at("compiled/p"), plan: { huge: true } as never, rebuilt: [], reused: [], upToDate: false, seconds: 0.12, summary: "", ...over }) as CompileResult;

describe("formatEvent", () => {
  const cases: [WatchEvent, string | null][] = [
    [{ type: "run-started", index: 3, dir: at("compiled/p") }, "run #3 started"],
    [{ type: "run-finished", index: 3, result: runResult }, "run #3 finished in 2.50 s (8.0 it/s, cpu): out/p/00003-42.png"],
    [{ type: "run-cancelled", index: 3, reason: "superseded" }, "run #3 cancelled (a newer plan replaces it)"],
    [{ type: "run-cancelled", index: 4, reason: "closed" }, "run #4 cancelled"],
    [
      { type: "run-failed", index: 5, internal: false, problems: [{ message: "init image is 13×7 pixels", subject: "sample.init_image", hint: "use a multiple of 8" }] },
      "run #5 failed:\nsample.init_image: init image is 13×7 pixels\n  hint: use a multiple of 8",
    ],
    [
      { type: "watching", first: false, files: [], added: [at("lora.safetensors")], removed: [at("old.yaml")], skipped: [], pipeline: [at("p.yaml")] },
      "now also watching lora.safetensors; stopped watching old.yaml",
    ],
    [
      {
        type: "watching",
        first: true,
        files: [at("p.yaml"), at("base.yaml"), at("m/unet/config.json"), at("m/model_index.json"), at("style.safetensors")],
        added: [],
        removed: [],
        skipped: [{ file: at("out/x.safetensors"), reason: "it is inside the output folder" }],
        pipeline: [at("p.yaml"), at("base.yaml")],
        model: at("m"),
      },
      "watching p.yaml, base.yaml and 2 model files in m; also style.safetensors\n  not watching out/x.safetensors: it is inside the output folder",
    ],
    [{ type: "watching", first: false, files: [], added: [], removed: [], skipped: [], pipeline: [] }, null],
    [{ type: "change", files: [{ file: at("p.yaml"), kind: "change" }, { file: at("b.yaml"), kind: "unlink" }, { file: at("c.yaml"), kind: "add" }] }, "changed: p.yaml, b.yaml (deleted), c.yaml (created)"],
    [{ type: "compiled", changed: [{ file: at("p.yaml"), kind: "change" }], result: compileResult({ upToDate: true }), seconds: 0.2 }, "plan unchanged (0.20 s): compiled/p is up to date"],
    [
      { type: "compiled", changed: [{ file: at("p.yaml"), kind: "change" }], result: compileResult({ rebuilt: ["unet"], reused: ["text_encoder", "vae_decoder", "vae_encoder"], seconds: 1.5 }), seconds: 1.72 },
      "plan ready (1.72 s after the save, compile 1.50 s): rebuilt unet; kept text_encoder, vae_decoder, vae_encoder → compiled/p",
    ],
    [
      { type: "error", changed: [], problems: [{ message: "internal error: EACCES" }], internal: true, kept: null, stack: "Error: EACCES\n    at x" },
      "internal error: EACCES\nError: EACCES\n    at x\ninternal error; no plan compiled yet. Save again to retry.",
    ],
    [{ type: "log", line: "  built unet: 3 nodes" }, "  built unet: 3 nodes"],
    [{ type: "closed" }, "stopped watching"],
  ];
  it.each(cases.map(([e, s], i) => ({ i, e, s })))("$e.type ($i)", ({ e, s }) => {
    expect(formatEvent(e, CWD)).toBe(s);
  });
});

describe("eventJson", () => {
  it("is one line, with paths relative to the working directory and without the plan", () => {
    const c = eventJson({ type: "compiled", changed: [{ file: at("p.yaml"), kind: "change" }], result: compileResult({ rebuilt: ["unet"] }), seconds: 0.3 }, CWD);
    expect(c).not.toContain("\n");
    expect(JSON.parse(c)).toEqual({ type: "compiled", changed: [{ file: "p.yaml", kind: "change" }], dir: "compiled/p", rebuilt: ["unet"], reused: [], upToDate: false, seconds: 0.3, compileSeconds: 0.12 });
    expect(JSON.parse(eventJson({ type: "run-finished", index: 3, result: runResult }, CWD))).toEqual({ type: "run-finished", index: 3, outputs: ["out/p/00003-42.png"], seconds: 2.5, itPerSec: 8.04, ep: "cpu" });
    const err = JSON.parse(eventJson({ type: "error", changed: [], problems: [{ message: "bad", at: { file: "p.yaml", line: 2, col: 3 } }], internal: false, kept: at("compiled/p") }, CWD));
    expect(err).toEqual({ type: "error", changed: [], problems: [{ message: "bad", at: { file: "p.yaml", line: 2, col: 3 } }], internal: false, kept: "compiled/p" });
  });
});
