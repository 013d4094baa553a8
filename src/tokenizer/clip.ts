/**
 * CLIP's BPE tokenizer, giving the ids transformers' slow `CLIPTokenizer` (what diffusers pipelines
 * load) gives with ftfy installed, padded and truncated to the model's length.
 *
 * The BPE merges run in @huggingface/tokenizers; this module does what that library does not match:
 *  - special tokens written in the prompt are split out of the raw text first, as transformers
 *    does, including the pad token: with SD 2's pad token "!", every "!" becomes id 0;
 *  - each remaining piece is cleaned like `CLIPTokenizer._tokenize`: ftfy.fix_text, whitespace runs
 *    to one space, strip, lowercase; then split with CLIP's regex (`'s|'t|...|[\p{L}]+|[\p{N}]|...`);
 *  - the library ignores padding and truncation settings: we keep the first maxLength-2 tokens
 *    between <|startoftext|> and <|endoftext|> and pad with the folder's pad token, reporting the
 *    cut-off text the way diffusers' warning decodes it.
 *
 * `buildTokenizerJson` writes the standard Hugging Face `tokenizer.json` for a diffusers
 * `tokenizer/` folder (what the compiler stores in the compiled folder); `ClipTokenizer.fromFolder`
 * reads either form.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { fail } from "../util/errors.js";
import { parseJson } from "../util/json.js";
import { PY_SPACE_CODEPOINTS } from "./ftfy-tables.js";
import { fixText } from "./ftfy.js";

/** A special token as the folder declares it. */
export interface SpecialTokenSpec {
  content: string;
  /** Declared as an AddedToken object (its lstrip/rstrip apply) rather than a plain string. */
  addedToken: boolean;
  lstrip: boolean;
  rstrip: boolean;
}

export interface ClipTokenizerConfig {
  /** Sequence length including start and end tokens (77 for CLIP). */
  modelMaxLength: number;
  padToken: string;
  bosToken?: string;
  eosToken?: string;
  unkToken?: string;
  /**
   * Tokens split out of the raw prompt before cleaning (transformers' `unique_no_split_tokens`): the
   * special tokens (bos, eos, unk, pad, additional ones). Default: bos, eos, unk and pad as
   * CLIPTokenizer declares them (bos/eos/unk as AddedTokens, pad as a string).
   */
  specialTokens?: SpecialTokenSpec[];
  /** Tokens from `added_tokens.json` (token -> id), also split out of the raw prompt. */
  addedTokens?: Record<string, number>;
}

export interface Encoded {
  /** modelMaxLength ids: start, tokens, end, padding. */
  ids: Int32Array;
  /** Ids before padding (start and end included). */
  length: number;
  /** The text of the tokens that did not fit, decoded as diffusers reports it; null if nothing was cut. */
  truncated: string | null;
}

export interface EncodedBatch {
  /** [batch, modelMaxLength], row-major. */
  ids: Int32Array;
  shape: [number, number];
  truncated: (string | null)[];
}

const DEFAULT_BOS = "<|startoftext|>";
const DEFAULT_EOS = "<|endoftext|>";
/** transformers' slow CLIPTokenizer reads only this many merges from merges.txt. */
const CLIP_MERGES = 49152 - 256 - 2;
/** CLIP's pre-tokenizer regex, as CLIPTokenizer compiles it (with IGNORECASE: 'ſ' folds to 's'). */
const CLIP_SPLIT_RE =
  /<\|[sſ]tartoftext\|>|<\|endoftext\|>|'[sſ]|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\p{White_Space}\p{L}\p{N}]+/gu;
const WHITE_SPACE_RUN_RE = /\p{White_Space}+/gu;
const PY_SPACE = new Set(PY_SPACE_CODEPOINTS);
const SPECIAL_ATTRS = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"] as const;

// ------------------------------------------------------------------------------------------------
// Folder reading

