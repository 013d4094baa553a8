import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import {
  DTYPE_SIZES,
  fromFloat32,
  MAX_HEADER_BYTES,
  SafetensorsFile,
  toFloat32,
  writeSafetensors,
  type StDtype,
  type TensorEntry,
} from "../../../src/models/weights/safetensors.js";
import { MODEL_FIXTURES, tempDir } from "../../helpers/repo.js";
import { bytesEqual, problemsOf, writeRaw } from "./helpers.js";

const dir = tempDir("sdc-weights-");
let n = 0;
const tmp = (name = "t.safetensors") => path.join(dir, `${n++}-${name}`);

function bytes(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed * 17) & 0xff;
  return b;
}

describe("writeSafetensors / SafetensorsFile round trip", () => {
  const entries: TensorEntry[] = [
    { name: "a.f16", dtype: "F16", shape: [3, 5], data: bytes(30, 1) },
    { name: "b.i64", dtype: "I64", shape: [2], data: bytes(16, 2) },
    { name: "c.u8", dtype: "U8", shape: [7], data: bytes(7, 3) },
    { name: "d.f32", dtype: "F32", shape: [2, 3, 1], data: bytes(24, 4) },
    { name: "e.bf16", dtype: "BF16", shape: [1], data: bytes(2, 5) },
    { name: "f.bool", dtype: "BOOL", shape: [3], data: bytes(3, 6) },
    { name: "g.f64", dtype: "F64", shape: [], data: bytes(8, 7) },
    { name: "h.empty", dtype: "F32", shape: [0, 4], data: new Uint8Array(0) },
    { name: "i.i32", dtype: "I32", shape: [2, 2], data: bytes(16, 8) },
  ];

  it("reads back every dtype bit-exactly, with metadata, aligned offsets and a padded header", () => {
    const file = tmp();
    writeSafetensors(file, entries, { format: "pt", who: "sdc" });
    const st = SafetensorsFile.open(file);
    expect(st.metadata).toEqual({ format: "pt", who: "sdc" });
    expect(st.headerLength % 8).toBe(0);
    expect(st.tensors.size).toBe(entries.length);
    for (const e of entries) {
      const t = st.info(e.name);
      expect(t.dtype).toBe(e.dtype);
      expect(t.shape).toEqual(e.shape);
      expect(t.offset % DTYPE_SIZES[e.dtype]).toBe(0);
      expect(bytesEqual(st.readRaw(e.name), e.data as Uint8Array)).toBe(true);
    }
    // laid out by element size, then name: the 8-byte types first
    const order = [...st.tensors.values()].filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset).map((t) => t.name);
    expect(order).toEqual(["b.i64", "g.f64", "d.f32", "i.i32", "a.f16", "e.bf16", "c.u8", "f.bool"]);
    expect(fs.statSync(file).size).toBe(8 + st.headerLength + entries.reduce((s, e) => s + (e.data as Uint8Array).length, 0));
  });

  it("calls data callbacks one at a time, in file order", () => {
    const file = tmp();
    const calls: string[] = [];
    writeSafetensors(
      file,
      entries.map((e) => ({ ...e, data: () => (calls.push(e.name), e.data as Uint8Array) })),
    );
    expect(calls).toEqual(["b.i64", "g.f64", "d.f32", "h.empty", "i.i32", "a.f16", "e.bf16", "c.u8", "f.bool"]);
    expect(bytesEqual(SafetensorsFile.open(file).readRaw("d.f32"), bytes(24, 4))).toBe(true);
  });

  it("refuses a wrong byte count and leaves the previous file intact", () => {
    const file = tmp();
    writeSafetensors(file, [{ name: "x", dtype: "F32", shape: [1], data: new Uint8Array(4) }]);
    const before = fs.readFileSync(file);
    const p = problemsOf(() =>
      writeSafetensors(file, [
        { name: "x", dtype: "F32", shape: [2], data: () => new Uint8Array(8) },
        { name: "y", dtype: "F32", shape: [2, 2], data: () => new Uint8Array(12) },
      ]),
    );
    expect(p).toEqual([{ message: "F32 [2, 2] needs 16 bytes, but 12 were given", subject: "y" }]);
    expect(bytesEqual(fs.readFileSync(file), before)).toBe(true);
    expect(fs.readdirSync(dir).filter((f) => f.startsWith(".sdc-tmp"))).toEqual([]);
  });

  it("refuses duplicate names, the reserved name and bad shapes before writing", () => {
    const file = tmp();
    const p = problemsOf(() =>
      writeSafetensors(file, [
        { name: "x", dtype: "F32", shape: [1], data: new Uint8Array(4) },
        { name: "x", dtype: "F32", shape: [1], data: new Uint8Array(4) },
        { name: "__metadata__", dtype: "F32", shape: [1], data: new Uint8Array(4) },
        { name: "z", dtype: "F32", shape: [-1], data: new Uint8Array(4) },
      ]),
    );
    expect(p.map((q) => `${q.subject}: ${q.message}`)).toEqual([
      "x: duplicate tensor name",
      "__metadata__: reserved name",
      "z: bad shape [-1]",
    ]);
    expect(fs.existsSync(file)).toBe(false);
  });
});

