/**
 * What a person watching a training run sees, in one of three forms:
 *
 *   - on a terminal, a bar as sampling shows one (src/runtime/progress.ts, cli-progress):
 *       train |████░░░░| 120/2000 · loss 0.1234 · lr 1.00e-04 · 3.2 it/s · ETA 9m47s
 *     with the loss smoothed; notes and events are printed on lines of their own above the bar;
 *   - elsewhere (a log file, CI), a plain line every few seconds instead of a bar:
 *       step 120/2000  loss 0.1234  lr 1.00e-04  3.2 it/s  ETA 9m47s
 *     and notes and events as lines;
 *   - with `json`, one JSON object per line and per event (step, validation, checkpoint, note,
 *     done, ...) and nothing else, for programs.
 *
 * Rate and ETA come from the last steps (a window), so they follow a run that speeds up or slows
 * down. The clock can be injected (`now`), so tests need no waiting.
 */
import cliProgress from "cli-progress";
import { describeEvent, type StepInfo, type TrainEvent } from "./events.js";
import { formatDuration, formatLoss, formatLr, formatRate, jsonLine } from "./format.js";

/** Where progress goes: process.stderr by default (process.stdout for `json`), or a test double. */
export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface TrainProgressOptions {
  /** Total optimizer steps of the run. */
  total: number;
  /** Steps already done when this process starts (a resumed run); default 0. */
  startStep?: number;
  /** Default: process.stdout with `json`, else process.stderr. */
  stream?: ProgressStream;
  /** One JSON object per line and event, nothing else. */
  json?: boolean;
  /** Draw a bar (default: whether the stream is a terminal). */
  isTTY?: boolean;
  /** Without a bar: at least this long between two progress lines (default 5000 ms). */
  intervalMs?: number;
  /** Clock in milliseconds (default performance.now). */
  now?: () => number;
  /** Name in front of the bar (default "train"). */
  label?: string;
  /** EMA factor of the shown loss (default 0.9: about the last 10 steps). */
  smoothing?: number;
  /** Steps the rate is measured over (default 20). */
  rateWindow?: number;
}

export interface TrainProgress {
  /** An optimizer step finished. */
  step(info: StepInfo): void;
  /** A line for a person (a warning, a phase); in JSON mode a `note` event. */
  note(text: string): void;
  /** Validation, images, checkpoint, ...: a line, or a JSON object. */
  event(ev: TrainEvent): void;
  /** The run finished: the final line or `done` event (with `extra` fields), then stop. */
  done(extra?: Record<string, unknown>): void;
  /** Stop drawing (idempotent); call it in a `finally`, the bar redraws on a timer until then. */
  stop(): void;
  /** The current smoothed loss, rate (steps/s) and ETA (s), as shown. */
  readonly state: { step: number; lossEma: number; rate: number; eta: number; elapsed: number };
}