/** Hugging Face `tokenizer.json` (fast-tokenizer format) for a diffusers `tokenizer/` folder. */
export function buildTokenizerJson(dir: string): Record<string, unknown> {
  const vocab = readVocab(path.join(dir, "vocab.json"));
  const merges = readMerges(path.join(dir, "merges.txt"));
  const config = readTokenizerConfig(dir);
  const specials = specialTokensOf(config);
  const addedTokens = [];
  const seen = new Set<string>();
  for (const t of specials) {
    if (seen.has(t.content)) continue;
    seen.add(t.content);
    const id = vocab[t.content] ?? config.addedTokens?.[t.content];
    if (id === undefined) missingToken(dir, t.content);
    addedTokens.push({ id, content: t.content, single_word: false, lstrip: t.lstrip, rstrip: t.rstrip, normalized: t.addedToken, special: true });
  }
  for (const [content, id] of Object.entries(config.addedTokens ?? {})) {
    if (seen.has(content)) continue;
    seen.add(content);
    addedTokens.push({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: true, special: false });
  }
  const bos = config.bosToken ?? DEFAULT_BOS;
  const eos = config.eosToken ?? DEFAULT_EOS;
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: addedTokens.sort((a, b) => a.id - b.id),
    normalizer: {
      type: "Sequence",
      normalizers: [{ type: "NFC" }, { type: "Replace", pattern: { Regex: "\\s+" }, content: " " }, { type: "Lowercase" }],
    },
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        {
          type: "Split",
          pattern: { Regex: "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+" },
          behavior: "Removed",
          invert: true,
        },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: "RobertaProcessing",
      sep: [eos, vocab[eos]],
      cls: [bos, vocab[bos]],
      trim_offsets: false,
      add_prefix_space: false,
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: config.unkToken ?? DEFAULT_EOS,
      continuing_subword_prefix: "",
      end_of_word_suffix: "</w>",
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges,
    },
  };
}

/** Files the tokenizer folder keeps as they are; transformers' CLIPTokenizer loads a folder from them. */
const FOLDER_FILES = ["vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json", "added_tokens.json"];

/**
 * The files of a compiled `tokenizer/` folder: `tokenizer.json` plus the source folder's own files,
 * unchanged, so other ONNX Stable Diffusion runners (which load CLIPTokenizer from vocab.json and
 * merges.txt) can use it too. Name -> content.
 */
export function tokenizerFiles(dir: string): Map<string, string> {
  const files = new Map<string, string>([["tokenizer.json", JSON.stringify(buildTokenizerJson(dir))]]);
  for (const f of FOLDER_FILES) {
    const file = path.join(dir, f);
    if (fs.existsSync(file)) files.set(f, readText(file, f));
  }
  return files;
}

/**
 * The special-token settings of a tokenizer folder, as transformers 4.30 resolves them:
 * `special_tokens_map.json` overrides `tokenizer_config.json`, which overrides CLIPTokenizer's
 * defaults (<|startoftext|>, and <|endoftext|> for eos, unk and pad). Missing files mean defaults.
 */
