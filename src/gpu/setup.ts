/**
 * `sdc setup cuda`: install onnxruntime 1.29's CUDA provider where onnxruntime-node loads it from,
 * then check the libraries it needs (./doctor.ts).
 *
 * onnxruntime-node's own install script would download the provider from NuGet; sdc denies that
 * script (package.json `allowScripts`, .npmrc `onnxruntime-node-install=skip`), as NuGet is not always reachable and a failed download
 * fails `npm ci`. The same files ship on the npm registry, in CUDA_PACKAGE (built for onnxruntime
 * 1.29.0 and CUDA 13): `npm pack` fetches it (through npm's registry settings, proxy and cache), or
 * `--from` names a tarball fetched elsewhere (`npm pack <name>@<version>` on a connected machine).
 * Either way the tarball must have CUDA_PACKAGE's integrity: nothing else is installed. The two
 * provider files are copied next to the binding under temporary names and renamed into place, with
 * a stamp saying what they are. `npm ci` removes them again with node_modules.
 */
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { UserError } from "../util/errors.js";
import { tempSibling } from "../util/fs.js";
import { hashFile, sha256File } from "../util/hash.js";
import { CUDA_PACKAGE, ORT_VERSION, ortInstall, PROVIDER_FILES, SETUP_COMMAND, STAMP_FILE } from "./cuda.js";

export interface SetupCudaOptions {
  /** A tarball of CUDA_PACKAGE instead of fetching it with `npm pack`. */
  from?: string;
  /** Reinstall even when the provider is installed. */
  force?: boolean;
  /** Remove the provider instead. */
  remove?: boolean;
  /** onnxruntime-node's native folder and version (default: the installed package's). */
  ort?: { version: string; binDir: string };
  /** The integrity the tarball must have (default: CUDA_PACKAGE's). */
  integrity?: string;
  log?: (line: string) => void;
  /** Paths as shown. */
  display?: (p: string) => string;
}

export interface SetupCudaResult {
  action: "installed" | "already installed" | "removed" | "not installed";
  dir: string;
  files: { name: string; bytes: number; sha256: string }[];
  source: string;
}

/** npm's integrity string (sha512, base64) of a file. */
export function fileIntegrity(file: string): string {
  return `sha512-${hashFile(file, "sha512").toString("base64")}`;
}

const SPEC = `${CUDA_PACKAGE.name}@${CUDA_PACKAGE.version}`;

/** Fetch CUDA_PACKAGE's tarball into `dir` with npm (its registry, proxy and cache settings). */
function npmPack(dir: string, log: (l: string) => void): string {
  log(`fetching ${SPEC} with npm pack (about 180 MB; npm keeps it in its cache)`);
  const r = spawnSync("npm", ["pack", SPEC, "--pack-destination", dir, "--json", "--silent"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 1 << 24 });
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : (r.stderr.split("\n").find((l) => /error/i.test(l)) ?? r.stderr.trim().split("\n")[0] ?? `exit code ${r.status}`);
    throw new UserError({
      message: `npm could not fetch ${SPEC}: ${why.trim()}`,
      subject: "sdc setup cuda",
      hint: `check that npm can reach its registry (npm ping), or fetch the tarball on a connected machine with \`npm pack ${SPEC}\` and run \`${SETUP_COMMAND} --from <file.tgz>\``,
    });
  }
  const name = (JSON.parse(r.stdout) as { filename: string }[])[0]?.filename;
  const file = name ? path.join(dir, name) : "";
  if (!name || !fs.existsSync(file)) throw new Error(`npm pack wrote no tarball into ${dir}`);
  return file;
}

function removeProvider(binDir: string): string[] {
  const removed: string[] = [];
  for (const f of [...PROVIDER_FILES, STAMP_FILE]) {
    const p = path.join(binDir, f);
    if (fs.existsSync(p)) {
      fs.rmSync(p);
      removed.push(f);
    }
  }
  return removed;
}

