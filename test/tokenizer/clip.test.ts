import * as fs from "node:fs";
import * as path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { buildTokenizerJson, ClipTokenizer, readTokenizerConfig, tokenizerFiles, truncationWarning } from "../../src/tokenizer/clip.js";
import { FIXTURES, tempDir } from "../helpers/repo.js";
import { tokenizerFolder } from "../runtime/helpers.js";
import { userError } from "../helpers/errors.js";

interface Reference {
  prompts: string[];
  sd1: { ids: number[][]; truncated: (string | null)[] };
  sd2: { ids: number[][]; truncated: (string | null)[] };
  sd1_added_tokens: { added_tokens: Record<string, number>; prompts: string[]; ids: number[][] };
}
const ref = JSON.parse(fs.readFileSync(path.join(FIXTURES, "runtime", "clip_tokenizer.json"), "utf8")) as Reference;


describe("ClipTokenizer matches transformers' CLIPTokenizer (slow, with ftfy)", () => {
  const toks: Record<string, ClipTokenizer> = {};
  beforeAll(() => {
    toks.sd1 = ClipTokenizer.fromFolder(tokenizerFolder("sd1"));
    toks.sd2 = ClipTokenizer.fromFolder(tokenizerFolder("sd2"));
  });

  it("has a varied reference set", () => {
    expect(ref.prompts.length).toBeGreaterThanOrEqual(60);
    expect(ref.prompts).toContain("");
    expect(ref.sd1.truncated.filter((t) => t !== null).length).toBeGreaterThanOrEqual(5);
  });

  for (const variant of ["sd1", "sd2"] as const) {
    it(`gives identical ids for every prompt (${variant}, pad ${variant === "sd1" ? "<|endoftext|>" : '"!"'})`, () => {
      const tok = toks[variant]!;
      const wrong: unknown[] = [];
      ref.prompts.forEach((p, i) => {
        const e = tok.encode(p);
        const expected = ref[variant].ids[i]!;
        if (expected.length !== 77 || Array.from(e.ids).join(",") !== expected.join(","))
          wrong.push({ prompt: p, expected: expected.join(","), got: Array.from(e.ids).join(",") });
      });
      expect(wrong).toEqual([]);
    });

    it(`reports the truncated text as diffusers decodes it (${variant})`, () => {
      const tok = toks[variant]!;
      ref.prompts.forEach((p, i) => expect(tok.encode(p).truncated, p).toBe(ref[variant].truncated[i]));
    });
  }

  it("pads with the folder's pad token and ends with <|endoftext|>", () => {
    const a = toks.sd1!.encode("a cat");
    const b = toks.sd2!.encode("a cat");
    expect(Array.from(a.ids.slice(0, 5))).toEqual([49406, 320, 2368, 49407, 49407]);
    expect(Array.from(b.ids.slice(0, 5))).toEqual([49406, 320, 2368, 49407, 0]);
    expect(a.length).toBe(4);
    expect(toks.sd1!.padId).toBe(49407);
    expect(toks.sd2!.padId).toBe(0);
  });

  it("keeps 75 tokens of a long prompt and says what was cut", () => {
    const words = Array.from({ length: 100 }, (_, i) => `w${i}`).join(" ");
    const e = toks.sd1!.encode(words);
    expect(e.ids.length).toBe(77);
    expect(e.length).toBe(77);
    expect(e.ids[76]).toBe(49407);
    expect(e.truncated).not.toBeNull();
    expect(e.truncated!.endsWith("w 9 9")).toBe(true);
    expect(truncationWarning(e.truncated!, 77)).toMatch(/up to 77 tokens \(\d+ words cut\): .* … .*w 9 9$/);
    expect(toks.sd1!.encode("short").truncated).toBeNull();
  });

  it("a 2,000-word prompt: the warning shows the first and last few cut words and how many were cut, not kilobytes", () => {
    const words = Array.from({ length: 2000 }, (_, i) => `word${i}`).join(" ");
    const e = toks.sd1!.encode(words);
    const w = truncationWarning(e.truncated!, 77);
    expect(w.length).toBeLessThan(400);
    const cutWords = e.truncated!.split(/\s+/).filter(Boolean);
    expect(w).toContain(`up to 77 tokens (${cutWords.length} words cut): ${cutWords.slice(0, 6).join(" ")} … ${cutWords.slice(-6).join(" ")}`);
    // a short cut is shown whole, as diffusers does
    expect(truncationWarning("a b c", 77)).toBe("The following part of your input was truncated because CLIP can only handle sequences up to 77 tokens: a b c");
  });

  it("encodes a batch row by row", () => {
    const prompts = ref.prompts.slice(0, 5);
    const b = toks.sd2!.encodeBatch(prompts);
    expect(b.shape).toEqual([5, 77]);
    prompts.forEach((p, i) => expect(Array.from(b.ids.slice(i * 77, (i + 1) * 77))).toEqual(ref.sd2.ids[i]));
    expect(b.truncated).toEqual(ref.sd2.truncated.slice(0, 5));
  });

  it("splits added tokens (added_tokens.json) out of the prompt", () => {
    const r = ref.sd1_added_tokens;
    const tok = ClipTokenizer.fromFolder(tokenizerFolder("sd1", { "added_tokens.json": JSON.stringify(r.added_tokens) }));
    r.prompts.forEach((p, i) => expect(Array.from(tok.encode(p).ids), p).toEqual(r.ids[i]));
  });

  it("decodes ids back to text", () => {
    const tok = toks.sd1!;
    // transformers' clean-up joins " 's" but not " 't"
    expect(tok.decode(tok.tokenIds("A photo of a CAT, isn't it?"))).toBe("a photo of a cat, isn 't it?");
    expect(tok.decode(tok.tokenIds("caf\u00e9 \u{1F431}"))).toBe("caf\u00e9 \u{1F431}");
  });
});

