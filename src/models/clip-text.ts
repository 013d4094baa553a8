/**
 * transformers' CLIPTextModel as an IR graph: token + position embeddings, pre-LayerNorm encoder
 * layers with causal self-attention, final LayerNorm, pooled output at the end-of-text token
 * (the highest id: `argmax(input_ids)`, as transformers 4.30 does). SD1 uses quick_gelu, SD2
 * (OpenCLIP) gelu. `clipSkip` k > 0 stops after layer n−k and applies the final LayerNorm to
 * that output, as diffusers' pipelines do for `clip_skip`. I/O as diffusers' ONNX export:
 * `input_ids` int32 [B, S] → `last_hidden_state` [B, S, D], `pooler_output` [B, D].
 */
import type { Builder } from "../ir/builder.js";
import { sym, type Dim } from "../ir/dims.js";
import type { Value } from "../ir/graph.js";
import { UserError } from "../util/errors.js";
import type { CLIPTextConfig } from "./arch.js";
import { act } from "./layers.js";

export interface ClipGraphOptions {
  batch?: Dim;
  /** Token count (default max_position_embeddings). */
  sequence?: number;
  clipSkip?: number;
  /** Token ids computed in the graph (a training step's, after caption dropout) instead of the `input_ids` input. */
  ids?: Value;
}

export function buildClipText(b: Builder, c: CLIPTextConfig, o: ClipGraphOptions = {}): { hidden: Value; pooled: Value } {
  const d = c.hidden_size;
  const h = c.num_attention_heads;
  if (d % h !== 0) throw new UserError({ message: `text_encoder.hidden_size ${d} is not divisible by num_attention_heads ${h}`, subject: "text_encoder config" });
  const seq = o.sequence ?? c.max_position_embeddings;
  if (seq > c.max_position_embeddings) throw new UserError({ message: `sequence length ${seq} exceeds text_encoder.max_position_embeddings ${c.max_position_embeddings}`, subject: "text_encoder config" });
  const skip = o.clipSkip ?? 0;
  if (!Number.isInteger(skip) || skip < 0 || skip >= c.num_hidden_layers)
    throw new UserError({ message: `clip_skip ${skip} must be an integer from 0 to ${c.num_hidden_layers - 1}`, subject: "text_encoder.clip_skip" });

  const ids = o.ids ?? b.input("input_ids", "int32", [o.batch ?? sym("batch"), seq]);
  return b.scope("text_model", () => {
    // embeddings: [B, S, D]
    let x = b.scope("embeddings", () => {
      const tok = b.gather(b.param("token_embedding.weight", [c.vocab_size, d]), ids);
      const pos = b.slice(b.param("position_embedding.weight", [c.max_position_embeddings, d]), [0], [0], [seq]);
      return b.add(tok, pos);
    });
    // causal mask: 0 on and below the diagonal, the dtype's lowest value above (as transformers)
    const lowest = b.floatType === "float16" ? -65504 : -3.4028234663852886e38;
    const mask = new Float32Array(seq * seq);
    for (let i = 0; i < seq; i++) for (let j = i + 1; j < seq; j++) mask[i * seq + j] = lowest;
    const causal = b.float(mask, [seq, seq]);
    const layers = c.num_hidden_layers - skip;
    b.scope("encoder", () => {
      for (let i = 0; i < layers; i++) {
        x = b.scope(`layers.${i}`, () => {
          const n1 = b.layerNorm(x, "layer_norm1", d, c.layer_norm_eps);
          const a = b.scope("self_attn", () => {
            const q = b.linear(n1, "q_proj", d, d);
            const k = b.linear(n1, "k_proj", d, d);
            const v = b.linear(n1, "v_proj", d, d);
            return b.linear(b.attention(q, k, v, h, 1 / Math.sqrt(d / h), causal), "out_proj", d, d);
          });
          const r = b.add(x, a);
          const n2 = b.layerNorm(r, "layer_norm2", d, c.layer_norm_eps);
          const m = b.scope("mlp", () => b.linear(act(b, b.linear(n2, "fc1", d, c.intermediate_size), c.hidden_act), "fc2", c.intermediate_size, d));
          return b.add(r, m);
        });
      }
    });
    const hidden = b.layerNorm(x, "final_layer_norm", d, c.layer_norm_eps);
    // pooled: the hidden state at argmax(input_ids) of each row
    const eot = b.unsqueeze(b.op1("ArgMax", [ids], { axis: -1, keepdims: 0 }), [1]); // [B, 1]
    const pooled = b.op1("GatherND", [hidden, eot], { batch_dims: 1 });
    if (!o.ids) {
      b.output("last_hidden_state", hidden);
      b.output("pooler_output", pooled);
    }
    return { hidden, pooled };
  });
}