describe("header validation: each corrupt file gets its own located error", () => {
  const valid = { a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F16", shape: [2], data_offsets: [8, 12] } };

  const cases: { name: string; make: (f: string) => void; message: string; tensor?: string }[] = [
    {
      name: "shorter than the length field",
      make: (f) => fs.writeFileSync(f, Buffer.from([1, 2, 3])),
      message: "file is 3 bytes long, too short for the 8-byte header length",
    },
    {
      name: "header length above the limit",
      make: (f) => {
        const b = Buffer.alloc(16);
        b.writeBigUInt64LE(BigInt(MAX_HEADER_BYTES) + 1n);
        fs.writeFileSync(f, b);
      },
      message: `header length ${MAX_HEADER_BYTES + 1} exceeds the ${MAX_HEADER_BYTES}-byte limit`,
    },
    {
      name: "header length past the end of the file",
      make: (f) => {
        const b = Buffer.alloc(20);
        b.writeBigUInt64LE(100n);
        fs.writeFileSync(f, b);
      },
      message: "header length 100 runs past the end of the file (20 bytes)",
    },
    {
      name: "bad JSON",
      make: (f) => writeRaw(f, null, new Uint8Array(0), '{"a": {"dtype": "F32",}'),
      message: "header is not valid JSON: ",
    },
    {
      name: "not an object",
      make: (f) => writeRaw(f, null, new Uint8Array(0), "[1, 2]"),
      message: 'header does not start with \'{\' (starts with "[1, 2]")',
    },
    {
      name: "unknown dtype",
      make: (f) => writeRaw(f, { w: { dtype: "F8_E4M3", shape: [2], data_offsets: [0, 2] } }, new Uint8Array(2)),
      message: 'unknown dtype "F8_E4M3"',
      tensor: "w",
    },
    {
      name: "shape and byte length disagree",
      make: (f) => writeRaw(f, { w: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)),
      message: "F32 [3] needs 12 bytes, but data_offsets [0, 8] hold 8",
      tensor: "w",
    },
    {
      name: "offsets end before they begin",
      make: (f) => writeRaw(f, { w: { dtype: "F32", shape: [0], data_offsets: [8, 4] } }, new Uint8Array(8)),
      message: "data_offsets [8, 4] end before they begin",
      tensor: "w",
    },
    {
      name: "offsets out of bounds (truncated file)",
      make: (f) => writeRaw(f, valid, new Uint8Array(10)),
      message: "data_offsets [8, 12] run past the end of the data area (10 bytes): the file is truncated",
      tensor: "b",
    },
    {
      name: "overlapping tensors",
      make: (f) =>
        writeRaw(
          f,
          { a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F32", shape: [1], data_offsets: [4, 8] } },
          new Uint8Array(8),
        ),
      message: "data [4, 8] overlaps tensor a [0, 8]",
      tensor: "b",
    },
    {
      name: "negative shape",
      make: (f) => writeRaw(f, { w: { dtype: "F32", shape: [-1], data_offsets: [0, 0] } }),
      message: "shape [-1] is not a list of non-negative integers",
      tensor: "w",
    },
    {
      name: "metadata with a non-string value",
      make: (f) => writeRaw(f, { __metadata__: { step: 5 } }),
      message: "__metadata__.step is 5, but metadata values must be strings",
    },
    {
      name: "a PyTorch zip renamed to .safetensors",
      make: (f) => fs.writeFileSync(f, Buffer.concat([Buffer.from("PK\x03\x04", "latin1"), Buffer.alloc(60, 7)])),
      message: "is a zip archive (PyTorch's torch.save format), not safetensors",
    },
    {
      name: "a missing file",
      make: () => undefined,
      message: "file not found",
    },
  ];

  for (const c of cases) {
    it(c.name, () => {
      const file = tmp();
      c.make(file);
      const p = problemsOf(() => SafetensorsFile.open(file));
      expect(p).toHaveLength(1);
      expect(p[0]!.subject).toBe(c.tensor ? `${file}: ${c.tensor}` : file);
      if (c.message.endsWith(": ")) expect(p[0]!.message.startsWith(c.message)).toBe(true);
      else expect(p[0]!.message).toBe(c.message);
    });
  }

  it("accepts the same header when it is valid, and a valid length whose first byte looks like a pickle", () => {
    const file = tmp();
    writeRaw(file, valid, new Uint8Array(12));
    expect([...SafetensorsFile.open(file).tensors.keys()]).toEqual(["a", "b"]);
    // header length 0x0280 = 640: the first bytes are 80 02, a pickle's protocol-2 opcode
    const header = `{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`.padEnd(640, " ");
    const f2 = tmp();
    writeRaw(f2, null, new Uint8Array(1), header);
    expect(SafetensorsFile.open(f2).info("x").shape).toEqual([1]);
  });

  it("notices a file that changed after its header was read", () => {
    const file = tmp();
    writeRaw(file, valid, new Uint8Array(12));
    const st = SafetensorsFile.open(file);
    fs.appendFileSync(file, Buffer.alloc(4));
    const p = problemsOf(() => st.readRaw("a"));
    expect(p[0]!.message).toBe("the file changed on disk since its header was read");
  });
});

describe("float conversions", () => {
  it("decodes every F16 value and re-encodes it to the same bits (round trip of all 65536)", () => {
    const all = new Uint8Array(65536 * 2);
    const dv = new DataView(all.buffer);
    for (let h = 0; h < 65536; h++) dv.setUint16(2 * h, h, true);
    const f = toFloat32(all, "F16", "all");
    const back = new DataView(fromFloat32(f, "F16").buffer);
    for (let h = 0; h < 65536; h++) {
      const isNaN = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
      if (isNaN) expect(Number.isNaN(f[h]!)).toBe(true);
      else if (back.getUint16(2 * h, true) !== h) throw new Error(`F16 0x${h.toString(16)} -> ${f[h]} -> 0x${back.getUint16(2 * h, true).toString(16)}`);
    }
    expect([f[0x3c00], f[0xc000], f[0x7bff], f[0x0001], f[0x7c00], f[0xfc00]]).toEqual([1, -2, 65504, 2 ** -24, Infinity, -Infinity]);
    expect(Object.is(f[0x8000], -0)).toBe(true);
  });

  it("rounds to nearest even when encoding F16 and BF16", () => {
    // ties (1 + 2^-11, 2^-25, 1.5 and 2.5 subnormal steps) go to the even neighbour
    const half = [1 + 2 ** -11, 1 + 3 * 2 ** -11, 65520, 2 ** -25, 0.75 * 2 ** -24, 1.5 * 2 ** -24, 2.5 * 2 ** -24, -1e-9];
    const h = new DataView(fromFloat32(new Float32Array(half), "F16").buffer);
    expect(half.map((_, i) => h.getUint16(2 * i, true))).toEqual([0x3c00, 0x3c02, 0x7c00, 0x0000, 0x0001, 0x0002, 0x0002, 0x8000]);
    const b = new DataView(fromFloat32(new Float32Array([1 + 2 ** -8, 1 + 3 * 2 ** -8]), "BF16").buffer);
    expect([0, 1].map((i) => b.getUint16(2 * i, true))).toEqual([0x3f80, 0x3f82]);
    expect(toFloat32(fromFloat32(new Float32Array([3.140625]), "BF16"), "BF16", "x")[0]).toBe(3.140625);
  });

  it("refuses to convert integer tensors, naming them", () => {
    const p = problemsOf(() => toFloat32(new Uint8Array(8), "I64", "f.safetensors: ids"));
    expect(p[0]!.subject).toBe("f.safetensors: ids");
    expect(p[0]!.message).toBe("has dtype I64, but a float tensor (F32, F16, BF16, F64) is needed here");
  });
});

describe("a file written by the Python fixture environment (pyshim) reads back exactly", () => {
  const st = SafetensorsFile.open(path.join(MODEL_FIXTURES, "known-values.safetensors"));
  const raw = (name: string) => {
    const b = st.readRaw(name);
    return new DataView(b.buffer, b.byteOffset, b.byteLength);
  };

  it("has the metadata and shapes torch gave it", () => {
    expect(st.metadata).toEqual({ format: "pt", note: "sdc" });
    const shapes = Object.fromEntries([...st.tensors.values()].map((t) => [t.name, [t.dtype, t.shape]]));
    expect(shapes).toEqual({
      f32: ["F32", [3, 4]],
      f16: ["F16", [10]],
      bf16: ["BF16", [5]],
      f64: ["F64", [2]],
      i64: ["I64", [2, 2]],
      i32: ["I32", [3]],
      u8: ["U8", [3]],
      bool: ["BOOL", [3]],
      scalar: ["F32", []],
      empty: ["F32", [0, 3]],
    });
  });

  it("has the values torch wrote, bit for bit", () => {
    const f32 = st.readFloat32("f32");
    expect([...f32]).toEqual(Array.from({ length: 12 }, (_, i) => Math.fround(Math.fround((i - 6) * 0.25) + Math.fround(1e-3))));
    expect([...st.readFloat32("f16")]).toEqual([0, -0, 1, -2, 65504, 2 ** -24, 2 ** -14, Infinity, -Infinity, 0.0999755859375]);
    // bf16(3e38) is 0x7f62 = (1 + 98/128) * 2^127
    expect([...st.readFloat32("bf16")]).toEqual([1, -3.140625, 2 ** -126, (1 + 98 / 128) * 2 ** 127, 0.10009765625]);
    expect([...st.readFloat32("f64")]).toEqual([Math.fround(0.1), -Infinity]);
    const i64 = raw("i64");
    expect([0, 1, 2, 3].map((i) => i64.getBigInt64(8 * i, true))).toEqual([0n, -1n, 2n ** 40n + 3n, -(2n ** 62n)]);
    const i32 = raw("i32");
    expect([0, 1, 2].map((i) => i32.getInt32(4 * i, true))).toEqual([7, -7, 2 ** 31 - 1]);
    expect([...st.readRaw("u8")]).toEqual([0, 1, 255]);
    expect([...st.readRaw("bool")]).toEqual([1, 0, 1]);
    expect([...st.readFloat32("scalar")]).toEqual([2.5]);
    expect(st.readRaw("empty").byteLength).toBe(0);
  });

  it("round-trips through our writer to the same tensors", () => {
    const file = tmp();
    writeSafetensors(
      file,
      [...st.tensors.values()].map((t) => ({ name: t.name, dtype: t.dtype as StDtype, shape: t.shape, data: () => st.readRaw(t.name) })),
      { ...st.metadata },
    );
    const again = SafetensorsFile.open(file);
    for (const t of st.tensors.values()) expect(bytesEqual(again.readRaw(t.name), st.readRaw(t.name))).toBe(true);
  });
});
