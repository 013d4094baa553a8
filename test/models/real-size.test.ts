/**
 * SD 1.5 and 2.1 at full size, shapes only (no weights): the graphs build, pass the verifier in
 * both lowerings, and hold exactly as many parameters as diffusers/transformers instantiate for
 * the same configs (numbers from diffusers 0.24 / transformers 4.30: sum(p.numel())).
 */
import { describe, expect, it } from "vitest";
import { Builder } from "../../src/ir/builder.js";
import { lowerComposites } from "../../src/ir/passes/lower.js";
import { verify } from "../../src/ir/verify.js";
import { AutoencoderKLConfigSchema, CLIPTextConfigSchema, UNet2DConditionConfigSchema } from "../../src/models/arch.js";
import { buildClipText } from "../../src/models/clip-text.js";
import { PRESETS } from "../../src/models/presets.js";
import { buildUNet } from "../../src/models/unet.js";
import { buildVaeDecoder, buildVaeEncoder } from "../../src/models/vae.js";

const REFERENCE = {
  "sd1.5": { unet: 859_520_964, vaeEncoder: 34_163_664, vaeDecoder: 49_490_199, textEncoder: 123_060_480 },
  "sd2.1": { unet: 865_910_724, vaeEncoder: 34_163_664, vaeDecoder: 49_490_199, textEncoder: 340_387_840 },
};

describe.each(Object.keys(REFERENCE) as (keyof typeof REFERENCE)[])("%s architecture", (name) => {
  const p = {
    unet: UNet2DConditionConfigSchema.parse(PRESETS[name].unet),
    vae: AutoencoderKLConfigSchema.parse(PRESETS[name].vae),
    textEncoder: CLIPTextConfigSchema.parse(PRESETS[name].textEncoder),
  };
  const ref = REFERENCE[name];
  const cases = [
    ["unet", (b: Builder) => buildUNet(b, p.unet), ref.unet],
    ["vaeEncoder", (b: Builder) => buildVaeEncoder(b, p.vae), ref.vaeEncoder],
    ["vaeDecoder", (b: Builder) => buildVaeDecoder(b, p.vae), ref.vaeDecoder],
    ["textEncoder", (b: Builder) => buildClipText(b, p.textEncoder), ref.textEncoder],
  ] as const;
  it.each(cases)("%s parameter count", (_, build, expected) => {
    const b = new Builder("g");
    build(b);
    expect(b.graph.paramCount()).toBe(expected);
    lowerComposites(b.graph, { ep: "cpu", training: false });
    verify(b.graph, { final: true });
  });
  it("VAE encoder + decoder together equal AutoencoderKL's 83,653,863", () => {
    expect(ref.vaeEncoder + ref.vaeDecoder).toBe(83_653_863);
  });
});
