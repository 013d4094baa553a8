/** Aspect-ratio buckets: the sizes, the assignment rule on chosen aspect ratios, fitting and crops. */
import { describe, expect, it } from "vitest";
import { assignBucket, type BucketOptions, bucketSizes, centerCrop, resizeToCover } from "../../src/data/buckets.js";

const sd: BucketOptions = { resolution: 512, enabled: true, step: 64, minSide: 256, maxSide: 1024, noUpscale: false };
const str = (s: { width: number; height: number } | undefined) => (s ? `${s.width}x${s.height}` : "none");

describe("bucket sizes", () => {
  it("512² with step 64 between 256 and 1024 (as kohya's make_bucket_resolutions)", () => {
    const b = bucketSizes(sd);
    // width w from 256 to 1024, height the tallest multiple of 64 with w·h <= 512² (at most 1024), both ways round
    expect(b.map(str)).toEqual([
      "256x832", "256x896", "256x960", "256x1024", "320x704", "320x768", "384x640", "448x576", "512x512",
      "576x448", "640x384", "704x320", "768x320", "832x256", "896x256", "960x256", "1024x256",
    ]);
    for (const s of b) {
      expect(s.width % 64).toBe(0);
      expect(s.height % 64).toBe(0);
      expect(s.width * s.height).toBeLessThanOrEqual(512 * 512);
    }
  });

  it("a finer step and a narrower range", () => {
    const b = bucketSizes({ ...sd, step: 32, minSide: 384, maxSide: 704 });
    expect(b.map(str)).toEqual(["384x640", "384x672", "416x608", "448x576", "480x544", "512x512", "544x480", "576x448", "608x416", "640x384", "672x384"]);
  });

  it("without bucketing: one square of the resolution", () => {
    expect(bucketSizes({ ...sd, enabled: false }).map(str)).toEqual(["512x512"]);
  });
});

describe("assignment: the closest aspect ratio, in log space", () => {
  const b = bucketSizes(sd);
  const cases: [number, number, string][] = [
    [1000, 1000, "512x512"],
    [1920, 1080, "640x384"], // 16:9 = 1.78: 640x384 = 1.67 (ln diff 0.065) beats 768x320 = 2.4 (0.30)
    [1080, 1920, "384x640"], // the mirror image gets the mirrored bucket
    [3000, 1000, "832x256"], // 3.0: 832x256 = 3.25 (ln diff 0.080) beats 768x320 = 2.4 (0.22)
    [2500, 1000, "768x320"], // 2.5: 768x320 = 2.4 (0.041) beats 704x320 = 2.2 (0.128)
    [4000, 1000, "1024x256"],
    [800, 600, "576x448"], // 4:3 = 1.33: 576x448 = 1.29
    [100, 10000, "256x1024"], // extreme: the most extreme bucket
  ];
  for (const [w, h, want] of cases) it(`${w}x${h} → ${want}`, () => expect(str(assignBucket({ width: w, height: h }, b, sd))).toBe(want));

  it("a tie goes to the larger bucket", () => {
    // ln(2) is equally far from 1:1 and 4:1
    expect(str(assignBucket({ width: 200, height: 100 }, [{ width: 512, height: 512 }, { width: 1024, height: 256 }], sd))).toBe("1024x256");
    expect(str(assignBucket({ width: 200, height: 100 }, [{ width: 256, height: 256 }, { width: 1024, height: 256 }], sd))).toBe("1024x256");
  });

  it("no_upscale: an image smaller than its bucket gets its own size rounded down to the step", () => {
    const o = { ...sd, noUpscale: true };
    expect(str(assignBucket({ width: 1000, height: 1000 }, b, o))).toBe("512x512"); // large enough: the usual bucket
    expect(str(assignBucket({ width: 300, height: 300 }, b, o))).toBe("256x256");
    expect(str(assignBucket({ width: 600, height: 300 }, b, o))).toBe("576x256");
    expect(str(assignBucket({ width: 3000, height: 100 }, b, o))).toBe("1024x64"); // capped at max_side
    expect(assignBucket({ width: 60, height: 500 }, b, o)).toBeUndefined(); // a side under one step
  });
});

describe("fitting", () => {
  it("resize covers the bucket at the smallest scale (without buckets: shorter side to the resolution)", () => {
    expect(resizeToCover({ width: 1000, height: 500 }, { width: 512, height: 512 })).toEqual({ width: 1024, height: 512 });
    expect(resizeToCover({ width: 300, height: 400 }, { width: 512, height: 512 })).toEqual({ width: 512, height: 683 });
    expect(resizeToCover({ width: 1920, height: 1080 }, { width: 640, height: 384 })).toEqual({ width: 683, height: 384 });
    expect(resizeToCover({ width: 640, height: 384 }, { width: 640, height: 384 })).toEqual({ width: 640, height: 384 });
  });

  it("centre crop as torchvision: round((size - crop) / 2), halves to even", () => {
    expect(centerCrop({ width: 1024, height: 512 }, { width: 512, height: 512 })).toEqual({ left: 256, top: 0, width: 512, height: 512 });
    expect(centerCrop({ width: 683, height: 384 }, { width: 640, height: 384 })).toEqual({ left: 22, top: 0, width: 640, height: 384 }); // 21.5 → 22
    expect(centerCrop({ width: 8, height: 5 }, { width: 4, height: 4 })).toEqual({ left: 2, top: 0, width: 4, height: 4 }); // 0.5 → 0
    expect(centerCrop({ width: 7, height: 7 }, { width: 4, height: 4 })).toEqual({ left: 2, top: 2, width: 4, height: 4 }); // 1.5 → 2
  });
});
