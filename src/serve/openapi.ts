/**
 * The OpenAPI 3.1 document of `sdc serve` (GET /openapi.json), generated from the zod schemas in
 * api.ts: components are those schemas as JSON Schema 2020-12 (which OpenAPI 3.1 uses as it is),
 * paths name them by reference. The document cannot drift from what the server checks.
 */
import { z } from "zod";
import * as api from "./api.js";

/** The components: every schema of api.ts with an id, and nothing else of the global registry. */
function components(): Record<string, unknown> {
  const ids = new Set<string>();
  for (const v of Object.values(api)) {
    const id = v instanceof z.ZodType ? (z.globalRegistry.get(v) as { id?: string } | undefined)?.id : undefined;
    if (id) ids.add(id);
  }
  const all = z.toJSONSchema(z.globalRegistry, { target: "draft-2020-12", uri: (id) => `#/components/schemas/${id}` }) as { schemas: Record<string, Record<string, unknown>> };
  const out: Record<string, unknown> = {};
  for (const id of [...ids].sort()) {
    const { $schema: _s, $id: _i, ...schema } = all.schemas[id]!;
    out[id] = schema;
  }
  return out;
}

const ref = (id: string) => ({ $ref: `#/components/schemas/${id}` });
const json = (id: string | Record<string, unknown>, description: string) => ({ description, content: { "application/json": { schema: typeof id === "string" ? ref(id) : id } } });
const problems = (description: string) => json("ProblemsResponse", description);
const idParam = [{ name: "id", in: "path", required: true, schema: { type: "string" } }];

export function openApiDocument(version: string): Record<string, unknown> {
  return {
    openapi: "3.1.0",
    info: { title: "sdc serve", version, description: "Stable Diffusion pipelines as jobs: submit, follow, cancel, fetch results." },
    security: [{ bearer: [] }, { query: [] }],
    paths: {
      "/api/pipelines": { get: { summary: "The served pipelines", responses: { 200: json({ type: "array", items: ref("PipelineInfo") }, "Pipelines") } } },
      "/api/schema": { get: { summary: "The pipeline file JSON Schema", responses: { 200: json({ type: "object" }, "JSON Schema (draft-07) of pipeline files") } } },
      "/api/validate": {
        post: {
          summary: "Check a pipeline's text as `sdc validate` does",
          requestBody: { required: true, content: { "application/json": { schema: ref("ValidateRequest") } } },
          responses: { 200: json("ValidateResponse", "The located problems (none when ok)"), 400: problems("The request body is malformed") },
        },
      },
      "/api/jobs": {
        get: { summary: "All jobs, newest first", responses: { 200: json({ type: "array", items: ref("Job") }, "Jobs") } },
        post: {
          summary: "Submit a job (a sweep submits one per combination)",
          requestBody: { required: true, content: { "application/json": { schema: ref("SubmitRequest") } } },
          responses: { 201: json("SubmitResponse", "The jobs queued"), 400: problems("The pipeline, overrides or sweep do not validate") },
        },
      },
      "/api/jobs/{id}": { get: { summary: "One job", parameters: idParam, responses: { 200: json("Job", "The job"), 404: problems("No such job") } } },
      "/api/jobs/{id}/cancel": {
        post: { summary: "Cancel a job (a no-op for a job that is over)", parameters: idParam, responses: { 202: json("Job", "Cancel requested"), 404: problems("No such job") } },
      },
      "/api/jobs/{id}/events": {
        get: {
          summary: "Server-sent events of a job: what happened so far, then live, ending with `done`",
          parameters: idParam,
          responses: { 200: { description: "`event: <type>`, `id: <seq>`, `data: <JobEvent JSON>`", content: { "text/event-stream": { schema: ref("JobEvent") } } }, 404: problems("No such job") },
        },
      },
      "/results/{id}/{file}": {
        get: {
          summary: "A result file (PNG with its `parameters` text chunk), preview or training output",
          parameters: [...idParam, { name: "file", in: "path", required: true, schema: { type: "string" } }],
          responses: { 200: { description: "The file", content: { "image/png": {} } }, 404: problems("No such file") },
        },
      },
    },
    components: {
      schemas: components(),
      securitySchemes: {
        bearer: { type: "http", scheme: "bearer", description: "The server's --token (only when it has one)" },
        query: { type: "apiKey", in: "query", name: "token", description: "The same token as ?token= (for EventSource and <img>)" },
      },
    },
  };
}
