#!/usr/bin/env node
/**
 * The long robustness soak: the suite in test/robustness at SCALE times its size (default 10: 200
 * kill -9 trials of compile and of sampling, 2,000 watch saves, ten times the fuzz inputs). About
 * ten times the minute it takes in `npm test`.
 *
 *   npm run soak [-- SCALE]
 */
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const scale = process.argv[2] ?? "10";
if (!/^[1-9]\d*$/.test(scale)) {
  console.error(`soak: SCALE is a positive whole number, got ${JSON.stringify(scale)}`);
  process.exit(2);
}
const vitest = path.join(repo, "node_modules", "vitest", "vitest.mjs");
const r = spawnSync(process.execPath, [vitest, "run", "test/robustness"], { cwd: repo, stdio: "inherit", env: { ...process.env, SDC_SOAK_SCALE: scale } });
process.exit(r.status ?? 1);
