/** The ONNX writer: weights stay in their source file (hard-linked, byte ranges), converted
 * weights are written once to model.onnx_data, small constants inline; onnxruntime runs all. */
import * as fs from "node:fs";
import * as path from "node:path";
import * as ort from "onnxruntime-node";
import onnxProto from "onnx-proto";
import type { onnx as OnnxT } from "onnx-proto";
import { describe, expect, it } from "vitest";
import { Builder } from "../../src/ir/builder.js";
import { writeOnnx } from "../../src/ir/onnx/writer.js";
import { allOps } from "../../src/ir/ops/index.js";
import { f32ToF16 } from "../../src/util/half.js";
import { randomFloats } from "../helpers/ort.js";
import { tempDir } from "../helpers/repo.js";

// onnx-proto is CommonJS: its namespace comes through the default export under Node's ESM loader
const { onnx } = onnxProto;

const dir = tempDir("sdc-writer-");

describe("writeOnnx", () => {
  it("links f32 weights in place, converts f16 ones once, and onnxruntime agrees", async () => {
    // a "checkpoint": 16 bytes of header junk, then W1 (f32 [8,8]) and W2 (f16 [8,8])
    const w1 = randomFloats(64, 1);
    const w2 = randomFloats(64, 2);
    const w2h = f32ToF16(w2);
    const src = path.join(dir, "weights.bin");
    fs.writeFileSync(src, Buffer.concat([Buffer.alloc(16, 7), Buffer.from(w1.buffer), Buffer.from(w2h.buffer)]));
    const b = new Builder("g", (key) =>
      key === "w1"
        ? { kind: "file", file: src, offset: 16, byteLength: 256, storageDtype: "float32" }
        : { kind: "file", file: src, offset: 16 + 256, byteLength: 128, storageDtype: "float16" },
    );
    const x = b.input("x", "float32", [2, 8]);
    const y = b.matmul(b.matmul(x, b.param("w1", [8, 8])), b.param("w2", [8, 8]));
    b.output("y", b.add(y, b.float(0.5)));
    const out = path.join(dir, "model");
    const res = writeOnnx(b.graph, { dir: out, inlineLimit: 64 });
    expect(res.bytesLinked).toBe(256);
    expect(res.bytesWritten).toBe(256); // w2 converted to f32
    expect(res.externalFiles.sort()).toEqual(["model.onnx_data", "weights.bin"]);
    expect(fs.statSync(path.join(out, "weights.bin")).ino).toBe(fs.statSync(src).ino); // a hard link, no copy

    const model = onnx.ModelProto.decode(fs.readFileSync(path.join(out, "model.onnx")));
    const init = Object.fromEntries(model.graph!.initializer!.map((t) => [t.name, t]));
    expect(init.w1!.externalData!.map((e: OnnxT.IStringStringEntryProto) => [e.key, e.value])).toEqual([["location", "weights.bin"], ["offset", "16"], ["length", "256"]]);
    expect(init.w2!.externalData![0]!.value).toBe("model.onnx_data");
    expect(Number(model.irVersion)).toBe(10);
    expect(model.opsetImport!.map((o) => [o.domain, Number(o.version)])).toEqual([["", 21]]);

    const s = await ort.InferenceSession.create(path.join(out, "model.onnx"), { logSeverityLevel: 3 });
    const xin = randomFloats(16, 3);
    const r = (await s.run({ x: new ort.Tensor("float32", xin, [2, 8]) })).y!.data as Float32Array;
    // reference with the f16-rounded W2
    const half = (h: number) => {
      const e = (h >> 10) & 31, m = h & 1023, s = h & 0x8000 ? -1 : 1;
      return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
    };
    for (let i = 0; i < 2; i++)
      for (let j = 0; j < 8; j++) {
        let acc = 0;
        for (let k = 0; k < 8; k++) {
          let t = 0;
          for (let l = 0; l < 8; l++) t += xin[i * 8 + l]! * w1[l * 8 + k]!;
          acc += t * half(w2h[k * 8 + j]!);
        }
        expect(Math.abs(r[i * 8 + j]! - (acc + 0.5))).toBeLessThan(1e-5);
      }
    await s.release();
  });

  it("copies tensors when linking is off, and keeps graph I/O names", async () => {
    const b = new Builder("g", () => ({ kind: "lazy", identity: "ones", produce: () => new Uint8Array(new Float32Array(300).fill(1).buffer) }));
    const x = b.input("x", "float32", [300]);
    b.output("y", b.mul(x, b.param("w", [300])));
    const out = path.join(dir, "lazy");
    const res = writeOnnx(b.graph, { dir: out, linkSources: false });
    expect(res).toMatchObject({ bytesLinked: 0, bytesWritten: 1200, externalFiles: ["model.onnx_data"] });
    const s = await ort.InferenceSession.create(path.join(out, "model.onnx"), { logSeverityLevel: 3 });
    expect(s.inputNames).toEqual(["x"]);
    expect(s.outputNames).toEqual(["y"]);
    const r = await s.run({ x: new ort.Tensor("float32", new Float32Array(300).fill(2), [300]) });
    expect(Array.from(r.y!.data as Float32Array).every((v) => v === 2)).toBe(true);
    await s.release();
  });

  it("writes attributes with the types their op declares, and refuses undeclared ones", () => {
    // epsilon 1 is an integer-valued number, but LayerNormalization declares it a float
    const b = new Builder("g");
    const x = b.input("x", "float32", [2, 4]);
    const s = b.float([1, 1, 1, 1]);
    b.output("y", b.op1("LayerNormalization", [x, s, s], { axis: -1, epsilon: 1 }));
    const out = path.join(dir, "attrs");
    writeOnnx(b.graph, { dir: out });
    const model = onnx.ModelProto.decode(fs.readFileSync(path.join(out, "model.onnx")));
    const ln = model.graph!.node!.find((n) => n.opType === "LayerNormalization")!;
    const T = onnx.AttributeProto.AttributeType;
    expect(ln.attribute!.map((a) => [a.name, a.type, a.type === T.FLOAT ? a.f : Number(a.i)])).toEqual([
      ["axis", T.INT, -1],
      ["epsilon", T.FLOAT, 1],
    ]);

    const b2 = new Builder("g");
    const x2 = b2.input("x", "float32", [2, 4]);
    b2.output("y", b2.op1("Softmax", [x2], { axis: -1, temperature: 0.5 }));
    expect(() => writeOnnx(b2.graph, { dir: path.join(dir, "bad-attr") })).toThrow(/g\/Softmax_0 \(Softmax\): attribute temperature = 0.5 is not declared by the op/);
    const b3 = new Builder("g");
    const x3 = b3.input("x", "float32", [2, 4]);
    b3.output("y", b3.op1("Softmax", [x3], { axis: 0.5 }));
    expect(() => writeOnnx(b3.graph, { dir: path.join(dir, "bad-int") })).toThrow(/attribute axis = 0.5 is not a valid int/);
  });

  it("every op declares its attribute types; composites carry a lowering", () => {
    for (const def of allOps()) {
      if (def.domain === "sdc") expect(def.lower, def.op).toBeDefined();
      else expect(def.lower, def.op).toBeUndefined();
      for (const t of Object.values(def.attrs ?? {})) expect(["int", "ints", "float", "floats", "string", "strings", "tensor"]).toContain(t);
    }
  });
});
