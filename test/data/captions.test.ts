/** Captions: dropout rate, tag shuffle with fixed leading tags, prefix and suffix. */
import { describe, expect, it } from "vitest";
import { type CaptionOptions, drawCaption, PLAIN_CAPTIONS, splitTags } from "../../src/data/captions.js";
import { DataRng } from "../../src/data/rng.js";

const opts = (o: Partial<CaptionOptions>): CaptionOptions => ({ ...PLAIN_CAPTIONS, ...o });

describe("captions", () => {
  it("are left as written when nothing is enabled (no draws)", () => {
    const rng = new DataRng(0);
    expect(drawCaption(" a, b ,, c ", PLAIN_CAPTIONS, rng)).toBe(" a, b ,, c ");
    expect(rng.state().draws).toBe(0);
  });

  it("dropout: the empty caption at the configured rate (prefix and suffix included)", () => {
    const rng = new DataRng(1234);
    const p = 0.2;
    const n = 20000;
    let dropped = 0;
    for (let i = 0; i < n; i++) {
      const c = drawCaption("a cat", opts({ dropout: p, prefix: "photo of ", suffix: "!" }), rng);
      if (c === "") dropped++;
      else expect(c).toBe("photo of a cat!");
    }
    // binomial: sd = sqrt(n p (1-p)) ≈ 57; allow 5 sd
    expect(Math.abs(dropped - n * p)).toBeLessThan(5 * Math.sqrt(n * p * (1 - p)));
    expect(rng.state().draws).toBe(n);
  });

  it("dropout 1 always drops, 0 never draws", () => {
    const rng = new DataRng(5);
    expect(drawCaption("x", opts({ dropout: 1 }), rng)).toBe("");
    expect(drawCaption("x", opts({ dropout: 0 }), rng)).toBe("x");
    expect(rng.state().draws).toBe(1);
  });

  it("shuffle keeps the first keep_tokens tags in place and permutes the rest", () => {
    const rng = new DataRng(7);
    const tags = ["sks", "dog", "red collar", "grass", "sunny", "outdoors", "smiling"];
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const out = splitTags(drawCaption(tags.join(",  "), opts({ shuffle: true, keepTokens: 2 }), rng));
      expect(out.slice(0, 2)).toEqual(["sks", "dog"]);
      expect([...out].sort()).toEqual([...tags].sort());
      seen.add(out.slice(2).join("|"));
    }
    expect(seen.size).toBeGreaterThan(50); // many orders of the 5 free tags (120 possible)
    // every free tag reaches the first free position
    const firsts = new Set<string>();
    for (let i = 0; i < 200; i++) firsts.add(splitTags(drawCaption(tags.join(","), opts({ shuffle: true, keepTokens: 2 }), rng))[2]!);
    expect([...firsts].sort()).toEqual(tags.slice(2).sort());
  });

  it("shuffle joins with ', ', drops empty tags; prefix and suffix stay outside the shuffle", () => {
    const rng = new DataRng(3);
    const out = drawCaption("a,,b, c ,", opts({ shuffle: true, keepTokens: 10, prefix: "<p> ", suffix: " <s>" }), rng);
    expect(out).toBe("<p> a, b, c <s>");
  });

  it("the same generator state gives the same captions", () => {
    const o = opts({ shuffle: true, dropout: 0.3, keepTokens: 1 });
    const run = () => {
      const rng = new DataRng(99);
      return Array.from({ length: 50 }, () => drawCaption("a, b, c, d, e", o, rng));
    };
    expect(run()).toEqual(run());
  });
});