export function createTrainProgress(opts: TrainProgressOptions): TrainProgress {
  const json = opts.json ?? false;
  const stream: ProgressStream = opts.stream ?? (json ? process.stdout : process.stderr);
  const tty = !json && (opts.isTTY ?? stream.isTTY === true);
  const now = opts.now ?? (() => performance.now());
  const intervalMs = opts.intervalMs ?? 5000;
  const beta = opts.smoothing ?? 0.9;
  const window = Math.max(2, opts.rateWindow ?? 20);
  const total = opts.total;
  const label = opts.label ?? "train";

  const t0 = now();
  let step = opts.startStep ?? 0;
  let lr = NaN;
  let emaSum = 0;
  let emaCount = 0;
  let lastLoss = NaN;
  let stepsSeen = 0;
  const times: [number, number][] = [[t0, step]];
  let lastLineAt = t0;
  let lineIsCurrent = true;
  let stopped = false;

  const lossEma = () => (emaCount > 0 ? emaSum / (1 - beta ** emaCount) : lastLoss);
  const shownLoss = () => (stepsSeen > 0 ? formatLoss(lossEma()) : "--");
  const rate = () => {
    const [ta, sa] = times[0]!;
    const [tb, sb] = times[times.length - 1]!;
    return tb > ta ? ((sb - sa) * 1000) / (tb - ta) : NaN;
  };
  const eta = () => {
    const r = rate();
    return r > 0 ? Math.max(0, total - step) / r : NaN;
  };
  const write = (text: string) => {
    stream.write(text);
  };

  /** The line printed without a bar. */
  const plainLine = () => {
    const parts = [`step ${step}/${total}`, `loss ${shownLoss()}`];
    if (Number.isFinite(lr)) parts.push(`lr ${formatLr(lr)}`);
    const r = rate();
    if (r > 0) parts.push(formatRate(r), `ETA ${formatDuration(eta())}`);
    return parts.join("  ");
  };

  // --- the bar (cli-progress, as for sampling), on a view of the stream that reports a terminal
  let bar: cliProgress.SingleBar | null = null;
  const payload = () => ({
    loss: shownLoss(),
    lr: Number.isFinite(lr) ? formatLr(lr) : "--",
    rate: formatRate(rate()),
    eta_t: formatDuration(eta()),
  });
  const startBar = () => {
    const columns = stream.columns ?? 80;
    const fixed = `${label} || ${total}/${total} · loss 0.0000 · lr 0.00e+00 · 00.0 it/s · ETA 00m00s`.length;
    const view = {
      isTTY: true,
      get columns() {
        return stream.columns ?? 80; // follows a resized terminal
      },
      write: (s: string) => stream.write(s),
    } as unknown as NodeJS.WritableStream;
    bar = new cliProgress.SingleBar(
      {
        format: `${label} |{bar}| {value}/{total} · loss {loss} · lr {lr} · {rate} · ETA {eta_t}`,
        stream: view,
        barsize: Math.max(10, Math.min(40, columns - fixed - 2)),
        // leave the terminal's modes alone (cursor shown, line wrap on; cli-progress cuts the line
        // to the width itself), so a run killed without stop() leaves a usable terminal
        hideCursor: false,
        linewrap: true,
        clearOnComplete: true,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, step, payload());
  };
  /** Take the bar off its line, leaving the cursor at the start of that (now empty) line. */
  const stopBar = () => {
    bar?.stop();
    bar = null;
  };
  if (tty) startBar();

  const line = (text: string) => {
    if (tty) {
      stopBar();
      write(`${text}\n`);
      if (!stopped) startBar();
    } else write(`${text}\n`);
  };

  const self: TrainProgress = {
    step(info) {
      if (stopped) return;
      const t = now();
      step = info.step;
      lr = info.lr;
      lastLoss = info.loss;
      stepsSeen++;
      if (Number.isFinite(info.loss)) {
        emaSum = beta * emaSum + (1 - beta) * info.loss;
        emaCount++;
      }
      times.push([t, step]);
      if (times.length > window + 1) times.shift();
      if (json) {
        write(
          `${jsonLine({
            event: "step",
            step,
            total,
            epoch: info.epoch,
            loss: info.loss,
            loss_ema: lossEma(),
            lr: info.lr,
            grad_norm: info.gradNorm ?? undefined,
            it_per_s: round(rate(), 4),
            eta_s: round(eta(), 1),
          })}\n`,
        );
      } else if (tty) bar?.update(step, payload());
      else {
        lineIsCurrent = false;
        if (t - lastLineAt >= intervalMs) {
          write(`${plainLine()}\n`);
          lastLineAt = t;
          lineIsCurrent = true;
        }
      }
    },
    note(text) {
      if (json) write(`${jsonLine({ event: "note", message: text })}\n`);
      else for (const l of text.split("\n")) line(l);
    },
    event(ev) {
      if (json) write(`${jsonLine(ev)}\n`);
      else line(describeEvent(ev));
    },
    done(extra = {}) {
      if (stopped) return;
      const ev: TrainEvent = { event: "done", step, elapsed_s: round((now() - t0) / 1000, 3), loss: lossEma(), ...extra };
      if (!json && !tty && !lineIsCurrent) write(`${plainLine()}\n`);
      stopped = true;
      stopBar();
      if (json) write(`${jsonLine(ev)}\n`);
      else write(`${describeEvent(ev)}\n`);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      if (bar) {
        stopBar();
        write(`${plainLine()}\n`); // the bar's last state stays readable above what follows
      }
    },
    get state() {
      return { step, lossEma: lossEma(), rate: rate(), eta: eta(), elapsed: (now() - t0) / 1000 };
    },
  };
  return self;
}

function round(v: number, digits: number): number | undefined {
  if (!Number.isFinite(v)) return undefined;
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}
