/** Content hashes: files (streamed), and JSON-like values in a canonical key order. */
import { createHash } from "node:crypto";
import * as fs from "node:fs";

export function sha256File(file: string): string {
  return hashFile(file, "sha256").toString("hex");
}

/** A file's digest by `algorithm`, read in 4 MiB pieces (no whole-file buffer). */
export function hashFile(file: string, algorithm: string): Buffer {
  const h = createHash(algorithm);
  const fd = fs.openSync(file, "r");
  try {
    const buf = Buffer.allocUnsafe(1 << 22);
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest();
}

export function sha256(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** JSON with object keys sorted at every level, so equal values give equal text. */
export function canonicalJson(v: unknown): string {
  return JSON.stringify(v, (_k, x) =>
    x && typeof x === "object" && !Array.isArray(x) && !(x instanceof Uint8Array)
      ? Object.fromEntries(Object.keys(x).sort().map((k) => [k, (x as Record<string, unknown>)[k]]))
      : x === Infinity ? "Infinity" : x === -Infinity ? "-Infinity" : x,
  );
}

export function hashValue(v: unknown): string {
  return sha256(canonicalJson(v));
}

/** What identifies a file's content cheaply: path, size and modification time. */
export function fileIdentity(file: string): { path: string; size: number; mtimeMs: number } {
  const st = fs.statSync(file);
  return { path: file, size: st.size, mtimeMs: Math.floor(st.mtimeMs) };
}
