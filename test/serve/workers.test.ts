/**
 * Scale-out: two `sdc worker` processes on one Redis queue, one sweep request of 20 jobs, and one
 * worker SIGKILLed while it runs a job. Its job goes back to the queue when its lock expires (short
 * lock and stall intervals here) and the other worker runs it. Every job ends exactly once: one
 * `done` line across both workers' --json outputs, one result event in its log, one PNG in its folder.
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { compile } from "../../src/compiler/compile.js";
import { loadPipeline } from "../../src/config/load.js";
import type { Job } from "../../src/serve/api.js";
import { compiledDirFor } from "../../src/serve/execute.js";
import { type RunningServer, startServer } from "../../src/serve/server.js";
import { REPO, tempDir } from "../helpers/repo.js";
import { transpileForNode } from "../helpers/transpile.js";
import { client, project } from "./project.js";
import { type RedisServer, startRedis } from "./redis.js";

/** bin/sdc.js over the current sources, type-stripped (a full tsc build takes too long for a test). */
function sdcBin(): string {
  const out = tempDir("sdc-serve-bin-");
  const main = transpileForNode(path.join(REPO, "src", "cli", "main.ts"), out);
  fs.symlinkSync(path.join(REPO, "node_modules"), path.join(out, "node_modules"), "junction");
  const bin = path.join(out, "bin", "sdc.js");
  fs.mkdirSync(path.dirname(bin));
  fs.writeFileSync(bin, fs.readFileSync(path.join(REPO, "bin", "sdc.js"), "utf8").replace("../dist/cli/main.js", path.relative(path.dirname(bin), main).split(path.sep).join("/")));
  return bin;
}

interface Worker {
  proc: ChildProcess;
  lines: Record<string, unknown>[];
  stderr: string;
  id: string;
}

