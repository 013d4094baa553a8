/** The Job the API shows is its spec folded with its event log: takeovers and late events of a lost attempt. */
import { describe, expect, it } from "vitest";
import type { JobEvent } from "../../src/serve/api.js";
import { foldJob, type JobSpec, type StoredEvent } from "../../src/serve/jobs.js";

const spec: JobSpec = {
  id: "j1",
  pipeline: "t2i",
  kind: "txt2img",
  file: "pipelines/t2i.yaml",
  yaml: "",
  overrides: [],
  settings: { prompt: "a cat", negative_prompt: "", steps: 4, guidance: 3, seed: 1, width: 16, height: 16, scheduler: "ddim", batch: 1 },
  createdAt: "2026-01-01T00:00:00.000Z",
};

const log = (...items: [JobEvent, string?][]): StoredEvent[] => items.map(([ev, worker], i) => ({ seq: i + 1, at: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(), ...(worker ? { worker } : {}), ev }));

describe("foldJob", () => {
  it("a job taken over: the new attempt's progress, the ending worker, and nothing of the lost attempt after the end", () => {
    const job = foldJob(
      spec,
      log(
        [{ type: "state", state: "queued" }],
        [{ type: "state", state: "running" }, "a"],
        [{ type: "progress", step: 1, total: 4, unit: "step" }, "a"],
        [{ type: "preview", step: 1, url: "/results/j1/previews/step-0001.png" }, "a"],
        [{ type: "state", state: "running" }, "b"],
        [{ type: "progress", step: 1, total: 4, unit: "step" }, "b"],
        [{ type: "progress", step: 3, total: 4, unit: "step" }, "a"], // a still going: shown while the job runs
        [{ type: "progress", step: 4, total: 4, unit: "step" }, "b"],
        [{ type: "result", url: "/results/j1/00000-1.png", file: "00000-1.png", parameters: "a cat" }, "b"],
        [{ type: "state", state: "done" }, "b"],
        [{ type: "done", state: "done" }, "b"],
        [{ type: "progress", step: 4, total: 4, unit: "step" }, "a"], // late: ignored
        [{ type: "result", url: "/results/j1/x.png", file: "x.png", parameters: "" }, "a"],
        [{ type: "state", state: "failed" }, "a"],
      ),
    );
    expect(job).toMatchObject({ state: "done", worker: "b", progress: { step: 4, total: 4 }, results: [{ file: "00000-1.png" }] });
    expect(job.results).toHaveLength(1);
    expect(job.previews).toBeUndefined(); // the first attempt's previews went with it
    expect(job.startedAt).toBe("2026-01-01T00:00:04.000Z");
    expect(job.finishedAt).toBe("2026-01-01T00:00:10.000Z");
  });

  it("a queued job cancelled before it starts has no start, and its error and state come from the log", () => {
    expect(foldJob(spec, log([{ type: "state", state: "queued" }], [{ type: "state", state: "cancelled" }], [{ type: "done", state: "cancelled" }]))).toMatchObject({ state: "cancelled", results: [] });
    const failed = foldJob(spec, log([{ type: "state", state: "queued" }], [{ type: "state", state: "running" }, "w"], [{ type: "error", message: "boom", hint: "h" }, "w"], [{ type: "state", state: "failed" }, "w"], [{ type: "done", state: "failed" }, "w"]));
    expect(failed).toMatchObject({ state: "failed", error: { message: "boom", hint: "h" }, worker: "w" });
  });
});
