/**
 * Property-based fuzzing (fast-check) of the readers that take files from outside: safetensors
 * weights, LoRA files, pipeline YAML (with the config loader behind it), plan.json, and PNG text
 * chunks. Inputs are valid files mutated (bytes flipped, truncated, extended, header length or JSON
 * replaced, lines deleted or duplicated, values swapped for random YAML) and random bytes. The
 * property for every input: the reader returns, or throws a UserError (exit code 2, a message and a
 * location); never another exception, and never a hang (each case is timed). Known-bad inputs that
 * once needed a fix or that the issue names (truncated, header larger than the file, overlapping
 * and out-of-range offsets, huge shapes, wrong dtypes, a 100 MB header) are table rows below, each
 * with the message it must give. Counts are printed; the seed is fixed, so a failure reproduces.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { compile } from "../../src/compiler/compile.js";
import { loadPipeline } from "../../src/config/load.js";
import { encodePng, readPngText } from "../../src/image/image.js";
import { readLora } from "../../src/models/weights/lora.js";
import { SafetensorsFile, toFloat32, writeSafetensors, isFloatDtype } from "../../src/models/weights/safetensors.js";
import { readPlan } from "../../src/plan/read.js";
import { isUserError } from "../../src/util/errors.js";
import { REPO, tempDir } from "../helpers/repo.js";
import { SCALE } from "./scale.js";

const SEED = 20261207;
const MODEL = path.join(REPO, "models", "tiny-sd");
/** Longest any single case may take (a hang or a runaway allocation shows as a slow case). */
const CASE_MS = 2000;

/** Run `f`; it must return or throw a UserError with a message. Returns the outcome. */
async function userErrorOrOk(f: () => unknown, what: () => string): Promise<"ok" | "refused"> {
  const t0 = performance.now();
  try {
    await f();
    return "ok";
  } catch (e) {
    if (!isUserError(e)) throw new Error(`${what()}: not a UserError: ${(e as Error)?.stack ?? String(e)}`);
    expect(e.problems.length).toBeGreaterThan(0);
    for (const p of e.problems) expect(p.message.length, what()).toBeGreaterThan(0);
    return "refused";
  } finally {
    const ms = performance.now() - t0;
    if (ms > CASE_MS) throw new Error(`${what()}: took ${ms.toFixed(0)} ms`);
  }
}

