/**
 * The safetensors format: an 8-byte little-endian header length N, N bytes of JSON header
 * (`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}}`), then the
 * raw little-endian tensor data, offsets relative to the end of the header.
 *
 * `SafetensorsFile.open` reads and validates the header only (never the data), so opening a 4 GB
 * checkpoint costs one small read; tensors are then read one at a time with positioned reads.
 * Every malformed file is a UserError naming the file and, where one is to blame, the tensor.
 * `writeSafetensors` streams entries to a temporary sibling and renames it into place.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { floatToHalf, halfToFloat } from "../../util/half.js";
import { fail, UserError, type Problem } from "../../util/errors.js";
import { tempSibling } from "../../util/fs.js";

/** Element types and their sizes in bytes. Order is the writer's alignment order (largest first). */
export const DTYPE_SIZES = {
  F64: 8,
  I64: 8,
  U64: 8,
  F32: 4,
  I32: 4,
  U32: 4,
  F16: 2,
  BF16: 2,
  I16: 2,
  U16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
} as const;

export type StDtype = keyof typeof DTYPE_SIZES;

/** Floating types a model weight may have; readFloat32 converts each of them. */
const FLOAT_DTYPES: readonly StDtype[] = ["F32", "F16", "BF16", "F64"];

function isStDtype(s: unknown): s is StDtype {
  return typeof s === "string" && Object.prototype.hasOwnProperty.call(DTYPE_SIZES, s);
}

export function isFloatDtype(d: StDtype): boolean {
  return FLOAT_DTYPES.includes(d);
}

