/**
 * Training checkpoints: folders that are either complete or absent, whatever moment the trainer dies.
 *
 * Layout, under a root folder:
 *
 *   checkpoint-000500/            step zero-padded to 6 digits, so names sort (longer steps still list in step order)
 *     weights.safetensors         one safetensors file per tensor group, named by the trainer
 *     optimizer.safetensors         (e.g. trained parameters, `exp_avg.<name>` …, EMA)
 *     state.json                  the trainer's JSON state (step, data position, generators, LR schedule, …)
 *     manifest.json               written last: format, version, step, created time, each file's bytes and sha256
 *
 * A save writes everything into `.tmp-checkpoint-<step>-<pid>` (each file fsynced, the manifest last, then
 * the folder), then renames it to `checkpoint-<step>`. Re-saving a step renames the old folder aside
 * (`.old-checkpoint-<step>-<pid>`) first and removes it after; pruning renames a checkpoint to
 * `.del-checkpoint-<step>-<pid>` before removing it, so a half-removed checkpoint is never listed.
 * The next save removes what a killed process left, and puts back an `.old-` folder whose replacement
 * never arrived. A folder is a checkpoint only with a parseable manifest; `loadCheckpoint` checks every
 * file's size and sha256 against it. A tensor holding NaN or ±Inf is refused: a non-finite checkpoint
 * is never written.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { DTYPE_SIZES, numel, SafetensorsFile, shapeStr, writeSafetensors } from "../models/weights/safetensors.js";
import { fail, UserError, type Problem } from "../util/errors.js";
import { processAlive } from "../util/fs.js";
import { sha256File } from "../util/hash.js";

/** A tensor as the trainer holds it; F16 as raw half-precision bits (what onnxruntime takes for float16). */
export type CheckpointTensor =
  | { dtype: "F32"; shape: number[]; data: Float32Array }
  | { dtype: "F16"; shape: number[]; data: Uint16Array }
  | { dtype: "I64"; shape: number[]; data: BigInt64Array };

/** Tensors by name. */
export type TensorGroup = Record<string, CheckpointTensor>;

export interface CheckpointContent<S = unknown> {
  /** Tensor files by group name (`weights` → weights.safetensors); the trainer chooses the groups. */
  tensors: Record<string, TensorGroup>;
  /** Any JSON value (plain objects, arrays, strings, finite numbers, booleans, null). */
  state: S;
}

/** What `fs.statfsSync` reports that the free-space check uses. */
export type StatFs = (dir: string) => { bavail: number; bsize: number };

export interface SaveOptions {
  /** Keep the newest `keep` checkpoints (the one just written always stays); 0 keeps all. Default 0. */
  keep?: number;
  /** Free-space probe; `fs.statfsSync` unless replaced (tests). */
  statfs?: StatFs;
}

export interface SaveResult {
  dir: string;
  step: number;
  /** Bytes written (all files). */
  bytes: number;
  /** Checkpoint folders removed by pruning. */
  pruned: string[];
}

export interface ManifestFile {
  bytes: number;
  sha256: string;
}

export interface Manifest {
  format: typeof FORMAT;
  version: number;
  step: number;
  /** ISO 8601 time of the save. */
  created: string;
  /** Tensor groups, in the order the trainer gave them. */
  groups: string[];
  /** Every file of the checkpoint but the manifest, by name. */
  files: Record<string, ManifestFile>;
}

export interface CheckpointInfo {
  step: number;
  dir: string;
  manifest: Manifest;
}

export interface CheckpointListing {
  /** Complete checkpoints (manifest present and parseable), oldest first. */
  checkpoints: CheckpointInfo[];
  /** `checkpoint-*` folders that are not complete checkpoints, and why. */
  incomplete: { dir: string; reason: string }[];
}

export interface LoadedCheckpoint<S = unknown> {
  dir: string;
  step: number;
  created: string;
  state: S;
  groups: string[];
  /** One group's tensors, read from its (already verified) file; typed arrays own their memory. */
  readGroup(group: string): TensorGroup;
}

const FORMAT = "sdc-checkpoint";
const VERSION = 1;
const MANIFEST = "manifest.json";
const STATE = "state.json";
const MARGIN = 1.1;
const NAME = /^checkpoint-(\d+)$/;
const SCRATCH = /^\.(tmp|old|del)-checkpoint-(\d+)-(\d+)$/;
const GROUP_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const ARRAYS = { F32: Float32Array, F16: Uint16Array, I64: BigInt64Array } as const;
const LITTLE_ENDIAN = os.endianness() === "LE";

