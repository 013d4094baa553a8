/**
 * `sdc run` in process over the real library: run settings never touch the compiled folder. After
 * `sdc compile`, `sdc run --prompt other` (and another seed, guidance scale, size and output folder)
 * leaves every file under compiled/<name> byte-identical, with the same inode and mtime, and writes
 * the image with the new settings in its parameters. The one thing a run adds there is onnxruntime's
 * optimised-graph cache (model.ort*, beside each graph it opened), on its first run only.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { parseParameters, readPngText } from "../../src/image/image.js";
import { snapshot, tmp } from "../compiler/helpers.js";
import { FIXTURES } from "../helpers/repo.js";

const MODEL = path.join(FIXTURES, "models", "tiny-sd1");
const PIPE = `version: 1\nname: p\nmodel:\n  from: ${JSON.stringify(MODEL)}\nscheduler:\n  steps: 2\nsample:\n  prompt: a cat\n  seed: 1\nruntime:\n  device: cpu\n`;

async function sdc(argv: string[], cwd: string) {
  let stdout = "";
  let stderr = "";
  const code = await main(argv, { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t), cwd });
  return { code, stdout, stderr };
}

describe("sdc run and the compiled folder", () => {
  it("run settings on an up-to-date folder write nothing under compiled/, and reach the image", async () => {
    const cwd = tmp("sdc-clirun-");
    fs.writeFileSync(path.join(cwd, "p.yaml"), PIPE);
    expect((await sdc(["compile", "p.yaml"], cwd)).code).toBe(0);
    const compiled = path.join(cwd, "compiled", "p");
    const before = snapshot(compiled);
    expect(Object.keys(before)).toContain("plan.json");
    const folder = (d: string) => (({ ino, mtimeMs }) => ({ ino, mtimeMs }))(fs.statSync(d));
    const folderBefore = folder(compiled);

    const argv = ["run", "p.yaml", "--prompt", "other", "--seed", "3", "--set", "guidance.scale=4", "--set", "sample.width=24", "--out", "elsewhere", "--json"];
    const r = await sdc(argv, cwd);
    expect(r.code, r.stderr).toBe(0);
    const notCache = (snap: Record<string, unknown>) => Object.fromEntries(Object.entries(snap).filter(([f]) => !/(^|\/)model\.ort[.-]/.test(f)));
    const afterFirst = snapshot(compiled);
    expect(notCache(afterFirst)).toEqual(before); // content hash, size, inode and mtime of every file
    expect(Object.keys(afterFirst).filter((f) => !(f in before)).length).toBe(3 * 3); // the cache of the three graphs a txt2img run opens
    expect(folder(compiled)).toEqual(folderBefore); // not replaced by a rewritten folder either
    // a second run finds everything in place, the cache included
    expect((await sdc(argv, cwd)).code).toBe(0);
    expect(snapshot(compiled)).toEqual(afterFirst);
    expect(fs.readdirSync(path.join(cwd, "compiled"))).toEqual(["p"]);

    const { outputs } = JSON.parse(r.stdout) as { outputs: string[] };
    expect(outputs).toEqual([path.join(cwd, "elsewhere", "00000-3.png")]);
    expect(fs.readdirSync(path.join(cwd, "elsewhere")).sort()).toEqual(["00000-3.png", "00001-3.png"]);
    const params = parseParameters(readPngText(outputs[0]!).parameters!);
    expect(params).toMatchObject({ prompt: "other", params: { Seed: "3", "CFG scale": "4", Size: "24x16" } });
    // and the plan holds none of it
    expect(fs.readFileSync(path.join(compiled, "plan.json"), "utf8")).not.toMatch(/other|elsewhere/);
  });
});