export function readTokenizerConfig(dir: string): ClipTokenizerConfig {
  const tcFile = path.join(dir, "tokenizer_config.json");
  const stmFile = path.join(dir, "special_tokens_map.json");
  const tc = fs.existsSync(tcFile) ? readJsonObject(tcFile) : {};
  const stm = fs.existsSync(stmFile) ? readJsonObject(stmFile) : {};

  const attrs = new Map<string, SpecialTokenSpec[]>();
  const fromConfig = (attr: string, value: unknown, file: string, forceAdded: boolean): SpecialTokenSpec[] | undefined => {
    if (value === undefined || value === null) return undefined;
    const list = Array.isArray(value) ? value : [value];
    return list.map((v) => {
      if (typeof v === "string") return { content: v, addedToken: forceAdded, lstrip: false, rstrip: false };
      if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") {
        const o = v as { content: string; lstrip?: boolean; rstrip?: boolean };
        return { content: o.content, addedToken: true, lstrip: o.lstrip === true, rstrip: o.rstrip === true };
      }
      return fail(`"${attr}" must be a string or an object with a "content" string`, {
        subject: file,
        hint: "compare with the tokenizer folder of runwayml/stable-diffusion-v1-5 or re-download it",
      });
    });
  };
  const defaults: Record<string, string> = { bos_token: DEFAULT_BOS, eos_token: DEFAULT_EOS, unk_token: DEFAULT_EOS, pad_token: DEFAULT_EOS };
  for (const attr of [...SPECIAL_ATTRS, "additional_special_tokens"]) {
    // CLIPTokenizer.__init__ wraps bos/eos/unk given as strings in AddedToken (no stripping);
    // special_tokens_map.json is applied afterwards as is.
    const wrap = attr === "bos_token" || attr === "eos_token" || attr === "unk_token";
    const spec =
      fromConfig(attr, stm[attr], stmFile, false) ??
      fromConfig(attr, tc[attr], tcFile, wrap) ??
      fromConfig(attr, defaults[attr], tcFile, wrap);
    if (spec) attrs.set(attr, spec);
  }

  let modelMaxLength = 77;
  if (tc.model_max_length !== undefined) {
    const m = tc.model_max_length;
    if (typeof m !== "number" || !Number.isInteger(m) || m < 2)
      fail(`"model_max_length" must be an integer of at least 2, got ${JSON.stringify(m)}`, { subject: tcFile });
    // transformers stores "no limit" as a huge number; CLIP's text encoder has 77 positions
    modelMaxLength = m > 1_000_000 ? 77 : m;
  }

  let addedTokens: Record<string, number> | undefined;
  const atFile = path.join(dir, "added_tokens.json");
  if (fs.existsSync(atFile)) {
    addedTokens = {};
    for (const [k, v] of Object.entries(readJsonObject(atFile))) {
      if (typeof v !== "number" || !Number.isInteger(v))
        fail(`added token ${JSON.stringify(k)} must map to an integer id`, { subject: atFile });
      // transformers lowercases added (non-special) tokens when the config says do_lower_case
      addedTokens[tc.do_lower_case === true ? k.toLowerCase() : k] = v;
    }
  }

  const one = (attr: string) => attrs.get(attr)?.[0]?.content;
  return {
    modelMaxLength,
    padToken: one("pad_token") ?? DEFAULT_EOS,
    bosToken: one("bos_token") ?? DEFAULT_BOS,
    eosToken: one("eos_token") ?? DEFAULT_EOS,
    unkToken: one("unk_token") ?? DEFAULT_EOS,
    specialTokens: [...SPECIAL_ATTRS, "additional_special_tokens"].flatMap((a) => attrs.get(a) ?? []),
    ...(addedTokens ? { addedTokens } : {}),
  };
}

function specialTokensOf(config: ClipTokenizerConfig): SpecialTokenSpec[] {
  if (config.specialTokens) return config.specialTokens;
  const added = (content: string) => ({ content, addedToken: true, lstrip: false, rstrip: false });
  return [
    added(config.bosToken ?? DEFAULT_BOS),
    added(config.eosToken ?? DEFAULT_EOS),
    added(config.unkToken ?? DEFAULT_EOS),
    { content: config.padToken, addedToken: false, lstrip: false, rstrip: false },
  ];
}

function missingToken(where: string, token: string): never {
  return fail(`special token ${JSON.stringify(token)} is not in vocab.json or added_tokens.json`, {
    subject: where,
    hint: "check pad_token/bos_token/eos_token in special_tokens_map.json and tokenizer_config.json",
  });
}

function readText(file: string, what: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return fail(code === "ENOENT" ? `${what} not found` : `cannot read ${what}: ${(e as Error).message}`, {
      subject: file,
      hint: FOLDER_HINT,
    });
  }
}

const FOLDER_HINT = "a diffusers tokenizer/ folder holds vocab.json, merges.txt, special_tokens_map.json and tokenizer_config.json: copy them again from the model repository";