/** `checkpoint-000500`. */
export function checkpointName(step: number): string {
  return `checkpoint-${String(step).padStart(6, "0")}`;
}

// ---------------------------------------------------------------------------------------------------
// Save

export function saveCheckpoint(root: string, step: number, content: CheckpointContent, options: SaveOptions = {}): SaveResult {
  const keep = options.keep ?? 0;
  if (!Number.isSafeInteger(step) || step < 0) fail(`step ${step} is not a non-negative integer`, { subject: root });
  if (!Number.isSafeInteger(keep) || keep < 0) fail(`keep ${keep} is not a non-negative integer`, { subject: root });
  const name = checkpointName(step);
  const groups = Object.entries(content.tensors);
  checkTensors(name, groups);
  const stateText = `${JSON.stringify(checkJson(content.state, `${name}/${STATE}`), null, 2)}\n`;

  fs.mkdirSync(root, { recursive: true });
  cleanScratch(root, step);
  checkFreeSpace(root, name, groups, stateText, options.statfs ?? ((d) => fs.statfsSync(d)));

  const target = path.join(root, name);
  const tmp = path.join(root, `.tmp-${name}-${process.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  let bytes = 0;
  try {
    const files: Record<string, ManifestFile> = {};
    const record = (file: string) => {
      const p = path.join(tmp, file);
      files[file] = { bytes: fs.statSync(p).size, sha256: sha256File(p) };
      bytes += files[file].bytes;
    };
    for (const [group, tensors] of groups) {
      const file = `${group}.safetensors`;
      writeSafetensors(
        path.join(tmp, file),
        Object.entries(tensors).map(([tname, t]) => ({ name: tname, dtype: t.dtype, shape: t.shape, data: () => leBytes(t.data) })),
        { format: "pt", "sdc.checkpoint.group": group, "sdc.checkpoint.step": String(step) },
      );
      record(file);
    }
    writeSynced(path.join(tmp, STATE), stateText);
    record(STATE);
    const manifest: Manifest = {
      format: FORMAT,
      version: VERSION,
      step,
      created: new Date().toISOString(),
      groups: groups.map(([g]) => g),
      files,
    };
    writeSynced(path.join(tmp, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
    fsyncDir(tmp);

    if (fs.existsSync(target)) {
      // rename() cannot replace a non-empty folder: move the old one aside, then put the new one in place.
      const old = path.join(root, `.old-${name}-${process.pid}`);
      fs.rmSync(old, { recursive: true, force: true });
      fs.renameSync(target, old);
      try {
        fs.renameSync(tmp, target);
      } catch (e) {
        fs.renameSync(old, target); // put the old one back
        throw e;
      }
      fsyncDir(root);
      fs.rmSync(old, { recursive: true, force: true });
    } else {
      fs.renameSync(tmp, target);
      fsyncDir(root);
    }
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    if ((e as NodeJS.ErrnoException).code === "ENOSPC") {
      fail(`the disk filled up while saving ${name} (another process wrote to it meanwhile?); nothing was saved`, {
        subject: root,
        hint: "free space on that disk, keep fewer checkpoints (a smaller `keep`), or save checkpoints to a folder on a larger disk",
      });
    }
    throw e;
  }
  return { dir: target, step, bytes, pruned: keep > 0 ? prune(root, step, keep) : [] };
}

function checkTensors(name: string, groups: [string, TensorGroup][]): void {
  const problems: Problem[] = [];
  for (const [group, tensors] of groups) {
    const file = `${name}/${group}.safetensors`;
    if (!GROUP_NAME.test(group)) {
      problems.push({
        message: `tensor group name ${JSON.stringify(group)} cannot name a file`,
        subject: file,
        hint: "use letters, digits, '_', '-' and '.', starting with a letter or digit",
      });
      continue;
    }
    for (const [tname, t] of Object.entries(tensors)) {
      const where = `${file}: ${tname}`;
      const Ctor = ARRAYS[t.dtype];
      if (!Ctor) {
        problems.push({ message: `dtype ${String(t.dtype)} is not one of ${Object.keys(ARRAYS).join(", ")}`, subject: where });
        continue;
      }
      if (!(t.data instanceof Ctor)) {
        problems.push({ message: `a ${t.dtype} tensor needs its data as a ${Ctor.name}`, subject: where });
        continue;
      }
      if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0) || numel(t.shape) !== t.data.length) {
        problems.push({ message: `shape ${shapeStr(t.shape)} does not hold the ${t.data.length} elements given`, subject: where });
        continue;
      }
      const bad = firstNonFinite(t);
      if (bad >= 0) {
        problems.push({
          message: `element ${bad} is ${t.dtype === "F32" ? String(t.data[bad]) : "NaN or ±Inf"} (tensor group ${JSON.stringify(group)}): a non-finite checkpoint is never written`,
          subject: where,
          hint: "training diverged before this step; resume from an earlier checkpoint with a lower learning rate (or loss scale)",
        });
      }
    }
  }
  if (problems.length) throw new UserError(problems);
}

/** Index of the first NaN/±Inf element, or -1. */
function firstNonFinite(t: CheckpointTensor): number {
  if (t.dtype === "F32") {
    const d = t.data;
    for (let i = 0; i < d.length; i++) if (d[i]! - d[i]! !== 0) return i; // x − x is NaN exactly for NaN and ±Inf
  } else if (t.dtype === "F16") {
    const d = t.data;
    for (let i = 0; i < d.length; i++) if ((d[i]! & 0x7c00) === 0x7c00) return i; // exponent all ones
  }
  return -1;
}

/** The value if JSON.stringify keeps it as it is; otherwise a UserError naming each place. */
function checkJson(value: unknown, file: string): unknown {
  const problems: Problem[] = [];
  const walk = (v: unknown, at: string, inArray: boolean): void => {
    const where = `${file}: ${at || "(the state)"}`;
    if (v === null || typeof v === "string" || typeof v === "boolean") return;
    if (typeof v === "number") {
      if (!Number.isFinite(v)) problems.push({ message: `${v} has no JSON form: a non-finite checkpoint is never written`, subject: where });
      return;
    }
    if (v === undefined && !inArray && at) return; // an absent optional field: JSON leaves the key out
    if (Array.isArray(v)) return v.forEach((x, i) => walk(x, `${at}[${i}]`, true));
    if (typeof v === "object" && [Object.prototype, null].includes(Object.getPrototypeOf(v))) {
      for (const [k, x] of Object.entries(v)) walk(x, at ? `${at}.${k}` : k, false);
      return;
    }
    const what = typeof v === "object" ? (v.constructor?.name ?? "object") : typeof v;
    problems.push({
      message: `a ${what} has no exact JSON form`,
      subject: where,
      hint: "state holds plain objects, arrays, strings, finite numbers, booleans and null; write 64-bit integers as strings",
    });
  };
  walk(value, "", false);
  if (problems.length) throw new UserError(problems);
  return value;
}

function checkFreeSpace(root: string, name: string, groups: [string, TensorGroup][], stateText: string, statfs: StatFs): void {
  let bytes = Buffer.byteLength(stateText) + 1024 * (groups.length + 2); // manifest and safetensors headers' fixed part
  for (const [, tensors] of groups) {
    for (const [tname, t] of Object.entries(tensors)) bytes += t.data.byteLength + tname.length + 80; // + header entry
  }
  const needed = Math.ceil(bytes * MARGIN);
  const s = statfs(root);
  const free = Number(s.bavail) * Number(s.bsize);
  if (free < needed) {
    fail(`not enough free space to save ${name}: it needs ${mib(needed)} (${needed} bytes, with a 10% margin), ${mib(free)} are free`, {
      subject: root,
      hint: "free space on that disk, keep fewer checkpoints (a smaller `keep`), or save checkpoints to a folder on a larger disk",
    });
  }
}

const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

/** Little-endian bytes of a typed array (a view, on little-endian machines). */
function leBytes(a: Float32Array | Uint16Array | BigInt64Array): Uint8Array {
  const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  return LITTLE_ENDIAN ? bytes : swapBytes(bytes.slice(), a.BYTES_PER_ELEMENT);
}

function swapBytes(b: Uint8Array, size: number): Uint8Array {
  for (let i = 0; i < b.length; i += size) b.subarray(i, i + size).reverse();
  return b;
}

function writeSynced(file: string, text: string): void {
  const fd = fs.openSync(file, "w");
  try {
    fs.writeFileSync(fd, text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Make a folder's entries (creations, renames) durable; a no-op where folders cannot be opened (Windows). */
function fsyncDir(dir: string): void {
  let fd: number;
  try {
    fd = fs.openSync(dir, "r");
  } catch {
    return;
  }
  try {
    fs.fsyncSync(fd);
  } catch {
    // EISDIR / EINVAL / EPERM: the platform does not sync folders
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Remove what interrupted saves left: a scratch folder is stale when its process is gone, when it is
 * this process's (a save here is synchronous, so it is an earlier process's that had our pid, e.g. a
 * restarted container), or when it is for a step before the one being saved. An `.old-` folder whose
 * replacement never arrived is renamed back.
 */
function cleanScratch(root: string, step: number): void {
  for (const entry of fs.readdirSync(root)) {
    const m = SCRATCH.exec(entry);
    if (!m) continue;
    const [, kind, s, pid] = m;
    if (!(Number(pid) === process.pid || !processAlive(Number(pid)) || Number(s) < step)) continue;
    const dir = path.join(root, entry);
    const home = path.join(root, checkpointName(Number(s)));
    try {
      if (kind === "old" && !fs.existsSync(home) && readManifest(dir).manifest) {
        fs.renameSync(dir, home);
        fsyncDir(root);
      } else {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    } catch {
      // another process removed it meanwhile
    }
  }
}

function prune(root: string, step: number, keep: number): string[] {
  const newestFirst = listCheckpoints(root).checkpoints.reverse();
  const kept = new Set(newestFirst.slice(0, keep).map((c) => c.step)).add(step);
  const pruned: string[] = [];
  for (const c of newestFirst) {
    if (kept.has(c.step) || !NAME.test(path.basename(c.dir))) continue;
    const del = path.join(root, `.del-${checkpointName(c.step)}-${process.pid}`);
    fs.renameSync(c.dir, del); // listed no more from here on, however far the removal gets
    fs.rmSync(del, { recursive: true, force: true });
    pruned.push(c.dir);
  }
  if (pruned.length) fsyncDir(root);
  return pruned;
}

// ---------------------------------------------------------------------------------------------------
// List

/** The checkpoints under `root` (none when it does not exist). Reads manifests only; verifies nothing. */
export function listCheckpoints(root: string): CheckpointListing {
  const listing: CheckpointListing = { checkpoints: [], incomplete: [] };
  let entries: string[];
  try {
    entries = fs.readdirSync(root);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return listing;
    throw e;
  }
  const steps = new Set<number>();
  for (const entry of entries) {
    const m = NAME.exec(entry);
    if (!m) continue;
    const dir = path.join(root, entry);
    const { manifest, reason } = readManifest(dir);
    if (!manifest) listing.incomplete.push({ dir, reason });
    else if (manifest.step !== Number(m[1])) listing.incomplete.push({ dir, reason: `its manifest is for step ${manifest.step}` });
    else {
      listing.checkpoints.push({ step: manifest.step, dir, manifest });
      steps.add(manifest.step);
    }
  }
  // A replaced checkpoint whose replacement was never renamed in (the process died between the renames).
  for (const entry of entries) {
    const m = SCRATCH.exec(entry);
    if (!m || m[1] !== "old" || steps.has(Number(m[2])) || processAlive(Number(m[3]))) continue;
    const dir = path.join(root, entry);
    const { manifest } = readManifest(dir);
    if (manifest?.step === Number(m[2])) {
      listing.checkpoints.push({ step: manifest.step, dir, manifest });
      steps.add(manifest.step);
    }
  }
  listing.checkpoints.sort((a, b) => a.step - b.step);
  listing.incomplete.sort((a, b) => (a.dir < b.dir ? -1 : 1));
  return listing;
}

/** The newest complete checkpoint under `root`, or null. */
export function latestCheckpoint(root: string): CheckpointInfo | null {
  return listCheckpoints(root).checkpoints.at(-1) ?? null;
}

function readManifest(dir: string): { manifest: Manifest; reason?: undefined } | { manifest?: undefined; reason: string } {
  let text: string;
  try {
    text = fs.readFileSync(path.join(dir, MANIFEST), "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return { reason: code === "ENOENT" ? `no ${MANIFEST} (the save did not finish)` : `${MANIFEST} cannot be read (${code})` };
  }
  let m: Partial<Manifest>;
  try {
    m = JSON.parse(text) as Partial<Manifest>;
  } catch {
    return { reason: `${MANIFEST} is not valid JSON` };
  }
  if (m?.format !== FORMAT) return { reason: `${MANIFEST} is not an sdc checkpoint manifest` };
  if (m.version !== VERSION) return { reason: `${MANIFEST} has format version ${String(m.version)}; this sdc reads version ${VERSION}` };
  const files = m.files;
  if (
    !Number.isSafeInteger(m.step) ||
    typeof m.created !== "string" ||
    !Array.isArray(m.groups) ||
    !m.groups.every((g) => typeof g === "string" && GROUP_NAME.test(g)) ||
    typeof files !== "object" ||
    files === null ||
    !Object.entries(files).every(
      ([f, x]) => !f.includes("/") && !f.includes("\\") && f !== MANIFEST && Number.isSafeInteger(x?.bytes) && typeof x?.sha256 === "string",
    ) ||
    !m.groups.every((g) => `${g}.safetensors` in files) ||
    !(STATE in files)
  ) {
    return { reason: `${MANIFEST} is missing fields or has malformed ones` };
  }
  return { manifest: m as Manifest };
}

// ---------------------------------------------------------------------------------------------------
// Load

/**
 * Open a checkpoint folder: every file is checked against the manifest (size, then sha256) before
 * anything is returned; tensors are read per group on demand.
 */
export function loadCheckpoint<S = unknown>(dir: string): LoadedCheckpoint<S> {
  const { manifest, reason } = readManifest(dir);
  if (!manifest) {
    fail(`not a complete checkpoint: ${reason}`, { subject: dir, hint: olderHint(dir, Infinity) });
  }
  const damaged: (file: string, what: string) => never = (file, what) =>
    fail(`${what}: the checkpoint is damaged`, { subject: path.join(dir, file), hint: olderHint(dir, manifest.step) });
  for (const [file, want] of Object.entries(manifest.files)) {
    let size: number;
    try {
      size = fs.statSync(path.join(dir, file)).size;
    } catch {
      damaged(file, "the file is missing");
    }
    if (size !== want.bytes) damaged(file, `the file is ${size} bytes long, the manifest says ${want.bytes}`);
    if (sha256File(path.join(dir, file)) !== want.sha256) damaged(file, "the file's sha256 differs from the manifest's");
  }
  let state: S;
  try {
    state = JSON.parse(fs.readFileSync(path.join(dir, STATE), "utf8")) as S;
  } catch (e) {
    return damaged(STATE, `not valid JSON (${(e as Error).message})`);
  }
  return {
    dir,
    step: manifest.step,
    created: manifest.created,
    state,
    groups: [...manifest.groups],
    readGroup: (group) => {
      if (!manifest.groups.includes(group)) {
        fail(`no tensor group ${JSON.stringify(group)} in this checkpoint`, {
          subject: dir,
          hint: `its groups are ${manifest.groups.map((g) => JSON.stringify(g)).join(", ") || "(none)"}`,
        });
      }
      return readGroup(path.join(dir, `${group}.safetensors`));
    },
  };
}

function readGroup(file: string): TensorGroup {
  const st = SafetensorsFile.open(file);
  const out: TensorGroup = {};
  for (const [name, info] of st.tensors) {
    if (!(info.dtype in ARRAYS)) {
      fail(`has dtype ${info.dtype}; a checkpoint holds only ${Object.keys(ARRAYS).join(", ")}`, { subject: `${file}: ${name}` });
    }
    const dtype = info.dtype as keyof typeof ARRAYS;
    let raw = st.readRaw(name);
    if (!LITTLE_ENDIAN) raw = swapBytes(raw, DTYPE_SIZES[dtype]);
    const n = raw.byteLength / DTYPE_SIZES[dtype];
    out[name] = { dtype, shape: info.shape, data: new ARRAYS[dtype](raw.buffer as ArrayBuffer, raw.byteOffset, n) } as CheckpointTensor;
  }
  return out;
}

/** What to do about a damaged checkpoint: the next older complete one in the same root, if any. */
function olderHint(dir: string, step: number): string {
  const older = listCheckpoints(path.dirname(dir)).checkpoints.filter((c) => c.step < step && c.dir !== dir).at(-1);
  return older
    ? `resume from the older checkpoint ${older.dir} (step ${older.step}) instead, or delete this folder`
    : `no older complete checkpoint exists in ${path.dirname(dir)}; delete this folder and start the run again`;
}
