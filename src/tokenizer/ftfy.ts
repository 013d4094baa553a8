/**
 * ftfy's `fix_text` (version 6.1.1, default settings), reimplemented so prompts are cleaned exactly as
 * transformers' slow `CLIPTokenizer` cleans them before BPE (it calls `ftfy.fix_text` when ftfy is
 * installed, which is what makes it match OpenAI's tokenizer). Token ids for text with curly quotes,
 * HTML entities, fullwidth forms, ligatures or mojibake depend on it.
 *
 * The steps, per line, repeated until nothing changes: HTML entities (unless the line has a '<'),
 * mojibake repair (re-encode in one of nine single-byte encodings, decode as UTF-8, driven by ftfy's
 * "badness" heuristic), C1 controls, Latin ligatures, character widths, curly quotes, line breaks,
 * surrogates, terminal escapes, control characters, NFC. The tables and regular expressions are
 * generated from ftfy and Python by `test/fixtures/gen/ftfy_tables.py` into `ftfy-tables.ts`;
 * `test/tokenizer/ftfy.test.ts` compares this module with ftfy on a few hundred strings.
 *
 * Known limit: Unicode character data comes from Node (NFC), while ftfy ran on Python's
 * unicodedata 14.0; characters assigned after that may normalise differently.
 *
 * The algorithm and its heuristics are ftfy's (Copyright Robyn Speer / Luminoso Technologies,
 * Apache License 2.0), rewritten here; see https://github.com/rspeer/python-ftfy.
 */
import * as T from "./ftfy-tables.js";

type Encoding = (typeof T.CHARMAP_ENCODINGS)[number];

const BADNESS_RE = new RegExp(T.BADNESS_SOURCE, "u");
const UTF8_DETECTOR_RE = new RegExp(T.UTF8_DETECTOR_SOURCE, "gu");
const UTF8_DETECTOR_TEST_RE = new RegExp(T.UTF8_DETECTOR_SOURCE, "u");
const SINGLE_QUOTE_RE = new RegExp(T.SINGLE_QUOTE_SOURCE, "gu");
const DOUBLE_QUOTE_RE = new RegExp(T.DOUBLE_QUOTE_SOURCE, "gu");
const C1_CONTROL_RE = new RegExp(T.C1_CONTROL_SOURCE, "gu");
const C1_CONTROL_TEST_RE = new RegExp(T.C1_CONTROL_SOURCE, "u");
const HTML_ENTITY_RE = new RegExp(T.HTML_ENTITY_SOURCE, "gu");
const ANSI_RE = new RegExp(T.ANSI_SOURCE, "gu");
// Byte patterns run on binary strings (one UTF-16 unit per byte), hence no `u` flag.
const ALTERED_UTF8_RE = new RegExp(T.ALTERED_UTF8_SOURCE, "g");
const ALTERED_UTF8_TEST_RE = new RegExp(T.ALTERED_UTF8_SOURCE);
const LOSSY_UTF8_RE = new RegExp(T.LOSSY_UTF8_SOURCE, "g");
const A_GRAVE_WORD_RE = new RegExp(T.A_GRAVE_WORD_SOURCE, "g");
const LONE_SURROGATE_RE = /[\ud800-\udfff]/gu;

const INVALID_CODEPOINTS = new Set(T.INVALID_CODEPOINTS);
const CONTROL_CHARS = new Set<number>();
for (const [a, b] of T.CONTROL_CHAR_RANGES) for (let c = a; c <= b; c++) CONTROL_CHARS.add(c);

/** Per single-byte encoding: character -> byte for bytes 0x80..0xFF and 0x1A. */
const ENCODERS = new Map<Encoding, Map<number, number>>();
for (const enc of T.CHARMAP_ENCODINGS) {
  const high = T.CHARMAP_HIGH[enc];
  const m = new Map<number, number>();
  for (let i = 0; i < 129; i++) m.set(high.charCodeAt(i), i < 128 ? 0x80 + i : 0x1a);
  ENCODERS.set(enc, m);
}
const SLOPPY_1252 = T.CHARMAP_HIGH["sloppy-windows-1252"];

const utf8Strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

class DecodeError extends Error {}

// ------------------------------------------------------------------------------------------------
// Entry points

/** ftfy.fix_text(text) with default settings. */
export function fixText(text: string): string {
  // (ftfy also cuts lines longer than a million code points into pieces; prompts never are.)
  const out: string[] = [];
  let unescape = true; // "auto": switched off for the rest of the text once a segment has a '<'
  let pos = 0;
  while (pos < text.length) {
    let end = text.indexOf("\n", pos) + 1;
    if (end === 0) end = text.length;
    const segment = text.slice(pos, end);
    if (unescape && segment.includes("<")) unescape = false;
    out.push(fixSegment(segment, unescape));
    pos = end;
  }
  return out.join("");
}

