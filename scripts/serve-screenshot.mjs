#!/usr/bin/env node
// The README's picture of the `sdc serve` page (docs/serve.png): starts `sdc serve` (the built CLI:
// run `npm run build` first) on the project's pipelines, submits a sweep of prompts from the form,
// waits for the images, and has headless Chromium photograph the page.
//
//   node scripts/serve-screenshot.mjs [out.png]      (Chromium: $SDC_CHROMIUM or /usr/bin/chromium)
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const out = path.resolve(process.argv[2] ?? path.join(repo, "docs", "serve.png"));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sdc-shot-"));
const server = spawn(process.execPath, [path.join(repo, "bin", "sdc.js"), "serve", "--port", "0", "--json", "--results", path.join(tmp, "results"), "--cache", path.join(tmp, "compiled")], {
  cwd: repo,
  stdio: ["ignore", "pipe", "inherit"],
});
try {
  const url = await new Promise((resolve, reject) => {
    let buf = "";
    server.stdout.on("data", (d) => {
      buf += d;
      const line = buf.split("\n").find((l) => l.startsWith("{"));
      if (line) resolve(JSON.parse(line).url);
    });
    server.on("exit", (code) => reject(new Error(`sdc serve exited (${code})`)));
  });
  const browser = await chromium.launch({
    executablePath: process.env.SDC_CHROMIUM ?? "/usr/bin/chromium",
    args: process.getuid?.() === 0 ? ["--no-sandbox"] : [],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 1090 } });
    await page.goto(url);
    await page.locator("#f-prompt").waitFor();
    const prompts = ["a red heart", "smiling face", "a yellow star", "a blue car"];
    await page.locator("details.sweep summary").click();
    await page.locator("textarea[name=sweep-prompts]").fill(prompts.join("\n"));
    await page.locator("#f-prompt").fill(prompts[0]);
    await page.getByRole("button", { name: "Generate" }).click();
    await page.locator("[data-testid=result]").nth(prompts.length - 1).waitFor({ timeout: 300_000 });
    await page.locator("details.sweep summary").click(); // closed again: the form as a person sees it first
    await page.waitForTimeout(500);
    await page.screenshot({ path: out });
    console.log(`wrote ${path.relative(process.cwd(), out)} (${(fs.statSync(out).size / 1024).toFixed(0)} KB)`);
  } finally {
    await browser.close();
  }
} finally {
  server.kill("SIGINT");
  await new Promise((r) => (server.exitCode === null ? server.once("exit", r) : r()));
  fs.rmSync(tmp, { recursive: true, force: true });
}
