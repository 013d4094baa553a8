/**
 * The web page of `sdc serve`, driven in headless Chromium (Debian's `chromium` through
 * playwright-core) against the real server running the default pipeline (models/emoji,
 * pipelines/txt2img.yaml): a job submitted from the form shows its progress and previews and ends
 * in the gallery with the PNG's parameters; "reuse these settings" fills the form back; an unknown
 * key typed into the YAML editor is marked at its line and column with the CLI's message; a LoRA
 * training job (examples/train-lora-emoji.yaml, cut to 2 steps in the editor) shows its loss curve,
 * validation grids and checkpoint files.
 *
 * Chromium is found at $SDC_CHROMIUM or /usr/bin/chromium. Missing, these tests fail in CI
 * (CI set) and are skipped with a printed reason elsewhere.
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readPngText } from "../../src/image/image.js";
import { REPO, tempDir } from "../helpers/repo.js";
import { transpileForNode } from "../helpers/transpile.js";

const CHROMIUM = process.env.SDC_CHROMIUM ?? "/usr/bin/chromium";
const haveChromium = fs.existsSync(CHROMIUM);
const TOKEN = "browser-test-token";

// The few DOM shapes the page callbacks below touch (this project compiles without the DOM library).
type Seen = { steps: string[]; previews: string[] };
type ImageElement = { complete: boolean; naturalWidth: number };
type TextArea = { selectionStart: number; setSelectionRange(start: number, end: number): void };

if (!haveChromium && !process.env.CI)
  console.warn(`skipping the browser tests: no Chromium at ${CHROMIUM} (apt-get install chromium, or set SDC_CHROMIUM)`);

/**
 * `sdc serve` as a user starts it, in its own process (a job runs onnxruntime synchronously, which
 * would stall the browser driver sharing its event loop): bin/sdc.js over the current sources,
 * type-stripped (a full tsc build takes too long for a test), with the page's files beside them.
 */
