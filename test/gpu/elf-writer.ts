/**
 * A minimal 64-bit little-endian ELF shared object with a dynamic section (DT_NEEDED, DT_SONAME,
 * DT_RUNPATH) and nothing else: enough for the loader-free checks in src/gpu/ to read, and for
 * `readelf -d` to print the same entries.
 */
export function elfWithDynamic(o: { needed: string[]; soname?: string; runpath?: string; machine?: number }): Buffer {
  // .dynstr: a leading NUL, then each string
  const strs: number[] = [0];
  const off = (s: string) => {
    const at = strs.length;
    strs.push(...Buffer.from(s, "utf8"), 0);
    return at;
  };
  const entries: [number, number][] = o.needed.map((n) => [1, off(n)]);
  if (o.soname) entries.push([14, off(o.soname)]);
  if (o.runpath) entries.push([29, off(o.runpath)]);
  const dynstr = Buffer.from(strs);
  // after the ELF header and two program headers (PT_LOAD of the whole file, PT_DYNAMIC), which readelf -d needs
  const dynstrOff = 64 + 2 * 56;
  entries.push([5, dynstrOff], [10, dynstr.length], [0, 0]); // DT_STRTAB, DT_STRSZ (addresses = offsets), DT_NULL
  const dynOff = Math.ceil((dynstrOff + dynstr.length) / 8) * 8;
  const dyn = Buffer.alloc(entries.length * 16);
  entries.forEach(([tag, val], i) => {
    dyn.writeBigInt64LE(BigInt(tag), i * 16);
    dyn.writeBigUInt64LE(BigInt(val), i * 16 + 8);
  });
  const names = Buffer.from("\0.dynstr\0.dynamic\0.shstrtab\0", "latin1");
  const namesOff = dynOff + dyn.length;
  const shoff = Math.ceil((namesOff + names.length) / 8) * 8;
  const sh = Buffer.alloc(4 * 64);
  const section = (i: number, type: number, offset: number, size: number, link: number, entsize: number) => {
    const b = i * 64;
    sh.writeUInt32LE([0, 1, 9, 18][i]!, b); // sh_name in .shstrtab
    sh.writeUInt32LE(type, b + 4);
    sh.writeBigUInt64LE(BigInt(offset), b + 0x10); // sh_addr = offset (no program headers)
    sh.writeBigUInt64LE(BigInt(offset), b + 0x18);
    sh.writeBigUInt64LE(BigInt(size), b + 0x20);
    sh.writeUInt32LE(link, b + 0x28);
    sh.writeBigUInt64LE(1n, b + 0x30);
    sh.writeBigUInt64LE(BigInt(entsize), b + 0x38);
  };
  section(1, 3, dynstrOff, dynstr.length, 0, 0); // SHT_STRTAB
  section(2, 6, dynOff, dyn.length, 1, 16); // SHT_DYNAMIC → .dynstr
  section(3, 3, namesOff, names.length, 0, 0); // .shstrtab
  const ph = Buffer.alloc(2 * 56);
  const segment = (i: number, type: number, offset: number, size: number) => {
    const b = i * 56;
    ph.writeUInt32LE(type, b);
    ph.writeUInt32LE(4, b + 4); // PF_R
    ph.writeBigUInt64LE(BigInt(offset), b + 8);
    ph.writeBigUInt64LE(BigInt(offset), b + 0x10);
    ph.writeBigUInt64LE(BigInt(offset), b + 0x18);
    ph.writeBigUInt64LE(BigInt(size), b + 0x20);
    ph.writeBigUInt64LE(BigInt(size), b + 0x28);
    ph.writeBigUInt64LE(8n, b + 0x30);
  };
  segment(0, 1, 0, shoff + sh.length); // PT_LOAD
  segment(1, 2, dynOff, dyn.length); // PT_DYNAMIC
  const h = Buffer.alloc(64);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(h, 0);
  h.writeUInt16LE(3, 0x10); // ET_DYN
  h.writeUInt16LE(o.machine ?? 62, 0x12);
  h.writeUInt32LE(1, 0x14);
  h.writeBigUInt64LE(64n, 0x20); // e_phoff
  h.writeBigUInt64LE(BigInt(shoff), 0x28);
  h.writeUInt16LE(64, 0x34); // e_ehsize
  h.writeUInt16LE(56, 0x36); // e_phentsize
  h.writeUInt16LE(2, 0x38); // e_phnum
  h.writeUInt16LE(64, 0x3a); // e_shentsize
  h.writeUInt16LE(4, 0x3c); // e_shnum
  h.writeUInt16LE(3, 0x3e); // e_shstrndx
  const out = Buffer.alloc(shoff + sh.length);
  h.copy(out, 0);
  ph.copy(out, 64);
  dynstr.copy(out, dynstrOff);
  dyn.copy(out, dynOff);
  names.copy(out, namesOff);
  sh.copy(out, shoff);
  return out;
}