/** A byte-level mutation of a valid file. */
const mutation = fc.oneof(
  fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("append" as const), bytes: fc.uint8Array({ maxLength: 64 }) }),
  fc.record({ kind: fc.constant("splice" as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer T> ? T : never;

function mutate(base: Uint8Array, ms: readonly Mutation[]): Uint8Array {
  let b = Uint8Array.from(base);
  for (const m of ms) {
    if (m.kind === "flip" && b.length) b[m.at % b.length] = m.byte;
    else if (m.kind === "truncate") b = b.slice(0, m.at % (b.length + 1));
    else if (m.kind === "append") b = Uint8Array.from([...b, ...m.bytes]);
    else if (m.kind === "splice" && b.length) {
      const at = m.at % b.length;
      b = Uint8Array.from([...b.slice(0, at), ...m.bytes, ...b.slice(at + m.bytes.length)]);
    }
  }
  return b;
}

/** A safetensors file from a header object and a data section. */
function stFile(header: unknown, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Uint8Array.from([...len, ...json, ...data]);
}

/** Open a safetensors file and read every tensor (as float32 where it is a float). */
function readAll(file: string): void {
  const st = SafetensorsFile.open(file);
  for (const [name, info] of st.tensors) {
    const raw = st.readRaw(name);
    if (isFloatDtype(info.dtype)) toFloat32(raw, info.dtype, name);
  }
}

const counts: Record<string, { ok: number; refused: number }> = {};
function tally(name: string, r: "ok" | "refused") {
  counts[name] ??= { ok: 0, refused: 0 };
  counts[name][r]++;
}

describe("fuzzing the readers of outside files", () => {
  let dir: string;
  let validSt: Uint8Array;
  beforeAll(() => {
    dir = tempDir("sdc-fuzz-");
    const f = path.join(dir, "valid.safetensors");
    writeSafetensors(
      f,
      [
        { name: "a.weight", dtype: "F32", shape: [2, 3], data: new Uint8Array(Float32Array.from([1, 2, 3, 4, 5, 6]).buffer) },
        { name: "b.bias", dtype: "F16", shape: [4], data: new Uint8Array(8) },
        { name: "c.ids", dtype: "I64", shape: [2], data: new Uint8Array(16) },
      ],
      { format: "pt" },
    );
    validSt = new Uint8Array(fs.readFileSync(f));
  });

  it("safetensors: mutated files and random headers open and read, or are refused as the user's error", async () => {
    const file = path.join(dir, "m.safetensors");
    const header = fc.dictionary(
      fc.string({ maxLength: 12 }),
      fc.oneof(
        fc.record({ dtype: fc.constantFrom("F32", "F16", "BF16", "I64", "U8", "F64", "X9", ""), shape: fc.array(fc.oneof(fc.nat(8), fc.integer(), fc.constant(2 ** 53)), { maxLength: 5 }), data_offsets: fc.tuple(fc.integer(), fc.integer()) }),
        fc.jsonValue(),
      ),
      { maxKeys: 4 },
    );
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.array(mutation, { minLength: 1, maxLength: 4 }).map((ms) => mutate(validSt, ms)), fc.tuple(header, fc.uint8Array({ maxLength: 64 })).map(([h, d]) => stFile(h, d)), fc.uint8Array({ maxLength: 128 })), async (bytes) => {
        fs.writeFileSync(file, bytes);
        tally("safetensors", await userErrorOrOk(() => readAll(file), () => `safetensors ${Buffer.from(bytes).toString("hex").slice(0, 200)}`));
      }),
      { numRuns: 400 * SCALE, seed: SEED },
    );
  });

  it.each([
    ["empty file", () => new Uint8Array(0), /too short for the 8-byte header length/],
    ["truncated data", () => validSt.slice(0, validSt.length - 5), /./],
    ["header length larger than the file", () => { const b = Uint8Array.from(validSt); new DataView(b.buffer).setBigUint64(0, BigInt(b.length), true); return b; }, /./],
    ["a 100 MB header claimed", () => { const b = Uint8Array.from(validSt); new DataView(b.buffer).setBigUint64(0, 100_000_001n, true); return b; }, /exceeds the 100000000-byte limit/],
    ["overlapping offsets", () => stFile({ a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F32", shape: [2], data_offsets: [4, 12] } }, new Uint8Array(12)), /./],
    ["offsets beyond the data", () => stFile({ a: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, new Uint8Array(8)), /./],
    ["offsets that disagree with the shape", () => stFile({ a: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)), /./],
    ["a huge shape", () => stFile({ a: { dtype: "F32", shape: [2 ** 31, 2 ** 31, 2 ** 31], data_offsets: [0, 8] } }, new Uint8Array(8)), /./],
    ["an unknown dtype", () => stFile({ a: { dtype: "Q4", shape: [2], data_offsets: [0, 8] } }, new Uint8Array(8)), /./],
    ["a negative offset", () => stFile({ a: { dtype: "F32", shape: [2], data_offsets: [-8, 0] } }, new Uint8Array(8)), /./],
    ["a header that is not JSON", () => Uint8Array.from([...validSt.slice(0, 8), ...Buffer.from("{not json".padEnd(Number(new DataView(validSt.buffer).getBigUint64(0, true)), " "))]), /./],
    ["metadata that is not strings", () => stFile({ __metadata__: { a: 1 }, x: { dtype: "F32", shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4)), /./],
    ["a pickle renamed", () => Uint8Array.from([0x80, 0x02, 0x63, 0x6f, 0x6c, 0x6c, 0x65, 0x63, 0x74, 0x69, 0x6f, 0x6e, 0x73]), /./],
  ])("safetensors, known bad: %s is refused", (_name, make, message) => {
    const file = path.join(dir, "bad.safetensors");
    fs.writeFileSync(file, make());
    let err: unknown = null;
    try {
      readAll(file);
    } catch (e) {
      err = e;
    }
    expect(isUserError(err), String(err)).toBe(true);
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message).toContain(file);
  });

  it("safetensors: NaN and Inf weights read as what they are (the compiler and the trainer refuse them where they matter)", () => {
    const file = path.join(dir, "nan.safetensors");
    writeSafetensors(file, [{ name: "w", dtype: "F32", shape: [3], data: new Uint8Array(Float32Array.from([Number.NaN, Infinity, 1]).buffer) }]);
    const v = SafetensorsFile.open(file).readFloat32("w");
    expect([Number.isNaN(v[0]!), v[1], v[2]]).toEqual([true, Infinity, 1]);
  });

  it("LoRA files: mutations of a kohya LoRA are read or refused as the user's error", async () => {
    // a kohya LoRA (two modules, rank 2, with alphas), accepted as it is
    const file = path.join(dir, "l.safetensors");
    const f32 = (n: number) => new Uint8Array(Float32Array.from({ length: n }, (_, i) => Math.sin(i)).buffer);
    const entries = ["attn1_to_q", "attn2_to_v"].flatMap((m) => {
      const key = `lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_${m}`;
      return [
        { name: `${key}.lora_down.weight`, dtype: "F32" as const, shape: [2, 32], data: f32(64) },
        { name: `${key}.lora_up.weight`, dtype: "F32" as const, shape: [32, 2], data: f32(64) },
        { name: `${key}.alpha`, dtype: "F32" as const, shape: [], data: f32(1) },
      ];
    });
    writeSafetensors(file, entries, { ss_network_dim: "2" });
    expect(readLora(file)).toHaveLength(2);
    const base = new Uint8Array(fs.readFileSync(file));
    await fc.assert(
      fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 3 }), async (ms) => {
        fs.writeFileSync(file, mutate(base, ms));
        tally("lora", await userErrorOrOk(() => readLora(file), () => `lora ${JSON.stringify(ms)}`));
      }),
      { numRuns: 200 * SCALE, seed: SEED },
    );
  });

  it("pipeline YAML: mutated pipelines load or are refused with located problems", async () => {
    const valid = [
      "version: 1",
      "name: fuzz",
      "model:",
      `  from: ${JSON.stringify(MODEL)}`,
      "scheduler:",
      "  type: dpm-solver++",
      "  steps: 20",
      "guidance:",
      "  scale: 7.5",
      "  negative_prompt: ugly",
      "sample:",
      "  prompt: [a red fox, a blue car]",
      "  width: 32",
      "  height: 32",
      "  seed: 3",
      "output:",
      "  grid: true",
    ];
    const file = path.join(dir, "p.yaml");
    const yamlish = fc.oneof(
      fc.string({ maxLength: 20 }),
      fc.constantFrom("{", "[", "]", "}", ":", "- ", "&a", "*a", "!!binary", "<<: *a", "~", "null", "-1", "1e999", ".nan", "'", '"', "|", ">", "#", "\t", "version: 2", "  - x", "extends: p.yaml", "extends: /", "model: {}", "train: {}"),
      fc.jsonValue().map((v) => JSON.stringify(v)),
    );
    const edit = fc.oneof(
      fc.record({ kind: fc.constant("delete" as const), line: fc.nat() }),
      fc.record({ kind: fc.constant("duplicate" as const), line: fc.nat() }),
      fc.record({ kind: fc.constant("value" as const), line: fc.nat(), text: yamlish }),
      fc.record({ kind: fc.constant("insert" as const), line: fc.nat(), text: yamlish }),
    );
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.array(edit, { minLength: 1, maxLength: 4 }), fc.string({ maxLength: 200 })), async (edits) => {
        let text: string;
        if (typeof edits === "string") text = edits;
        else {
          const lines = [...valid];
          for (const e of edits) {
            const i = e.line % lines.length;
            if (e.kind === "delete") lines.splice(i, 1);
            else if (e.kind === "duplicate") lines.splice(i, 0, lines[i]!);
            else if (e.kind === "insert") lines.splice(i, 0, e.text);
            else lines[i] = lines[i]!.includes(":") ? `${lines[i]!.slice(0, lines[i]!.indexOf(":") + 1)} ${e.text}` : e.text;
            if (lines.length === 0) lines.push("");
          }
          text = lines.join("\n");
        }
        fs.writeFileSync(file, text);
        const r = await userErrorOrOk(
          async () => {
            try {
              await loadPipeline(file, { cwd: dir });
            } catch (e) {
              // every problem is located: a file position, or a named subject
              if (isUserError(e)) for (const p of e.problems) expect(p.at !== undefined || p.subject !== undefined, `${p.message}\n--- ${text}`).toBe(true);
              throw e;
            }
          },
          () => `yaml:\n${text}`,
        );
        tally("yaml", r);
      }),
      { numRuns: 300 * SCALE, seed: SEED },
    );
  });

  it("plan.json: mutated plans are read or refused as the user's error", async () => {
    const cwd = tempDir("sdc-fuzz-plan-");
    fs.writeFileSync(path.join(cwd, "p.yaml"), `version: 1\nname: t\nmodel:\n  from: ${JSON.stringify(MODEL)}\n`);
    const c = await compile(await loadPipeline("p.yaml", { cwd }), { cwd });
    const planFile = path.join(c.dir, "plan.json");
    const base = new Uint8Array(fs.readFileSync(planFile));
    const original = JSON.parse(Buffer.from(base).toString("utf8")) as Record<string, unknown>;
    const jsonEdit = fc.record({ key: fc.constantFrom(...Object.keys(original)), value: fc.jsonValue() });
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.array(mutation, { minLength: 1, maxLength: 3 }).map((ms) => mutate(base, ms)), jsonEdit.map(({ key, value }) => Buffer.from(JSON.stringify({ ...original, [key]: value })))), async (bytes) => {
        fs.writeFileSync(planFile, bytes);
        tally("plan", await userErrorOrOk(() => readPlan(c.dir), () => `plan ${Buffer.from(bytes).toString("utf8").slice(0, 300)}`));
      }),
      { numRuns: 300 * SCALE, seed: SEED },
    );
  });

  it("PNG text chunks: mutated PNGs are read or refused as the user's error", async () => {
    const png = await encodePng(new Uint8Array(4 * 4 * 3).fill(128), 4, 4, { parameters: "a red fox\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 4x4" });
    await fc.assert(
      fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 4 }), async (ms) => {
        const bytes = mutate(png, ms);
        tally("png", await userErrorOrOk(() => readPngText(bytes), () => `png ${JSON.stringify(ms)}`));
      }),
      { numRuns: 500 * SCALE, seed: SEED },
    );
    // the counts, for the record (each reader both accepted and refused some inputs)
    console.log(`fuzz inputs (accepted / refused): ${Object.entries(counts).map(([k, v]) => `${k} ${v.ok}/${v.refused}`).join(", ")}`);
    for (const [k, v] of Object.entries(counts)) expect(v.refused, k).toBeGreaterThan(0);
  });
});
