/**
 * The training log: a JSONL file with one object per optimizer step
 *
 *   {"event":"step","step":120,"epoch":0.24,"loss":0.1234,"lr":0.0001,"grad_norm":0.87,"time":1717171717.123,"samples_per_s":12.5}
 *
 * and one per event (validation, images, checkpoint, nonfinite_loss, resume, done, note; see
 * ./events.ts), each written to the file as it happens, so a run that is killed keeps everything
 * it logged. `time` is wall-clock Unix time in seconds. Non-finite numbers are written as the
 * strings "NaN", "Infinity", "-Infinity".
 *
 * A resumed run reopens the log with the step it resumes from: records of later steps (logged
 * after that checkpoint by the run that died) are dropped, so the log reads as one run, and a
 * `resume` event marks the seam.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { writeFileAtomic } from "../util/fs.js";
import type { StepInfo, TrainEvent } from "./events.js";
import { jsonLine, jsonNumber } from "./format.js";

export interface TrainLogOptions {
  /**
   * Continue a run from this step: keep the records with step <= resumeStep (and those without a
   * step logged before the first later step), drop the rest, append. Without it the log starts empty (a new run replaces an old log).
   */
  resumeStep?: number;
  /** Wall clock in milliseconds (default Date.now). */
  clock?: () => number;
}

/** A record of the log, as read back. */
export type LogRecord = { event: string; step?: number; [key: string]: unknown };

export class TrainLog {
  private fd: number | null;
  private lastStepAt: number;

  private constructor(
    readonly file: string,
    private readonly clock: () => number,
  ) {
    this.fd = fs.openSync(file, "a");
    this.lastStepAt = clock();
  }

  /** Open (create, or truncate to `resumeStep` and append to) the log at `file`. */
  static open(file: string, opts: TrainLogOptions = {}): TrainLog {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const clock = opts.clock ?? Date.now;
    if (opts.resumeStep === undefined) {
      writeFileAtomic(file, "");
      return new TrainLog(file, clock);
    }
    const resumeStep = opts.resumeStep;
    if (fs.existsSync(file)) {
      const text = fs.readFileSync(file, "utf8");
      const kept: string[] = [];
      let dropped = false;
      for (const l of text.split("\n")) {
        if (l.trim() === "") continue;
        const rec = parseLine(l);
        // not part of the resumed run: a line cut short by a crash, a later step, and anything
        // without a step (a note) logged after the first later step
        const later = rec !== null && typeof rec.step === "number" ? rec.step > resumeStep : dropped;
        if (rec === null || later) dropped = true;
        else kept.push(l);
      }
      if (dropped || !text.endsWith("\n")) writeFileAtomic(file, kept.map((l) => `${l}\n`).join(""));
    }
    const log = new TrainLog(file, clock);
    log.event({ event: "resume", step: resumeStep });
    return log;
  }

  /** Log an optimizer step. samples/s uses the step's `seconds`, else the time since the previous step (or opening). */
  step(info: StepInfo): void {
    const t = this.clock();
    const dt = info.seconds ?? (t - this.lastStepAt) / 1000;
    this.lastStepAt = t;
    this.append({
      event: "step",
      step: info.step,
      epoch: info.epoch,
      loss: info.loss,
      lr: info.lr,
      grad_norm: info.gradNorm ?? undefined,
      time: t / 1000,
      samples_per_s: info.samples !== undefined && dt > 0 ? Math.round((info.samples / dt) * 1000) / 1000 : undefined,
    });
  }

  /** Log an event (with the wall-clock time). */
  event(ev: TrainEvent): void {
    this.append({ ...ev, time: this.clock() / 1000 });
  }

  /** Push what was written to the disk itself (fsync), e.g. next to a checkpoint. */
  sync(): void {
    if (this.fd !== null) fs.fsyncSync(this.fd);
  }

  close(): void {
    if (this.fd === null) return;
    fs.fsyncSync(this.fd);
    fs.closeSync(this.fd);
    this.fd = null;
  }

  private append(rec: object): void {
    if (this.fd === null) throw new Error(`training log ${this.file} is closed`);
    // one write per record, straight to the OS: a killed process loses nothing written before
    fs.writeSync(this.fd, `${jsonLine(rec)}\n`);
  }
}

function parseLine(line: string): LogRecord | null {
  try {
    const v: unknown = JSON.parse(line);
    return v !== null && typeof v === "object" && !Array.isArray(v) && typeof (v as LogRecord).event === "string" ? (v as LogRecord) : null;
  } catch {
    return null;
  }
}

/** The records of a log file, in order; lines that are not records (a cut-off last line) are skipped. */
export function readTrainLog(file: string): LogRecord[] {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, "utf8")
    .split("\n")
    .map(parseLine)
    .filter((r): r is LogRecord => r !== null);
}

/** The loss-curve data of a log: step losses and validation losses (e.g. to redraw after a resume). */
export function lossCurveData(records: readonly LogRecord[]): { train: { step: number; loss: number }[]; validation: { step: number; loss: number }[] } {
  const train: { step: number; loss: number }[] = [];
  const validation: { step: number; loss: number }[] = [];
  for (const r of records) {
    const loss = jsonNumber(r.loss);
    if (typeof r.step !== "number" || loss === undefined) continue;
    if (r.event === "step") train.push({ step: r.step, loss });
    else if (r.event === "validation") validation.push({ step: r.step, loss });
  }
  return { train, validation };
}
