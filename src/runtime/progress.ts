/**
 * A progress bar for long loops (denoising steps) with it/s, on stderr when it is a terminal; when it
 * is not (a log, a pipe, CI), a progress line at most every `lineEveryMs` (5 s) and one at the end if
 * any was written, so a short run stays quiet. `--json` turns both off (stdout stays JSON).
 */
import cliProgress from "cli-progress";

export interface Progress {
  /** `unit` names what is counted (default "steps"). */
  start(total: number, label: string, unit?: string): void;
  tick(n?: number): void;
  stop(): void;
}

/** The stream a bar is drawn on now (its line has no newline yet), if any. */
const drawing = new Set<NodeJS.WritableStream>();

/**
 * Call before writing a line to a stream that may show a bar ("stopping after the current step"):
 * ends the bar's line, so the message starts on a line of its own; the bar goes on below it.
 */
export function breakProgressLine(stream: NodeJS.WritableStream = process.stderr): void {
  if (drawing.has(stream)) stream.write("\n");
}

export function progressBar(enabled: boolean, stream: NodeJS.WritableStream & { isTTY?: boolean } = process.stderr, lineEveryMs = 5000): Progress {
  if (!enabled) return { start() {}, tick() {}, stop() {} };
  if (!stream.isTTY) return progressLines(stream, lineEveryMs);
  let bar: cliProgress.SingleBar | null = null;
  let t0 = 0;
  let done = 0;
  return {
    start(total, label, unit = "steps") {
      t0 = performance.now();
      done = 0;
      bar = new cliProgress.SingleBar(
        { format: `${label} |{bar}| {value}/{total} ${unit} · {rate} it/s · {eta_formatted} left`, stream, hideCursor: true, clearOnComplete: false },
        cliProgress.Presets.shades_classic,
      );
      bar.start(total, 0, { rate: "–" });
      drawing.add(stream);
    },
    tick(n = 1) {
      done += n;
      const s = (performance.now() - t0) / 1000;
      bar?.increment(n, { rate: s > 0 ? (done / s).toFixed(2) : "–" });
    },
    stop() {
      bar?.stop();
      bar = null;
      drawing.delete(stream);
    },
  };
}

/** "txt2img: 7/20 steps · 1.92 it/s · 7 s left", every `everyMs` at most, and at the end when any was written. */
function progressLines(stream: NodeJS.WritableStream, everyMs: number): Progress {
  let t0 = 0;
  let last = 0;
  let done = 0;
  let total = 0;
  let head = "";
  let unit = "";
  let wrote = false;
  const line = (now: number) => {
    const s = (now - t0) / 1000;
    const rate = s > 0 ? done / s : 0;
    const left = rate > 0 && done < total ? ` · ${Math.ceil((total - done) / rate)} s left` : done >= total ? ` · ${s.toFixed(1)} s` : "";
    stream.write(`${head}: ${done}/${total} ${unit} · ${rate > 0 ? rate.toFixed(2) : "–"} it/s${left}\n`);
    last = now;
    wrote = true;
  };
  return {
    start(n, label, u = "steps") {
      t0 = last = performance.now();
      done = 0;
      total = n;
      head = label;
      unit = u;
      wrote = false;
    },
    tick(n = 1) {
      done += n;
      const now = performance.now();
      if (now - last >= everyMs && done < total) line(now);
    },
    stop() {
      if (wrote) line(performance.now());
    },
  };
}
