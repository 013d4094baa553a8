/**
 * `sdc serve`: the HTTP API of api.ts over Node's own http module, the web page, and the jobs.
 *
 * Node's http is enough here: a dozen routes, JSON bodies checked by zod, one server-sent event
 * stream and static files; a framework would add a dependency and a second way to validate.
 *
 * Submissions are checked exactly as `sdc validate` checks a file (the pipeline's text loaded with
 * its overrides, extends and model), so a bad request gets the CLI's located problems with 400 and
 * never reaches a worker. Jobs then run in this process (one at a time) or, with a queue URL, go
 * to Redis for `sdc worker`s.
 */
import { randomUUID, timingSafeEqual } from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as path from "node:path";
import { SDC_VERSION } from "../compiler/compile.js";
import { pipelineJsonSchema } from "../config/json-schema.js";
import { loadPipeline, type LoadedPipeline } from "../config/load.js";
import { isPlainObject } from "../config/origins.js";
import { isUserError, type Problem, renderProblem, UserError } from "../util/errors.js";
import { displayPath } from "../util/paths.js";
import { type ApiProblem, type PipelineInfo, SubmitRequest, ValidateRequest } from "./api.js";
import { kindOf, settingsOf } from "./execute.js";
import { foldJob, isFinal, type JobSpec, type StoredEvent } from "./jobs.js";
import { openApiDocument } from "./openapi.js";
import { checkRedis, InProcessQueue, type JobQueue, RedisQueue } from "./queue.js";
import { type JobStore, MemoryStore, RedisStore } from "./store.js";
import { webAsset } from "./web/assets.js";

export interface ServeOptions {
  /** The project folder (pipeline paths, results and the compiled cache are relative to it). */
  cwd: string;
  /** Pipeline files to serve (relative to cwd); empty: pipelines/*.yaml. */
  pipelines?: string[];
  host?: string;
  /** 0: any free port. */
  port?: number;
  token?: string;
  /** redis://… : jobs go to this queue for `sdc worker`s; absent: they run in this process. */
  queue?: string;
  /** Results folder (default out/serve). */
  resultsDir?: string;
  /** Compiled folders of in-process jobs (default compiled/serve). */
  cacheDir?: string;
  /** A preview every N denoising steps (0: none; default 5). */
  previewEvery?: number;
  /** Serve on a non-loopback host without a token. */
  insecure?: boolean;
  log?: (line: string) => void;
}

export interface RunningServer {
  url: string;
  port: number;
  server: http.Server;
  store: JobStore;
  close(): Promise<void>;
}

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);
const MAX_BODY = 4 * 1024 * 1024;

/** A Problem as the API sends it: the same fields, and the CLI's rendering. */
export function apiProblem(p: Problem): ApiProblem {
  return {
    message: p.message,
    ...(p.hint !== undefined ? { hint: p.hint } : {}),
    ...(p.at ? { file: p.at.file, line: p.at.line, col: p.at.col, ...(p.at.endCol !== undefined ? { endCol: p.at.endCol } : {}) } : {}),
    ...(p.subject !== undefined ? { subject: p.subject } : {}),
    ...(p.snippet !== undefined ? { snippet: p.snippet } : {}),
    text: renderProblem(p),
  };
}

/** `{"sample.prompt": "x"}` or `{sample: {prompt: "x"}}` → ["sample.prompt=\"x\""] (values as YAML flow, i.e. JSON). */
export function overrideList(o: Record<string, unknown> | undefined, prefix = ""): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(o ?? {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (isPlainObject(v) && Object.keys(v).length) out.push(...overrideList(v as Record<string, unknown>, key));
    else out.push(`${key}=${JSON.stringify(v)}`);
  }
  return out;
}

/** One override list per job of a sweep (prompts × seeds × guidance); the sweep's keys replace the request's. */
export function sweepOverrides(base: string[], sweep: SubmitRequest["sweep"]): string[][] {
  if (!sweep) return [base];
  const axes: [string, unknown[] | undefined][] = [
    ["sample.prompt", sweep.prompts],
    ["sample.seed", sweep.seeds],
    ["guidance.scale", sweep.guidance],
  ];
  let combos: string[][] = [[]];
  for (const [key, values] of axes) {
    if (!values) continue;
    combos = combos.flatMap((c) => values.map((v) => [...c, `${key}=${JSON.stringify(v)}`]));
  }
  const swept = axes.filter(([, v]) => v).map(([k]) => k);
  const kept = base.filter((o) => !swept.includes(o.slice(0, o.indexOf("="))));
  return combos.map((c) => [...kept, ...c]);
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly problems: Problem[],
  ) {
    super(problems[0]?.message ?? String(status));
  }
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "cache-control": "no-store", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY) throw new HttpError(413, [{ message: `request body over ${MAX_BODY} bytes` }]);
    chunks.push(c as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8") || "null");
  } catch (e) {
    throw new HttpError(400, [{ message: `the request body is not JSON: ${(e as Error).message}`, hint: "send Content-Type: application/json with a JSON body" }]);
  }
}