/** The reference implementation refuses headers above 100 MB; so do we (a real SD header is ~100 kB). */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorInfo {
  name: string;
  dtype: StDtype;
  shape: number[];
  /** Absolute byte offset of the tensor's data in the file (8 + header length + data_offsets[0]). */
  offset: number;
  byteLength: number;
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function shapeStr(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

function bad(file: string, message: string, hint?: string, tensor?: string): never {
  throw new UserError({ message, subject: tensor ? `${file}: ${tensor}` : file, ...(hint ? { hint } : {}) });
}

const NOT_SAFETENSORS_HINT =
  "the file is not a valid .safetensors file (truncated download, or another format renamed); re-download or re-export it";

export class SafetensorsFile {
  readonly path: string;
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  readonly metadata: Readonly<Record<string, string>>;
  /** Length of the JSON header in bytes (data starts at 8 + headerLength). */
  readonly headerLength: number;
  readonly fileSize: number;
  private readonly mtimeMs: number;

  private constructor(
    file: string,
    tensors: Map<string, TensorInfo>,
    metadata: Record<string, string>,
    headerLength: number,
    stat: fs.Stats,
  ) {
    this.path = file;
    this.tensors = tensors;
    this.metadata = metadata;
    this.headerLength = headerLength;
    this.fileSize = stat.size;
    this.mtimeMs = stat.mtimeMs;
  }

  /** Open and validate a file; reads the header only. */
  static open(file: string): SafetensorsFile {
    let fd: number;
    try {
      fd = fs.openSync(file, "r");
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      return bad(
        file,
        code === "ENOENT" ? "file not found" : `cannot open the file (${code ?? String(e)})`,
        code === "ENOENT" ? "check the path" : undefined,
      );
    }
    try {
      const stat = fs.fstatSync(fd);
      if (stat.isDirectory()) bad(file, "is a directory, not a .safetensors file");
      if (stat.size < 8) {
        bad(file, `file is ${stat.size} bytes long, too short for the 8-byte header length`, NOT_SAFETENSORS_HINT);
      }
      const lenBuf = Buffer.alloc(8);
      readFully(fd, lenBuf, 0, file);
      const n = lenBuf.readBigUInt64LE(0);
      if (n > BigInt(MAX_HEADER_BYTES) || 8n + n > BigInt(stat.size)) {
        // Only an impossible length is evidence of another format: a valid length may start with any byte.
        const foreign = sniffForeignFormat(lenBuf);
        if (foreign) bad(file, `is ${foreign}, not safetensors`, CONVERT_HINT);
      }
      if (n > BigInt(MAX_HEADER_BYTES)) {
        bad(file, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`, NOT_SAFETENSORS_HINT);
      }
      const headerLength = Number(n);
      if (8 + headerLength > stat.size) {
        bad(
          file,
          `header length ${headerLength} runs past the end of the file (${stat.size} bytes)`,
          NOT_SAFETENSORS_HINT,
        );
      }
      const headerBuf = Buffer.alloc(headerLength);
      readFully(fd, headerBuf, 8, file);
      const { tensors, metadata } = parseHeader(file, headerBuf, stat.size - 8 - headerLength, 8 + headerLength);
      return new SafetensorsFile(file, tensors, metadata, headerLength, stat);
    } finally {
      fs.closeSync(fd);
    }
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) bad(this.path, "no such tensor in the file", undefined, name);
    return t;
  }

  /** The tensor's bytes as stored (little-endian). A fresh copy, aligned for typed-array views. */
  readRaw(name: string): Uint8Array {
    const t = this.info(name);
    return this.readRange(t.offset, t.byteLength, name);
  }

  /** Read `byteLength` bytes at absolute `offset` (used for views that are part of a tensor). */
  readRange(offset: number, byteLength: number, what: string): Uint8Array {
    const buf = new Uint8Array(new ArrayBuffer(byteLength));
    const fd = fs.openSync(this.path, "r");
    try {
      const st = fs.fstatSync(fd);
      if (st.size !== this.fileSize || st.mtimeMs !== this.mtimeMs) {
        bad(this.path, "the file changed on disk since its header was read", "re-open it (recompile)", what);
      }
      readFully(fd, buf, offset, this.path);
    } finally {
      fs.closeSync(fd);
    }
    return buf;
  }

  /** The tensor converted to float32 (F32, F16, BF16, F64); integer tensors are refused. */
  readFloat32(name: string): Float32Array {
    const t = this.info(name);
    return toFloat32(this.readRaw(name), t.dtype, `${this.path}: ${name}`);
  }
}

/** How to turn a PyTorch pickle checkpoint into safetensors (sdc never unpickles: pickle can run code). */
export const CONVERT_HINT =
  "sdc reads only .safetensors (pickle files can run code when loaded). Convert a file you trust with PyTorch and " +
  "the safetensors package: python -c \"import torch, safetensors.torch as st; sd = torch.load('IN', map_location='cpu', " +
  "weights_only=True); sd = sd.get('state_dict', sd); st.save_file({k: v.contiguous().clone() for k, v in sd.items() " +
  "if isinstance(v, torch.Tensor)}, 'OUT.safetensors')\" (a diffusers folder: from_pretrained(...).save_pretrained(dir, " +
  "safe_serialization=True))";

/** Recognise the formats people rename to .safetensors by mistake, from the first 8 bytes. */
function sniffForeignFormat(b: Buffer): string | null {
  if (b[0] === 0x50 && b[1] === 0x4b && b[2] === 0x03 && b[3] === 0x04) return "a zip archive (PyTorch's torch.save format)";
  if (b[0] === 0x80 && b[1]! >= 2 && b[1]! <= 5) return "a Python pickle (PyTorch checkpoint)";
  if (b.toString("latin1", 0, 4) === "GGUF") return "a GGUF file";
  return null;
}

function readFully(fd: number, buf: Uint8Array, position: number, file: string): void {
  let done = 0;
  while (done < buf.byteLength) {
    const n = fs.readSync(fd, buf, done, buf.byteLength - done, position + done);
    if (n === 0) bad(file, `unexpected end of file at byte ${position + done}`, NOT_SAFETENSORS_HINT);
    done += n;
  }
}

function parseHeader(
  file: string,
  buf: Buffer,
  dataSize: number,
  dataStart: number,
): { tensors: Map<string, TensorInfo>; metadata: Record<string, string> } {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(buf);
  } catch {
    return bad(file, "header is not valid UTF-8", NOT_SAFETENSORS_HINT);
  }
  if (!text.startsWith("{")) {
    bad(file, `header does not start with '{' (starts with ${JSON.stringify(text.slice(0, 8))})`, NOT_SAFETENSORS_HINT);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return bad(file, `header is not valid JSON: ${(e as Error).message}`, NOT_SAFETENSORS_HINT);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    bad(file, "header is not a JSON object", NOT_SAFETENSORS_HINT);
  }

  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  const ranges: { name: string; begin: number; end: number }[] = [];
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
        bad(file, "__metadata__ must be an object mapping strings to strings");
      }
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== "string") {
          bad(file, `__metadata__.${k} is ${JSON.stringify(v)}, but metadata values must be strings`);
        }
        metadata[k] = v;
      }
      continue;
    }
    if (typeof raw !== "object" || raw === null) bad(file, "entry is not an object", NOT_SAFETENSORS_HINT, name);
    const e = raw as Record<string, unknown>;
    if (!isStDtype(e.dtype)) {
      bad(
        file,
        `unknown dtype ${JSON.stringify(e.dtype)}`,
        `sdc reads ${Object.keys(DTYPE_SIZES).join(", ")}; convert the file (e.g. to F16 or F32)`,
        name,
      );
    }
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
      bad(file, `shape ${JSON.stringify(shape)} is not a list of non-negative integers`, NOT_SAFETENSORS_HINT, name);
    }
    const offs = e.data_offsets;
    if (
      !Array.isArray(offs) ||
      offs.length !== 2 ||
      !offs.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)
    ) {
      bad(file, `data_offsets ${JSON.stringify(offs)} is not a pair of non-negative integers`, NOT_SAFETENSORS_HINT, name);
    }
    const [begin, end] = offs as [number, number];
    if (end < begin) bad(file, `data_offsets [${begin}, ${end}] end before they begin`, NOT_SAFETENSORS_HINT, name);
    const dtype = e.dtype;
    const expected = numel(shape as number[]) * DTYPE_SIZES[dtype];
    if (end - begin !== expected) {
      bad(
        file,
        `${dtype} ${shapeStr(shape as number[])} needs ${expected} bytes, but data_offsets [${begin}, ${end}] hold ${end - begin}`,
        NOT_SAFETENSORS_HINT,
        name,
      );
    }
    if (end > dataSize) {
      bad(
        file,
        `data_offsets [${begin}, ${end}] run past the end of the data area (${dataSize} bytes): the file is truncated`,
        "re-download or re-export the file",
        name,
      );
    }
    tensors.set(name, { name, dtype, shape: [...(shape as number[])], offset: dataStart + begin, byteLength: end - begin });
    if (end > begin) ranges.push({ name, begin, end });
  }
  ranges.sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < ranges.length; i++) {
    const a = ranges[i - 1]!;
    const b = ranges[i]!;
    if (b.begin < a.end) {
      bad(
        file,
        `data [${b.begin}, ${b.end}] overlaps tensor ${a.name} [${a.begin}, ${a.end}]`,
        NOT_SAFETENSORS_HINT,
        b.name,
      );
    }
  }
  return { tensors, metadata };
}

// ---------------------------------------------------------------------------------------------------
// Conversions

const LITTLE_ENDIAN = os.endianness() === "LE";


/** Little-endian bytes of a float dtype → Float32Array. */
export function toFloat32(raw: Uint8Array, dtype: StDtype, what: string): Float32Array {
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const n = raw.byteLength / DTYPE_SIZES[dtype];
  const out = new Float32Array(n);
  switch (dtype) {
    case "F32":
      if (LITTLE_ENDIAN && raw.byteOffset % 4 === 0) return new Float32Array(raw.buffer, raw.byteOffset, n).slice();
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
      return out;
    case "F16":
      for (let i = 0; i < n; i++) out[i] = halfToFloat(dv.getUint16(2 * i, true));
      return out;
    case "BF16": {
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u[i] = dv.getUint16(2 * i, true) << 16;
      return out;
    }
    case "F64":
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(8 * i, true);
      return out;
    default:
      return fail(`has dtype ${dtype}, but a float tensor (${FLOAT_DTYPES.join(", ")}) is needed here`, {
        subject: what,
        hint: "the checkpoint stores this tensor with an integer type; it is not a model weight sdc can use",
      });
  }
}

/** Float32Array → little-endian bytes of F32, F16 (round to nearest even) or BF16 (round to nearest even). */
export function fromFloat32(values: Float32Array, dtype: "F32" | "F16" | "BF16"): Uint8Array {
  const n = values.length;
  const out = new Uint8Array(n * DTYPE_SIZES[dtype]);
  const dv = new DataView(out.buffer);
  if (dtype === "F32") {
    for (let i = 0; i < n; i++) dv.setFloat32(4 * i, values[i]!, true);
    return out;
  }
  const bits = new Uint32Array(values.buffer, values.byteOffset, n);
  for (let i = 0; i < n; i++) {
    const x = bits[i]!;
    dv.setUint16(2 * i, dtype === "BF16" ? f32BitsToBf16(x) : floatToHalf(values[i]!), true);
  }
  return out;
}

function f32BitsToBf16(x: number): number {
  if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) return ((x >>> 16) | 0x40) & 0xffff; // quiet NaN
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}


// ---------------------------------------------------------------------------------------------------
// Writer

export interface TensorEntry {
  name: string;
  dtype: StDtype;
  shape: number[];
  /** The bytes, or a callback producing them when the writer reaches this tensor (one in memory at a time). */
  data: Uint8Array | (() => Uint8Array);
}

/**
 * Write a .safetensors file atomically (temporary sibling + rename). Tensors are laid out by element
 * size (largest first) then name, and the header is padded with spaces to a multiple of 8 like the
 * reference implementation, so every tensor starts at a multiple of its element size.
 */
export function writeSafetensors(file: string, entries: readonly TensorEntry[], metadata?: Record<string, string>): void {
  const problems: Problem[] = [];
  const seen = new Set<string>();
  for (const e of entries) {
    if (e.name === "__metadata__") problems.push({ message: "reserved name", subject: e.name });
    if (seen.has(e.name)) problems.push({ message: "duplicate tensor name", subject: e.name });
    seen.add(e.name);
    if (!isStDtype(e.dtype)) problems.push({ message: `unknown dtype ${String(e.dtype)}`, subject: e.name });
    if (!e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      problems.push({ message: `bad shape ${JSON.stringify(e.shape)}`, subject: e.name });
    }
  }
  if (problems.length) throw new UserError(problems);

  const order = [...entries].sort(
    (a, b) => DTYPE_SIZES[b.dtype] - DTYPE_SIZES[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
  );
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const e of order) {
    const len = numel(e.shape) * DTYPE_SIZES[e.dtype];
    header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + len] };
    offset += len;
  }
  let json = Buffer.from(JSON.stringify(header), "utf8");
  const pad = (8 - (json.length % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);

  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = tempSibling(file);
  const fd = fs.openSync(tmp, "w");
  let open = true;
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    writeAll(fd, len);
    writeAll(fd, json);
    for (const e of order) {
      const data = typeof e.data === "function" ? e.data() : e.data;
      const want = numel(e.shape) * DTYPE_SIZES[e.dtype];
      if (data.byteLength !== want) {
        throw new UserError({
          message: `${e.dtype} ${shapeStr(e.shape)} needs ${want} bytes, but ${data.byteLength} were given`,
          subject: e.name,
        });
      }
      writeAll(fd, data);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    open = false;
    fs.renameSync(tmp, file);
  } catch (err) {
    if (open) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

function writeAll(fd: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.byteLength) done += fs.writeSync(fd, data, done, data.byteLength - done);
}
