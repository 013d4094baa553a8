/**
 * `sdc run` for sampling pipelines: txt2img and img2img from a compiled plan.
 * (Being written: the signature is fixed, the body lands next.)
 */
import type { LoadedPipeline } from "../config/load.js";

export interface RunOptions {
  /** Recompile even when the compiled folder is up to date. */
  recompile?: boolean;
  /** Compiled folder (default compiled/<name> under cwd). */
  compiledDir?: string;
  cwd?: string;
  /** Aborting stops the run between denoising steps; the result then has `cancelled: true`. */
  signal?: AbortSignal;
  /** Lines for a person (EP notice, truncation warnings, files written). */
  log?: (line: string) => void;
  /** Show a progress bar on stderr when it is a TTY (default true). */
  progress?: boolean;
  /** Output file names get this counter (watch --run numbers its runs). */
  runIndex?: number;
}

export interface RunResult {
  /** Files written (images, grid). */
  outputs: string[];
  summary: string;
  cancelled: boolean;
  /** Execution provider that ran the graphs. */
  ep: "cuda" | "cpu";
  seconds: number;
  /** it/s of the denoising loop (U-Net evaluations per second). */
  itPerSec: number;
}

export async function run(p: LoadedPipeline, opts: RunOptions = {}): Promise<RunResult> {
  void p;
  void opts;
  throw new Error("run is being written");
}
