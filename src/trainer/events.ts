/**
 * What a training run reports: one record per optimizer step and an event for everything else a
 * person (or a program reading `--json` output or the JSONL log) wants to know about. The same
 * objects go to the progress display (./train-progress.ts) and the log (./train-log.ts).
 */
import { formatDuration, formatLoss, formatLr } from "./format.js";

/** One optimizer step, as the trainer knows it after the update (its StepReport is one). */
export interface StepInfo {
  /** Optimizer steps done, counting this one (1 after the first update). */
  step: number;
  /** The step's loss (averaged over gradient accumulation); may be NaN or infinite. */
  loss: number;
  /** The learning rate this step used. */
  lr: number;
  /** Epoch (fractional or whole, as the trainer counts it). */
  epoch?: number;
  /** Global gradient norm before clipping (null: not computed). */
  gradNorm?: number | null;
  /** Wall time of this step in seconds (default: measured between calls). */
  seconds?: number;
  /** Training samples in this step (batch size x accumulation), for samples/s. */
  samples?: number;
}

/** Events other than steps. Every kind may carry more fields; they are logged as they are. */
export type TrainEvent =
  /** Validation ran: its loss, and the images or grid it wrote. */
  | { event: "validation"; step: number; loss?: number; grid?: string; images?: string[]; [extra: string]: unknown }
  /** Sample images written (outside validation). */
  | { event: "images"; step: number; files: string[]; [extra: string]: unknown }
  | { event: "checkpoint"; step: number; path: string; [extra: string]: unknown }
  /** A step's loss was NaN or infinite; `action` says what the trainer did (e.g. "skipped the update"). */
  | { event: "nonfinite_loss"; step: number; loss: number; action?: string; [extra: string]: unknown }
  /** The run continues from a checkpoint at this step. */
  | { event: "resume"; step: number; [extra: string]: unknown }
  | { event: "done"; step: number; elapsed_s?: number; loss?: number; [extra: string]: unknown }
  /** Free text for a person (warnings, phases). */
  | { event: "note"; message: string; step?: number; [extra: string]: unknown };

/** One line a person reads for an event. */
export function describeEvent(ev: TrainEvent): string {
  const at = typeof ev.step === "number" ? `step ${ev.step}  ` : "";
  switch (ev.event) {
    case "validation": {
      const parts = [ev.loss !== undefined ? `validation loss ${formatLoss(ev.loss)}` : "validation"];
      if (ev.grid) parts.push(`grid ${ev.grid}`);
      else if (ev.images?.length) parts.push(`${ev.images.length} image${ev.images.length === 1 ? "" : "s"} (${ev.images[0]}${ev.images.length > 1 ? ", ..." : ""})`);
      return at + parts.join(", ");
    }
    case "images":
      return `${at}wrote ${ev.files.length} image${ev.files.length === 1 ? "" : "s"}${ev.files.length > 0 ? `: ${ev.files.join(", ")}` : ""}`;
    case "checkpoint":
      return `${at}checkpoint saved: ${ev.path}`;
    case "nonfinite_loss":
      return `${at}non-finite loss (${formatLoss(ev.loss)})${ev.action ? `, ${ev.action}` : ""}`;
    case "resume":
      return `resuming at step ${ev.step}`;
    case "done": {
      const parts = [`done: ${ev.step} steps`];
      if (ev.elapsed_s !== undefined) parts[0] += ` in ${formatDuration(ev.elapsed_s)}`;
      if (ev.loss !== undefined) parts.push(`loss ${formatLoss(ev.loss)}`);
      return parts.join(", ");
    }
    case "note":
      return ev.message;
    default: {
      const other = ev as { event: string; [k: string]: unknown };
      const fields = Object.entries(other)
        .filter(([k]) => k !== "event" && k !== "step")
        .map(([k, v]) => `${k}=${typeof v === "number" ? (k === "lr" ? formatLr(v) : String(v)) : JSON.stringify(v)}`);
      return `${at}${other.event}${fields.length ? ` ${fields.join(" ")}` : ""}`;
    }
  }
}
