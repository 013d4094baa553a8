/**
 * The log kill test's child (run by `node` after test/helpers/transpile.ts): opens a TrainLog at
 * `file` (resuming at `resume` when given), logs steps `from`..`to` and a checkpoint event, then
 * kills itself with SIGKILL: no close, no exit handlers, nothing flushed on the way out.
 */
import { TrainLog } from "../../src/trainer/train-log.js";

const [file, from, to, resume] = process.argv.slice(2);
const log = TrainLog.open(file!, resume === undefined ? {} : { resumeStep: Number(resume) });
for (let s = Number(from); s <= Number(to); s++) {
  log.step({ step: s, loss: 1 / s, lr: 1e-4, epoch: 0, gradNorm: null, seconds: 0.5, samples: 2 });
  if (s % 10 === 0) log.event({ event: "checkpoint", step: s, path: `ckpt/checkpoint-${s}` });
}
process.kill(process.pid, "SIGKILL");
