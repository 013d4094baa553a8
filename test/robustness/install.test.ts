/**
 * A fresh `npm ci` stays offline-safe. onnxruntime-node's postinstall script downloads its CUDA
 * provider from NuGet unless told not to, and fails the whole install where NuGet cannot be reached.
 * sdc tells it twice, so that every npm skips it: package.json's `allowScripts` (npm 11's own list;
 * a denied package's scripts are skipped quietly, and it outlives the next step) and `.npmrc`'s
 * `onnxruntime-node-install=skip` (what npm 10, which Node 20 ships, passes to the script; npm 11
 * still passes it too but warns "Unknown project config" — the README's Set up section says that the
 * warning is expected and harmless).
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { REPO, tempDir } from "../helpers/repo.js";

const pkg = JSON.parse(fs.readFileSync(path.join(REPO, "package.json"), "utf8")) as { allowScripts?: Record<string, boolean> };
const lock = JSON.parse(fs.readFileSync(path.join(REPO, "package-lock.json"), "utf8")) as {
  packages: Record<string, { version?: string; hasInstallScript?: boolean }>;
};

/** The allowScripts entry deciding for this package: `name@version` first, then `name`. */
function allowed(name: string, version: string | undefined): boolean | undefined {
  const a = pkg.allowScripts ?? {};
  return a[`${name}@${version}`] ?? a[name];
}

/** The environment of a child without any onnxruntime-node install setting inherited from npm. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/onnxruntime_node_install/i.test(k)));
  return { ...env, ...extra };
}

const canUnshare = process.platform === "linux" && spawnSync("unshare", ["-n", "true"]).status === 0;

describe("install scripts", () => {
  it("onnxruntime-node's postinstall is denied in package.json and skipped by .npmrc's key, and the README explains npm 11's warning about that key", () => {
    expect(pkg.allowScripts?.["onnxruntime-node"]).toBe(false);
    expect(fs.readFileSync(path.join(REPO, ".npmrc"), "utf8")).toMatch(/^onnxruntime-node-install=skip$/m);
    expect(fs.readFileSync(path.join(REPO, "README.md"), "utf8")).toMatch(/Unknown project config "onnxruntime-node-install"/);
  });

  it("every dependency with an install script has an allowScripts entry (npm lists none as unreviewed)", () => {
    const withScripts = Object.entries(lock.packages)
      .filter(([k, v]) => k.startsWith("node_modules/") && v.hasInstallScript)
      .map(([k, v]) => ({ name: k.slice(k.lastIndexOf("node_modules/") + "node_modules/".length), version: v.version }));
    expect(withScripts.map((p) => p.name)).toContain("onnxruntime-node");
    const unreviewed = withScripts.filter((p) => allowed(p.name, p.version) === undefined);
    expect(unreviewed).toEqual([]);
  });

  it.skipIf(!canUnshare)("without a network, ORT's install script fails the install unless skipped; skipped, it exits 0 and writes nothing", () => {
    const ortDir = path.join(REPO, "node_modules", "onnxruntime-node");
    const bin = path.join(ortDir, "bin", "napi-v6", "linux", "x64");
    const before = fs.readdirSync(bin).sort();
    const tmp = tempDir("sdc-ort-install-");
    // as npm runs a dependency's postinstall: from its folder, npm_package_json naming its own package.json
    const env = { npm_package_json: path.join(ortDir, "package.json"), npm_config_local_prefix: REPO, TMPDIR: tmp };
    const run = (extra: Record<string, string>) =>
      spawnSync("unshare", ["-n", process.execPath, path.join("script", "install.js")], { cwd: ortDir, env: cleanEnv({ ...env, ...extra }), encoding: "utf8", timeout: 60_000 });

    const skipped = run({ ONNXRUNTIME_NODE_INSTALL: "skip" });
    expect(skipped.status).toBe(0);
    expect(skipped.stdout + skipped.stderr).toBe("");

    // what the denial avoids: the script goes for NuGet and fails (which fails `npm ci`)
    const unskipped = run({});
    expect(unskipped.status).not.toBe(0);
    expect(unskipped.stderr).toMatch(/nuget/i);

    expect(fs.readdirSync(bin).sort()).toEqual(before);
    expect(fs.readdirSync(tmp)).toEqual([]);
  });

  const npm = spawnSync("npm", ["install-scripts", "--help"], { cwd: REPO, encoding: "utf8", env: cleanEnv() });
  const npmHasAllowScripts = npm.status === 0;

  it.skipIf(!npmHasAllowScripts)("npm finds no unreviewed install scripts, and warns about no config key but the documented one", () => {
    const r = spawnSync("npm", ["install-scripts", "ls"], { cwd: REPO, encoding: "utf8", env: cleanEnv(), timeout: 60_000 });
    expect(r.status).toBe(0);
    const unknown = [...r.stderr.matchAll(/Unknown (?:project|env|user) config "([^"]+)"/g)].map((m) => m[1]);
    expect(unknown.filter((k) => k !== "onnxruntime-node-install")).toEqual([]);
    expect(r.stdout + r.stderr).toMatch(/No packages with unreviewed install scripts/);
  });
});