/** ftfy.fix_encoding(text): only the mojibake repair, repeated until nothing changes. */
export function fixEncoding(text: string): string {
  for (;;) {
    const next = fixEncodingOneStep(text);
    if (next === text) return text;
    text = next;
  }
}

/** ftfy.badness.is_bad: does the text contain sequences that look like mojibake? */
export function isBad(text: string): boolean {
  return BADNESS_RE.test(text);
}

// ------------------------------------------------------------------------------------------------
// One segment (a line): fix_and_explain

function fixSegment(text: string, unescape: boolean): string {
  if (text.includes("<")) unescape = false;
  for (;;) {
    const orig = text;
    if (unescape) text = unescapeHtml(text);
    text = fixEncoding(text);
    text = fixC1Controls(text);
    text = translate(text, T.LIGATURES);
    text = translate(text, T.WIDTH_MAP);
    text = text.replace(DOUBLE_QUOTE_RE, '"').replace(SINGLE_QUOTE_RE, "'");
    text = fixLineBreaks(text);
    // JS strings hold astral characters as valid pairs already; only lone halves can remain
    text = text.replace(LONE_SURROGATE_RE, "\ufffd");
    text = text.replace(ANSI_RE, "");
    text = removeControlChars(text);
    text = text.normalize("NFC");
    if (text === orig) return text;
  }
}

/** ftfy.fixes.unescape_html: entities that end in ';', including some all-caps forms. */
export function unescapeHtml(text: string): string {
  return text.replace(HTML_ENTITY_RE, (m) => {
    const named = T.HTML_ENTITIES[m];
    if (named !== undefined) return named;
    if (m.startsWith("&#")) return numericCharref(m) ?? m;
    return m;
  });
}

/** Python's html.unescape on `&#...;` when it consumes the whole reference, else null. */
function numericCharref(m: string): string | null {
  const body = m.slice(2, -1);
  let num: bigint;
  if (/^[xX][0-9a-fA-F]+$/.test(body)) num = BigInt("0x" + body.slice(1));
  else if (/^[0-9]+$/.test(body)) num = BigInt(body);
  else return null;
  if (num <= 0xffffn && T.INVALID_CHARREFS[Number(num)] !== undefined) return T.INVALID_CHARREFS[Number(num)]!;
  if ((num >= 0xd800n && num <= 0xdfffn) || num > 0x10ffffn) return "\ufffd";
  const cp = Number(num);
  if (INVALID_CODEPOINTS.has(cp)) return "";
  return String.fromCodePoint(cp);
}

function translate(text: string, table: Record<number, string>): string {
  let out = "";
  let changed = false;
  for (const ch of text) {
    const r = table[ch.codePointAt(0)!];
    if (r !== undefined) {
      out += r;
      changed = true;
    } else out += ch;
  }
  return changed ? out : text;
}

function fixLineBreaks(text: string): string {
  return text
    .replaceAll("\r\n", "\n")
    .replaceAll("\r", "\n")
    .replaceAll("\u2028", "\n")
    .replaceAll("\u2029", "\n")
    .replaceAll("\u0085", "\n");
}

function removeControlChars(text: string): string {
  let out = "";
  let changed = false;
  for (const ch of text) {
    if (CONTROL_CHARS.has(ch.codePointAt(0)!)) changed = true;
    else out += ch;
  }
  return changed ? out : text;
}

function fixC1Controls(text: string): string {
  return text.replace(C1_CONTROL_RE, (m) => SLOPPY_1252[m.charCodeAt(0) - 0x80]!);
}

// ------------------------------------------------------------------------------------------------
// Mojibake repair: _fix_encoding_one_step_and_explain

function fixEncodingOneStep(text: string): string {
  if (text.length === 0) return text;
  if (isAscii(text) || !isBad(text)) return text;

  const possible: Encoding[] = [];
  for (const enc of T.CHARMAP_ENCODINGS) {
    let bytes = encodeCharmap(text, enc);
    if (bytes === null) continue;
    possible.push(enc);
    if (ALTERED_UTF8_TEST_RE.test(bytes)) bytes = restoreByteA0(bytes);
    if (enc.startsWith("sloppy")) bytes = bytes.replace(LOSSY_UTF8_RE, "\xef\xbf\xbd");
    try {
      return bytes.includes("\xed") || bytes.includes("\xc0") ? decodeUtf8Variants(bytes) : decodeUtf8(bytes);
    } catch (e) {
      if (!(e instanceof DecodeError)) throw e;
    }
  }

  // Runs that look like UTF-8 mojibake inside otherwise fine text are fixed on their own.
  if (UTF8_DETECTOR_TEST_RE.test(text)) {
    const fixed = decodeInconsistentUtf8(text);
    if (fixed !== text) return fixed;
  }

  // Text that fits Latin-1 but did not decode as UTF-8: read its C1 controls as Windows-1252.
  // (ftfy meant to skip this when the text also fits Windows-1252, but compares against the name
  // "windows-1252" while its list says "sloppy-windows-1252", so the skip never happens.)
  if (possible.includes("latin-1")) {
    const bytes = encodeCharmap(text, "latin-1")!;
    const fixed = decodeStrictWindows1252(bytes);
    if (fixed !== null && fixed !== text) return fixed;
  }

  if (C1_CONTROL_TEST_RE.test(text)) return fixC1Controls(text);
  return text;
}

