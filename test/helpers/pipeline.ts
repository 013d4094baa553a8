/** Test helpers: pipelines over the committed fixture models, compiled into temp folders. */
import * as fs from "node:fs";
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import { compile, type CompileResult } from "../../src/compiler/compile.js";
import { loadPipeline, type LoadedPipeline } from "../../src/config/load.js";
import { SafetensorsFile } from "../../src/models/weights/safetensors.js";
import { MODEL_FIXTURES, tempDir } from "./repo.js";

/** A pipeline YAML in a temp folder (model paths absolute), loaded. */
export async function fixturePipeline(yaml: string, overrides: string[] = []): Promise<{ p: LoadedPipeline; dir: string }> {
  const dir = tempDir("sdc-pipe-");
  const file = path.join(dir, "p.yaml");
  fs.writeFileSync(file, `version: 1\nname: p\n${yaml}`);
  return { p: await loadPipeline(file, { overrides, cwd: dir }), dir };
}

export async function compileFixture(model: string, extraYaml = "", overrides: string[] = []): Promise<{ p: LoadedPipeline; r: CompileResult; dir: string }> {
  const from = path.isAbsolute(model) ? model : path.join(MODEL_FIXTURES, model);
  const { p, dir } = await fixturePipeline(`model:\n  from: ${JSON.stringify(from)}\n${extraYaml}`, overrides);
  const r = await compile(p, { outDir: path.join(dir, "compiled") });
  return { p, r, dir };
}

/** Read a named tensor of a reference .safetensors as an ORT tensor (ints become int32/int64 as asked). */
export function refTensor(st: SafetensorsFile, name: string, as?: "int32" | "int64" | "float32"): ort.Tensor {
  const info = st.tensors.get(name);
  if (!info) throw new Error(`reference tensor ${name} missing`);
  const raw = st.readRaw(name);
  if (info.dtype === "I64") {
    const v = new BigInt64Array(raw.buffer, raw.byteOffset, raw.byteLength / 8);
    if (as === "int32") return new ort.Tensor("int32", Int32Array.from(v, Number), info.shape);
    if (as === "float32") return new ort.Tensor("float32", Float32Array.from(v, Number), info.shape);
    return new ort.Tensor("int64", BigInt64Array.from(v), info.shape);
  }
  return new ort.Tensor("float32", st.readFloat32(name), info.shape);
}

export async function session(dir: string, graph: string): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(path.join(dir, graph, "model.onnx"), { logSeverityLevel: 3, intraOpNumThreads: 2 });
}
