/** Shared helpers for the weights tests: raw header surgery, problems of a UserError, byte comparison. */
import * as fs from "node:fs";
import { isUserError, type Problem } from "../../../src/util/errors.js";

/** Write a safetensors file from a header object and a data buffer, without any validation. */
export function writeRaw(file: string, header: unknown, data: Uint8Array = new Uint8Array(0), headerText?: string): string {
  const json = Buffer.from(headerText ?? JSON.stringify(header), "utf8");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, json, data]));
  return file;
}

/** The problems of the UserError `fn` throws (fails the test if it throws anything else or nothing). */
export function problemsOf(fn: () => unknown): Problem[] {
  try {
    fn();
  } catch (e) {
    if (isUserError(e)) return e.problems;
    throw e;
  }
  throw new Error("expected a UserError, but nothing was thrown");
}

export function readJson<T = any>(file: string): T {
  return JSON.parse(fs.readFileSync(file, "utf8")) as T;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}
