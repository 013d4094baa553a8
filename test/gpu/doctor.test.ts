/**
 * `sdc doctor` and what it stands on: reading a library's DT_NEEDED, finding libraries where the
 * loader would (LD_LIBRARY_PATH, its cache, default folders) and where it would not (a CUDA folder
 * off its path), the wrong-major-version case, and the verdict for device auto / cuda / cpu. The
 * searches run on library folders built in a temp dir; the CLI runs on this machine as it is.
 */
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { loadPipeline } from "../../src/config/load.js";
import { doctor, formatDoctor } from "../../src/gpu/doctor.js";
import { checkLibraries, ortInstall, PACKAGE_PROVIDER_NEEDED, parseLdconfig, providerStatus, requiredLibraries, type LibEnv } from "../../src/gpu/cuda.js";
import { readElfDynamic } from "../../src/gpu/elf.js";
import { REPO, tempDir } from "../helpers/repo.js";
import { elfWithDynamic } from "./elf-writer.js";

const hasReadelf = spawnSync("readelf", ["--version"]).status === 0;

/** Files (empty, or an ELF) under a fresh folder: { "a/libx.so.1": "" }. */
function tree(files: Record<string, string | Buffer>): string {
  const root = tempDir("sdc-doctor-");
  for (const [rel, data] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.writeFileSync(path.join(root, rel), data);
  }
  return root;
}

const env = (o: Partial<LibEnv>): LibEnv => ({ ldLibraryPath: [], cache: new Map(), defaultDirs: [], offPathDirs: [], ...o });

/** Every library a CUDA 13 provider loads, as files in one folder. */
const CUDA13 = ["libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10", "libcudart.so.13", "libcuda.so.1", "libcudnn.so.9", "libnvrtc.so.13"];

describe("readElfDynamic", () => {
  it("reads DT_NEEDED, DT_SONAME and DT_RUNPATH of a constructed library, as readelf does", () => {
    const root = tree({ "p.so": elfWithDynamic({ needed: ["libcudart.so.12", "libcublas.so.12", "libc.so.6"], soname: "libp.so", runpath: "$ORIGIN:/opt/cuda/lib64" }) });
    const d = readElfDynamic(path.join(root, "p.so"));
    expect(d).toEqual({ machine: 62, needed: ["libcudart.so.12", "libcublas.so.12", "libc.so.6"], soname: "libp.so", runpath: ["$ORIGIN", "/opt/cuda/lib64"] });
    if (hasReadelf) {
      const text = execFileSync("readelf", ["-d", path.join(root, "p.so")], { encoding: "utf8" });
      expect([...text.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1])).toEqual(d.needed);
    }
  });

  it.skipIf(!hasReadelf)("agrees with readelf on real system libraries", () => {
    const libs = ["/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libm.so.6", process.execPath].filter((f) => fs.existsSync(f));
    expect(libs.length).toBeGreaterThan(0);
    for (const f of libs) {
      const text = execFileSync("readelf", ["-d", "-W", f], { encoding: "utf8" });
      const needed = [...text.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
      const soname = /\(SONAME\)\s+Library soname: \[([^\]]+)\]/.exec(text)?.[1] ?? null;
      const d = readElfDynamic(f);
      expect(d.needed).toEqual(needed);
      expect(d.soname).toBe(soname);
    }
  });

  it("refuses what is not a 64-bit ELF file, saying why", () => {
    const root = tree({ "t.so": "just text, long enough to pass the size check of sixty-four bytes........" });
    expect(() => readElfDynamic(path.join(root, "t.so"))).toThrow(/not an ELF file/);
  });
});