function readJsonObject(file: string): Record<string, unknown> {
  const value = parseJson(file, readText(file, path.basename(file)), FOLDER_HINT);
  if (!value || typeof value !== "object" || Array.isArray(value))
    fail("expected a JSON object", { at: { file, line: 1, col: 1 }, hint: FOLDER_HINT });
  return value as Record<string, unknown>;
}

function readVocab(file: string): Record<string, number> {
  const vocab = readJsonObject(file);
  let n = 0;
  for (const [k, v] of Object.entries(vocab)) {
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0)
      fail(`token ${JSON.stringify(k)} has id ${JSON.stringify(v)}, expected a non-negative integer`, {
        subject: file,
        hint: "vocab.json maps each token to its integer id",
      });
    n++;
  }
  if (n === 0) fail("vocab.json is empty", { subject: file });
  return vocab as Record<string, number>;
}

function readMerges(file: string): string[] {
  const lines = readText(file, "merges.txt").replace(/\s+$/, "").split("\n");
  if (!lines[0]?.startsWith("#version"))
    fail('expected a "#version: 0.2" header line', { at: { file, line: 1, col: 1 }, hint: "is this a BPE merges.txt?" });
  const merges = lines.slice(1, 1 + CLIP_MERGES).map((l) => l.replace(/\r$/, ""));
  for (let i = 0; i < merges.length; i++) {
    if (merges[i]!.split(" ").length !== 2)
      fail(`expected two symbols separated by one space, got ${JSON.stringify(merges[i])}`, {
        at: { file, line: i + 2, col: 1 },
        hint: "each line of merges.txt after the header is one merge: 'a b'",
      });
  }
  return merges;
}

// ------------------------------------------------------------------------------------------------
// The tokenizer

interface Piece {
  text: string;
  special: boolean;
}

export class ClipTokenizer {
  readonly modelMaxLength: number;
  readonly padId: number;
  readonly bosId: number;
  readonly eosId: number;
  private readonly bpe: Tokenizer;
  private readonly vocab: Map<string, number>;
  private readonly idToToken: string[];
  /** Raw-text tokens split out before cleaning, longest first, with their ids and strip rules. */
  private readonly noSplit: { content: string; id: number; lstrip: boolean; rstrip: boolean }[];

