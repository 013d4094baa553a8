/**
 * What a person sees of a training run, in one import:
 *
 *   - createTrainProgress: a bar on a terminal, a line every few seconds elsewhere, JSON lines
 *     with `--json` (./train-progress.ts);
 *   - TrainLog: the JSONL log of every step and event, kept across a kill and a resume
 *     (./train-log.ts);
 *   - plotLossCurve: the loss-curve PNG, rewritten atomically as training goes (./plot.ts);
 *   - saveValidationGrid: a captioned grid PNG per validation step (./validation-grid.ts).
 *
 * The events they share are in ./events.ts; the bitmap font the pictures use is ./font.ts.
 */
export { describeEvent, type StepInfo, type TrainEvent } from "./events.js";
export { formatDuration, formatLoss, formatLr, formatRate, jsonLine } from "./format.js";
export { createTrainProgress, type ProgressStream, type TrainProgress, type TrainProgressOptions } from "./train-progress.js";
export { TrainLog, lossCurveData, readTrainLog, type LogRecord, type TrainLogOptions } from "./train-log.js";
export { plotLossCurve, renderLossCurve, emaCurve, type LossCurveOptions, type LossPoint, type PlotLayout } from "./plot.js";
export { renderValidationGrid, saveValidationGrid, validationGridText, VALIDATION_TEXT_KEY, type ValidationGridOptions, type ValidationSample } from "./validation-grid.js";
