/**
 * onnxruntime's optimised graph, kept beside the compiled graph so that later runs skip the
 * optimiser. Creating SD 1.5's U-Net session at level `all` takes 10–50 s on a 2-core CPU; loading
 * the graph onnxruntime saved after optimising it, with optimisation off, takes about a second.
 *
 * The first CPU session of a graph saves the optimised model (`optimizedModelFilePath`) with its
 * weights in an external file (`session.optimized_model_external_initializers_file_name`), both
 * under names of their own (`model.ort-<pid>-<hex>.onnx` and `….data`), then writes the sidecar
 * `model.ort.json` atomically: the key the files were made for and what identifies them. A later
 * session uses the files only when
 *
 *   - the key matches: cache format, onnxruntime version, execution provider (CPU only: a model
 *     optimised at level `all` holds CPU-specific layout nodes such as NCHWc convolutions, which
 *     are never handed to CUDA), optimisation level, platform, the CPU (model and feature flags:
 *     the NCHWc block size follows the vector width), the compiled graph's sha256 and the identity
 *     (size, mtime, inode) of each weights file it references;
 *   - the saved .onnx file hashes to the sha256 recorded (it is small), and the weights file has
 *     the size, mtime and inode recorded when it was written. Hashing it (3.4 GB for SD 1.5's
 *     U-Net) would cost seconds on every start; the files are written only by this module, under
 *     fresh names and published by an atomic rename of the sidecar, so a torn or concurrent write is
 *     never named by it, and any later change through the file system moves its mtime or inode.
 *
 * Anything else (another onnxruntime, another CPU, a rebuilt graph, a damaged or half-deleted
 * cache, a session that fails to load from it) rebuilds the cache from the compiled graph; a
 * cache is never trusted on its word. Intra-op thread counts are not part of the key: onnxruntime's
 * graph transformers do not depend on them (the thread pool is used only when kernels run).
 * Old and orphaned cache files (of processes that are gone) are removed when a new cache is written.
 * `SDC_ORT_CACHE=off` turns the cache off; a read-only compiled folder, or one on a disk without
 * room for another copy of the weights (and 1 GB to spare), runs without it.
 */
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import { processAlive, writeFileAtomic } from "../util/fs.js";
import { canonicalJson, sha256, sha256File } from "../util/hash.js";

export const ORT_CACHE_FORMAT = "sdc-ort-cache/1";

/** What a compiled graph is, as far as the cache is concerned (a plan's graph spec has these). */
export interface CachedGraphSpec {
  sha256: string;
  externalData: string[];
}

export interface CacheKey {
  format: string;
  ort: string;
  ep: "cpu" | "cuda";
  level: string;
  platform: string;
  cpu: string;
  graph: string;
  weights: ({ file: string } & FileId)[];
}

interface Sidecar {
  key: CacheKey;
  onnx: string;
  onnxSha256: string;
  data: string;
  dataIdentity: FileId;
}

/** A file's size, modification time (ns) and inode: what any write through the file system changes. */
interface FileId {
  size: number;
  mtimeNs: string;
  ino: number;
}

/** How a session used the cache: loaded from it, made it, or ran without it (and why). */
export interface CacheUse {
  status: "hit" | "built" | "off";
  /** Why the cache was not used as it was (rebuilt or off). */
  reason?: string;
}

/** Whether the optimised-graph cache is on (default) or turned off with SDC_ORT_CACHE=off|0|false. */
export function ortCacheEnabled(): boolean {
  const v = (process.env.SDC_ORT_CACHE ?? "").trim().toLowerCase();
  return !(v === "off" || v === "0" || v === "false" || v === "no");
}

/** The sidecar that names a graph's cache: `model.onnx` → `model.ort.json`. */
export function sidecarPath(modelPath: string): string {
  return path.join(path.dirname(modelPath), `${path.basename(modelPath, ".onnx")}.ort.json`);
}

let cpuSig: string | undefined;
/** The CPU the optimised graph was made for: model name and feature flags (Linux), hashed. */
export function cpuSignature(): string {
  if (cpuSig) return cpuSig;
  let text = `${os.cpus()[0]?.model ?? "cpu"}`;
  try {
    const info = fs.readFileSync("/proc/cpuinfo", "utf8");
    const flags = /^(flags|Features)\s*:\s*(.*)$/m.exec(info)?.[2] ?? "";
    text += `|${flags.split(/\s+/).sort().join(" ")}`;
  } catch {
    // not Linux: the model name stands for the CPU
  }
  cpuSig = sha256(text).slice(0, 16);
  return cpuSig;
}

function fileId(file: string): FileId {
  const st = fs.statSync(file, { bigint: true });
  return { size: Number(st.size), mtimeNs: st.mtimeNs.toString(), ino: Number(st.ino) };
}

