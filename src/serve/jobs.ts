/**
 * Jobs: what is queued (a JobSpec), what happens to it (its event log), and the Job the API shows,
 * which is nothing but the spec folded with its events. The in-process store and the Redis store
 * keep exactly these two things, so both give the same Job for the same history.
 */
import type { Job, JobEvent, JobKind, JobState, Settings } from "./api.js";

/** What a worker needs to run a job, wherever it runs: the pipeline's text and where it lives. */
export interface JobSpec {
  id: string;
  /** The pipeline's name (as the API lists it). */
  pipeline: string;
  kind: JobKind;
  /** The pipeline file, relative to the project folder (the server's and each worker's working directory). */
  file: string;
  /** The text of that file as submitted (validated by the server; the worker loads exactly this). */
  yaml: string;
  /** `key.path=value` overrides (the CLI's --set), the sweep's values included. */
  overrides: string[];
  /** The settings after overrides, as the server's validation saw them. */
  settings: Settings;
  createdAt: string;
  sweep?: { index: number; count: number };
}

/** One event as stored: its place in the job's log, when, and who emitted it. */
export interface StoredEvent {
  /** 1-based position in the job's log (SSE `id`). */
  seq: number;
  at: string;
  /** The worker that emitted it (host:pid, or "in-process"); absent for the server's own. */
  worker?: string;
  ev: JobEvent;
}

export const FINAL_STATES: readonly JobState[] = ["done", "failed", "cancelled"];

export function isFinal(state: JobState): boolean {
  return FINAL_STATES.includes(state);
}

/**
 * The Job as the API shows it. A `running` state after another (a stalled worker's job taken over
 * by another worker) starts the attempt afresh: its progress, previews and losses are the new ones.
 * `worker` is the worker of the latest attempt while the job runs, and the one that ended it after.
 */
export function foldJob(spec: JobSpec, events: StoredEvent[]): Job {
  const job: Job = { id: spec.id, pipeline: spec.pipeline, kind: spec.kind, state: "queued", createdAt: spec.createdAt, settings: spec.settings, results: [] };
  if (spec.sweep) job.sweep = spec.sweep;
  for (const { ev, at, worker } of events) {
    // over is over: what an attempt that lost the job (its lock lapsed, another finished it) still
    // reports afterwards changes nothing
    if (isFinal(job.state) && ev.type !== "done") continue;
    switch (ev.type) {
      case "state":
        job.state = ev.state;
        if (isFinal(ev.state) && worker) job.worker = worker; // who ended it
        if (ev.state === "running") {
          job.startedAt = at;
          if (worker) job.worker = worker;
          delete job.progress;
          delete job.previews;
          delete job.losses;
        }
        break;
      case "progress":
        job.progress = { step: ev.step, total: ev.total, unit: ev.unit };
        break;
      case "preview":
        (job.previews ??= []).push({ step: ev.step, url: ev.url });
        break;
      case "loss":
        (job.losses ??= []).push({ step: ev.step, loss: ev.loss });
        break;
      case "grid":
        (job.grids ??= []).push(ev.url);
        break;
      case "checkpoint":
        (job.checkpoints ??= []).push(ev.url);
        break;
      case "result":
        job.results.push({ url: ev.url, file: ev.file, parameters: ev.parameters });
        break;
      case "error":
        job.error = { message: ev.message, ...(ev.hint !== undefined ? { hint: ev.hint } : {}) };
        break;
      case "done":
        if (!isFinal(job.state)) job.state = ev.state;
        job.finishedAt ??= at;
        break;
    }
  }
  return job;
}