export function setupCuda(o: SetupCudaOptions = {}): SetupCudaResult {
  const log = o.log ?? (() => {});
  const show = o.display ?? ((p: string) => p);
  const source = SPEC;
  if (!o.ort && `${process.platform}/${process.arch}` !== "linux/x64")
    throw new UserError({ message: `${SPEC} carries onnxruntime's CUDA provider for linux/x64 only, not ${process.platform}/${process.arch}`, subject: "sdc setup cuda", hint: "run on the CPU (runtime.device: cpu)" });
  const ort = o.ort ?? ortInstall();
  if (!ort) throw new UserError({ message: "onnxruntime-node is not installed", subject: "sdc setup cuda", hint: "run `npm ci` in sdc's folder first" });
  const dir = ort.binDir;

  if (o.remove) {
    const removed = removeProvider(dir);
    log(removed.length ? `removed ${removed.join(", ")} from ${show(dir)}` : `no CUDA provider in ${show(dir)}`);
    return { action: removed.length ? "removed" : "not installed", dir, files: [], source };
  }
  if (ort.version !== ORT_VERSION)
    throw new UserError({
      message: `onnxruntime-node is ${ort.version}, but ${SPEC}'s CUDA provider is built for ${ORT_VERSION}`,
      subject: "sdc setup cuda",
      hint: `install sdc's pinned onnxruntime-node ${ORT_VERSION} (npm ci)`,
    });

  const present = PROVIDER_FILES.every((f) => fs.existsSync(path.join(dir, f)));
  if (present && !o.force) {
    log(`the CUDA provider is already installed in ${show(dir)} (--force reinstalls it)`);
    return { action: "already installed", dir, files: PROVIDER_FILES.map((name) => ({ name, bytes: fs.statSync(path.join(dir, name)).size, sha256: "" })), source };
  }

  const work = fs.mkdtempSync(path.join(os.tmpdir(), "sdc-setup-cuda-"));
  try {
    let tgz: string;
    if (o.from !== undefined) {
      tgz = o.from;
      if (!fs.existsSync(tgz) || !fs.statSync(tgz).isFile())
        throw new UserError({ message: "no such file", subject: `--from ${show(tgz)}`, hint: `give the tarball \`npm pack ${SPEC}\` wrote` });
    } else tgz = npmPack(work, log);

    const want = o.integrity ?? CUDA_PACKAGE.integrity;
    const got = fileIntegrity(tgz);
    if (got !== want)
      throw new UserError({
        message: `this is not ${SPEC}: its integrity is ${got.slice(0, 24)}…, the package's is ${want.slice(0, 24)}…`,
        subject: o.from !== undefined ? `--from ${show(tgz)}` : show(tgz),
        hint: `fetch it with \`npm pack ${SPEC}\`; a provider from elsewhere goes into ${show(dir)} by hand`,
      });

    const members = PROVIDER_FILES.map((f) => `${CUDA_PACKAGE.folder}/${f}`);
    const out = path.join(work, "x");
    fs.mkdirSync(out);
    try {
      execFileSync("tar", ["-xzf", path.resolve(tgz), "-C", out, ...members], { stdio: ["ignore", "ignore", "pipe"] });
    } catch (e) {
      const stderr = String((e as { stderr?: Buffer }).stderr ?? "").trim();
      throw new UserError({ message: `could not unpack ${members.join(", ")}: ${stderr.split("\n")[0] || (e as Error).message}`, subject: show(tgz), hint: "check that `tar` is installed and the tarball is whole" });
    }

    log(`installing ${PROVIDER_FILES.join(", ")} into ${show(dir)}`);
    const files: SetupCudaResult["files"] = [];
    const temps: [string, string][] = [];
    try {
      for (const f of PROVIDER_FILES) {
        const src = path.join(out, CUDA_PACKAGE.folder, f);
        const target = path.join(dir, f);
        const tmp = tempSibling(target);
        temps.push([tmp, target]);
        fs.copyFileSync(src, tmp);
        fs.chmodSync(tmp, 0o755);
        files.push({ name: f, bytes: fs.statSync(tmp).size, sha256: sha256File(tmp) });
      }
      // both files copied before either is in place: a full disk leaves the old state
      for (const [tmp, target] of temps) fs.renameSync(tmp, target);
    } catch (e) {
      for (const [tmp] of temps) fs.rmSync(tmp, { force: true });
      throw e;
    }
    const stamp = { package: CUDA_PACKAGE.name, version: CUDA_PACKAGE.version, integrity: want, onnxruntime: ORT_VERSION, files };
    const stampTmp = tempSibling(path.join(dir, STAMP_FILE));
    fs.writeFileSync(stampTmp, `${JSON.stringify(stamp, null, 2)}\n`);
    fs.renameSync(stampTmp, path.join(dir, STAMP_FILE));
    return { action: "installed", dir, files, source };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