async function startSdcServe(args: string[]): Promise<{ url: string; proc: ChildProcess; stderr: () => string }> {
  const out = tempDir("sdc-browser-bin-");
  const main = transpileForNode(path.join(REPO, "src", "cli", "main.ts"), out);
  fs.symlinkSync(path.join(REPO, "node_modules"), path.join(out, "node_modules"), "junction");
  const web = path.join(REPO, "src", "serve", "web");
  for (const f of fs.readdirSync(web).filter((f) => !f.endsWith(".ts"))) fs.copyFileSync(path.join(web, f), path.join(out, "src", "serve", "web", f));
  const bin = path.join(out, "bin", "sdc.js");
  fs.mkdirSync(path.dirname(bin));
  fs.writeFileSync(bin, fs.readFileSync(path.join(REPO, "bin", "sdc.js"), "utf8").replace("../dist/cli/main.js", path.relative(path.dirname(bin), main).split(path.sep).join("/")));
  const proc = spawn(process.execPath, [bin, "serve", ...args, "--json"], { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  proc.stderr!.on("data", (d) => (stderr += d));
  const url = await new Promise<string>((resolve, reject) => {
    let buf = "";
    proc.stdout!.on("data", (d) => {
      buf += d;
      const line = buf.split("\n").find((l) => l.startsWith("{"));
      if (line) resolve((JSON.parse(line) as { url: string }).url);
    });
    proc.on("exit", (code) => reject(new Error(`sdc serve exited (${code}) before it listened: ${stderr}`)));
  });
  return { url, proc, stderr: () => stderr };
}

describe.runIf(!haveChromium && process.env.CI)("browser tests in CI", () => {
  it("has Chromium", () => {
    throw new Error(`no Chromium at ${CHROMIUM}: .ci/run installs Debian's chromium (or set SDC_CHROMIUM)`);
  });
});

describe.runIf(haveChromium)("the sdc serve page in Chromium", () => {
  let server: { url: string; proc: ChildProcess; stderr: () => string };
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    const dir = tempDir("sdc-browser-");
    server = await startSdcServe([
      "pipelines/txt2img.yaml",
      "examples/train-lora-emoji.yaml",
      "--port", "0",
      "--token", TOKEN,
      "--results", path.join(dir, "results"),
      "--cache", path.join(dir, "compiled"),
      "--preview-every", "5",
    ]);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: process.getuid?.() === 0 ? ["--no-sandbox"] : [],
    });
    page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    page.on("pageerror", (e) => pageErrors.push(e.message));
    page.on("console", (m) => {
      // (a refused request, e.g. the 400 of a job the server refuses, is logged by Chromium itself: not the page's error)
      if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) pageErrors.push(m.text());
    });
    // Every distinct progress and preview the page shows, recorded in the page as it renders:
    // a job of the default model takes about a second, too short to poll from here.
    await page.addInitScript(`
      window.seen = { steps: [], previews: [] };
      new MutationObserver(() => {
        const p = document.querySelector("[data-testid=progress]");
        const step = p ? p.getAttribute("data-step") + "/" + p.getAttribute("data-total") : undefined;
        if (step && seen.steps[seen.steps.length - 1] !== step) seen.steps.push(step);
        const cap = document.querySelector("[data-testid=preview] figcaption")?.textContent;
        if (cap && !seen.previews.includes(cap)) seen.previews.push(cap);
      }).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
    `);
    await page.goto(`${server.url}?token=${TOKEN}`);
    await page.getByLabel("Pipeline", { exact: true }).waitFor();
  });

  afterAll(async () => {
    await browser?.close();
    if (server && server.proc.exitCode === null) {
      const exited = new Promise((r) => server.proc.once("exit", r));
      server.proc.kill("SIGINT");
      await exited;
    }
  });

  it("lists the served pipeline and fills the form from its settings, with the scheduler choices from the schema", async () => {
    await expect(page.getByLabel("Pipeline", { exact: true }).inputValue()).resolves.toBe("txt2img");
    expect(await page.locator("#f-prompt").inputValue()).toBe("smiling face");
    expect(await page.locator("#f-steps").inputValue()).toBe("20");
    expect(await page.locator("#f-guidance").inputValue()).toBe("4");
    expect(await page.locator("#f-seed").inputValue()).toBe("42");
    expect(await page.locator("#f-width").inputValue()).toBe("32");
    expect(await page.locator("#f-scheduler").inputValue()).toBe("dpm-solver++");
    const options = await page.locator("#f-scheduler option").allTextContents();
    const schema = (await (await fetch(new URL("api/schema", server.url), { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as {
      properties: { scheduler: { properties: { type: { enum: string[] } } } };
    };
    expect(options).toEqual(schema.properties.scheduler.properties.type.enum);
  });

  it("submits a job from the form, shows its progress and previews, and puts the image in the gallery with its parameters", async () => {
    await page.locator("#f-prompt").fill("a red heart");
    await page.locator("#f-seed").fill("7");
    await page.getByRole("button", { name: "Generate" }).click();

    const card = page.locator("[data-testid=result]").first();
    await card.waitFor({ timeout: 60_000 });
    await expect(page.locator("[data-testid=job]").getAttribute("data-state")).resolves.toBe("done");
    const shown = (await card.locator("[data-testid=parameters]").textContent()) ?? "";
    expect(shown.split("\n")[0]).toBe("a red heart");
    expect(shown).toMatch(/Steps: 20, Sampler: [^,]+, CFG scale: 4, Seed: 7, Size: 32x32/);

    // progress: steps counted up to 20 of 20; previews decoded from the latents every 5 steps
    const seen = await page.evaluate(() => (globalThis as unknown as { seen: Seen }).seen);
    const steps = seen.steps.filter((s) => s !== "0/0").map((s) => Number(s.split("/")[0]));
    expect(steps[steps.length - 1]).toBe(20);
    expect(steps.some((s) => s > 0 && s < 20)).toBe(true);
    for (let i = 1; i < steps.length; i++) expect(steps[i]!).toBeGreaterThanOrEqual(steps[i - 1]!);
    expect(seen.previews.length).toBeGreaterThan(0);
    for (const cap of seen.previews) expect(cap).toMatch(/^step (5|10|15|20), decoded from the latents$/);

    // the image the gallery shows is the job's result, and its parameters are the PNG's own
    const img = card.locator("img");
    await expect.poll(() => img.evaluate((e) => (e as unknown as ImageElement).complete && (e as unknown as ImageElement).naturalWidth)).toBe(32);
    const src = (await img.getAttribute("src")) ?? "";
    expect(src).toContain(`token=${TOKEN}`);
    const download = card.getByRole("link", { name: "Download" });
    expect(await download.getAttribute("href")).toBe(src);
    const png = new Uint8Array(await (await fetch(new URL(src, server.url))).arrayBuffer());
    expect(readPngText(png).parameters).toBe(shown);
    const jobs = (await (await fetch(new URL("api/jobs", server.url), { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as {
      state: string;
      results: { parameters: string }[];
    }[];
    expect(jobs[0]!.state).toBe("done");
    expect(jobs[0]!.results.map((r) => r.parameters)).toEqual([shown]);
    expect(pageErrors).toEqual([]);
  });

  it("'reuse these settings' puts a result's prompt and seed back into the form", async () => {
    await page.locator("#f-prompt").fill("something else");
    await page.locator("#f-seed").fill("123");
    await page.locator("[data-testid=result]").first().getByRole("button", { name: "Reuse these settings" }).click();
    await expect.poll(() => page.locator("#f-prompt").inputValue()).toBe("a red heart");
    expect(await page.locator("#f-seed").inputValue()).toBe("7");
    expect(await page.locator("#f-steps").inputValue()).toBe("20");
    expect(await page.locator("#f-scheduler").inputValue()).toBe("dpm-solver++");
  });

  it("cancels a running job from its panel", async () => {
    // 800 Euler steps, most of a minute: still running when the button is pressed
    await page.locator("#f-scheduler").selectOption("euler");
    await page.locator("#f-steps").fill("800");
    await page.getByRole("button", { name: "Generate" }).click();
    const panel = page.locator("[data-testid=job][data-state=running]");
    await panel.waitFor({ timeout: 60_000 });
    await expect.poll(() => panel.getByTestId("progress").getAttribute("data-step").then(Number), { timeout: 60_000 }).toBeGreaterThan(0);
    await panel.getByRole("button", { name: "Cancel" }).click();
    await page.locator("[data-testid=job][data-state=cancelled]").waitFor({ timeout: 30_000 });
    const step = Number(await page.getByTestId("progress").getAttribute("data-step"));
    expect(step).toBeLessThan(800);
    await expect(page.locator("[data-testid=job]").getByRole("button", { name: "Cancel" }).count()).resolves.toBe(0);
    await page.locator("#f-scheduler").selectOption("dpm-solver++");
    await page.locator("#f-steps").fill("20");
  });

  it("says in place what a form field expects, from its own check or the server's, and starts no job", async () => {
    const before = (await (await fetch(new URL("api/jobs", server.url), { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as unknown[];
    await page.locator("#f-steps").fill("0");
    await page.getByRole("button", { name: "Generate" }).click();
    const steps = page.locator(".field.bad", { has: page.locator("#f-steps") });
    await expect.poll(() => steps.locator(".field-problem").textContent()).toBe("Steps: at least 1");
    // what only the server knows (the model's 1000 training timesteps): its refusal, under the field
    await page.locator("#f-steps").fill("2000");
    await page.getByRole("button", { name: "Generate" }).click();
    await expect
      .poll(() => steps.locator(".field-problem").textContent())
      .toBe("scheduler.steps 2000 is more than the 1000 timesteps the model was trained with (use at most 1000 steps)");
    const after = (await (await fetch(new URL("api/jobs", server.url), { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as unknown[];
    expect(after.length).toBe(before.length);
    await page.locator("#f-steps").fill("20");
  });

  it("marks an unknown key typed into the YAML editor at its line and column, with the CLI's message", async () => {
    await page.getByRole("tab", { name: "YAML" }).click();
    await page.getByTestId("yaml-ok").waitFor();
    const editor = page.getByLabel("Pipeline YAML");
    const text = await editor.inputValue();
    // "  sedd: 3" inside sample:, right after its first line
    const lines = text.split("\n");
    const sampleLine = lines.findIndex((l) => l === "sample:");
    expect(sampleLine).toBeGreaterThan(0);
    const at = lines.slice(0, sampleLine + 1).join("\n").length;
    await editor.focus();
    await editor.evaluate((e, pos: number) => (e as unknown as TextArea).setSelectionRange(pos, pos), at);
    await page.keyboard.type("\n  sedd: 3");
    const badLine = sampleLine + 2; // 1-based line of the typed key

    const problems = page.getByTestId("yaml-problems");
    await problems.waitFor();
    const first = problems.locator("li").first();
    expect(await first.locator(".loc").textContent()).toBe(`pipelines/txt2img.yaml:${badLine}:3`);
    expect(await first.locator(".msg").textContent()).toMatch(/unknown key "sedd"/);
    expect(await first.locator(".hint").textContent()).toMatch(/seed/);
    // in place: the gutter's line number and the key itself are marked
    expect(await page.locator(".gutter .ln.bad").allTextContents()).toEqual([String(badLine)]);
    expect(await page.locator(".backdrop mark.squiggle").allTextContents()).toEqual(["sedd"]);
    await expect(page.getByRole("button", { name: "Generate" }).isDisabled()).resolves.toBe(true);

    // the location button puts the cursor on the key
    await first.locator("button.loc").click();
    const caret = await editor.evaluate((e) => (e as unknown as TextArea).selectionStart);
    expect(caret).toBe(at + 1 + 2);

    // Tab indents (two spaces, YAML has no tabs) rather than leaving the editor
    await editor.evaluate((e) => (e as unknown as TextArea).setSelectionRange(0, 0));
    await page.keyboard.press("Tab");
    await expect.poll(() => editor.inputValue()).toBe(`  ${text.slice(0, at)}\n  sedd: 3${text.slice(at)}`);

    // fixed: valid again, nothing marked
    await editor.fill(text);
    await page.getByTestId("yaml-ok").waitFor();
    expect(await page.locator(".gutter .ln.bad").count()).toBe(0);
    await expect(page.getByRole("button", { name: "Generate" }).isDisabled()).resolves.toBe(false);
    expect(pageErrors).toEqual([]);
  });

  it("runs a training job edited in the YAML editor and shows its loss curve, validation grids and checkpoints", async () => {
    await page.getByLabel("Pipeline", { exact: true }).selectOption("train-lora-emoji");
    await page.getByRole("tab", { name: "Form" }).click();
    expect(await page.locator("#f-train_steps").inputValue()).toBe("300");
    await page.getByRole("tab", { name: "YAML" }).click();
    const editor = page.getByLabel("Pipeline YAML");
    await expect.poll(() => editor.inputValue()).toContain("name: train-lora-emoji");
    const text = await editor.inputValue();
    // 2 steps of batch 1, a checkpoint each step, validation grids at steps 0 and 2 (one prompt, 2 sampling steps)
    const short = text
      .replace(/^  batch: 8$/m, "  batch: 1")
      .replace(/^  steps: 300$/m, "  steps: 2")
      .replace(/^  checkpointing:\n    every: 100$/m, "  checkpointing:\n    every: 1")
      .replace(/^    prompts: \[.*\]$/m, "    prompts: [red circle on blue background]\n    steps: 2");
    for (const edited of [/^  batch: 1$/m, /^  steps: 2$/m, /^    every: 1$/m, /^    steps: 2$/m]) expect(short).toMatch(edited);
    await editor.fill(short);
    await page.getByTestId("yaml-ok").waitFor();
    await page.getByRole("button", { name: "Train" }).click();
    await page.locator("[data-testid=job][data-kind=train][data-state=done]").waitFor({ timeout: 110_000 });

    const jobs = (await (await fetch(new URL("api/jobs", server.url), { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as {
      kind: string;
      state: string;
      losses: { step: number; loss: number }[];
      grids: string[];
      checkpoints: string[];
      results: { file: string }[];
    }[];
    const job = jobs[0]!;
    expect([job.kind, job.state]).toEqual(["train", "done"]);
    expect(job.losses.map((l) => l.step)).toEqual([1, 2]);

    // the loss curve: one vertex per loss, the caption the latest
    const chart = page.getByTestId("loss-chart");
    expect((await chart.locator("path").getAttribute("d"))?.split(/[ML]/).filter((x) => x.trim()).length).toBe(2);
    expect(await chart.locator("figcaption").textContent()).toContain(`loss ${job.losses[1]!.loss.toPrecision(4)} at step 2`);

    // the validation grids, newest first, each loaded
    expect(job.grids.length).toBe(2);
    const grids = page.getByTestId("grids").locator("img");
    await expect.poll(() => grids.evaluateAll((els) => els.map((e) => (e as unknown as ImageElement).naturalWidth > 0))).toEqual([true, true]);
    const captions = await page.getByTestId("grids").locator("figcaption").allTextContents();
    expect(captions).toEqual(job.grids.map((u) => u.split("/").pop()).reverse());

    // the checkpoints, each folder's files as downloads that the server serves
    expect(job.checkpoints.length).toBe(2);
    const links = page.getByTestId("checkpoints").getByRole("link", { name: "weights.safetensors" });
    await expect.poll(() => links.count()).toBe(2);
    const weights = await fetch(new URL((await links.first().getAttribute("href"))!, server.url));
    expect(weights.status).toBe(200);
    expect((await weights.arrayBuffer()).byteLength).toBeGreaterThan(1000);

    // the trained LoRA: a download in the gallery, not an image
    const files = await page.getByTestId("result-file").locator(".filename").allTextContents();
    expect(files.sort()).toEqual(job.results.map((r) => r.file).sort());
    expect(files.some((f) => f.endsWith(".safetensors"))).toBe(true);
    expect(pageErrors).toEqual([]);
  });

  it("shows the server's 401 with its hint when the page is opened without the token", async () => {
    const other = await browser.newPage();
    await other.goto(server.url);
    await other.locator(".fatal").waitFor();
    expect(await other.locator(".fatal .msg").textContent()).toBe("this server needs its token");
    await other.close();
  });
});
