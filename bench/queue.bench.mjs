// Queue overhead of `sdc serve`: what a job costs besides its own run, with jobs run in the
// server's process (the baseline, no Redis) and through BullMQ on Redis with 1 and 2 `sdc worker`
// processes, all in the same run on the default pipeline (pipelines/txt2img.yaml: the tiny emoji
// model, 20 steps, 32×32).
//
//   submit → start    client, just before POST /api/jobs → the job's `running` event (stamped by
//                     whoever runs it, as it takes the job); split into the POST itself (the
//                     server validates the pipeline with its overrides, as `sdc validate` does)
//                     and accepted → start (the queue: store, hand-out, the worker taking it)
//   finish → visible  the job's `done` state (stamped by the runner once its result is in place)
//                     → the client receiving `done` on the job's event stream
//
// Jobs go one at a time (each submitted when the previous is done), so neither figure includes
// waiting behind other jobs; the three backends run side by side and take turns, job by job. A burst (one sweep request of BURST jobs) then shows the wall time
// with 1 and 2 workers. Timestamps are Date.now() across processes on one machine (1 ms steps).
// Each configuration first runs one job that is not counted (it compiles into the worker's cache).
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { startServer } from "../dist/serve/server.js";
import { machine, table, tempDir } from "./util.mjs";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const JOBS = Number(process.env.QUEUE_BENCH_JOBS ?? 10);
const BURST = Number(process.env.QUEUE_BENCH_BURST ?? 8);

function project() {
  const dir = tempDir("sdc-queue-bench-");
  fs.mkdirSync(path.join(dir, "pipelines"));
  const text = fs.readFileSync(path.join(repo, "pipelines", "txt2img.yaml"), "utf8").replace("from: ../models/emoji", `from: ${JSON.stringify(path.join(repo, "models", "emoji"))}`);
  fs.writeFileSync(path.join(dir, "pipelines", "txt2img.yaml"), text);
  return dir;
}

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function startRedis(dir) {
  if (spawnSync("redis-server", ["--version"]).error) throw new Error("redis-server is not installed (Debian: apt-get install redis-server)");
  const port = await freePort();
  const proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], { stdio: "ignore" });
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => (s.end(), resolve(true)));
      s.on("error", () => resolve(false));
    });
    if (ok) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  return { url: `redis://127.0.0.1:${port}`, stop: () => new Promise((r) => (proc.once("exit", r), proc.kill("SIGTERM"))) };
}

function startWorker(cwd, url, name) {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [path.join(repo, "bin", "sdc.js"), "worker", "--queue", url, "--cache", path.join("compiled", name), "--preview-every", "0", "--json"], { cwd, stdio: ["ignore", "pipe", "ignore"] });
    proc.stdout.on("data", (d) => {
      if (String(d).includes('"worker"')) resolve({ stop: () => new Promise((r) => (proc.once("exit", r), proc.kill("SIGTERM"))) });
    });
    proc.once("exit", (code) => reject(new Error(`worker exited ${code}`)));
  });
}

async function post(base, body) {
  const r = await fetch(`${base}/api/jobs`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  if (r.status !== 201) throw new Error(`POST /api/jobs: ${r.status} ${await r.text()}`);
  return (await r.json()).jobs.map((j) => j.id);
}

/** Follow a job's event stream to `done`: each event with the client's receive time. */
async function follow(base, id) {
  const r = await fetch(`${base}/api/jobs/${id}/events`);
  const seen = [];
  let buf = "";
  const dec = new TextDecoder();
  for await (const chunk of r.body) {
    buf += dec.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = block.split("\n").find((l) => l.startsWith("data: "));
      if (data) seen.push({ ev: JSON.parse(data.slice(6)), t: Date.now() });
    }
  }
  return seen;
}

async function job(base, body) {
  const t0 = Date.now();
  const [id] = await post(base, body);
  const accepted = Date.now();
  const seen = await follow(base, id);
  const log = await (await fetch(`${base}/api/jobs/${id}`)).json();
  if (log.state !== "done") throw new Error(`job ${id} ${log.state}: ${JSON.stringify(log.error)}`);
  const stored = await storedEvents(id);
  const running = stored.find((e) => e.ev.type === "state" && e.ev.state === "running");
  const done = stored.find((e) => e.ev.type === "state" && e.ev.state === "done");
  const visible = seen.find((e) => e.ev.type === "done").t;
  return { submitStart: Date.parse(running.at) - t0, acceptedStart: Date.parse(running.at) - accepted, post: accepted - t0, finishVisible: visible - Date.parse(done.at), run: Date.parse(done.at) - Date.parse(running.at) };
}

let storedEvents; // set per configuration: the server's store

const ms = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)], p90: s[Math.min(s.length - 1, Math.floor(s.length * 0.9))] };
};

/** A backend: a project, its server, and (with Redis) its own redis-server and workers. */
async function backend(name, workers) {
  const cwd = project();
  const redis = workers > 0 ? await startRedis(cwd) : null;
  const ws = [];
  for (let i = 0; i < workers; i++) ws.push(await startWorker(cwd, redis.url, `w${i}`));
  const server = await startServer({ cwd, port: 0, previewEvery: 0, ...(redis ? { queue: redis.url } : {}) });
  const base = server.url.replace(/\/$/, "");
  const b = {
    name,
    base,
    one: [],
    use: () => (storedEvents = async (id) => (await server.store.get(id)).events),
    close: async () => {
      await server.close();
      for (const w of ws) await w.stop();
      await redis?.stop();
      fs.rmSync(cwd, { recursive: true, force: true });
    },
  };
  b.use();
  for (let i = 0; i < Math.max(workers, 1); i++) await job(base, { pipeline: "txt2img", overrides: { "sample.seed": 1000 + i } }); // warm-up: each worker's compile
  return b;
}

console.log(`queue overhead, ${JOBS} jobs one at a time per backend (interleaved: the machine's load drifts alike for all) + a burst of ${BURST}, default pipeline; ${machine()}`);
const backends = [];
try {
  backends.push(await backend("in-process (baseline)", 0), await backend("redis, 1 worker", 1), await backend("redis, 2 workers", 2));
  for (let i = 0; i < JOBS; i++)
    for (const b of backends) {
      b.use();
      b.one.push(await job(b.base, { pipeline: "txt2img", overrides: { "sample.seed": i } }));
    }
  for (const b of backends) {
    b.use();
    const t0 = Date.now();
    const ids = await post(b.base, { pipeline: "txt2img", sweep: { seeds: Array.from({ length: BURST }, (_, i) => 500 + i) } });
    await Promise.all(ids.map((id) => follow(b.base, id)));
    b.burst = (Date.now() - t0) / 1000;
  }
  const rows = backends.map((b) => {
    const ss = ms(b.one.map((x) => x.submitStart));
    const as = ms(b.one.map((x) => x.acceptedStart));
    const fv = ms(b.one.map((x) => x.finishVisible));
    return {
      jobs: b.name,
      "submit→start ms (median / p90)": `${ss.median} / ${ss.p90}`,
      "of which POST (validation)": ms(b.one.map((x) => x.post)).median,
      "accepted→start": as.median < 0 ? "(before the answer)" : `${as.median} / ${as.p90}`,
      "finish→visible ms (median / p90)": `${fv.median} / ${fv.p90}`,
      "run ms (median)": ms(b.one.map((x) => x.run)).median,
      [`burst of ${BURST} s`]: b.burst.toFixed(2),
      "burst vs baseline": `${(b.burst / backends[0].burst).toFixed(2)}x`,
    };
  });
  table(rows);
} finally {
  for (const b of backends) await b.close();
}
