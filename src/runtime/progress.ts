/**
 * A progress bar for long loops (denoising steps) with it/s, on stderr when it is a terminal;
 * silent otherwise, so logs and `--json` output stay clean.
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

export function progressBar(enabled: boolean, stream: NodeJS.WritableStream & { isTTY?: boolean } = process.stderr): Progress {
  if (!enabled || !stream.isTTY) return { start() {}, tick() {}, stop() {} };
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
