/**
 * Stage 1, encode prompts: tokenize (CLIP, padded/truncated to the model's length; a cut prompt is
 * reported) and run the text encoder, for the prompts and, with classifier-free guidance, the
 * negative prompts. Each prompt's embedding is repeated for its images, in diffusers' order
 * (prompt 0's images first).
 */
import { type ClipTokenizer, truncationWarning } from "../../tokenizer/clip.js";
import type { GraphRunner } from "../graphs.js";

export interface PromptEmbeddings {
  /** [images, sequence, width], row-major: each prompt's last hidden state, once per image. */
  text: Float32Array;
  /** The negative prompts' embeddings, same layout; null without classifier-free guidance. */
  uncond: Float32Array | null;
  images: number;
  sequence: number;
  width: number;
}

export interface EncodePromptsOptions {
  prompts: string[];
  /** One negative prompt for every prompt, or one per prompt. */
  negativePrompts: string[];
  /** Images per prompt. */
  perPrompt: number;
  /** Classifier-free guidance: encode the negative prompts too. */
  guidance: boolean;
  /** Warnings for a person (truncated prompts). */
  log?: (line: string) => void;
}

export async function encodePrompts(textEncoder: GraphRunner, tokenizer: ClipTokenizer, o: EncodePromptsOptions): Promise<PromptEmbeddings> {
  const embed = async (texts: string[]) => {
    const enc = tokenizer.encodeBatch(texts);
    enc.truncated.forEach((cut) => cut && o.log?.(`warning: ${truncationWarning(cut, tokenizer.modelMaxLength)}`));
    const out = await textEncoder.run({ input_ids: { data: enc.ids, dims: enc.shape } });
    return out.last_hidden_state!;
  };
  const negative = (i: number) => o.negativePrompts[o.negativePrompts.length === 1 ? 0 : i]!;
  // prompts and negative prompts in one text-encoder call (one call's overhead less at start-up)
  const both = await embed(o.guidance ? [...o.prompts, ...o.prompts.map((_, i) => negative(i))] : o.prompts);
  const [, sequence, width] = both.dims as [number, number, number];
  const images = o.prompts.length * o.perPrompt;
  const per = sequence * width;
  const repeat = (e: Float32Array) => {
    const out = new Float32Array(images * per);
    for (let i = 0; i < images; i++) {
      const p = Math.floor(i / o.perPrompt);
      out.set(e.subarray(p * per, (p + 1) * per), i * per);
    }
    return out;
  };
  const n = o.prompts.length * per;
  const uncond = o.guidance ? repeat(both.data.subarray(n, 2 * n)) : null;
  return { text: repeat(both.data.subarray(0, n)), uncond, images, sequence, width };
}
