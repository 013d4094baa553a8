/**
 * The editor-facing JSON Schema of pipeline files, generated from the zod schema.
 *
 * Committed as `schemas/pipeline.schema.json` and named by each pipeline's yaml-language-server
 * modeline, so editors complete keys and flag errors as the user types. Draft-07, which every
 * YAML/JSON editor plugin reads; input types (defaults make keys optional).
 */
import { z } from "zod";
import { PipelineSchema } from "./schema.js";

export const PIPELINE_SCHEMA_FILE = "schemas/pipeline.schema.json";

export function pipelineJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(PipelineSchema, { target: "draft-7", io: "input" }) as Record<string, unknown>;
  return { ...schema, title: "sdc pipeline" };
}

/** The exact text of the committed file (stable key order, trailing newline). */
export function pipelineJsonSchemaText(): string {
  return `${JSON.stringify(pipelineJsonSchema(), null, 2)}\n`;
}
