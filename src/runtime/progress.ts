/**
 * A progress bar for long loops (denoising steps) with it/s, on stderr when it is a terminal;
 * silent otherwise, so logs and `--json` output stay clean.
 */
import cliProgress from "cli-progress";

export interface Progress {
  start(total: number, label: string): void;
  tick(n?: number): void;
  stop(): void;
}

export function progressBar(enabled: boolean): Progress {
  if (!enabled || !process.stderr.isTTY) return { start() {}, tick() {}, stop() {} };
  let bar: cliProgress.SingleBar | null = null;
  let t0 = 0;
  let done = 0;
  return {
    start(total, label) {
      t0 = performance.now();
      done = 0;
      bar = new cliProgress.SingleBar(
        { format: `${label} |{bar}| {value}/{total} steps · {rate} it/s · {eta_formatted} left`, stream: process.stderr, hideCursor: true, clearOnComplete: false },
        cliProgress.Presets.shades_classic,
      );
      bar.start(total, 0, { rate: "–" });
    },
    tick(n = 1) {
      done += n;
      const s = (performance.now() - t0) / 1000;
      bar?.increment(n, { rate: s > 0 ? (done / s).toFixed(2) : "–" });
    },
    stop() {
      bar?.stop();
      bar = null;
    },
  };
}