describe("library search", () => {
  it("parses ldconfig -p (x86-64 entries)", () => {
    const text = [
      "1234 libs found in cache `/etc/ld.so.cache'",
      "\tlibcudart.so.13 (libc6,x86-64) => /usr/local/cuda-13.0/lib/libcudart.so.13",
      "\tlibcudart.so.13 (libc6) => /usr/lib32/libcudart.so.13",
      "\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1",
    ].join("\n");
    const cache = parseLdconfig(text);
    expect(cache.get("libcudart.so.13")).toEqual(["/usr/local/cuda-13.0/lib/libcudart.so.13"]);
    expect(cache.get("libcuda.so.1")).toEqual(["/usr/lib/x86_64-linux-gnu/libcuda.so.1"]);
  });

  it("finds each library the way the loader would: LD_LIBRARY_PATH, then its cache, then default folders", () => {
    const root = tree({ "a/libcudart.so.13": "", "b/libcudart.so.13": "", "c/libcublas.so.13": "", "d/libcurand.so.10": "" });
    const libs = requiredLibraries(["libcudart.so.13", "libcublas.so.13", "libcurand.so.10"]);
    const r = checkLibraries(libs, env({ ldLibraryPath: [path.join(root, "b")], cache: new Map([["libcudart.so.13", [path.join(root, "a", "libcudart.so.13")]], ["libcublas.so.13", [path.join(root, "c", "libcublas.so.13")]]]), defaultDirs: [path.join(root, "d")] }));
    expect(Object.fromEntries(r.map((l) => [l.soname, l.path && path.relative(root, l.path)]))).toEqual({
      "libcudart.so.13": "b/libcudart.so.13",
      "libcublas.so.13": "c/libcublas.so.13",
      "libcurand.so.10": "d/libcurand.so.10",
      "libcudnn.so.9": null,
      "libnvrtc.so.13": null,
    });
    expect(r.find((l) => l.soname === "libcudnn.so.9")).toMatchObject({ required: true, role: "loaded at run time", what: "cuDNN 9" });
    expect(r.find((l) => l.soname === "libnvrtc.so.13")).toMatchObject({ required: false });
  });

  it("names the file a soname resolves to (its full version), another major version, one off the loader's path, and never a driver stub", () => {
    const root = tree({
      "lib/libcudnn.so.9.14.0": "",
      "old/libcudart.so.12": "",
      "cuda-13.0/lib64/libcublas.so.13": "",
      "stubs/libcuda.so.1": "",
    });
    fs.symlinkSync("libcudnn.so.9.14.0", path.join(root, "lib", "libcudnn.so.9"));
    const libs = requiredLibraries(["libcudart.so.13", "libcublas.so.13", "libcuda.so.1"]);
    const r = checkLibraries(libs, env({ ldLibraryPath: [path.join(root, "lib"), path.join(root, "old"), path.join(root, "stubs")], offPathDirs: [path.join(root, "cuda-13.0", "lib64")] }));
    const by = Object.fromEntries(r.map((l) => [l.soname, l]));
    expect(by["libcudnn.so.9"]).toMatchObject({ path: path.join(root, "lib", "libcudnn.so.9"), file: "libcudnn.so.9.14.0" });
    expect(by["libcudart.so.13"]).toMatchObject({ path: null, offPath: null, otherVersions: [path.join(root, "old", "libcudart.so.12")] });
    expect(by["libcublas.so.13"]).toMatchObject({ path: null, offPath: path.join(root, "cuda-13.0", "lib64", "libcublas.so.13") });
    expect(by["libcuda.so.1"]).toMatchObject({ path: null, role: "driver" });
  });
});

/** A provider folder holding a constructed CUDA provider with these DT_NEEDED entries. */
function providerDir(needed: string[]): string {
  return tree({ "libonnxruntime_providers_cuda.so": elfWithDynamic({ needed: [...needed, "libstdc++.so.6", "libc.so.6"] }), "libonnxruntime_providers_shared.so": elfWithDynamic({ needed: ["libc.so.6"] }) });
}

const noGpu = { version: null, devices: [] };

