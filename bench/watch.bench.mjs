// Watch mode: save-to-plan-ready latency for a scheduler edit (plan only) and for a U-Net
// architecture edit (the unet graph alone), against a full compile (into an empty folder) of the
// same pipeline as the baseline. The pipeline is pipelines/txt2img.yaml copied into a temp folder
// with its model path made absolute, on models/tiny-sd (the default), the tiny-sd2 fixture, and an
// SD 1.5-size folder of sparse zero weights (real graph sizes; the compiler links weights, so
// only its hashing of the weights file reads them).
// Latency runs from just before the file is written to the watcher's "compiled" event, so it
// includes chokidar's notification and the debounce (printed); a real watcher, real files.
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { compile, DEFAULT_DEBOUNCE_MS, loadPipeline, startWatch } from "../dist/index.js";
import { makeSd15Sparse } from "./sd15-sparse.mjs";
import { machine, table, tempDir, timeIt } from "./util.mjs";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const REPEAT = 9;

const MODELS = [
  {
    name: "tiny-sd (default)",
    from: () => path.join(repo, "models", "tiny-sd"),
    // 8 heads → 4 heads (channels divide either way; same weights)
    unet: ["4", "8"],
  },
  {
    name: "tiny-sd2 (fixture)",
    from: () => path.join(repo, "test", "fixtures", "models", "tiny-sd2"),
    unet: ["[4, 4, 4]", "[2, 4, 4]"],
  },
  {
    name: "SD 1.5 size (sparse)",
    from: (dir) => {
      const m = path.join(dir, "sd15");
      makeSd15Sparse(repo, m);
      return m;
    },
    unet: ["4", "8"],
    fullRepeat: 2,
  },
];

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (s) => `${(s * 1000).toFixed(0)} ms`;

async function benchModel(m) {
  const dir = tempDir("sdc-bench-watch-");
  const from = m.from(dir);
  const fromLine = `from: ${JSON.stringify(from)}\n`;
  const base = fs.readFileSync(path.join(repo, "pipelines", "txt2img.yaml"), "utf8").replace("from: ../models/tiny-sd\n", fromLine);
  if (!base.includes(fromLine)) throw new Error("pipelines/txt2img.yaml no longer names ../models/tiny-sd: update the benchmark");
  const file = path.join(dir, "txt2img.yaml");
  fs.writeFileSync(file, base);
  const outDir = path.join(dir, "compiled");

  // baseline: what every save would cost without incremental builds: load + a first compile
  // (empty compiled folder: all graphs, and the model hash read from the U-Net weights file)
  const full = await timeIt(
    async () => {
      fs.rmSync(outDir, { recursive: true, force: true });
      const p = await loadPipeline(file, { cwd: dir });
      await compile(p, { outDir, cwd: dir });
    },
    { repeat: m.fullRepeat ?? 3, warmup: 1 },
  );

  const events = [];
  let wake = () => {};
  const session = await startWatch(file, { cwd: dir, outDir, onEvent: (e) => (events.push(e), wake()) });
  const nextCompile = async (from) => {
    for (;;) {
      const e = events.slice(from).find((x) => x.type === "compiled" || x.type === "error");
      if (e?.type === "error") throw new Error(`the edit failed: ${e.problems.map((p) => p.message).join("; ")}`);
      if (e) return e;
      await new Promise((r) => (wake = r));
    }
  };
  /** Save `text`, wait for the plan: [latency s, compile s, rebuilt graphs]. */
  const save = async (text) => {
    const mark = events.length;
    const t0 = performance.now();
    fs.writeFileSync(file, text);
    const e = await nextCompile(mark);
    return [(performance.now() - t0) / 1000, e.result.seconds, e.result.rebuilt.join(", ") || "none (plan only)"];
  };

  const rows = [];
  const measure = async (edit, texts) => {
    const lat = [];
    const comp = [];
    const rebuilt = new Set();
    await save(texts[1]); // warm-up (JIT, file cache), not counted
    for (let i = 0; i < REPEAT; i++) {
      const [l, c, r] = await save(texts[i % texts.length]);
      lat.push(l);
      comp.push(c);
      rebuilt.add(r);
    }
    rows.push({
      model: m.name,
      edit,
      "save→plan ready": ms(median(lat)),
      min: ms(Math.min(...lat)),
      "of which compile": ms(median(comp)),
      "graphs rebuilt": [...rebuilt].join(" | "),
      "full compile": ms(full.median),
      "speed-up": `${(full.median / median(lat)).toFixed(1)}×`,
    });
    return [...rebuilt];
  };
  const schedRebuilt = await measure("scheduler (pndm ↔ ddim)", [base.replace("type: pndm", "type: ddim"), base]);
  const unetRebuilt = await measure("U-Net attention_head_dim", m.unet.map((v) => base.replace(fromLine, `${fromLine}  unet:\n    attention_head_dim: ${v}\n`)));
  await session.close();
  fs.rmSync(dir, { recursive: true, force: true });
  if (schedRebuilt.length !== 1 || schedRebuilt[0] !== "none (plan only)") throw new Error(`a scheduler edit rebuilt graphs: ${schedRebuilt}`);
  if (unetRebuilt.length !== 1 || unetRebuilt[0] !== "unet") throw new Error(`a U-Net edit rebuilt: ${unetRebuilt}`);
  return rows;
}

console.log(`watch: save → plan ready (${machine()})`);
console.log(`medians of ${REPEAT} saves per edit (alternating values, after a warm-up save), debounce ${DEFAULT_DEBOUNCE_MS} ms included; full compile = load + compile into an empty folder, no watcher`);
const rows = [];
for (const m of MODELS) rows.push(...(await benchModel(m)));
table(rows);
