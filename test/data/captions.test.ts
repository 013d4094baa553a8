/** Captions: the pick among several, dropout rate, tag shuffle with fixed leading tags, prefix and suffix. */
import { describe, expect, it } from "vitest";
import { type CaptionOptions, captionsVary, drawCaption, pickCaption, PLAIN_CAPTIONS, splitTags } from "../../src/data/captions.js";
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

  it("a list: one caption picked per draw with below(n), the same seed giving the same sequence", () => {
    const list = ["a red circle", "a circle, red", "red round shape", "circle"];
    const run = (seed: number) => {
      const rng = new DataRng(seed);
      const out = Array.from({ length: 400 }, () => drawCaption(list, PLAIN_CAPTIONS, rng));
      return { out, draws: rng.state().draws };
    };
    const a = run(21);
    expect(run(21)).toEqual(a);
    expect(run(22).out).not.toEqual(a.out);
    expect(a.draws).toBe(400); // one draw per pick
    expect([...new Set(a.out)].sort()).toEqual([...list].sort());
    // it is torch.randint(0, n) on the data generator
    const rng = new DataRng(21);
    expect(a.out.slice(0, 20)).toEqual(Array.from({ length: 20 }, () => list[rng.below(list.length)]));
  });

  it("a string or a one-item list draws nothing for the pick", () => {
    const rng = new DataRng(4);
    expect(pickCaption("a cat", rng)).toBe("a cat");
    expect(pickCaption(["a cat"], rng)).toBe("a cat");
    expect(rng.state().draws).toBe(0);
    expect(() => pickCaption([], rng)).toThrow(RangeError);
  });

  it("the pick comes first, then dropout, shuffle, prefix and suffix", () => {
    const o = opts({ dropout: 0.5, shuffle: true, keepTokens: 1, prefix: "<", suffix: ">" });
    const list = ["a, b, c", "d, e, f"];
    const rng = new DataRng(13);
    const mirror = new DataRng(13);
    for (let i = 0; i < 100; i++) {
      const got = drawCaption(list, o, rng);
      const picked = list[mirror.below(2)]!;
      expect(got).toBe(drawCaption(picked, o, mirror));
    }
    expect(rng.state()).toEqual(mirror.state());
  });

  it("captionsVary: dropout, shuffle, or a sample with several captions", () => {
    expect(captionsVary(PLAIN_CAPTIONS)).toBe(false);
    expect(captionsVary(opts({ dropout: 0.1 }))).toBe(true);
    expect(captionsVary(opts({ shuffle: true }))).toBe(true);
    expect(captionsVary(PLAIN_CAPTIONS, [{}, { captions: ["a"] }])).toBe(false);
    expect(captionsVary(PLAIN_CAPTIONS, [{}, { captions: ["a", "b"] }])).toBe(true);
  });
});
