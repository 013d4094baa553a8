/**
 * `sdc setup cuda`: installs the two provider files from a tarball laid out as the npm package is,
 * only when the tarball has the expected integrity, atomically (no temporaries left, nothing
 * half-installed), with a stamp `sdc doctor` reports; --force reinstalls, --remove removes. The
 * tarballs here are built in a temp dir with constructed libraries; the real package's integrity
 * is what the CLI checks (a constructed tarball is refused there).
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { doctor } from "../../src/gpu/doctor.js";
import { CUDA_PACKAGE, ortInstall, PROVIDER_FILES, STAMP_FILE } from "../../src/gpu/cuda.js";
import { fileIntegrity, setupCuda } from "../../src/gpu/setup.js";
import { UserError } from "../../src/util/errors.js";
import { REPO, tempDir } from "../helpers/repo.js";
import { elfWithDynamic } from "./elf-writer.js";

const NEEDED = ["libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10", "libcudart.so.13", "libcuda.so.1", "libstdc++.so.6", "libc.so.6"];

/** A tarball shaped like CUDA_PACKAGE's: package/package.json and the provider files under its folder. */
function fakePackage(o: { withProvider?: boolean } = {}): { tgz: string; files: Record<string, Buffer> } {
  const dir = tempDir("sdc-fake-pkg-");
  const files: Record<string, Buffer> = {
    libonnxruntime_providers_cuda: elfWithDynamic({ needed: NEEDED, soname: "libonnxruntime_providers_cuda.so" }),
    libonnxruntime_providers_shared: elfWithDynamic({ needed: ["libc.so.6"], soname: "libonnxruntime_providers_shared.so" }),
  };
  const folder = path.join(dir, CUDA_PACKAGE.folder);
  fs.mkdirSync(folder, { recursive: true });
  fs.writeFileSync(path.join(dir, "package", "package.json"), JSON.stringify({ name: CUDA_PACKAGE.name, version: CUDA_PACKAGE.version }));
  if (o.withProvider !== false) for (const [name, data] of Object.entries(files)) fs.writeFileSync(path.join(folder, `${name}.so`), data);
  const tgz = path.join(tempDir("sdc-fake-tgz-"), "pkg.tgz");
  execFileSync("tar", ["-czf", tgz, "-C", dir, "package"]);
  return { tgz, files };
}

const leftovers = (dir: string) => fs.readdirSync(dir).filter((n) => n.startsWith(".sdc-tmp-"));

describe("setupCuda", () => {
  it("installs both provider files and a stamp from a tarball with the expected integrity; doctor then reads the installed provider", () => {
    const { tgz, files } = fakePackage();
    const bin = tempDir("sdc-ort-bin-");
    fs.writeFileSync(path.join(bin, "libonnxruntime.so.1"), "binding's own library");
    const ort = { version: "1.29.0", binDir: bin };
    const r = setupCuda({ from: tgz, ort, integrity: fileIntegrity(tgz) });
    expect(r.action).toBe("installed");
    for (const f of PROVIDER_FILES) expect(fs.readFileSync(path.join(bin, f))).toEqual(files[f.replace(/\.so$/, "")]);
    expect(fs.statSync(path.join(bin, PROVIDER_FILES[0])).mode & 0o111).not.toBe(0);
    expect(fs.readFileSync(path.join(bin, "libonnxruntime.so.1"), "utf8")).toBe("binding's own library");
    expect(leftovers(bin)).toEqual([]);
    const stamp = JSON.parse(fs.readFileSync(path.join(bin, STAMP_FILE), "utf8")) as { package: string; version: string; files: { name: string; bytes: number }[] };
    expect(stamp).toMatchObject({ package: CUDA_PACKAGE.name, version: CUDA_PACKAGE.version });
    expect(stamp.files.map((f) => [f.name, f.bytes])).toEqual(PROVIDER_FILES.map((f) => [f, files[f.replace(/\.so$/, "")]!.length]));

    const d = doctor(null, { ort, libEnv: { ldLibraryPath: [], cache: new Map(), defaultDirs: [], offPathDirs: [] }, platform: "linux/x64", driver: { version: null, devices: [] } });
    expect(d.provider).toMatchObject({ installed: true, source: `${CUDA_PACKAGE.name}@${CUDA_PACKAGE.version}`, problem: null, needed: NEEDED });
    expect(d.reason).toBe("libcublasLt.so.13 (CUDA 13 cuBLASLt) not found");

    expect(setupCuda({ from: tgz, ort, integrity: fileIntegrity(tgz) }).action).toBe("already installed");
    fs.writeFileSync(path.join(bin, PROVIDER_FILES[0]), "damaged");
    expect(setupCuda({ from: tgz, ort, integrity: fileIntegrity(tgz), force: true }).action).toBe("installed");
    expect(fs.readFileSync(path.join(bin, PROVIDER_FILES[0]))).toEqual(files.libonnxruntime_providers_cuda);

    expect(setupCuda({ ort, remove: true }).action).toBe("removed");
    expect(fs.readdirSync(bin)).toEqual(["libonnxruntime.so.1"]);
    expect(setupCuda({ ort, remove: true }).action).toBe("not installed");
  });

  it("refuses a tarball that is not the package (integrity), a tarball without the provider, and another onnxruntime version; installs nothing", () => {
    const bin = tempDir("sdc-ort-bin-");
    const ort = { version: "1.29.0", binDir: bin };
    const { tgz } = fakePackage();
    const err = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(UserError);
        return (e as UserError).problems[0]!;
      }
      throw new Error("expected a UserError");
    };
    const p = err(() => setupCuda({ from: tgz, ort }));
    expect(p.message).toMatch(new RegExp(`^this is not ${CUDA_PACKAGE.name.replace(/\./g, "\\.")}@0\\.4\\.9: its integrity is sha512-`));
    expect(p.subject).toBe(`--from ${tgz}`);

    const empty = fakePackage({ withProvider: false }).tgz;
    expect(err(() => setupCuda({ from: empty, ort, integrity: fileIntegrity(empty) })).message).toMatch(/^could not unpack package\/Plugins\/Linux\/x64\/libonnxruntime_providers_cuda\.so/);

    expect(err(() => setupCuda({ from: tgz, ort: { version: "1.22.0", binDir: bin }, integrity: fileIntegrity(tgz) })).message).toBe(
      `onnxruntime-node is 1.22.0, but ${CUDA_PACKAGE.name}@${CUDA_PACKAGE.version}'s CUDA provider is built for 1.29.0`,
    );
    expect(err(() => setupCuda({ from: path.join(bin, "nope.tgz"), ort })).message).toBe("no such file");
    expect(fs.readdirSync(bin)).toEqual([]);
  });
});

describe("sdc setup (CLI)", () => {
  async function sdc(args: string[]) {
    let stdout = "";
    let stderr = "";
    const code = await main(args, { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t), cwd: REPO });
    return { code, stdout, stderr };
  }

  it("a tarball that is not the package: exit 2 naming --from, onnxruntime-node's folder untouched; an unknown target is a usage error", async () => {
    const ort = ortInstall()!;
    const before = fs.readdirSync(ort.binDir).sort();
    const { tgz } = fakePackage();
    const r = await sdc(["setup", "cuda", "--from", tgz]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`--from ${tgz}: this is not ${CUDA_PACKAGE.name}@${CUDA_PACKAGE.version}`);
    expect(fs.readdirSync(ort.binDir).sort()).toEqual(before);
    const u = await sdc(["setup", "gpu"]);
    expect(u.code).toBe(2);
    expect(u.stderr).toMatch(/'gpu' is invalid.*Allowed choices are cuda/s);
  });
});