describe("tokenizer.json", () => {
  it("is the standard Hugging Face form, and loading it gives the same ids", () => {
    const dir = tokenizerFolder("sd2");
    const json = buildTokenizerJson(dir) as Record<string, any>;
    expect(json.model.type).toBe("BPE");
    expect(json.model.end_of_word_suffix).toBe("</w>");
    expect(json.model.merges.length).toBe(48894);
    expect(Object.keys(json.model.vocab).length).toBe(49408);
    expect(json.added_tokens.map((t: { id: number; content: string }) => [t.id, t.content])).toEqual([
      [0, "!"],
      [49406, "<|startoftext|>"],
      [49407, "<|endoftext|>"],
    ]);
    expect(json.post_processor).toMatchObject({ type: "RobertaProcessing", cls: ["<|startoftext|>", 49406], sep: ["<|endoftext|>", 49407] });

    // a compiled folder: tokenizer.json next to the special-token files, without vocab.json/merges.txt
    const compiled = tempDir("sdc-compiled-tok-");
    fs.writeFileSync(path.join(compiled, "tokenizer.json"), JSON.stringify(json));
    for (const f of ["special_tokens_map.json", "tokenizer_config.json"]) fs.copyFileSync(path.join(dir, f), path.join(compiled, f));
    const tok = ClipTokenizer.fromFolder(compiled);
    ref.prompts.forEach((p, i) => expect(Array.from(tok.encode(p).ids), p).toEqual(ref.sd2.ids[i]));

    const fromJson = ClipTokenizer.fromJson(json, readTokenizerConfig(dir));
    expect(Array.from(fromJson.encode(ref.prompts[1]!).ids)).toEqual(ref.sd2.ids[1]);
  });

  it("tokenizerFiles gives a compiled folder that loads with the same ids", () => {
    const files = tokenizerFiles(tokenizerFolder("sd2"));
    expect([...files.keys()].sort()).toEqual(["merges.txt", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.json"]);
    const out = tempDir("sdc-tok-out-");
    for (const [name, text] of files) fs.writeFileSync(path.join(out, name), text);
    const tok = ClipTokenizer.fromFolder(out);
    expect(Array.from(tok.encode(ref.prompts[10]!).ids)).toEqual(ref.sd2.ids[10]);
  });

  it("uses CLIPTokenizer's defaults when the folder has no special-token files", () => {
    const dir = tokenizerFolder("sd1");
    fs.rmSync(path.join(dir, "special_tokens_map.json"));
    fs.rmSync(path.join(dir, "tokenizer_config.json"));
    const tok = ClipTokenizer.fromFolder(dir);
    expect(tok.modelMaxLength).toBe(77);
    ref.prompts.slice(0, 20).forEach((p, i) => expect(Array.from(tok.encode(p).ids), p).toEqual(ref.sd1.ids[i]));
  });

  it("reads the special-token settings as transformers resolves them", () => {
    const sd1 = readTokenizerConfig(tokenizerFolder("sd1"));
    const sd2 = readTokenizerConfig(tokenizerFolder("sd2"));
    expect(sd1).toMatchObject({ modelMaxLength: 77, padToken: "<|endoftext|>", bosToken: "<|startoftext|>", eosToken: "<|endoftext|>" });
    // special_tokens_map.json ("!") wins over tokenizer_config.json ("<|endoftext|>")
    expect(sd2.padToken).toBe("!");
    expect(sd2.specialTokens!.find((t) => t.content === "!")).toEqual({ content: "!", addedToken: false, lstrip: false, rstrip: false });
  });
});

describe("tokenizer errors name the file and what to do", () => {
  it("a missing folder or vocabulary file", () => {
    expect(userError(() => ClipTokenizer.fromFolder(path.join(tempDir("sdc-none-"), "nope"))).message).toMatch(/tokenizer folder not found/);
    const dir = tokenizerFolder("sd1");
    fs.rmSync(path.join(dir, "vocab.json"));
    const e = userError(() => ClipTokenizer.fromFolder(dir));
    expect(e.problems[0]!.subject).toBe(path.join(dir, "vocab.json"));
    expect(e.message).toMatch(/vocab\.json not found/);
    expect(e.problems[0]!.hint).toMatch(/vocab\.json, merges\.txt/);
  });

  it("corrupt JSON, with line and column", () => {
    const dir = tokenizerFolder("sd1", { "tokenizer_config.json": '{\n  "model_max_length": 77,\n  "pad_token": oops\n}\n' });
    const e = userError(() => ClipTokenizer.fromFolder(dir));
    expect(e.problems[0]!.at).toMatchObject({ file: path.join(dir, "tokenizer_config.json"), line: 3 });
    expect(e.problems[0]!.at!.col).toBeGreaterThan(1);
    expect(e.message).toMatch(/invalid JSON/);
  });

  it("a malformed merges.txt line and a bad vocabulary id", () => {
    const dir = tokenizerFolder("sd1");
    const merges = fs.readFileSync(path.join(dir, "merges.txt"), "utf8").split("\n");
    merges[5] = "threeparts a b";
    fs.writeFileSync(path.join(dir, "merges.txt"), merges.join("\n"));
    const e = userError(() => ClipTokenizer.fromFolder(dir));
    expect(e.problems[0]!.at).toMatchObject({ file: path.join(dir, "merges.txt"), line: 6 });

    const dir2 = tokenizerFolder("sd1", { "vocab.json": '{"a": 0, "b": "x"}' });
    expect(userError(() => ClipTokenizer.fromFolder(dir2)).message).toMatch(/token "b" has id "x"/);
  });

  it("a pad token that is not in the vocabulary", () => {
    const dir = tokenizerFolder("sd1", { "special_tokens_map.json": '{"pad_token": "<pad-not-there>"}' });
    const e = userError(() => ClipTokenizer.fromFolder(dir));
    expect(e.message).toMatch(/"<pad-not-there>" is not in vocab\.json/);
    expect(e.problems[0]!.hint).toMatch(/special_tokens_map\.json/);
  });
});