  private constructor(tokenizerJson: Record<string, unknown>, config: ClipTokenizerConfig, where: string) {
    const model = tokenizerJson.model as { vocab?: Record<string, number>; merges?: unknown } | undefined;
    if (!model || typeof model !== "object" || !model.vocab || !Array.isArray(model.merges))
      fail("tokenizer.json has no BPE model (model.vocab and model.merges)", {
        subject: where,
        hint: "rebuild it from vocab.json and merges.txt (sdc compile does)",
      });
    if (!Number.isInteger(config.modelMaxLength) || config.modelMaxLength < 2)
      fail(`model max length must be an integer of at least 2, got ${config.modelMaxLength}`, { subject: where });
    this.modelMaxLength = config.modelMaxLength;
    this.vocab = new Map(Object.entries(model.vocab));
    for (const [k, v] of Object.entries(config.addedTokens ?? {})) this.vocab.set(k, v);
    this.idToToken = [];
    for (const [k, v] of this.vocab) this.idToToken[v] = k;

    const idOf = (token: string) => this.vocab.get(token) ?? missingToken(where, token);
    this.padId = idOf(config.padToken);
    this.bosId = idOf(config.bosToken ?? DEFAULT_BOS);
    this.eosId = idOf(config.eosToken ?? DEFAULT_EOS);

    // transformers keys strip rules by content: an AddedToken declaration wins over a plain string
    const rules = new Map<string, { lstrip: boolean; rstrip: boolean; addedToken: boolean }>();
    for (const t of specialTokensOf(config)) {
      const prev = rules.get(t.content);
      if (t.addedToken || !prev || !prev.addedToken) rules.set(t.content, { lstrip: t.lstrip, rstrip: t.rstrip, addedToken: t.addedToken });
    }
    for (const t of Object.keys(config.addedTokens ?? {})) if (!rules.has(t)) rules.set(t, { lstrip: false, rstrip: false, addedToken: false });
    this.noSplit = [...rules.entries()]
      .filter(([content]) => content.length > 0)
      .map(([content, r]) => ({
        content,
        id: idOf(content),
        // tokens not declared as AddedToken eat the whitespace on both sides
        lstrip: r.addedToken ? r.lstrip : true,
        rstrip: r.addedToken ? r.rstrip : true,
      }))
      .sort((a, b) => b.content.length - a.content.length);

    // The library does BPE only: our pre-tokenizer output arrives space-separated.
    this.bpe = new Tokenizer(
      {
        ...tokenizerJson,
        added_tokens: [],
        normalizer: null,
        pre_tokenizer: {
          type: "Sequence",
          pretokenizers: [
            { type: "Split", pattern: { Regex: " " }, behavior: "Removed", invert: false },
            { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
          ],
        },
        post_processor: null,
        decoder: null,
      },
      {},
    );
  }

  /** From a tokenizer folder: tokenizer.json if present, else vocab.json + merges.txt. */
  static fromFolder(dir: string): ClipTokenizer {
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory())
      fail("tokenizer folder not found", { subject: dir, hint: "point to the model's tokenizer/ folder" });
    const config = readTokenizerConfig(dir);
    const tj = path.join(dir, "tokenizer.json");
    const json = fs.existsSync(tj) ? readJsonObject(tj) : buildTokenizerJson(dir);
    return new ClipTokenizer(json, config, dir);
  }

  static fromJson(tokenizerJson: Record<string, unknown>, config: ClipTokenizerConfig): ClipTokenizer {
    return new ClipTokenizer(tokenizerJson, config, "tokenizer.json");
  }

  /** Ids for one prompt: start, up to modelMaxLength-2 tokens, end, padding. */
  encode(text: string): Encoded {
    const body = this.tokenIds(text);
    const room = this.modelMaxLength - 2;
    const kept = body.length > room ? body.slice(0, room) : body;
    const ids = new Int32Array(this.modelMaxLength).fill(this.padId);
    ids[0] = this.bosId;
    ids.set(kept, 1);
    ids[kept.length + 1] = this.eosId;
    return { ids, length: kept.length + 2, truncated: body.length > room ? this.decode(body.slice(room)) : null };
  }

  encodeBatch(texts: string[]): EncodedBatch {
    const L = this.modelMaxLength;
    const ids = new Int32Array(texts.length * L);
    const truncated: (string | null)[] = [];
    texts.forEach((t, i) => {
      const e = this.encode(t);
      ids.set(e.ids, i * L);
      truncated.push(e.truncated);
    });
    return { ids, shape: [texts.length, L], truncated };
  }

  /** Token ids of a prompt without start, end or padding. */
  tokenIds(text: string): number[] {
    const out: number[] = [];
    for (const piece of this.splitNoSplit(text)) {
      if (piece.special) {
        out.push(this.vocab.get(piece.text)!);
        continue;
      }
      const cleaned = pyStrip(fixText(piece.text).replace(WHITE_SPACE_RUN_RE, " ")).toLowerCase();
      let run: string[] = [];
      const flush = () => {
        if (run.length) out.push(...this.bpe.encode(run.join(" "), { add_special_tokens: false }).ids);
        run = [];
      };
      for (const m of cleaned.matchAll(CLIP_SPLIT_RE)) {
        const tok = m[0];
        // CLIPTokenizer's BPE cache maps these two straight to their vocabulary entries
        if (tok === "<|startoftext|>" || tok === "<|endoftext|>") {
          flush();
          out.push(this.vocab.get(tok) ?? this.vocab.get(DEFAULT_EOS)!);
        } else run.push(tok);
      }
      flush();
    }
    return out;
  }