describe("sdc worker: two workers, one killed mid-job", () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const f of cleanup.reverse()) await f().catch(() => {});
  });

  it("runs a 20-job sweep to the end, every job exactly once", async () => {
    const cwd = project(12);
    // each worker's compiled cache, filled beforehand: the test times jobs, not first compiles
    const p = await loadPipeline(path.join(cwd, "pipelines", "t2i.yaml"), { cwd });
    const compiled = compiledDirFor(p, { file: "", yaml: "", overrides: [] } as never, path.join(cwd, "compiled", "a"));
    await compile(p, { outDir: compiled, cwd });
    fs.cpSync(compiled, path.join(cwd, "compiled", "b", path.basename(compiled)), { recursive: true });
    const redis: RedisServer = await startRedis();
    cleanup.push(() => redis.stop());
    const bin = sdcBin();

    const start = (name: string): Promise<Worker> =>
      new Promise((resolve, reject) => {
        const args = [bin, "worker", "--queue", redis.url, "--cache", path.join("compiled", name), "--preview-every", "0", "--lock-duration", "3000", "--stalled-interval", "1000", "--json"];
        const proc = spawn(process.execPath, args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
        const w: Worker = { proc, lines: [], stderr: "", id: "" };
        let buf = "";
        proc.stdout!.on("data", (d) => {
          buf += d;
          let i: number;
          while ((i = buf.indexOf("\n")) >= 0) {
            const line = JSON.parse(buf.slice(0, i)) as Record<string, unknown>;
            buf = buf.slice(i + 1);
            w.lines.push(line);
            if (typeof line.worker === "string") {
              w.id = line.worker;
              resolve(w);
            }
          }
        });
        proc.stderr!.on("data", (d) => (w.stderr += d));
        proc.on("exit", (code) => reject(new Error(`worker ${name} exited (${code}) before it started: ${w.stderr}`)));
        cleanup.push(async () => void (proc.exitCode === null && proc.kill("SIGKILL")));
      });
    const [a, b] = await Promise.all([start("a"), start("b")]);
    expect(a.id).toMatch(new RegExp(`:${a.proc.pid}$`));

    const server: RunningServer = await startServer({ cwd, port: 0, queue: redis.url });
    cleanup.push(() => server.close());
    const c = client(server.url);
    // one request, fanned out: 20 seeds
    const seeds = Array.from({ length: 20 }, (_, i) => 100 + i);
    const submitted = await c.post<{ jobs: { id: string }[] }>("/api/jobs", { pipeline: "t2i", sweep: { seeds } });
    expect(submitted.status).toBe(201);
    const ids = submitted.body.jobs.map((j) => j.id);
    expect(ids).toHaveLength(20);

    // kill worker a while it is inside a job, after it has finished two: freeze it (SIGSTOP), look at
    // what it is doing, and SIGKILL it only when that is a job that has started and not ended
    let victim: Job | undefined;
    let tries = 0;
    for (const t0 = Date.now(); !victim; ) {
      if (Date.now() - t0 > 40_000) throw new Error(`worker a never ran a job: ${a.stderr}`);
      if (a.lines.filter((l) => l.outcome === "done").length < 2) {
        await new Promise((r) => setTimeout(r, 5));
        continue;
      }
      a.proc.kill("SIGSTOP");
      await new Promise((r) => setTimeout(r, 100)); // what it wrote before it froze has landed
      victim = (await c.get<Job[]>("/api/jobs")).body.find((j) => j.state === "running" && j.worker === a.id && (j.progress?.step ?? 0) >= 1);
      if (victim) a.proc.kill("SIGKILL");
      else {
        a.proc.kill("SIGCONT");
        await new Promise((r) => setTimeout(r, 20 + ((tries++ * 37) % 120))); // let it run a while, a varying while
      }
    }
    await new Promise((r) => a.proc.once("exit", r));

    const jobs = await Promise.all(ids.map((id) => c.waitDone(id, 50_000))).catch(async (e) => {
      const now = (await c.get<Job[]>("/api/jobs")).body;
      throw new Error(`${(e as Error).message}; states ${JSON.stringify(now.map((j) => [j.state, j.worker, j.progress?.step]))}; worker b: ${b.stderr.slice(-3000)} ${JSON.stringify(b.lines)}`);
    });
    expect(jobs.map((j) => j.state)).toEqual(ids.map(() => "done"));
    expect(jobs.map((j) => j.settings.seed)).toEqual(seeds);

    // the killed job: started by a, finished by b
    const killed = jobs.find((j) => j.id === victim!.id)!;
    expect(killed.worker).toBe(b.id);
    const log = (await server.store.get(killed.id))!.events;
    expect(log.filter((e) => e.ev.type === "state" && e.ev.state === "running").map((e) => e.worker)).toContain(a.id);
    expect(log.filter((e) => e.ev.type === "state" && e.ev.state === "done").map((e) => e.worker)).toEqual([b.id]);

    // exactly once: one result and one end in each job's log (below), and no job reported done twice
    const byB = jobs.filter((j) => j.worker === b.id).length;
    for (const t0 = Date.now(); b.lines.filter((l) => l.outcome === "done").length < byB && Date.now() - t0 < 5000; ) await new Promise((r) => setTimeout(r, 20)); // its last lines may still be on their way
    const doneLines = [...a.lines, ...b.lines].filter((l) => l.outcome === "done").map((l) => l.job as string);
    expect(new Set(doneLines).size).toBe(doneLines.length);
    expect(b.lines.filter((l) => l.outcome === "done").map((l) => l.job).sort()).toEqual(jobs.filter((j) => j.worker === b.id).map((j) => j.id).sort());
    // (a "lost" line is a job handed out again after it ended, when a busy worker's lock lapsed: skipped, not rerun)
    expect([...a.lines, ...b.lines].filter((l) => l.outcome !== undefined && l.outcome !== "done" && l.outcome !== "lost")).toEqual([]);
    for (const j of jobs) {
      const events = (await server.store.get(j.id))!.events;
      expect(events.filter((e) => e.ev.type === "result")).toHaveLength(1);
      expect(events.filter((e) => e.ev.type === "done")).toHaveLength(1);
      const dir = path.join(cwd, "out", "serve", j.id);
      expect(fs.readdirSync(dir)).toEqual([`00000-${j.settings.seed}.png`]); // the dead attempt's folder is gone too
      expect(j.results[0]!.parameters).toContain(`Seed: ${j.settings.seed},`);
    }
    expect(jobs.filter((j) => j.worker === a.id).length).toBeGreaterThanOrEqual(2); // both took jobs from the one queue
    expect(jobs.filter((j) => j.worker === b.id).length).toBeGreaterThanOrEqual(1);
    console.log(`20 jobs: ${jobs.filter((j) => j.worker === a.id).length} finished by worker a before its SIGKILL, ${jobs.filter((j) => j.worker === b.id).length} by worker b (the killed job, in denoising step ${victim.progress!.step + 1} of 12 when a died, included); ${[...a.lines, ...b.lines].filter((l) => l.outcome === "lost").length} hand-outs of ended jobs skipped`);
  }, 90_000);
});
