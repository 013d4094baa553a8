/**
 * ONNX writer (onnx-proto / protobufjs). Tensors are always `raw_data`. Weights go to external
 * data: a weight stored in its source file with the dtype the graph wants is not copied at all —
 * the source file is hard-linked into the model's folder (onnxruntime requires external data to
 * live inside it) and the initializer points at its byte range. Weights that need a change
 * (another dtype, or computed) are written once, streaming, into `<model>.onnx_data`; only one
 * such tensor is in memory at a time.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import onnxProto from "onnx-proto";
import type { onnx as OnnxT } from "onnx-proto";
import { dimStr } from "../dims.js";
import { DTYPE_SIZE, type Attrs, type DType, type Graph, type Node, type TensorData, type Value } from "../graph.js";
import { getOp } from "../ops/index.js";
import { ONNX_DTYPE } from "../ops/elementwise.js";
import { bf16ToF32, f16ToF32, f32ToF16 } from "../../util/half.js";
import { bytesOfType } from "../builder.js";

// onnx-proto is CommonJS: its namespace comes through the default export under Node's ESM loader
const { onnx } = onnxProto;

export const OPSET = 21;
export const IR_VERSION = 10;


export interface WriteOptions {
  /** Folder to write into (created). */
  dir: string;
  fileName?: string;
  /** Constants up to this size are stored inside model.onnx. */
  inlineLimit?: number;
  /** Hard-link source weight files into `dir` instead of copying tensors (default true). */
  linkSources?: boolean;
  docString?: string;
  metadata?: Record<string, string>;
}

export interface WriteResult {
  modelFile: string;
  /** External files the model references, relative to dir. */
  externalFiles: string[];
  /** Bytes of weights written (converted or computed). */
  bytesWritten: number;
  /** Bytes of weights referenced in place through hard links. */
  bytesLinked: number;
}

export function readFileRange(file: string, offset: number, length: number): Uint8Array {
  const fd = fs.openSync(file, "r");
  try {
    const buf = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const n = fs.readSync(fd, buf, done, length - done, offset + done);
      if (n === 0) throw new Error(`${file}: unexpected end of file reading ${length} bytes at ${offset}`);
      done += n;
    }
    return buf;
  } finally {
    fs.closeSync(fd);
  }
}

/** Bytes of `data` converted to `dtype` (float conversions only). */
export function materialize(data: TensorData, dtype: DType): Uint8Array {
  let raw: Uint8Array;
  let from: DType;
  if (data.kind === "bytes") return data.bytes;
  if (data.kind === "lazy") return data.produce();
  raw = readFileRange(data.file, data.offset, data.byteLength);
  from = data.storageDtype;
  if (from === dtype) return raw;
  let f: Float32Array;
  if (from === "float32") f = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  else if (from === "float16") f = f16ToF32(raw);
  else if (from === "bfloat16") f = bf16ToF32(raw);
  else throw new Error(`cannot convert ${from} to ${dtype}`);
  if (dtype === "float32") return new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
  if (dtype === "float16") {
    const h = f32ToF16(f);
    return new Uint8Array(h.buffer);
  }
  throw new Error(`cannot convert ${from} to ${dtype}`);
}

function valueInfo(name: string, v: Value): OnnxT.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: ONNX_DTYPE[v.dtype],
        shape: { dim: v.shape.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: dimStr(d) })) },
      },
    },
  };
}

/** An attribute as its op declares it (`OpDef.attrs`); a value of another kind is refused. */
function attribute(n: Node, name: string, v: Attrs[string]): OnnxT.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  const type = getOp(n.domain, n.op).attrs?.[name];
  const bad = () => new Error(`${n.name} (${n.op}): attribute ${name} = ${JSON.stringify(v)} ${type ? `is not a valid ${type}` : "is not declared by the op"}`);
  const enc = (s: string) => new TextEncoder().encode(s);
  const isNums = Array.isArray(v) && v.every((x) => typeof x === "number");
  switch (type) {
    case "int":
      if (typeof v === "boolean") return { name, type: T.INT, i: v ? 1 : 0 };
      if (typeof v !== "number" || !Number.isInteger(v)) throw bad();
      return { name, type: T.INT, i: v };
    case "float":
      if (typeof v !== "number") throw bad();
      return { name, type: T.FLOAT, f: v };
    case "ints":
      if (!isNums || !(v as number[]).every(Number.isInteger)) throw bad();
      return { name, type: T.INTS, ints: v as number[] };
    case "floats":
      if (!isNums) throw bad();
      return { name, type: T.FLOATS, floats: v as number[] };
    case "string":
      if (typeof v !== "string") throw bad();
      return { name, type: T.STRING, s: enc(v) };
    case "strings":
      if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) throw bad();
      return { name, type: T.STRINGS, strings: (v as string[]).map(enc) };
    case "tensor":
      if (typeof v !== "object" || Array.isArray(v)) throw bad();
      return { name, type: T.TENSOR, t: { dims: v.tensor.shape as number[], dataType: ONNX_DTYPE[v.tensor.dtype], rawData: v.bytes } };
    default:
      throw bad();
  }
}