  /** Text of token ids as transformers' decode gives it (used for the truncation warning). */
  decode(ids: ArrayLike<number>): string {
    let bytes = "";
    for (let i = 0; i < ids.length; i++) bytes += this.idToToken[ids[i]!] ?? "";
    const raw = new Uint8Array([...bytes].map((ch) => UNICODE_TO_BYTE.get(ch) ?? 0x3f));
    const text = pyStrip(new TextDecoder("utf-8").decode(raw).replaceAll("</w>", " "));
    return text
      .replaceAll(" .", ".")
      .replaceAll(" ?", "?")
      .replaceAll(" !", "!")
      .replaceAll(" ,", ",")
      .replaceAll(" ' ", "'")
      .replaceAll(" n't", "n't")
      .replaceAll(" 'm", "'m")
      .replaceAll(" 's", "'s")
      .replaceAll(" 've", "'ve")
      .replaceAll(" 're", "'re");
  }

  /** transformers' Trie split on no-split tokens, then its whitespace stripping around them. */
  private splitNoSplit(text: string): Piece[] {
    const pieces: Piece[] = [];
    let start = 0;
    let i = 0;
    outer: while (i < text.length) {
      for (const t of this.noSplit) {
        if (text.startsWith(t.content, i)) {
          if (i > start) pieces.push({ text: text.slice(start, i), special: false });
          pieces.push({ text: t.content, special: true });
          i += t.content.length;
          start = i;
          continue outer;
        }
      }
      i++;
    }
    if (start < text.length) pieces.push({ text: text.slice(start), special: false });
    const rule = new Map(this.noSplit.map((t) => [t.content, t]));
    for (let k = 0; k < pieces.length; k++) {
      if (!pieces[k]!.special) continue;
      const r = rule.get(pieces[k]!.text)!;
      const right = pieces[k + 1];
      const left = pieces[k - 1];
      if (r.rstrip && right && !right.special) right.text = pyStrip(right.text, "start");
      if (r.lstrip && left && !left.special) left.text = pyStrip(left.text, "end");
    }
    return pieces.filter((p) => p.text.length > 0);
  }
}

/**
 * The diffusers warning for a truncated prompt, kept short: a long cut shows its first and last few
 * words and how many words were cut (a 2,000-word prompt would otherwise print kilobytes).
 */
export function truncationWarning(cut: string, modelMaxLength: number): string {
  const words = cut.split(/\s+/).filter((w) => w.length > 0);
  const head = `The following part of your input was truncated because CLIP can only handle sequences up to ${modelMaxLength} tokens`;
  const EDGE = 6;
  const clip = (t: string) => (t.length > 80 ? `${t.slice(0, 77)}...` : t);
  if (words.length <= 2 * EDGE + 1 && cut.length <= 200) return `${head}: ${cut}`;
  const n = words.length;
  if (n <= 2 * EDGE) return `${head} (${n} word${n === 1 ? "" : "s"} cut): ${clip(cut)}`;
  return `${head} (${n} words cut): ${clip(words.slice(0, EDGE).join(" "))} … ${clip(words.slice(-EDGE).join(" "))}`;
}

/** Python's str.strip (its whitespace set differs from JavaScript's trim). */
function pyStrip(s: string, side: "both" | "start" | "end" = "both"): string {
  let a = 0;
  let b = s.length;
  if (side !== "end") while (a < b && PY_SPACE.has(s.charCodeAt(a))) a++;
  if (side !== "start") while (b > a && PY_SPACE.has(s.charCodeAt(b - 1))) b--;
  return s.slice(a, b);
}

/** GPT-2/CLIP byte-level alphabet: printable Latin-1 bytes stand for themselves, others map to U+0100 on. */
const UNICODE_TO_BYTE: Map<string, number> = (() => {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const m = new Map<string, number>();
  for (const b of bs) m.set(String.fromCharCode(b), b);
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) m.set(String.fromCharCode(256 + n++), b);
  return m;
})();