function parseBody<T>(schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: { issues: { path: PropertyKey[]; message: string }[] } } }, v: unknown): T {
  const r = schema.safeParse(v);
  if (r.success) return r.data;
  throw new HttpError(
    400,
    r.error.issues.map((i) => ({ message: i.message, subject: i.path.length ? `body.${i.path.map(String).join(".")}` : "body" })),
  );
}

/** Refuse to listen where others can reach the server without a token (unless told --insecure). */
export function checkExposure(o: Pick<ServeOptions, "host" | "token" | "insecure">): void {
  const host = o.host ?? "127.0.0.1";
  if (!LOOPBACK.has(host) && !o.token && !o.insecure)
    throw new UserError({
      message: `--host ${host} lets other machines reach the server, and it has no token`,
      subject: "--host",
      hint: "add --token <secret> (clients send Authorization: Bearer <secret> or ?token=<secret>), or --insecure if the network is yours alone",
    });
}

export async function startServer(o: ServeOptions): Promise<RunningServer> {
  checkExposure(o);
  const cwd = o.cwd;
  const log = o.log ?? (() => {});
  const resultsDir = path.resolve(cwd, o.resultsDir ?? path.join("out", "serve"));
  const cacheDir = path.resolve(cwd, o.cacheDir ?? path.join("compiled", "serve"));
  const files = pipelineFiles(cwd, o.pipelines ?? []);
  // every served pipeline must load now: a broken one is the user's to fix before serving
  const problems: Problem[] = [];
  for (const f of files) {
    try {
      await loadPipeline(f, { cwd });
    } catch (e) {
      if (isUserError(e)) problems.push(...e.problems);
      else throw e;
    }
  }
  if (problems.length) throw new UserError(problems);

  if (o.queue) await checkRedis(o.queue);
  const store: JobStore = o.queue ? new RedisStore(o.queue) : new MemoryStore();
  const queue: JobQueue = o.queue ? new RedisQueue(o.queue, store) : new InProcessQueue(store, { cwd, resultsDir, cacheDir, previewEvery: o.previewEvery ?? 5, log });
  const token = o.token ? Buffer.from(o.token) : null;
  const sse = new Set<http.ServerResponse>();

  async function pipelines(): Promise<{ info: PipelineInfo; abs: string }[]> {
    const out: { info: PipelineInfo; abs: string }[] = [];
    for (const abs of files) {
      let p: LoadedPipeline;
      let yaml: string;
      try {
        yaml = fs.readFileSync(abs, "utf8");
        p = await loadPipeline(abs, { cwd, text: yaml });
      } catch (e) {
        log(`${displayPath(abs, cwd)} is not served while it does not load: ${(e as Error).message.split("\n")[0]}`);
        continue;
      }
      out.push({ abs, info: { name: p.name, file: displayPath(abs, cwd), kind: kindOf(p), yaml, settings: settingsOf(p) } });
    }
    return out;
  }

  /** The pipeline file a request names (its folder resolves the text's relative paths). */
  async function baseFile(name: string | undefined): Promise<string> {
    if (name === undefined) return path.join(cwd, "untitled.yaml");
    const all = await pipelines();
    const hit = all.find((p) => p.info.name === name);
    if (!hit) throw new HttpError(400, [{ message: `no pipeline named "${name}"`, subject: "pipeline", hint: `served: ${all.map((p) => p.info.name).join(", ") || "none"}` }]);
    return hit.abs;
  }

  async function submit(body: SubmitRequest): Promise<{ id: string }[]> {
    if (body.pipeline === undefined && body.yaml === undefined)
      throw new HttpError(400, [{ message: "a job needs a pipeline: give pipeline (a served pipeline's name) or yaml (a pipeline's text)", subject: "body" }]);
    const file = await baseFile(body.pipeline);
    const yaml = body.yaml ?? fs.readFileSync(file, "utf8");
    const lists = sweepOverrides(overrideList(body.overrides), body.sweep);
    const specs: JobSpec[] = [];
    const createdAt = new Date().toISOString();
    for (const [index, overrides] of lists.entries()) {
      let p: LoadedPipeline;
      try {
        p = await loadPipeline(file, { cwd, text: yaml, overrides });
      } catch (e) {
        if (isUserError(e)) throw new HttpError(400, e.problems);
        throw e;
      }
      specs.push({
        id: randomUUID(),
        pipeline: p.name,
        kind: kindOf(p),
        file: path.relative(cwd, file) || path.basename(file),
        yaml,
        overrides,
        settings: settingsOf(p),
        createdAt,
        ...(lists.length > 1 ? { sweep: { index, count: lists.length } } : {}),
      });
    }
    for (const spec of specs) {
      await store.create(spec);
      await queue.submit(spec);
    }
    return specs.map((s) => ({ id: s.id }));
  }

  async function job(id: string) {
    const rec = await store.get(id);
    if (!rec) throw new HttpError(404, [{ message: `no job ${id}`, subject: "id" }]);
    return rec;
  }

  function authorized(req: http.IncomingMessage, url: URL): boolean {
    if (!token) return true;
    const h = req.headers.authorization;
    const given = h?.startsWith("Bearer ") ? h.slice(7) : url.searchParams.get("token");
    if (given === null || given === undefined) return false;
    const b = Buffer.from(given);
    return b.length === token.length && timingSafeEqual(b, token);
  }

  async function events(req: http.IncomingMessage, res: http.ServerResponse, id: string): Promise<void> {
    const rec = await job(id);
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-store", connection: "keep-alive", "x-accel-buffering": "no" });
    sse.add(res);
    let last = 0;
    let ended = false;
    const write = (e: StoredEvent) => {
      if (ended || e.seq <= last) return;
      last = e.seq;
      res.write(`id: ${e.seq}\nevent: ${e.ev.type}\ndata: ${JSON.stringify(e.ev)}\n\n`);
      if (e.ev.type === "done") end();
    };
    const buffered: StoredEvent[] = [];
    let replaying = true;
    const unsubscribe = await store.subscribe(id, (e) => (replaying ? buffered.push(e) : write(e)));
    const ping = setInterval(() => res.write(": ping\n\n"), 15_000);
    const end = () => {
      if (ended) return;
      ended = true;
      clearInterval(ping);
      unsubscribe();
      sse.delete(res);
      res.end();
    };
    res.on("close", end); // the client went away (or the stream ended)
    // what happened so far (read after subscribing: nothing falls between), then what was buffered meanwhile
    const now = await store.get(id);
    for (const e of (now ?? rec).events) write(e);
    replaying = false;
    for (const e of buffered.sort((a, b) => a.seq - b.seq)) write(e);
  }

  function result(res: http.ServerResponse, rel: string): void {
    const parts = rel.split("/").map((s) => decodeURIComponent(s));
    if (parts.some((s) => s === "" || s === "." || s === ".." || s.startsWith(".") || s.includes("\0") || s.includes("\\")))
      throw new HttpError(404, [{ message: "no such result" }]);
    const file = path.join(resultsDir, ...parts);
    let st: fs.Stats;
    try {
      st = fs.statSync(file);
    } catch {
      throw new HttpError(404, [{ message: "no such result" }]);
    }
    if (st.isDirectory()) {
      // a checkpoint folder: its files, as links
      const list = fs.readdirSync(file, { recursive: true, withFileTypes: true }).filter((d) => d.isFile() && !d.name.startsWith("."));
      return send(res, 200, list.map((d) => `/results/${[...parts, ...path.relative(file, path.join(d.parentPath, d.name)).split(path.sep)].map(encodeURIComponent).join("/")}`));
    }
    const type = file.endsWith(".png") ? "image/png" : file.endsWith(".json") ? "application/json" : "application/octet-stream";
    res.writeHead(200, { "content-type": type, "content-length": st.size, "cache-control": "no-cache" });
    fs.createReadStream(file).pipe(res);
  }

  async function route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://localhost");
    const p = url.pathname;
    const method = req.method ?? "GET";
    const asset = method === "GET" ? webAsset(p) : undefined;
    if (asset) {
      // the page and its modules hold no data: served without the token (the page sends it with its API calls)
      res.writeHead(200, { "content-type": asset.contentType, "cache-control": "no-cache" });
      fs.createReadStream(asset.file).pipe(res);
      return;
    }
    if (!authorized(req, url)) throw new HttpError(401, [{ message: "this server needs its token", hint: "send Authorization: Bearer <token>, or ?token=<token> in the URL" }]);
    let m: RegExpMatchArray | null;
    if (method === "GET" && p === "/api/pipelines") return send(res, 200, (await pipelines()).map((x) => x.info));
    if (method === "GET" && p === "/api/schema") return send(res, 200, pipelineJsonSchema());
    if (method === "GET" && p === "/openapi.json") return send(res, 200, openApiDocument(SDC_VERSION));
    if (method === "POST" && p === "/api/validate") {
      const body = parseBody(ValidateRequest, await readJson(req));
      const file = await baseFile(body.name);
      try {
        await loadPipeline(file, { cwd, text: body.yaml });
        return send(res, 200, { ok: true, problems: [] });
      } catch (e) {
        if (isUserError(e)) return send(res, 200, { ok: false, problems: e.problems.map(apiProblem) });
        throw e;
      }
    }
    if (method === "POST" && p === "/api/jobs") {
      const body = parseBody(SubmitRequest, await readJson(req));
      return send(res, 201, { jobs: await submit(body) });
    }
    if (method === "GET" && p === "/api/jobs") {
      const ids = await store.ids();
      const recs = await Promise.all(ids.map((id) => store.get(id)));
      return send(res, 200, recs.filter((r) => r !== null).map((r) => foldJob(r.spec, r.events)));
    }
    if (method === "GET" && (m = p.match(/^\/api\/jobs\/([^/]+)$/))) {
      const rec = await job(decodeURIComponent(m[1]!));
      return send(res, 200, foldJob(rec.spec, rec.events));
    }
    if (method === "POST" && (m = p.match(/^\/api\/jobs\/([^/]+)\/cancel$/))) {
      const id = decodeURIComponent(m[1]!);
      const rec = await job(id);
      if (!isFinal(foldJob(rec.spec, rec.events).state)) await queue.cancel(id);
      const now = (await store.get(id)) ?? rec;
      return send(res, 202, foldJob(now.spec, now.events));
    }
    if (method === "GET" && (m = p.match(/^\/api\/jobs\/([^/]+)\/events$/))) return events(req, res, decodeURIComponent(m[1]!));
    if (method === "GET" && p.startsWith("/results/")) return result(res, p.slice("/results/".length));
    throw new HttpError(404, [{ message: `no route ${method} ${p}`, hint: "see /openapi.json for the API" }]);
  }

  const server = http.createServer((req, res) => {
    route(req, res).catch((e: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (e instanceof HttpError) return send(res, e.status, { problems: e.problems.map(apiProblem) });
      if (isUserError(e)) return send(res, 400, { problems: e.problems.map(apiProblem) });
      log(`internal error on ${req.method} ${req.url}: ${(e as Error).stack ?? String(e)}`);
      send(res, 500, { problems: [apiProblem({ message: `internal error: ${(e as Error).message}` })] });
    });
  });
  const host = o.host ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e: NodeJS.ErrnoException) =>
      reject(
        e.code === "EADDRINUSE"
          ? new UserError({ message: `port ${o.port} is in use`, subject: "--port", hint: "choose another port with --port, or stop what listens there" })
          : e,
      ),
    );
    server.listen(o.port ?? 7860, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const shown = host.includes(":") ? `[${host}]` : host;
  return {
    url: `http://${shown}:${port}/`,
    port,
    server,
    store,
    close: async () => {
      for (const res of sse) res.end();
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections();
      await closed;
      await queue.close();
      await store.close();
    },
  };
}

/** The served pipeline files (absolute): those given, or pipelines/*.yaml of the project. */
export function pipelineFiles(cwd: string, given: string[]): string[] {
  if (given.length) return given.map((f) => path.resolve(cwd, f));
  const dir = path.join(cwd, "pipelines");
  let names: string[] = [];
  try {
    names = fs.readdirSync(dir).filter((f) => /\.ya?ml$/i.test(f)).sort();
  } catch {
    // no pipelines folder
  }
  if (!names.length)
    throw new UserError({ message: "no pipelines to serve: pipelines/*.yaml is empty or missing", subject: displayPath(dir, cwd), hint: "name pipeline files: sdc serve my.yaml other.yaml" });
  return names.map((f) => path.join(dir, f));
}