function isAscii(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0x7f) return false;
  return true;
}

/** text.encode(enc) as a binary string, or null when some character has no byte in `enc`. */
function encodeCharmap(text: string, enc: Encoding): string | null {
  const map = ENCODERS.get(enc)!;
  let out = "";
  for (const ch of text) {
    const c = ch.codePointAt(0)!;
    if (c < 0x80 && c !== 0x1a) out += ch;
    else {
      const b = map.get(c);
      if (b === undefined) return null;
      out += String.fromCharCode(b);
    }
  }
  return out;
}

/** ftfy.fixes.restore_byte_a0: put back 0xA0 bytes that became spaces inside UTF-8 sequences. */
function restoreByteA0(bytes: string): string {
  bytes = bytes.replace(A_GRAVE_WORD_RE, "\xc3\xa0 ");
  return bytes.replace(ALTERED_UTF8_RE, (m) => m.replaceAll(" ", "\xa0"));
}

function toBytes(binary: string): Uint8Array {
  const b = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) b[i] = binary.charCodeAt(i);
  return b;
}

function decodeUtf8(binary: string): string {
  return strictUtf8(toBytes(binary));
}

function strictUtf8(bytes: Uint8Array): string {
  try {
    return utf8Strict.decode(bytes);
  } catch {
    throw new DecodeError("invalid UTF-8");
  }
}

/**
 * ftfy's "utf-8-variants" codec, strict: UTF-8 plus CESU-8 surrogate pairs and Java's C0 80 for
 * U+0000. Python's `$` in its patterns also matches before a final newline, which this keeps.
 */
function decodeUtf8Variants(binary: string): string {
  const b = toBytes(binary);
  const n = b.length;
  const endish = (p: number) => p === n || (p === n - 1 && b[p] === 0x0a);
  const inRange = (p: number, lo: number, hi: number) => p < n && b[p]! >= lo && b[p]! <= hi;
  let out = "";
  let start = 0;
  let i = 0;
  while (i < n) {
    if (b[i] === 0xc0 && (b[i + 1] === 0x80 || endish(i + 1)) && n - i > 1) {
      out += strictUtf8(b.subarray(start, i)) + "\u0000";
      i += 2;
      start = i;
    } else if (
      b[i] === 0xed &&
      n - i >= 6 &&
      inRange(i + 1, 0xa0, 0xaf) &&
      inRange(i + 2, 0x80, 0xbf) &&
      b[i + 3] === 0xed &&
      inRange(i + 4, 0xb0, 0xbf) &&
      (inRange(i + 5, 0x80, 0xbf) || endish(i + 5))
    ) {
      const cp = ((b[i + 1]! & 0x0f) << 16) + ((b[i + 2]! & 0x3f) << 10) + ((b[i + 4]! & 0x0f) << 6) + (b[i + 5]! & 0x3f) + 0x10000;
      out += strictUtf8(b.subarray(start, i)) + String.fromCodePoint(cp);
      i += 6;
      start = i;
    } else i++;
  }
  return out + strictUtf8(b.subarray(start, n));
}

/** bytes.decode("windows-1252") (Python's strict codec: five bytes are undefined), or null. */
function decodeStrictWindows1252(binary: string): string | null {
  let out = "";
  for (let i = 0; i < binary.length; i++) {
    const c = binary.charCodeAt(i);
    if (c >= 0x80 && c <= 0x9f) {
      // the sloppy table passes undefined bytes through as C1 characters
      const ch = SLOPPY_1252[c - 0x80]!;
      if (ch.charCodeAt(0) === c) return null;
      out += ch;
    } else out += binary[i];
  }
  return out;
}

/** ftfy.fixes.decode_inconsistent_utf8. */
function decodeInconsistentUtf8(text: string): string {
  return text.replace(UTF8_DETECTOR_RE, (m) => (m.length < text.length && isBad(m) ? fixEncoding(m) : m));
}
