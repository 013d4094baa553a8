/**
 * The kill test's child (run by `node` after test/helpers/transpile.ts): saves checkpoints of ~`mib`
 * MiB under `root` in a loop, starting by re-saving the newest step there (or step 1), and prints
 * `ready` once, then `saved <step> <ms>` after each save returns. Stops after `max` saves.
 */
import { latestCheckpoint, saveCheckpoint } from "../../src/trainer/checkpoint.js";
import { killContent } from "./checkpoint-kill-content.js";

const [root, mib, max] = process.argv.slice(2);
const n = Math.floor((Number(mib) * 2 ** 20) / 16 / 4) * 4; // four float32 tensors
const buffers = [0, 1, 2, 3].map(() => new Float32Array(n));
let step = latestCheckpoint(root!)?.step ?? 1;
process.stdout.write("ready\n");
for (let i = 0; i < Number(max); i++, step++) {
  const t0 = performance.now();
  saveCheckpoint(root!, step, killContent(step, n, buffers), { keep: 2 });
  process.stdout.write(`saved ${step} ${Math.round(performance.now() - t0)}\n`);
}