/** The key a graph's cache must have to be used for this session. */
export function cacheKey(modelPath: string, spec: CachedGraphSpec, ep: "cpu" | "cuda", level: string): CacheKey {
  const dir = path.dirname(modelPath);
  return {
    format: ORT_CACHE_FORMAT,
    ort: ort.env.versions.node ?? ort.env.versions.common,
    ep,
    level,
    platform: `${process.platform}-${process.arch}`,
    cpu: cpuSignature(),
    graph: spec.sha256,
    weights: spec.externalData.map((f) => ({ file: f, ...fileId(path.join(dir, f)) })),
  };
}

/** Why a sidecar's key is not this one (null when it is). */
function keyMismatch(got: CacheKey, want: CacheKey): string | null {
  if (got.format !== want.format) return `it has another cache format (${String(got.format)})`;
  if (got.ort !== want.ort) return `it was made by onnxruntime ${got.ort}, this is ${want.ort}`;
  if (got.ep !== want.ep) return `it was made for the ${String(got.ep).toUpperCase()} provider, not the ${want.ep.toUpperCase()} one`;
  if (got.level !== want.level) return `it was optimised at level ${got.level}, not ${want.level}`;
  if (got.platform !== want.platform || got.cpu !== want.cpu) return "it was made on another CPU or platform";
  if (got.graph !== want.graph) return "the compiled graph changed since";
  if (canonicalJson(got.weights) !== canonicalJson(want.weights)) return "the graph's weights files changed since";
  return null;
}

/** The cached model's path when the sidecar is valid for `key`, else why not. */
function validCache(modelPath: string, key: CacheKey): { file: string; names: string[] } | { reason: string } {
  const side = sidecarPath(modelPath);
  if (!fs.existsSync(side)) return { reason: "there is no cache yet" };
  let s: Sidecar;
  try {
    s = JSON.parse(fs.readFileSync(side, "utf8")) as Sidecar;
    if (!s || typeof s !== "object" || !s.key || typeof s.onnx !== "string" || typeof s.data !== "string") throw new Error("fields");
  } catch {
    return { reason: `${path.basename(side)} is unreadable` };
  }
  const why = keyMismatch(s.key, key);
  if (why) return { reason: why };
  const dir = path.dirname(modelPath);
  // only our own names, in the graph's folder
  const ours = (n: string) => /^[\w.-]+$/.test(n) && !n.startsWith(".");
  if (!ours(s.onnx) || !ours(s.data)) return { reason: `${path.basename(side)} names files outside the graph's folder` };
  const onnx = path.join(dir, s.onnx);
  const data = path.join(dir, s.data);
  if (!fs.existsSync(onnx) || !fs.existsSync(data)) return { reason: "its files are missing" };
  if (sha256File(onnx) !== s.onnxSha256) return { reason: "its optimised graph file was changed" };
  if (canonicalJson(fileId(data)) !== canonicalJson(s.dataIdentity)) return { reason: "its weights file was changed since it was written" };
  return { file: onnx, names: [s.onnx, s.data] };
}

const CACHE_FILE = /^(.+)\.ort-(\d+)-([0-9a-f]{8})\.onnx(\.data)?$/;

/** Remove cache files no sidecar names: those of a replaced cache and of writers that died. */
function removeStale(modelPath: string, keep: Set<string>): void {
  const dir = path.dirname(modelPath);
  const base = path.basename(modelPath, ".onnx");
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) {
    const m = CACHE_FILE.exec(n);
    if (!m || m[1] !== base || keep.has(n)) continue;
    const pid = Number(m[2]);
    if (pid !== process.pid && processAlive(pid)) continue; // another process is writing it
    try {
      fs.rmSync(path.join(dir, n), { force: true });
    } catch {
      // in use on a platform that refuses: the next writer removes it
    }
  }
}

/** A session's options with optimisation off, to load an already-optimised model. */
function loadOptions(o: ort.InferenceSession.SessionOptions): ort.InferenceSession.SessionOptions {
  return { ...o, graphOptimizationLevel: "disabled" };
}

function withSave(o: ort.InferenceSession.SessionOptions, onnx: string, data: string): ort.InferenceSession.SessionOptions {
  const extra = (o.extra ?? {}) as Record<string, Record<string, string>>;
  return {
    ...o,
    optimizedModelFilePath: onnx,
    extra: {
      ...extra,
      session: {
        ...(extra.session ?? {}),
        optimized_model_external_initializers_file_name: path.basename(data),
        optimized_model_external_initializers_min_size_in_bytes: "1024",
      },
    },
  };
}

/**
 * A CPU session of a compiled graph, through the cache: loaded from a valid cache, else created
 * from the graph (at `options.graphOptimizationLevel`) while saving a new cache.
 */
