// The page's client of the sdc serve API (src/serve/api.ts is the contract). A token given in the
// page's own address (`/?token=T`) goes with every request: as a Bearer header on fetches, and as
// `?token=T` on the addresses the browser loads by itself (EventSource, <img>, download links).

// (no location in Node, where the tests import the pure parts of the page)
const token = globalThis.location ? (new URLSearchParams(globalThis.location.search).get("token") ?? "") : "";

/** An address the browser fetches by itself, with the token when there is one. */
export function withToken(url) {
  if (!token) return url;
  return `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
}

/** An error the API answered with: its located problems (`{ message, hint?, line?, col?, text }`). */
export class ApiError extends Error {
  constructor(status, problems) {
    super(problems.map((p) => p.text ?? p.message).join("\n") || `HTTP ${status}`);
    this.status = status;
    this.problems = problems;
  }
}

async function call(method, url, body) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  let res;
  try {
    res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, [{ message: `the server did not answer (${e.message})`, hint: "is sdc serve still running?" }]);
  }
  const text = await res.text();
  let data;
  try {
    data = text === "" ? undefined : JSON.parse(text);
  } catch {
    data = undefined;
  }
  if (!res.ok) {
    const problems = data && Array.isArray(data.problems) ? data.problems : [{ message: `HTTP ${res.status}: ${text.slice(0, 200)}` }];
    throw new ApiError(res.status, problems);
  }
  return data;
}

export const api = {
  pipelines: () => call("GET", "api/pipelines"),
  schema: () => call("GET", "api/schema"),
  validate: (yaml, name) => call("POST", "api/validate", { yaml, name }),
  submit: (request) => call("POST", "api/jobs", request),
  jobs: () => call("GET", "api/jobs"),
  job: (id) => call("GET", `api/jobs/${encodeURIComponent(id)}`),
  cancel: (id) => call("POST", `api/jobs/${encodeURIComponent(id)}/cancel`),
  /** A checkpoint folder's files: the server lists a folder under /results as the URLs of its files. */
  listing: (url) => call("GET", url.replace(/^\//, "")),
};

const EVENT_TYPES = ["state", "progress", "preview", "loss", "grid", "checkpoint", "result", "error", "done"];

/**
 * Follow a job's events (the server replays its history first). `onEvent(event)` gets each parsed
 * event, `type` included; the stream is closed after `done`. Returns a function that stops following.
 */
export function followJob(id, onEvent) {
  const source = new EventSource(withToken(`api/jobs/${encodeURIComponent(id)}/events`));
  let closed = false;
  const close = () => {
    closed = true;
    source.close();
  };
  for (const type of EVENT_TYPES) {
    source.addEventListener(type, (e) => {
      if (closed) return;
      let data;
      try {
        data = JSON.parse(e.data);
      } catch {
        return;
      }
      onEvent({ ...data, type });
      if (type === "done") close();
    });
  }
  return close;
}

/**
 * A job as the page keeps it, after one more event: the same shape as the API's Job, built up from
 * the stream (replayed events that the job already holds are not added twice).
 */
export function applyEvent(job, e) {
  const j = { ...job };
  const addUnique = (key, item, same) => {
    const list = j[key] ?? [];
    j[key] = list.some((x) => same(x, item)) ? list : [...list, item];
  };
  switch (e.type) {
    case "state":
    case "done":
      j.state = e.state;
      break;
    case "progress":
      j.progress = { step: e.step, total: e.total, unit: e.unit };
      break;
    case "preview":
      addUnique("previews", { step: e.step, url: e.url }, (a, b) => a.url === b.url);
      break;
    case "loss":
      addUnique("losses", { step: e.step, loss: e.loss }, (a, b) => a.step === b.step);
      break;
    case "grid":
      addUnique("grids", e.url, (a, b) => a === b);
      break;
    case "checkpoint":
      addUnique("checkpoints", e.url, (a, b) => a === b);
      break;
    case "result":
      addUnique("results", { url: e.url, file: e.file, parameters: e.parameters }, (a, b) => a.url === b.url);
      break;
    case "error":
      j.error = { message: e.message, hint: e.hint };
      break;
  }
  return j;
}
