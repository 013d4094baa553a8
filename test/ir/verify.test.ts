/** Shape errors name the node (scoped like the checkpoint key), the op and the shapes; the
 * verifier catches graphs broken by a pass; DCE and folding keep graphs valid. */
import { describe, expect, it } from "vitest";
import { Builder, IRError } from "../../src/ir/builder.js";
import { sym } from "../../src/ir/dims.js";
import { Value } from "../../src/ir/graph.js";
import { dce } from "../../src/ir/passes/dce.js";
import { foldKnown } from "../../src/ir/passes/fold.js";
import { lowerComposites } from "../../src/ir/passes/lower.js";
import { verify, VerifyError } from "../../src/ir/verify.js";

describe("build-time shape checks", () => {
  it("names the scoped node, op and shapes", () => {
    const b = new Builder("unet");
    const x = b.input("x", "float32", [sym("batch"), 77, 32]);
    let err: unknown;
    b.scope("down_blocks.1.attentions.0.transformer_blocks.0.attn1", () => {
      try {
        b.linear(x, "to_q", 64, 64);
      } catch (e) {
        err = e;
      }
    });
    expect(err).toBeInstanceOf(IRError);
    expect((err as IRError).node).toBe("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q/MatMul_0");
    expect((err as Error).message).toMatchInlineSnapshot(`
      "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q/MatMul_0 (MatMul): MatMul inner dimensions differ: A [batch, 77, 32] has 32, B [64, 64] has 64
        inputs: x: float32[batch, 77, 32], down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q/Transpose_0:0: float32[64, 64]"
    `);
  });
  it("rejects a strided conv whose output size has no closed form in a symbolic size", () => {
    const b = new Builder("vae");
    const x = b.input("x", "float32", [1, 4, sym("height"), sym("width")]);
    expect(() => b.conv2d(x, "conv", 4, 4, 3, { stride: 2, pads: [0, 0, 0, 0] })).toThrow(/Conv with kernel 3, stride 2, pads \(0,0\) gives no closed form for symbolic size height/);
  });
  it("rejects channel counts GroupNorm cannot split", () => {
    const b = new Builder("g");
    const x = b.input("x", "float32", [1, 10, 4, 4]);
    expect(() => b.groupNorm(x, "norm", 10, 4, 1e-5)).toThrow(/10 channels are not divisible into 4 groups/);
  });
  it("propagates symbolic sizes through strided convs (rounding up) and upsampling", () => {
    const b = new Builder("g");
    const x = b.input("x", "float32", [sym("batch"), 4, sym("height"), sym("width")]);
    const d1 = b.conv2d(x, "a", 4, 4, 3, { stride: 2 });
    const d = b.conv2d(d1, "b", 4, 4, 3, { stride: 2 });
    expect(b.describe(d)).toBe("b/Conv_0:0: float32[batch, 4, ⌈height/4⌉, ⌈width/4⌉]");
    expect(b.describe(b.upsampleNearest2x(d))).toMatch(/float32\[batch, 4, 2\*⌈height\/4⌉, 2\*⌈width\/4⌉\]$/);
    // resizing to a skip connection's size gives exactly that size, so the U-Net's concat checks out
    expect(b.describe(b.concat([b.upsampleNearestTo(d, d1), d1], 1))).toMatch(/float32\[batch, 8, ⌈height\/2⌉, ⌈width\/2⌉\]$/);
    expect(b.describe(b.reshape(d, [0, 0, -1]))).toMatch(/float32\[batch, 4, ⌈height\/4⌉\*⌈width\/4⌉\]$/);
    // the VAE encoder's asymmetric pad rounds down
    expect(b.describe(b.conv2d(x, "v", 4, 4, 3, { stride: 2, pads: [0, 0, 1, 1] }))).toMatch(/⌊height\/2⌋, ⌊width\/2⌋\]$/);
  });
});

describe("verify", () => {
  it("reports a node whose recorded shape no longer matches its rule", () => {
    const b = new Builder("g");
    const x = b.input("x", "float32", [2, 3]);
    const y = b.add(x, x);
    b.output("y", y);
    y.type = { dtype: "float32", shape: [3, 2] };
    expect(() => verify(b.graph)).toThrow(VerifyError);
    expect(() => verify(b.graph)).toThrow(/g\/Add_0 \(Add\): output 0 expected float32\[2, 3\], recorded float32\[3, 2\]/);
  });
  it("reports use before definition and unlowered composites", () => {
    const b = new Builder("g");
    const x = b.input("x", "float32", [1, 4, 2, 2]);
    const n = b.groupNorm(x, "norm", 4, 2, 1e-5);
    b.output("y", n);
    expect(() => verify(b.graph, { final: true })).toThrow(/norm\/GroupNorm_0 \(sdc::GroupNorm\): composite op left unlowered/);
    const stray = new Value("stray", { dtype: "float32", shape: [1, 4, 2, 2] }, "node");
    b.graph.nodes[0]!.inputs[0] = stray;
    expect(() => verify(b.graph)).toThrow(/input 0 \(stray\) is not defined before use/);
  });
});

describe("passes", () => {
  it("DCE drops unused nodes and constants; folding turns static Shape into constants", () => {
    const b = new Builder("g");
    const x = b.input("x", "float32", [2, 3, 4]);
    b.mul(x, b.float(5)); // dead
    const y = b.reshapeLike(b.reshape(x, [0, -1]), x); // Shape(x) is static: folds
    b.output("y", y);
    expect(dce(b.graph)).toBe(1);
    expect(foldKnown(b.graph)).toBe(1);
    dce(b.graph);
    verify(b.graph, { final: true });
    expect(b.graph.nodes.map((n) => n.op)).toEqual(["Reshape", "Reshape"]);
    expect([...b.graph.constants.keys()].length).toBe(2);
  });
  it("records why a composite was not fused", () => {
    const b = new Builder("g");
    const x = b.input("x", "float32", [1, 4, 2, 2]);
    b.output("y", b.groupNorm(x, "norm", 4, 2, 1e-5));
    expect(lowerComposites(b.graph, { ep: "cpu", training: true })).toEqual({ fused: 0, decomposed: 1 });
    expect(b.graph.notes).toEqual(["GroupNorm not fused: gradients are taken through it (1×)"]);
    verify(b.graph, { final: true });
  });
});