export async function createCachedSession<S>(
  modelPath: string,
  spec: CachedGraphSpec,
  options: ort.InferenceSession.SessionOptions,
  create: (modelPath: string, options: ort.InferenceSession.SessionOptions) => Promise<S>,
  onBuild?: (reason: string) => void,
): Promise<{ session: S; cache: CacheUse }> {
  const level = options.graphOptimizationLevel ?? "all";
  if (!ortCacheEnabled()) return { session: await create(modelPath, options), cache: { status: "off", reason: "SDC_ORT_CACHE is off" } };
  if (level === "disabled") return { session: await create(modelPath, options), cache: { status: "off", reason: "optimisation is off" } };
  const key = cacheKey(modelPath, spec, "cpu", level);
  const found = validCache(modelPath, key);
  let reason: string;
  if ("file" in found) {
    try {
      const session = await create(found.file, loadOptions(options));
      removeStale(modelPath, new Set(found.names)); // what killed writers left
      return { session, cache: { status: "hit" } };
    } catch (e) {
      reason = `loading it failed (${(e as Error).message.split("\n")[0]!.slice(0, 200)})`;
    }
  } else reason = found.reason;

  const dir = path.dirname(modelPath);
  try {
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    return { session: await create(modelPath, options), cache: { status: "off", reason: "the compiled folder is not writable" } };
  }
  // the cache holds the graph's weights again: leave it out rather than fill the disk
  const need = spec.externalData.reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, fs.statSync(modelPath).size);
  const st = fs.statfsSync(dir);
  const free = Number(st.bavail) * Number(st.bsize);
  if (free < need * 1.1 + 1e9)
    return { session: await create(modelPath, options), cache: { status: "off", reason: `too little free disk for it (${(need / 1e9).toFixed(1)} GB needed, ${(free / 1e9).toFixed(1)} GB free)` } };
  onBuild?.(reason);
  const stem = `${path.basename(modelPath, ".onnx")}.ort-${process.pid}-${randomBytes(4).toString("hex")}`;
  const onnx = path.join(dir, `${stem}.onnx`);
  const data = `${onnx}.data`;
  let session: S;
  try {
    session = await create(modelPath, withSave(options, onnx, data));
  } catch (e) {
    // saving failed (disk full, …) or the graph does not load: without the cache, the graph's own error shows
    fs.rmSync(onnx, { force: true });
    fs.rmSync(data, { force: true });
    const session = await create(modelPath, options);
    return { session, cache: { status: "off", reason: `saving the optimised graph failed (${(e as Error).message.split("\n")[0]!.slice(0, 200)})` } };
  }
  try {
    if (!fs.existsSync(data)) fs.writeFileSync(data, ""); // a graph without weights big enough to go external
    const sidecar: Sidecar = { key, onnx: path.basename(onnx), onnxSha256: sha256File(onnx), data: path.basename(data), dataIdentity: fileId(data) };
    writeFileAtomic(sidecarPath(modelPath), `${JSON.stringify(sidecar, null, 2)}\n`);
    removeStale(modelPath, new Set([sidecar.onnx, sidecar.data]));
  } catch (e) {
    fs.rmSync(onnx, { force: true });
    fs.rmSync(data, { force: true });
    return { session, cache: { status: "off", reason: `writing the cache failed (${(e as Error).message.split("\n")[0]!.slice(0, 200)})` } };
  }
  return { session, cache: { status: "built", reason } };
}

/**
 * Carry the caches a run built inside its private view of a compiled folder (src/util/lock.ts
 * `snapshotDir`: hard links to the folder's files) back into that folder, as hard links, so the next
 * run finds them. Only for graphs that are still the very files the view linked (same inode: not
 * recompiled since the view was taken); the sidecar goes last, by rename, so a reader sees the whole
 * cache or the one before. Best effort: a cache that cannot be carried back is built again later.
 */
export function publishCaches(viewDir: string, targetDir: string): void {
  const visit = (rel: string) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(path.join(viewDir, rel), { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.isDirectory()) visit(path.join(rel, e.name));
      else if (e.name.endsWith(".ort.json")) {
        try {
          publishOne(path.join(viewDir, rel), path.join(targetDir, rel), e.name);
        } catch {
          // the folder changed under us, or refuses links: the next run builds its cache itself
        }
      }
    }
  };
  visit(".");
}

function publishOne(from: string, to: string, sidecarName: string): void {
  const ino = (f: string) => (fs.existsSync(f) ? fs.statSync(f).ino : -1);
  const model = `${sidecarName.slice(0, -".ort.json".length)}.onnx`;
  if (ino(path.join(to, model)) !== ino(path.join(from, model)) || ino(path.join(from, model)) === -1) return;
  if (ino(path.join(to, sidecarName)) === ino(path.join(from, sidecarName))) return; // already there
  const s = JSON.parse(fs.readFileSync(path.join(from, sidecarName), "utf8")) as Sidecar;
  const ours = (n: unknown): n is string => typeof n === "string" && /^[\w.-]+$/.test(n) && !n.startsWith(".");
  if (!ours(s.onnx) || !ours(s.data)) return;
  for (const n of [s.data, s.onnx]) {
    const a = path.join(from, n);
    const b = path.join(to, n);
    if (ino(b) === ino(a)) continue;
    if (fs.existsSync(b)) return; // a file of that name that is not ours: leave the folder alone
    fs.linkSync(a, b);
  }
  const tmp = path.join(to, `.${sidecarName}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`);
  fs.linkSync(path.join(from, sidecarName), tmp);
  fs.renameSync(tmp, path.join(to, sidecarName));
}
