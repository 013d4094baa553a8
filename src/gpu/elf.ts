/**
 * The dynamic section of a Linux shared library: which libraries it needs (DT_NEEDED), its own
 * soname and its run paths. `sdc doctor` reads them from the installed CUDA provider, so the
 * libraries it looks for are the ones that file was linked against (libcudart.so.13 for a CUDA 13
 * build, .so.12 for a CUDA 12 one), not a list that could drift from it. Only the headers, the
 * section table and the two small sections are read, never the whole file (the provider is 230 MB).
 */
import * as fs from "node:fs";

export interface ElfDynamic {
  /** e_machine: 62 is x86-64, 183 AArch64. */
  machine: number;
  needed: string[];
  soname: string | null;
  /** DT_RUNPATH (or DT_RPATH) entries, `$ORIGIN` unexpanded. */
  runpath: string[];
}

const SHT_DYNAMIC = 6;
const DT_NEEDED = 1n;
const DT_RPATH = 15n;
const DT_SONAME = 14n;
const DT_RUNPATH = 29n;

function readAt(fd: number, offset: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  const n = fs.readSync(fd, b, 0, length, offset);
  if (n !== length) throw new Error(`truncated: wanted ${length} bytes at ${offset}, got ${n}`);
  return b;
}

/** The dynamic section of a 64-bit little-endian ELF file; throws (with the reason) for anything else. */
export function readElfDynamic(file: string): ElfDynamic {
  const fd = fs.openSync(file, "r");
  try {
    const size = fs.fstatSync(fd).size;
    if (size < 64) throw new Error("not an ELF file (too short)");
    const h = readAt(fd, 0, 64);
    if (h.readUInt32BE(0) !== 0x7f454c46) throw new Error("not an ELF file");
    if (h[4] !== 2 || h[5] !== 1) throw new Error("not a 64-bit little-endian ELF file");
    const machine = h.readUInt16LE(0x12);
    const shoff = Number(h.readBigUInt64LE(0x28));
    const shentsize = h.readUInt16LE(0x3a);
    const shnum = h.readUInt16LE(0x3c);
    if (shentsize < 64 || shoff + shnum * shentsize > size) throw new Error("ELF section table out of range");
    const sections = readAt(fd, shoff, shnum * shentsize);
    const section = (i: number) => {
      const o = i * shentsize;
      return { type: sections.readUInt32LE(o + 4), offset: Number(sections.readBigUInt64LE(o + 0x18)), size: Number(sections.readBigUInt64LE(o + 0x20)), link: sections.readUInt32LE(o + 0x28) };
    };
    let dyn: ReturnType<typeof section> | null = null;
    for (let i = 0; i < shnum; i++) if (section(i).type === SHT_DYNAMIC) dyn = section(i);
    if (!dyn) return { machine, needed: [], soname: null, runpath: [] };
    if (dyn.link >= shnum) throw new Error("ELF dynamic section links no string table");
    const strtab = section(dyn.link);
    if (dyn.offset + dyn.size > size || strtab.offset + strtab.size > size) throw new Error("ELF dynamic section out of range");
    const d = readAt(fd, dyn.offset, dyn.size);
    const s = readAt(fd, strtab.offset, strtab.size);
    const str = (at: bigint) => {
      const start = Number(at);
      if (start >= s.length) throw new Error("ELF string offset out of range");
      const end = s.indexOf(0, start);
      return s.toString("utf8", start, end < 0 ? s.length : end);
    };
    const out: ElfDynamic = { machine, needed: [], soname: null, runpath: [] };
    for (let o = 0; o + 16 <= d.length; o += 16) {
      const tag = d.readBigInt64LE(o);
      if (tag === 0n) break;
      const val = d.readBigUInt64LE(o + 8);
      if (tag === DT_NEEDED) out.needed.push(str(val));
      else if (tag === DT_SONAME) out.soname = str(val);
      else if (tag === DT_RUNPATH || tag === DT_RPATH) out.runpath.push(...str(val).split(":").filter(Boolean));
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}