describe("doctor", () => {
  it("without the provider: CPU, 'CUDA provider library not installed', the setup command first, and the package provider's libraries listed", () => {
    const bin = tempDir("sdc-ort-bin-");
    const r = doctor(null, { ort: { version: "1.29.0", binDir: bin }, libEnv: env({}), platform: "linux/x64", driver: noGpu });
    expect(r).toMatchObject({ ok: true, device: "auto", ep: "cpu", reason: "CUDA provider library not installed" });
    expect(r.hints[0]).toMatch(/^run `npx sdc setup cuda`/);
    expect(r.libraries.map((l) => l.soname)).toEqual([...PACKAGE_PROVIDER_NEEDED, "libcudnn.so.9", "libnvrtc.so.13"]);
    expect(formatDoctor(r).split("\n")[0]).toBe("execution provider: CPU: CUDA provider library not installed (run `npx sdc setup cuda`)");
  });

  it("with the provider and every library it loads: CUDA; the libraries looked for are the installed provider's (a CUDA 12 build wants .so.12)", () => {
    const libs = tree(Object.fromEntries(CUDA13.map((n) => [n, ""])));
    const r = doctor(null, { ort: { version: "1.29.0", binDir: providerDir(PACKAGE_PROVIDER_NEEDED) }, libEnv: env({ ldLibraryPath: [libs] }), platform: "linux/x64", driver: { version: "580.159", devices: ["/dev/nvidia0"] } });
    expect(r).toMatchObject({ ok: true, ep: "cuda", problems: [], hints: [] });
    expect(r.libraries.every((l) => l.path !== null)).toBe(true);

    const cuda12 = doctor(null, { ort: { version: "1.29.0", binDir: providerDir(["libcudart.so.12", "libcublas.so.12", "libcuda.so.1"]) }, libEnv: env({ ldLibraryPath: [libs] }), platform: "linux/x64", driver: noGpu });
    expect(cuda12.ep).toBe("cpu");
    expect(cuda12.reason).toBe("libcudart.so.12 (CUDA 12 CUDA runtime) not found; the loader finds libcudart.so.13, another major version");
    expect(cuda12.libraries.map((l) => l.soname)).toEqual(["libcudart.so.12", "libcublas.so.12", "libcuda.so.1", "libcudnn.so.9", "libnvrtc.so.12"]);
  });

  it("libraries off the loader's path: one LD_LIBRARY_PATH export naming their folders", () => {
    const libs = tree(Object.fromEntries(CUDA13.filter((n) => n !== "libcudnn.so.9").map((n) => [n, ""])));
    const cudnn = tree({ "nvidia/cudnn/lib/libcudnn.so.9": "" });
    const r = doctor(null, { ort: { version: "1.29.0", binDir: providerDir(PACKAGE_PROVIDER_NEEDED) }, libEnv: env({ ldLibraryPath: [libs], offPathDirs: [path.join(cudnn, "nvidia", "cudnn", "lib")] }), platform: "linux/x64", driver: noGpu });
    expect(r.ep).toBe("cpu");
    expect(r.reason).toBe(`libcudnn.so.9 (cuDNN 9) is in ${path.join(cudnn, "nvidia", "cudnn", "lib")}, which the loader does not search`);
    expect(r.hints).toEqual([`export LD_LIBRARY_PATH=${path.join(cudnn, "nvidia", "cudnn", "lib")}\${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} before running sdc`]);
  });

  it("a pipeline asking for device: cuda that cannot be had: not ok, the first problem located at runtime.device", async () => {
    const dir = tempDir("sdc-doctor-pipe-");
    const file = path.join(dir, "gpu.yaml");
    fs.writeFileSync(file, `version: 1\nname: gpu\nmodel:\n  from: ${JSON.stringify(path.join(REPO, "models", "tiny-sd"))}\nruntime:\n  device: cuda\n`);
    const p = await loadPipeline(file);
    const r = doctor(p, { ort: { version: "1.29.0", binDir: tempDir("sdc-ort-bin-") }, libEnv: env({}), platform: "linux/x64", driver: noGpu });
    expect(r).toMatchObject({ ok: false, device: "cuda", ep: "cpu" });
    expect(r.problems[0]).toMatchObject({ message: "runtime.device is cuda, but CUDA provider library not installed", at: { file: expect.stringMatching(/gpu\.yaml$/), line: 6, col: 11 } });
    expect(r.problems[0]!.hint).toMatch(/npx sdc setup cuda.*runtime\.device: auto/);
    // the same pipeline with device: cpu needs nothing
    fs.writeFileSync(file, fs.readFileSync(file, "utf8").replace("device: cuda", "device: cpu"));
    const cpu = doctor(await loadPipeline(file), { ort: { version: "1.29.0", binDir: tempDir("sdc-ort-bin-") }, libEnv: env({}), platform: "linux/x64", driver: noGpu });
    expect(cpu).toMatchObject({ ok: true, ep: "cpu", reason: "runtime.device is cpu", problems: [] });
  });

  it("another platform: CPU, no library search", () => {
    const r = doctor(null, { ort: { version: "1.29.0", binDir: tempDir("sdc-ort-bin-") }, platform: "darwin/arm64", driver: noGpu });
    expect(r).toMatchObject({ ok: true, ep: "cpu", libraries: [] });
    expect(r.reason).toMatch(/no CUDA provider .* for darwin\/arm64/);
  });
});

// this machine as it is: the CLI's text, JSON and exit codes (skipped where a CUDA provider is installed)
const ort = ortInstall();
const providerHere = ort !== null && providerStatus(ort.binDir).installed;

describe.skipIf(providerHere)("sdc doctor on this machine", () => {
  async function sdc(args: string[]) {
    let stdout = "";
    let stderr = "";
    const code = await main(args, { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t), cwd: REPO });
    return { code, stdout, stderr };
  }

  it("text and --json: exit 0, CPU because the CUDA provider library is not installed", async () => {
    const t = await sdc(["doctor"]);
    expect(t.code).toBe(0);
    expect(t.stdout.split("\n")[0]).toBe("execution provider: CPU: CUDA provider library not installed (run `npx sdc setup cuda`)");
    expect(t.stdout).toMatch(/CUDA provider\s+not installed/);
    const j = await sdc(["doctor", "--json"]);
    expect(j.code).toBe(0);
    const r = JSON.parse(j.stdout) as { ok: boolean; ep: string; device: string; provider: { installed: boolean } };
    expect(r).toMatchObject({ ok: true, ep: "cpu", device: "auto", provider: { installed: false } });
  });

  it("a pipeline with device: cuda: exit 2, the problem at its runtime.device line with the setup hint", async () => {
    const dir = tempDir("sdc-doctor-cli-");
    const file = path.join(dir, "gpu.yaml");
    fs.writeFileSync(file, `version: 1\nname: gpu\nmodel:\n  from: ${JSON.stringify(path.join(REPO, "models", "tiny-sd"))}\nruntime:\n  device: cuda\n`);
    const t = await sdc(["doctor", file]);
    expect(t.code).toBe(2);
    expect(t.stderr).toContain(`${file}:6:11: runtime.device is cuda, but CUDA provider library not installed`);
    expect(t.stderr).toContain("hint: run `npx sdc setup cuda`");
    const j = await sdc(["doctor", file, "--json"]);
    expect(j.code).toBe(2);
    const r = JSON.parse(j.stdout) as { ok: boolean; device: string; problems: { at?: { line: number; col: number } }[] };
    expect(r).toMatchObject({ ok: false, device: "cuda" });
    expect(r.problems[0]!.at).toMatchObject({ line: 6, col: 11 });
  });
});
