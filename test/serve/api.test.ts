/**
 * The HTTP API of `sdc serve`, over real HTTP, twice: with jobs run in the server's process, and
 * with jobs going through BullMQ on a real Redis (Debian's redis-server on a free loopback port) to
 * a real `sdc worker` loop. The same requests give the same answers either way.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadPipeline } from "../../src/config/load.js";
import { makeShapes } from "../../src/data/shapes.js";
import { decode as decodePng } from "fast-png";
import { readPngText } from "../../src/image/image.js";
import { pipelineJsonSchema } from "../../src/config/json-schema.js";
import { run } from "../../src/pipeline.js";
import { Job, JobEvent, type PipelineInfo, ProblemsResponse, type SubmitResponse, type ValidateResponse } from "../../src/serve/api.js";
import { type RunningWorker, startWorker } from "../../src/serve/queue.js";
import { checkExposure, type RunningServer, startServer } from "../../src/serve/server.js";
import { renderProblems, UserError } from "../../src/util/errors.js";
import { REPO, tempDir } from "../helpers/repo.js";
import { client, type Client, project } from "./project.js";
import { type RedisServer, startRedis } from "./redis.js";

describe.each(["in-process", "redis"] as const)("sdc serve (%s jobs)", (mode) => {
  let cwd: string;
  let server: RunningServer;
  let worker: RunningWorker | null = null;
  let redis: RedisServer | null = null;
  let c: Client;
  const results = () => path.join(cwd, "out", "serve");

  beforeAll(async () => {
    cwd = project();
    if (mode === "redis") {
      redis = await startRedis();
      worker = await startWorker({ url: redis.url, cwd, resultsDir: results(), cacheDir: path.join(cwd, "compiled", "serve"), previewEvery: 2 });
    }
    server = await startServer({ cwd, port: 0, previewEvery: 2, ...(redis ? { queue: redis.url } : {}) });
    c = client(server.url);
  });
  afterAll(async () => {
    await server?.close();
    await worker?.close();
    await redis?.stop();
  });

  const submit = async (body: unknown) => {
    const r = await c.post<SubmitResponse>("/api/jobs", body);
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return r.body.jobs.map((j) => j.id);
  };

  it("lists the pipelines with their kind, text and settings; serves the schema and an OpenAPI document", async () => {
    const { body } = await c.get<PipelineInfo[]>("/api/pipelines");
    expect(body.map((p) => [p.name, p.file, p.kind])).toEqual([
      ["i2i", path.join("pipelines", "i2i.yaml"), "img2img"],
      ["t2i", path.join("pipelines", "t2i.yaml"), "txt2img"],
    ]);
    const t2i = body.find((p) => p.name === "t2i")!;
    expect(t2i.yaml).toBe(fs.readFileSync(path.join(cwd, "pipelines", "t2i.yaml"), "utf8"));
    expect(t2i.settings).toMatchObject({ prompt: "a cat", negative_prompt: "", steps: 4, guidance: 3, seed: 1, width: 16, height: 16, scheduler: "ddim", batch: 1 });
    expect(body.find((p) => p.name === "i2i")!.settings).toMatchObject({ prompt: "a dog", strength: 0.5, init_image: path.join(cwd, "pipelines", "init.png") });

    expect((await c.get("/api/schema")).body).toEqual(pipelineJsonSchema());
    const doc = (await c.get<{ openapi: string; paths: Record<string, unknown>; components: { schemas: Record<string, unknown> } }>("/openapi.json")).body;
    expect(doc.openapi).toBe("3.1.0");
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(["/api/jobs", "/api/jobs/{id}", "/api/jobs/{id}/cancel", "/api/jobs/{id}/events", "/api/validate", "/api/pipelines"]));
    expect(doc.components.schemas.Job).toMatchObject({ type: "object", properties: { state: { $ref: "#/components/schemas/JobState" } } });
    expect(doc.components.schemas.JobState).toEqual({ type: "string", enum: ["queued", "running", "done", "failed", "cancelled"] });
    expect(doc.components.schemas.PipelineSchema ?? null).toBeNull(); // only the API's own schemas
  });

  it("runs a txt2img job: its events in order, previews, and the same image `sdc run` draws", async () => {
    const [id] = await submit({ pipeline: "t2i", overrides: { sample: { prompt: "a red fox", seed: 7 } } });
    const events = await c.events(id!);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    for (const e of events) JobEvent.parse(e.ev);
    const kinds = events.map((e) => (e.ev.type === "state" ? `state:${e.ev.state}` : e.ev.type === "progress" ? `progress:${e.ev.step}/${e.ev.total}` : e.ev.type));
    // the preview of step 2 is decoded beside the loop: after step 2, before the result
    expect(kinds.filter((k) => k !== "preview")).toEqual(["state:queued", "state:running", "progress:1/4", "progress:2/4", "progress:3/4", "progress:4/4", "result", "state:done", "done"]);
    expect(kinds.indexOf("preview")).toBeGreaterThan(kinds.indexOf("progress:2/4"));
    expect(kinds.indexOf("preview")).toBeLessThan(kinds.indexOf("result"));

    const job = Job.parse((await c.get(`/api/jobs/${id}`)).body);
    expect(job).toMatchObject({ state: "done", kind: "txt2img", pipeline: "t2i", progress: { step: 4, total: 4, unit: "step" }, settings: { prompt: "a red fox", seed: 7 } });
    expect(job.worker).toBe(mode === "redis" ? worker!.id : "in-process");
    expect(Date.parse(job.startedAt!)).toBeGreaterThanOrEqual(Date.parse(job.createdAt));
    expect(Date.parse(job.finishedAt!)).toBeGreaterThanOrEqual(Date.parse(job.startedAt!));
    expect(job.previews!.map((p) => p.step)).toEqual([2]);

    // the result: served, its parameters in the PNG, and byte for byte what a direct run writes
    expect(job.results).toHaveLength(1);
    const res = job.results[0]!;
    expect(res.file).toBe("00000-7.png");
    const png = new Uint8Array(await (await fetch(c.base + res.url)).arrayBuffer());
    expect(readPngText(png).parameters).toBe(res.parameters);
    expect(res.parameters).toMatch(/^a red fox\nSteps: 4, Sampler: DDIM, CFG scale: 3, Seed: 7, Size: 16x16/);
    const direct = tempDir("sdc-serve-direct-");
    const p = await loadPipeline(path.join(cwd, "pipelines", "t2i.yaml"), { cwd, prompt: "a red fox", seed: 7, out: direct });
    const r = await run(p, { cwd, compiledDir: path.join(direct, "compiled"), progress: false });
    expect(Buffer.from(png).equals(fs.readFileSync(r.outputs[0]!))).toBe(true);
    // nothing of the attempt is left beside the result
    expect(fs.readdirSync(path.join(results(), id!)).sort()).toEqual(["00000-7.png", "previews"]);

    const preview = decodePng(new Uint8Array(await (await fetch(c.base + job.previews![0]!.url)).arrayBuffer()));
    expect([preview.width, preview.height, preview.channels]).toEqual([16, 16, 3]);

    // a late subscriber gets the same stream, replayed
    expect((await c.events(id!)).map((e) => e.ev)).toEqual(events.map((e) => e.ev));
  });

  it("runs an img2img job", async () => {
    const [id] = await submit({ pipeline: "i2i" });
    const job = await c.waitDone(id!);
    expect(job).toMatchObject({ state: "done", kind: "img2img", settings: { prompt: "a dog", strength: 0.5 } });
    expect(job.results[0]!.parameters).toContain("Denoising strength: 0.5");
  });

  it("fans a sweep out into prompts × seeds × guidance jobs", async () => {
    const ids = await submit({ pipeline: "t2i", overrides: { "sample.seed": 99, "guidance.scale": 5 }, sweep: { prompts: ["a cat", "a dog"], seeds: [1, 2] } });
    expect(ids).toHaveLength(4);
    const jobs = await Promise.all(ids.map((id) => c.waitDone(id)));
    expect(jobs.map((j) => [j.state, j.settings.prompt, j.settings.seed, j.settings.guidance, j.sweep])).toEqual([
      ["done", "a cat", 1, 5, { index: 0, count: 4 }],
      ["done", "a cat", 2, 5, { index: 1, count: 4 }],
      ["done", "a dog", 1, 5, { index: 2, count: 4 }],
      ["done", "a dog", 2, 5, { index: 3, count: 4 }],
    ]);
    for (const j of jobs) expect(j.results[0]!.parameters).toContain(`CFG scale: 5, Seed: ${j.settings.seed},`);
    // newest first in the list
    const list = (await c.get<Job[]>("/api/jobs")).body;
    expect(list.map((j) => j.id)).toEqual(expect.arrayContaining(ids));
    const times = list.map((j) => Date.parse(j.createdAt));
    expect(times).toEqual([...times].sort((a, b) => b - a));
    expect(list.length).toBeGreaterThan(4);
  });

  it("answers bad requests with the CLI's located problems, and never queues them", async () => {
    const before = (await c.get<unknown[]>("/api/jobs")).body.length;
    // a bad override: what `sdc run --set` says
    const r1 = await c.post("/api/jobs", { pipeline: "t2i", overrides: { "scheduler.steps": -1 } });
    expect(r1.status).toBe(400);
    const p1 = ProblemsResponse.parse(r1.body).problems;
    expect(p1[0]).toMatchObject({ subject: "--set scheduler.steps=-1" });
    expect(p1[0]!.message).toMatch(/too small|>=|at least/i);
    // a sweep element that does not validate refuses the whole sweep
    const r2 = await c.post("/api/jobs", { pipeline: "t2i", sweep: { seeds: [1, 2], guidance: [1, Number.NaN] } });
    expect(r2.status).toBe(400);
    expect((await c.post("/api/jobs", { pipeline: "nope" })).body).toMatchObject({ problems: [{ message: 'no pipeline named "nope"', hint: "served: i2i, t2i" }] });
    expect((await c.post("/api/jobs", {})).status).toBe(400);
    expect((await c.post("/api/jobs", { pipeline: 3 })).body).toMatchObject({ problems: [{ subject: "body.pipeline" }] });
    const bad = await fetch(`${c.base}/api/jobs`, { method: "POST", body: "{nope" });
    expect(bad.status).toBe(400);
    expect((await c.get<unknown[]>("/api/jobs")).body.length).toBe(before);
    expect((await c.get("/api/jobs/no-such-job")).status).toBe(404);
    expect((await c.post("/api/jobs/no-such-job/cancel", {})).status).toBe(404);
    expect((await fetch(`${c.base}/results/%2e%2e/pipelines/t2i.yaml`)).status).toBe(404);
    expect((await fetch(`${c.base}/results/x/%2e%2e%2f%2e%2e%2fpipelines%2ft2i.yaml`)).status).toBe(404);
  });

  it("validates a pipeline's text with the same located problems as `sdc validate`", async () => {
    const text = fs.readFileSync(path.join(cwd, "pipelines", "t2i.yaml"), "utf8").replace("steps: 4", "steps: four").replace("  seed: 1", "  seed: 1\n  colour: red");
    const r = await c.post<ValidateResponse>("/api/validate", { yaml: text, name: "t2i" });
    expect(r.status).toBe(200);
    expect(r.body.ok).toBe(false);
    // the CLI's: the same text saved as that file, loaded
    const copy = tempDir("sdc-serve-val-");
    fs.cpSync(path.join(cwd, "pipelines"), path.join(copy, "pipelines"), { recursive: true });
    fs.writeFileSync(path.join(copy, "pipelines", "t2i.yaml"), text);
    const cli = await loadPipeline(path.join(copy, "pipelines", "t2i.yaml"), { cwd: copy }).then(
      () => null,
      (e: UserError) => e.problems,
    );
    expect(cli).not.toBeNull();
    expect(r.body.problems.map((p) => p.text).join("\n\n")).toBe(renderProblems(cli!));
    expect(r.body.problems.map((p) => [p.file, p.line])).toEqual([
      [path.join("pipelines", "t2i.yaml"), 7], // steps: four
      [path.join("pipelines", "t2i.yaml"), 13], // colour: red
    ]);
    expect(r.body.problems[0]!.col).toBeGreaterThan(0);
    // the unedited text is fine, and a new file's relative paths resolve from the project
    expect((await c.post<ValidateResponse>("/api/validate", { yaml: fs.readFileSync(path.join(cwd, "pipelines", "i2i.yaml"), "utf8"), name: "i2i" })).body).toEqual({ ok: true, problems: [] });
    expect((await c.post<ValidateResponse>("/api/validate", { yaml: "version: 1\n" })).body.problems[0]).toMatchObject({ file: "untitled.yaml" });
  });

  it("cancels a running job between steps, and a queued job before it starts", async () => {
    const [long, queued] = [...(await submit({ pipeline: "t2i", overrides: { "scheduler.steps": 400 } })), ...(await submit({ pipeline: "t2i" }))];
    for (let t0 = Date.now(); ; ) {
      const j = (await c.get<Job>(`/api/jobs/${long}`)).body;
      if ((j.progress?.step ?? 0) >= 2) break;
      if (Date.now() - t0 > 30_000) throw new Error(`the long job never got going: ${JSON.stringify(j)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    const q = await c.post<Job>(`/api/jobs/${queued}/cancel`, {});
    expect(q.status).toBe(202);
    const qd = await c.waitDone(queued!);
    expect(qd).toMatchObject({ state: "cancelled", results: [] });
    expect(qd.startedAt).toBeUndefined();

    expect((await c.post(`/api/jobs/${long}/cancel`, {})).status).toBe(202);
    const ld = await c.waitDone(long!);
    expect(ld).toMatchObject({ state: "cancelled", results: [] });
    expect(ld.progress!.step).toBeLessThan(400);
    expect(fs.readdirSync(path.join(results(), long!)).filter((f) => f.endsWith(".png"))).toEqual([]);
    // cancelling what is over changes nothing
    expect((await c.post<Job>(`/api/jobs/${long}/cancel`, {})).body.state).toBe("cancelled");
    // and the queue goes on
    const [next] = await submit({ pipeline: "t2i" });
    expect((await c.waitDone(next!)).state).toBe("done");
  });

  it.runIf(mode === "redis")("runs a training job: loss per step, validation grids, checkpoints, the LoRA", async () => {
    await makeShapes({ dir: path.join(cwd, "data"), count: 8, size: 32, seed: 1 });
    const yaml = `version: 1\nname: lora\nmodel:\n  from: ${JSON.stringify(path.join(REPO, "models", "tiny-sd"))}\ntrain:\n  data:\n    dir: data\n    resolution: 32\n  target: lora\n  lora:\n    rank: 4\n  batch: 2\n  seed: 7\n  steps: 4\n  checkpointing:\n    every: 2\n    keep: 0\n  validation:\n    prompts: [red circle]\n    every: 2\n    steps: 2\n`;
    const [id] = await submit({ yaml });
    const events = (await c.events(id!, 120_000)).map((e) => e.ev);
    const job = Job.parse((await c.get(`/api/jobs/${id}`)).body);
    expect(job, JSON.stringify(job.error)).toMatchObject({ state: "done", kind: "train", progress: { step: 4, total: 4, unit: "train-step" } });
    expect(job.losses!.map((l) => l.step)).toEqual([1, 2, 3, 4]);
    for (const l of job.losses!) expect(Number.isFinite(l.loss)).toBe(true);
    expect(job.checkpoints).toEqual([`/results/${id}/checkpoints/checkpoint-000002`, `/results/${id}/checkpoints/checkpoint-000004`]);
    expect(job.grids!.length).toBeGreaterThanOrEqual(2);
    const grid = await fetch(c.base + job.grids!.at(-1)!);
    expect(grid.headers.get("content-type")).toBe("image/png");
    const files = (await c.get<string[]>(job.checkpoints![0]!)).body;
    expect(files.length).toBeGreaterThan(0);
    expect(job.results.map((r) => r.file)).toContain(path.join("lora", "pytorch_lora_weights.safetensors"));
    expect(events.filter((e) => e.type === "loss")).toHaveLength(4);
    expect(events.at(-1)).toEqual({ type: "done", state: "done" });
  });
});

describe("sdc serve access", () => {
  it("a token is asked of every API call (header or ?token=), not of the page", async () => {
    const cwd = project();
    const s = await startServer({ cwd, port: 0, token: "s3cret" });
    try {
      const base = s.url.replace(/\/$/, "");
      expect((await fetch(`${base}/api/pipelines`)).status).toBe(401);
      expect((await fetch(`${base}/api/pipelines`, { headers: { authorization: "Bearer nope" } })).status).toBe(401);
      expect((await fetch(`${base}/api/pipelines`, { headers: { authorization: "Bearer s3cret" } })).status).toBe(200);
      expect((await fetch(`${base}/api/pipelines?token=s3cret`)).status).toBe(200);
      expect((await fetch(`${base}/openapi.json`)).status).toBe(401);
      expect((await fetch(`${base}/results/x/y.png`)).status).toBe(401);
      const page = await fetch(`${base}/`);
      expect(page.status).toBe(200);
      expect(page.headers.get("content-type")).toMatch(/^text\/html/);
    } finally {
      await s.close();
    }
  });

  it("listens on loopback by default, and refuses another host without a token", async () => {
    const s = await startServer({ cwd: project(), port: 0 });
    expect(s.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    await s.close();
    expect(() => checkExposure({ host: "0.0.0.0" })).toThrow(/--host 0\.0\.0\.0 lets other machines reach the server, and it has no token/);
    expect(() => checkExposure({ host: "0.0.0.0", token: "t" })).not.toThrow();
    expect(() => checkExposure({ host: "0.0.0.0", insecure: true })).not.toThrow();
    expect(() => checkExposure({ host: "::1" })).not.toThrow();
  });

  it("refuses to start on a pipeline that does not load, with its located problems", async () => {
    const cwd = project();
    fs.writeFileSync(path.join(cwd, "pipelines", "bad.yaml"), "version: 1\nmodel:\n  from: nowhere\n");
    const e = await startServer({ cwd, port: 0 }).then(
      (s) => (s.close(), null),
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(UserError);
    expect((e as UserError).message).toContain(path.join("pipelines", "bad.yaml"));
  });
});
