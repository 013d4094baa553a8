/**
 * Helpers for the compile-step tests: private copies of the fixture checkpoints (so a test may
 * damage them, and so hard links from a compiled folder are possible: same filesystem), pipelines
 * over them, snapshots of a folder (inode, mtime, content hash per file), the ONNX files read back
 * with onnx-proto, and every reference case of a fixture run through a compiled folder.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import onnxProto, { type onnx as P } from "onnx-proto";
import { loadPipeline, type LoadedPipeline } from "../../src/config/load.js";
import { SafetensorsFile, writeSafetensors, type StDtype, type TensorEntry } from "../../src/models/weights/safetensors.js";
import { sha256File } from "../../src/util/hash.js";
import { refTensor, session } from "../helpers/pipeline.js";
import { MODEL_FIXTURES as MODELS, tempDir } from "../helpers/repo.js";

export const { onnx } = onnxProto;
export { MODELS };

/** A temporary folder, removed after the test file. */
export const tmp = (prefix = "sdc-ctest-"): string => tempDir(prefix);

/** A private copy of a fixture (folder or file) inside `into`; returns its path. */
export function copyFixture(name: string, into: string): string {
  const to = path.join(into, name);
  fs.cpSync(path.join(MODELS, name), to, { recursive: true });
  return to;
}

/** Write `<dir>/<file>` (a pipeline YAML) and load it; `from` is put in as an absolute path. */
export async function pipelineIn(dir: string, from: string, extraYaml = "", opts: { file?: string; overrides?: string[] } = {}): Promise<LoadedPipeline> {
  const file = path.join(dir, opts.file ?? "p.yaml");
  fs.writeFileSync(file, `version: 1\nname: p\nmodel:\n  from: ${JSON.stringify(from)}\n${extraYaml}`);
  return loadPipeline(file, { cwd: dir, overrides: opts.overrides ?? [] });
}

export interface FileState {
  ino: number;
  mtimeMs: number;
  size: number;
  sha256: string;
}

/** Every file under `dir` (relative path → inode, mtime, size, content hash). */
export function snapshot(dir: string): Record<string, FileState> {
  const out: Record<string, FileState> = {};
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else {
        const st = fs.statSync(p);
        out[path.relative(dir, p).split(path.sep).join("/")] = { ino: st.ino, mtimeMs: st.mtimeMs, size: st.size, sha256: sha256File(p) };
      }
    }
  };
  walk(dir);
  return out;
}

/** Files of `dir` (relative, sorted). */
export function listFiles(dir: string): string[] {
  return Object.keys(snapshot(dir)).sort();
}

export function readOnnx(file: string): P.ModelProto {
  return onnx.ModelProto.decode(fs.readFileSync(file));
}

const ELEM: Record<number, string> = { 1: "float32", 6: "int32", 7: "int64", 10: "float16", 11: "float64", 16: "bfloat16" };

export interface IoSpec {
  name: string;
  dtype: string;
  shape: (number | string)[];
}

/** A graph's inputs or outputs as written in the ONNX file. */
export function onnxIo(m: P.ModelProto, which: "input" | "output"): IoSpec[] {
  return m.graph![which]!.map((v) => ({
    name: v.name!,
    dtype: ELEM[v.type!.tensorType!.elemType!] ?? `onnx type ${v.type!.tensorType!.elemType}`,
    shape: v.type!.tensorType!.shape!.dim!.map((d) => (d.dimParam ? d.dimParam : Number(d.dimValue))),
  }));
}

/** Initializers stored as external data: name, location, offset, length. */
export function externalInitializers(m: P.ModelProto): { name: string; location: string; offset: number; length: number; dtype: number; dims: number[] }[] {
  return m.graph!.initializer!
    .filter((t) => t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL)
    .map((t) => {
      const kv = Object.fromEntries(t.externalData!.map((e) => [e.key!, e.value!]));
      return { name: t.name!, location: kv.location!, offset: Number(kv.offset ?? 0), length: Number(kv.length), dtype: t.dataType!, dims: t.dims!.map(Number) };
    });
}

interface Case {
  case: string;
  model: "text_encoder" | "unet" | "vae_encoder" | "vae_decoder";
  inputs: Record<string, string>;
}

