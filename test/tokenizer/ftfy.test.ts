import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { fixEncoding, fixText, isBad, unescapeHtml } from "../../src/tokenizer/ftfy.js";
import { FIXTURES } from "../helpers/repo.js";

const fixture = JSON.parse(fs.readFileSync(path.join(FIXTURES, "runtime", "ftfy_cases.json"), "utf8")) as {
  cases: [string, string][];
};

describe("fixText matches ftfy 6.1.1 fix_text", () => {
  it("on every recorded case (prompts, ftfy's examples, mojibake in nine encodings, random strings)", () => {
    expect(fixture.cases.length).toBeGreaterThan(1000);
    // the corpus must exercise the repair: about half of the inputs are changed by ftfy
    expect(fixture.cases.filter(([a, b]) => a !== b).length).toBeGreaterThan(500);
    const wrong = fixture.cases.filter(([input, expected]) => fixText(input) !== expected);
    expect(wrong.map(([i, e]) => ({ input: i, expected: e, got: fixText(i) }))).toEqual([]);
  });

  it("repairs the documented examples", () => {
    expect(fixText("\u00e2\u0153\u201d No problems")).toBe("\u2714 No problems");
    // (ftfy's docstring says "...", but 6.1.1 keeps the ellipsis character, as the recorded cases confirm)
    expect(fixText("Broken text&hellip; it&#x2019;s \ufb02ubberi\ufb01c!")).toBe("Broken text\u2026 it's flubberific!");
    expect(fixText("\uff2c\uff2f\uff35\uff24\u3000\uff2e\uff2f\uff29\uff33\uff25\uff33")).toBe("LOUD NOISES");
    expect(fixEncoding("voil\u00c3 le travail")).toBe("voil\u00e0 le travail");
    expect(unescapeHtml("&ntilde; &Ntilde; &NTILDE; &nTILDE;")).toBe("\u00f1 \u00d1 \u00d1 &nTILDE;");
  });

  it("leaves ordinary text alone, and keeps entities in lines that look like HTML", () => {
    for (const s of ["a photo of a cat", "caf\u00e9 na\u00efve", "\u732b\u306e\u5199\u771f", "\u{1F431} emoji", "50% off, 3\u00d74"]) {
      expect(isBad(s)).toBe(false);
      expect(fixText(s)).toBe(s);
    }
    expect(fixText("<b>&amp;</b>")).toBe("<b>&amp;</b>");
    // "auto" HTML handling: once a line has '<', later lines keep their entities too
    expect(fixText("&amp;\n<\n&amp;")).toBe("&\n<\n&amp;");
  });
});