export function writeOnnx(g: Graph, opts: WriteOptions): WriteResult {
  const dir = opts.dir;
  fs.mkdirSync(dir, { recursive: true });
  const fileName = opts.fileName ?? "model.onnx";
  const dataName = `${fileName}_data`;
  const inlineLimit = opts.inlineLimit ?? 1024;
  const linkSources = opts.linkSources ?? true;
  let dataFd: number | null = null;
  let dataOffset = 0;
  let bytesLinked = 0;
  const linked = new Map<string, string | null>(); // source file → name in dir (null: link failed)
  const external = new Set<string>();

  const appendData = (bytes: Uint8Array): { location: string; offset: number } => {
    if (dataFd === null) dataFd = fs.openSync(path.join(dir, dataName), "w");
    const offset = dataOffset;
    let done = 0;
    while (done < bytes.byteLength) done += fs.writeSync(dataFd, bytes, done, bytes.byteLength - done, offset + done);
    dataOffset += bytes.byteLength;
    external.add(dataName);
    return { location: dataName, offset };
  };

  const linkFor = (file: string): string | null => {
    if (!linkSources) return null;
    if (linked.has(file)) return linked.get(file)!;
    let name = path.basename(file);
    const taken = new Set([...linked.values()].filter((x): x is string => !!x));
    for (let i = 1; taken.has(name) || name === fileName || name === dataName; i++) name = `${i}_${path.basename(file)}`;
    try {
      fs.linkSync(file, path.join(dir, name));
    } catch {
      linked.set(file, null); // other filesystem or no permission: copy tensors instead
      return null;
    }
    linked.set(file, name);
    return name;
  };

  try {
    const initializers: OnnxT.ITensorProto[] = [];
    for (const [name, v] of g.constants) {
      const data = v.data!;
      const t: OnnxT.ITensorProto = { name, dims: v.shape as number[], dataType: ONNX_DTYPE[v.dtype] };
      const size = bytesOfType(v.type);
      let ext: { location: string; offset: number } | null = null;
      if (data.kind === "file" && data.storageDtype === v.dtype) {
        if (data.byteLength !== size) throw new Error(`constant ${name}: ${data.byteLength} bytes in ${data.file}, shape needs ${size}`);
        const loc = size > inlineLimit ? linkFor(data.file) : null;
        if (loc) {
          ext = { location: loc, offset: data.offset };
          external.add(loc);
          bytesLinked += size;
        }
      }
      if (!ext) {
        const bytes = materialize(data, v.dtype);
        if (bytes.byteLength !== size) throw new Error(`constant ${name}: got ${bytes.byteLength} bytes, shape ${v.dtype}[${v.shape}] needs ${size}`);
        if (size <= inlineLimit) t.rawData = bytes;
        else ext = appendData(bytes);
      }
      if (ext) {
        t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
        t.externalData = [
          { key: "location", value: ext.location },
          { key: "offset", value: String(ext.offset) },
          { key: "length", value: String(size) },
        ];
      }
      initializers.push(t);
    }

    const nodes: OnnxT.INodeProto[] = g.nodes.map((n) => ({
      name: n.name,
      opType: n.op,
      domain: n.domain,
      input: n.inputs.map((v) => (v ? v.name : "")),
      output: n.outputs.map((v) => v.name),
      attribute: Object.entries(n.attrs).map(([k, v]) => attribute(n, k, v)),
    }));
    // Graph inputs/outputs keep their public names: rename values by inserting Identity where needed.
    const inputs = g.inputs.map((io) => {
      if (io.value.name !== io.name) throw new Error(`graph input ${io.name} is named ${io.value.name}`);
      return valueInfo(io.name, io.value);
    });
    const outputs = g.outputs.map((io) => {
      if (io.value.name !== io.name) nodes.push({ name: `${io.name}/Identity`, opType: "Identity", input: [io.value.name], output: [io.name] });
      return valueInfo(io.name, io.value);
    });
    const domains = new Set(g.nodes.map((n) => n.domain));
    const model: OnnxT.IModelProto = {
      irVersion: IR_VERSION,
      producerName: "sdc",
      producerVersion: "0.1.0",
      docString: opts.docString ?? "",
      opsetImport: [{ domain: "", version: OPSET }, ...(domains.has("com.microsoft") ? [{ domain: "com.microsoft", version: 1 }] : [])],
      metadataProps: Object.entries(opts.metadata ?? {}).map(([key, value]) => ({ key, value })),
      graph: { name: g.name, node: nodes, initializer: initializers, input: inputs, output: outputs },
    };
    const bytes = onnx.ModelProto.encode(model).finish();
    fs.writeFileSync(path.join(dir, fileName), bytes);
    return { modelFile: fileName, externalFiles: [...external], bytesWritten: dataOffset, bytesLinked };
  } finally {
    if (dataFd !== null) fs.closeSync(dataFd);
  }
}