/** A fixture's reference cases (test/fixtures/models/<fixture>.reference.json). */
export function referenceCases(fixture: string): { cases: Case[]; ref: SafetensorsFile } {
  const json = JSON.parse(fs.readFileSync(path.join(MODELS, `${fixture}.reference.json`), "utf8")) as { cases: Case[] };
  return { cases: json.cases, ref: SafetensorsFile.open(path.join(MODELS, `${fixture}.reference.safetensors`)) };
}

/**
 * Run the inputs of every reference case of `fixture` through the float32 graphs of a compiled
 * folder; returns `"<graph> <case> <output>"` → output values.
 */
export async function runReferenceInputs(dir: string, fixture: string, graphs?: readonly string[]): Promise<Map<string, Float32Array>> {
  const { cases, ref } = referenceCases(fixture);
  const out = new Map<string, Float32Array>();
  const sessions = new Map<string, Awaited<ReturnType<typeof session>>>();
  try {
    for (const c of cases) {
      if (graphs && !graphs.includes(c.model)) continue;
      let s = sessions.get(c.model);
      if (!s) sessions.set(c.model, (s = await session(dir, c.model)));
      const feeds = Object.fromEntries(Object.entries(c.inputs).map(([n, t]) => [n, refTensor(ref, t, n === "input_ids" ? "int32" : "float32")]));
      const r = await s.run(feeds);
      for (const [name, t] of Object.entries(r)) out.set(`${c.model} ${c.case} ${name}`, t.data as Float32Array);
    }
  } finally {
    for (const s of sessions.values()) await s.release();
  }
  return out;
}

/** Largest relative error (max |a−b| / max |b|) over every output both maps hold; keys must agree. */
export function compareOutputs(a: Map<string, Float32Array>, b: Map<string, Float32Array>): { max: number; worst: string; bitExact: boolean } {
  if ([...a.keys()].sort().join() !== [...b.keys()].sort().join()) throw new Error("the two runs produced different outputs");
  let max = 0;
  let worst = "";
  let bitExact = true;
  for (const [k, x] of a) {
    const y = b.get(k)!;
    if (x.length !== y.length) throw new Error(`${k}: ${x.length} vs ${y.length} values`);
    let scale = 0;
    let diff = 0;
    for (let i = 0; i < y.length; i++) {
      scale = Math.max(scale, Math.abs(y[i]!));
      const d = Math.abs(x[i]! - y[i]!);
      if (d !== 0) bitExact = false;
      diff = Number.isNaN(d) ? Infinity : Math.max(diff, d);
    }
    const e = diff / Math.max(scale, 1e-30);
    if (e >= max) [max, worst] = [e, k];
  }
  return { max, worst, bitExact };
}

/**
 * Rewrite a .safetensors file (atomically: a new inode, as any tool that saves a checkpoint does),
 * letting `edit` change, drop (return null) or reshape tensors; its mtime is moved forward so the
 * change is visible to (size, mtime) identities even within one millisecond.
 */
export function rewriteSafetensors(
  file: string,
  edit: (name: string, t: { dtype: StDtype; shape: number[]; data: Uint8Array }) => { dtype: StDtype; shape: number[]; data: Uint8Array } | null,
): void {
  const st = SafetensorsFile.open(file);
  const entries: TensorEntry[] = [];
  for (const [name, info] of st.tensors) {
    const t = edit(name, { dtype: info.dtype, shape: [...info.shape], data: st.readRaw(name) });
    if (t) entries.push({ name, ...t });
  }
  const mtime = fs.statSync(file).mtimeMs;
  writeSafetensors(file, entries, Object.keys(st.metadata).length ? { ...st.metadata } : undefined);
  const later = new Date(Math.max(mtime, Date.now()) + 5000);
  fs.utimesSync(file, later, later);
}

/** Add `delta` to every float32 value of a tensor's bytes. */
export function nudged(data: Uint8Array, delta: number): Uint8Array {
  const f = new Float32Array(data.slice().buffer);
  for (let i = 0; i < f.length; i++) f[i]! += delta;
  return new Uint8Array(f.buffer);
}

/** Graph files (model.onnx, external data) of a snapshot, by graph folder. */
export function graphFiles(s: Record<string, FileState>, graph: string): Record<string, FileState> {
  return Object.fromEntries(Object.entries(s).filter(([k]) => k.startsWith(`${graph}/`)));
}
