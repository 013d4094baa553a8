/**
 * The CLI: exit codes (0 ok, 2 user error, 1 internal error), help, --json, and that compile / run /
 * watch / inspect only hand the parsed arguments to the library API. Most tests call `main()` in
 * process with captured output; the last ones run the real bin/sdc.js after a build.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { type Api, main } from "../../src/cli/main.js";
import { pipelineJsonSchemaText } from "../../src/config/json-schema.js";
import * as lib from "../../src/index.js";
import { HEAD, P, project, REPO } from "../config/helpers.js";
import type { CompileResult } from "../../src/compiler/compile.js";
import { buildPackage } from "../helpers/repo.js";

async function sdc(argv: string[], cwd: string, api?: Partial<Api>) {
  let stdout = "";
  let stderr = "";
  const code = await main(argv, { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t), cwd }, { ...lib, ...api });
  return { code, stdout, stderr };
}

const COMMANDS = ["validate", "compile", "run", "watch", "schema", "inspect"];
const GOOD = `${HEAD}sample:\n  prompt: a cat\n`;
const BAD = `${HEAD}scheduler:\n  stpes: 20\n`;

describe("help", () => {
  it("sdc --help lists every command and exits 0", async () => {
    const r = await sdc(["--help"], REPO);
    expect(r.code).toBe(0);
    for (const c of COMMANDS) expect(r.stdout).toMatch(new RegExp(`^  ${c} `, "m"));
  });
  it("every command has --help", async () => {
    for (const c of COMMANDS) {
      const r = await sdc([c, "--help"], REPO);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`Usage: sdc ${c}`);
    }
  });
  it("sdc help and sdc help <command> print help on stdout and exit 0, as --help does; a bare sdc is a usage error (help on stderr, exit 2)", async () => {
    const h = await sdc(["help"], REPO);
    expect(h).toMatchObject({ code: 0, stderr: "" });
    expect(h.stdout).toBe((await sdc(["--help"], REPO)).stdout);
    const r = await sdc(["help", "run"], REPO);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(r.stdout).toContain("Usage: sdc run");
    const bare = await sdc([], REPO);
    expect(bare).toMatchObject({ code: 2, stdout: "" });
    expect(bare.stderr).toContain("Usage: sdc [options] [command]");
  });
  it("sdc --version prints package.json's version", async () => {
    const r = await sdc(["--version"], REPO);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe((JSON.parse(fs.readFileSync(path.join(REPO, "package.json"), "utf8")) as { version: string }).version);
  });
  it("usage errors exit 2", async () => {
    expect((await sdc(["frobnicate"], REPO)).code).toBe(2);
    const r = await sdc(["validate", "--no-such-flag"], REPO);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("unknown option '--no-such-flag'");
    expect((await sdc([], REPO)).code).toBe(2);
  });
});

describe("validate", () => {
  it("exits 0 with a summary for a good pipeline", async () => {
    const cwd = project({ [P]: GOOD });
    const r = await sdc(["validate", P, "--steps", "9"], cwd);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(r.stdout).toMatchInlineSnapshot(`
      "pipelines/p.yaml: ok
        name       p
        model      diffusers folder models/tiny-sd
        scheduler  PNDMScheduler, 9 steps
        image      16×16, batch 1, seed 0
      "
    `);
  });
  it("flags that contradict each other exit 2, naming both (none silently wins)", async () => {
    const cwd = project({ [P]: GOOD, "p.txt": "a fox\n" });
    const a = await sdc(["run", P, "--prompt", "x", "--prompts-file", "p.txt"], cwd);
    expect(a).toMatchObject({ code: 2, stdout: "" });
    expect(a.stderr).toContain("--prompt x and --prompts-file p.txt: sample.prompt and sample.prompts_file exclude each other");
    const b = await sdc(["validate", P, "--set", "scheduler.steps=20", "--steps", "30"], cwd);
    expect(b).toMatchObject({ code: 2, stdout: "" });
    expect(b.stderr).toContain("--set scheduler.steps=20 and --steps 30: both set scheduler.steps");
  });
  it("exits 2 with every located problem", async () => {
    const cwd = project({ [P]: `${BAD}sample:\n  seed: -3\n` });
    const r = await sdc(["validate", P], cwd);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatchInlineSnapshot(`
      "pipelines/p.yaml:5:3: unknown key "stpes" in scheduler
        5 |   stpes: 20
          |   ^^^^^
        hint: did you mean "steps"?

      pipelines/p.yaml:7:9: sample.seed: -3 is too small
        7 |   seed: -3
          |         ^^
        hint: expected an integer ≥ 0 — seed of the (PyTorch-compatible) CPU generator

      2 problems found.
      "
    `);
  });
  it("--json prints the resolved config, or the problems as data", async () => {
    const cwd = project({ [P]: GOOD, "pipelines/bad.yaml": BAD });
    const ok = await sdc(["validate", P, "--json", "--set", "scheduler.type=ddim"], cwd);
    expect(ok.code).toBe(0);
    const data = JSON.parse(ok.stdout);
    expect(data).toMatchObject({ ok: true, name: "p", config: { scheduler: { type: "ddim", steps: 50 } }, model: { kind: "diffusers" } });
    expect(data.model.schedulerConfig._class_name).toBe("DDIMScheduler");

    const bad = await sdc(["validate", "pipelines/bad.yaml", "--json"], cwd);
    expect(bad.code).toBe(2);
    expect(JSON.parse(bad.stdout)).toEqual({
      ok: false,
      problems: [
        {
          message: 'unknown key "stpes" in scheduler',
          at: { file: "pipelines/bad.yaml", line: 5, col: 3, endCol: 8 },
          snippet: "  5 |   stpes: 20\n    |   ^^^^^",
          hint: 'did you mean "steps"?',
        },
      ],
    });
  });
  it("defaults to pipelines/txt2img.yaml", async () => {
    const cwd = project({ "pipelines/txt2img.yaml": GOOD });
    const r = await sdc(["validate"], cwd);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("pipelines/txt2img.yaml: ok");
  });
});

describe("commands over the library API", () => {
  it("compile and run load the pipeline (with overrides) and pass it on", async () => {
    const cwd = project({ [P]: GOOD });
    const seen: unknown[] = [];
    const api: Partial<Api> = {
      compile: async (p, opts) => {
        seen.push(["compile", p.config.scheduler.steps, p.config.sample.prompt, opts]);
        return { dir: "compiled/p", summary: "compiled 4 graphs" } as CompileResult;
      },
      run: async (p, opts) => {
        seen.push(["run", p.config.sample.seed, opts]);
        return { outputs: ["out/p/0.png"], summary: "wrote out/p/0.png", cancelled: false, ep: "cpu", seconds: 1, itPerSec: 2 };
      },
    };
    const c = await sdc(["compile", P, "--steps", "7", "--prompt", "a dog", "--force"], cwd, api);
    expect(c).toMatchObject({ code: 0, stdout: "compiled 4 graphs\n" });
    const r = await sdc(["run", P, "--seed", "3", "--json"], cwd, api);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ outputs: ["out/p/0.png"], summary: "wrote out/p/0.png", cancelled: false, ep: "cpu", seconds: 1, itPerSec: 2 });
    expect(seen).toEqual([
      ["compile", 7, "a dog", expect.objectContaining({ force: true, cwd })],
      ["run", 3, expect.objectContaining({ recompile: false, cwd, progress: false })],
    ]);
  });

  it("Ctrl-C while training: 'stopping after the current step' goes through the training report (a line above its bar), not glued onto the bar", async () => {
    const cwd = project({ [P]: GOOD });
    const written: string[] = [];
    const real = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((t: string) => (written.push(String(t)), true)) as typeof process.stderr.write;
    try {
      const r = await sdc(["run", P], cwd, {
        loadPipeline: async () => ({ config: { train: {} } }) as never,
        trainPipeline: (async (_p: unknown, o: { onStep: (s: object) => void }) => {
          o.onStep({ step: 1, total: 4, loss: 0.5, lr: 1e-4 });
          process.listeners("SIGINT").at(-1)!("SIGINT"); // the handler sdc run installed
          return { stopped: true, steps: 1, exported: [], checkpoints: [] };
        }) as never,
      });
      expect(r.code).toBe(130);
      expect(r.stderr).not.toContain("stopping after the current step"); // not written around the report
    } finally {
      process.stderr.write = real;
    }
    expect(written.join("")).toContain("stopping after the current step (Ctrl-C again to quit now)\n");
  });

  it("a user error from compile exits 2 before compiling", async () => {
    const cwd = project({ [P]: BAD });
    let called = false;
    const r = await sdc(["compile", P], cwd, { compile: async () => ((called = true), { dir: "", summary: "" } as CompileResult) });
    expect(r.code).toBe(2);
    expect(called).toBe(false);
    expect(r.stderr).toContain("pipelines/p.yaml:5:3: unknown key");
  });

  it("an internal error exits 1, with the stack only under --debug", async () => {
    const cwd = project({ [P]: GOOD });
    const boom: Partial<Api> = { run: async () => { throw new TypeError("boom"); } };
    const r = await sdc(["run", P], cwd, boom);
    expect(r).toMatchObject({ code: 1, stdout: "" });
    expect(r.stderr).toBe("sdc: internal error: boom\n(run with --debug for the stack trace)\n");
    const d = await sdc(["run", P, "--debug"], cwd, boom);
    expect(d.code).toBe(1);
    expect(d.stderr).toMatch(/^sdc: internal error: boom\nTypeError: boom\n\s+at /);
  });

  it("watch and inspect hand their arguments to the API", async () => {
    const cwd = project({});
    const calls: unknown[] = [];
    const api: Partial<Api> = {
      watch: async (file, opts = {}) => void calls.push(["watch", file, opts.run, opts.overrides, opts.cwd]),
      inspect: async (target) => {
        calls.push(["inspect", target]);
        return { plan: { format: "sdc-plan/1", graphs: [] }, summary: "0 graphs" } as unknown as lib.InspectResult;
      },
    };
    expect((await sdc(["watch", P, "--run", "--set", "sample.seed=2"], cwd, api)).code).toBe(0);
    const i = await sdc(["inspect", "compiled/p", "--json"], cwd, api);
    expect(JSON.parse(i.stdout)).toEqual({ format: "sdc-plan/1", graphs: [] });
    expect((await sdc(["inspect"], cwd, api)).stdout).toBe("0 graphs\n");
    expect(calls).toEqual([
      ["watch", P, true, ["sample.seed=2"], cwd],
      ["inspect", "compiled/p"],
      ["inspect", "pipelines/txt2img.yaml"],
    ]);
  });

});

describe("schema", () => {
  it("prints the JSON Schema, or writes it atomically", async () => {
    const cwd = project({});
    const r = await sdc(["schema"], cwd);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(pipelineJsonSchemaText());
    const w = await sdc(["schema", "--out", "schemas/p.json"], cwd);
    expect(w).toMatchObject({ code: 0, stdout: "wrote schemas/p.json\n" });
    expect(fs.readFileSync(path.join(cwd, "schemas/p.json"), "utf8")).toBe(pipelineJsonSchemaText());
    expect(fs.readdirSync(path.join(cwd, "schemas"))).toEqual(["p.json"]);
  });

  it("--out on a folder, or under a file: a user error naming the flag, with a hint, exit 2 (no temporary file left)", async () => {
    const cwd = project({ "schemas/keep.txt": "x", "a-file": "x" });
    const d = await sdc(["schema", "--out", "schemas"], cwd);
    expect(d).toMatchObject({ code: 2, stdout: "" });
    expect(d.stderr).toBe("--out schemas: is a folder, where a file is needed (EISDIR on schemas)\n  hint: give a file name (e.g. inside that folder), not the folder\n\n1 problem found.\n");
    expect(fs.readdirSync(cwd).filter((f) => f !== "models").sort()).toEqual(["a-file", "schemas"]);
    expect(fs.readdirSync(path.join(cwd, "schemas"))).toEqual(["keep.txt"]);
    const f = await sdc(["schema", "--out", "a-file/p.json"], cwd);
    expect(f.code).toBe(2);
    expect(f.stderr).toMatch(/^--out a-file\/p\.json: a part of this path is a file, where a folder is needed \((ENOTDIR|EEXIST)/);
  });

  it("any filesystem error on a user's path (EROFS, ENOSPC, EACCES, ...) is a user error with a hint, exit 2, never an internal error", async () => {
    const cwd = project({ [P]: GOOD });
    for (const [code, message] of [
      ["EROFS", "is on a read-only file system"],
      ["ENOSPC", "no space left on the device"],
      ["EACCES", "permission denied"],
      ["ENOTDIR", "a part of this path is a file, where a folder is needed"],
    ] as const) {
      const run = async () => {
        throw Object.assign(new Error(`${code}: boom, open '${path.join(cwd, "out/p/00000-0.png")}'`), { code, path: path.join(cwd, "out/p/00000-0.png") });
      };
      const r = await sdc(["run", P], cwd, { run });
      expect(r).toMatchObject({ code: 2, stdout: "" });
      expect(r.stderr).toMatch(new RegExp(`^out/p/00000-0\\.png: ${message} \\(${code}\\)\n  hint: `));
      expect(r.stderr).not.toMatch(/internal error/);
    }
  });
});

describe("bin/sdc.js (built)", () => {
  let sdcJs = "";
  beforeAll(() => {
    sdcJs = buildPackage();
  });
  const bin = (args: string[], cwd: string) => spawnSync(process.execPath, [sdcJs, ...args], { cwd, encoding: "utf8" });

  it("--help lists the commands", () => {
    const r = bin(["--help"], REPO);
    expect(r.status).toBe(0);
    for (const c of COMMANDS) expect(r.stdout).toContain(`  ${c} `);
  });
  it("validates the default pipeline against a tiny model folder, and exits 2 on a bad one", () => {
    const ok = bin(["validate", "--set", "model.from=test/fixtures/config/models/tiny-sd"], REPO);
    expect(ok.stderr).toBe("");
    expect(ok.status).toBe(0);
    expect(ok.stdout).toContain("pipelines/txt2img.yaml: ok");
    const cwd = project({ [P]: BAD });
    const bad = bin(["validate", P], cwd);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('pipelines/p.yaml:5:3: unknown key "stpes" in scheduler');
    expect(bad.stderr).not.toContain("    at "); // no stack trace
  });
});
