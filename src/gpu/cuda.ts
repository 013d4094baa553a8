/**
 * Can onnxruntime-node run on CUDA here, and if not, what is missing: the CUDA provider library
 * next to onnxruntime's binding, and the CUDA, cuBLAS and cuDNN libraries that provider loads.
 *
 * The libraries looked for are those the installed provider was linked against (its DT_NEEDED,
 * read by ./elf.ts), plus cuDNN and NVRTC, which onnxruntime loads at run time (they are in no
 * DT_NEEDED entry). They are searched where the dynamic loader searches when onnxruntime opens the
 * provider: LD_LIBRARY_PATH as the process started with it, the loader cache (`ldconfig -p`), the
 * default folders. A library found only elsewhere (a CUDA toolkit folder, a pip `nvidia-*` wheel)
 * is reported with the LD_LIBRARY_PATH that would make it visible; one found with another major
 * version (libcudart.so.12 where .so.13 is needed) is named as the wrong CUDA version.
 *
 * Everything takes a `LibEnv`, so tests run the real search on constructed folders.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import { createRequire } from "node:module";
import * as os from "node:os";
import * as path from "node:path";
import { readElfDynamic } from "./elf.js";

/** The onnxruntime-node version sdc pins, and the npm package carrying its CUDA provider. */
export const ORT_VERSION = "1.29.0";
export const CUDA_PACKAGE = {
  name: "com.github.asus4.onnxruntime.linux-x64-gpu",
  version: "0.4.9",
  /** npm's integrity of the 0.4.9 tarball: `sdc setup cuda` installs nothing else. */
  integrity: "sha512-FopIhNE/Ng+v2X65wVc9clPCBCvhvA53Hxo2U0Kf5fGdVsC7iCA+mZ0KLWggcQAj7TIZ6pNidR4AC10g74Xo6w==",
  /** Where the provider files sit inside the tarball. */
  folder: "package/Plugins/Linux/x64",
} as const;
/** The files onnxruntime loads for `executionProviders: ['cuda']`, next to its binding. */
export const PROVIDER_FILES = ["libonnxruntime_providers_cuda.so", "libonnxruntime_providers_shared.so"] as const;
/** Written by `sdc setup cuda` next to the provider: what it installed. */
export const STAMP_FILE = "sdc-cuda-provider.json";
export const SETUP_COMMAND = "npx sdc setup cuda";

/**
 * DT_NEEDED of CUDA_PACKAGE's provider (ORT 1.29.0 built for CUDA 13), as `readelf -d` lists it: what
 * is looked for before the provider is installed. Once installed, the file itself is read.
 */
export const PACKAGE_PROVIDER_NEEDED = ["libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10", "libcudart.so.13", "libcuda.so.1"];

/** Where the loader and the search look. */
export interface LibEnv {
  /** LD_LIBRARY_PATH, split. */
  ldLibraryPath: string[];
  /** The loader cache: soname → paths (`ldconfig -p`). */
  cache: Map<string, string[]>;
  /** The loader's default folders. */
  defaultDirs: string[];
  /** Folders the loader does not search but CUDA libraries are often installed in. */
  offPathDirs: string[];
}

export type LibRole = "needed" | "loaded at run time" | "driver";

export interface LibCheck {
  soname: string;
  /** What it is, for a person: "CUDA 13 runtime", "cuDNN 9". */
  what: string;
  role: LibRole;
  /** A missing optional library (NVRTC) does not stop a run. */
  required: boolean;
  /** Where the loader finds it, or null. */
  path: string | null;
  /** The file it resolves to, when its name carries more of the version (libcudnn.so.9.14.0). */
  file: string | null;
  /** Found only outside the loader's search path. */
  offPath: string | null;
  /** Other major versions of the same library that the loader does find (wrong CUDA version). */
  otherVersions: string[];
}

const SYSTEM_LIBS = /^(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux[-\w]*)\.so/;

const LIB_NAMES: [RegExp, string][] = [
  [/^libcudart\.so/, "CUDA runtime"],
  [/^libcublasLt\.so/, "cuBLASLt"],
  [/^libcublas\.so/, "cuBLAS"],
  [/^libcurand\.so/, "cuRAND"],
  [/^libcufft\.so/, "cuFFT"],
  [/^libcudnn\.so/, "cuDNN"],
  [/^libnvrtc\.so/, "NVRTC"],
  [/^libcuda\.so/, "NVIDIA driver"],
];

/** "libcudart.so.13" → ["libcudart.so", 13]. */
export function splitSoname(soname: string): [string, number | null] {
  const m = /^(.*\.so)\.(\d+)$/.exec(soname);
  return m ? [m[1]!, Number(m[2])] : [soname, null];
}

/** The CUDA major version a provider was built for, from its libcudart dependency. */
export function cudaMajor(needed: string[]): number | null {
  const rt = needed.find((n) => n.startsWith("libcudart.so."));
  return rt ? splitSoname(rt)[1] : null;
}

function describe(soname: string, cuda: number | null): string {
  const base = LIB_NAMES.find(([re]) => re.test(soname))?.[1] ?? soname;
  const [, major] = splitSoname(soname);
  if (base === "cuDNN") return `cuDNN ${major ?? ""}`.trim();
  if (base === "NVIDIA driver") return base;
  return cuda ? `CUDA ${cuda} ${base}` : base;
}

/**
 * The libraries a provider with these DT_NEEDED entries loads: its non-system needs, then cuDNN 9
 * (every convolution; onnxruntime 1.2x loads it at run time) and the matching NVRTC (optional).
 */
export function requiredLibraries(needed: string[]): { soname: string; what: string; role: LibRole; required: boolean }[] {
  const cuda = cudaMajor(needed);
  const out = needed
    .filter((n) => !SYSTEM_LIBS.test(n) && !n.startsWith("libonnxruntime"))
    .map((soname) => ({ soname, what: describe(soname, cuda), role: (soname === "libcuda.so.1" ? "driver" : "needed") as LibRole, required: true }));
  const later = ["libcudnn.so.9", ...(cuda ? [`libnvrtc.so.${cuda}`] : [])];
  for (const soname of later)
    if (!out.some((l) => l.soname === soname)) out.push({ soname, what: describe(soname, cuda), role: "loaded at run time", required: !soname.startsWith("libnvrtc") });
  return out;
}

/** `ldconfig -p` as soname → paths (x86-64 entries, or all when none are tagged). */
export function parseLdconfig(text: string): Map<string, string[]> {
  const cache = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const m = /^\s*(\S+)\s+\(([^)]*)\)\s+=>\s+(\S+)\s*$/.exec(line);
    if (!m) continue;
    if (process.arch === "x64" && !/x86-64/.test(m[2]!)) continue;
    const list = cache.get(m[1]!) ?? [];
    list.push(m[3]!);
    cache.set(m[1]!, list);
  }
  return cache;
}

function ldconfigCache(): Map<string, string[]> {
  for (const exe of ["/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"]) {
    try {
      return parseLdconfig(execFileSync(exe, ["-p"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], timeout: 10_000 }));
    } catch {
      // next candidate
    }
  }
  return new Map();
}

/** Expand `*` in path segments (e.g. /usr/local/cuda-*\/lib64) to the folders that exist. */
export function expandGlob(pattern: string): string[] {
  const parts = pattern.split("/");
  let bases = [parts[0] === "" ? "/" : parts[0]!];
  for (const part of parts.slice(1)) {
    if (!part) continue;
    const next: string[] = [];
    for (const b of bases) {
      if (!part.includes("*")) {
        next.push(path.join(b, part));
        continue;
      }
      const re = new RegExp(`^${part.split("*").map((s) => s.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*")}$`);
      let names: string[] = [];
      try {
        names = fs.readdirSync(b).filter((n) => re.test(n)).sort();
      } catch {
        // missing folder: nothing here
      }
      next.push(...names.map((n) => path.join(b, n)));
    }
    bases = next;
  }
  return bases.filter(isDir);
}

function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

const DEFAULT_DIRS = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"];

/** Where CUDA libraries live outside the loader's path: toolkits, WSL's driver, pip wheels (nvidia/<lib>/lib), conda. */
function offPathPatterns(env: NodeJS.ProcessEnv): string[] {
  const home = os.homedir();
  const py = ["/usr/lib", "/usr/local/lib", `${home}/.local/lib`, ...(env.VIRTUAL_ENV ? [`${env.VIRTUAL_ENV}/lib`] : []), ...(env.CONDA_PREFIX ? [`${env.CONDA_PREFIX}/lib`] : []), "/opt/*/lib", "/opt/*/.venv/lib"];
  return [
    "/usr/local/cuda/lib64",
    "/usr/local/cuda-*/lib64",
    "/usr/local/cuda*/targets/x86_64-linux/lib",
    "/opt/cuda/lib64",
    "/usr/lib/wsl/lib",
    ...(env.CUDA_HOME ? [`${env.CUDA_HOME}/lib64`] : []),
    ...(env.CUDA_PATH ? [`${env.CUDA_PATH}/lib64`] : []),
    ...(env.CONDA_PREFIX ? [`${env.CONDA_PREFIX}/lib`] : []),
    ...py.flatMap((p) => [`${p}/python3*/site-packages/nvidia/*/lib`, `${p}/python3*/dist-packages/nvidia/*/lib`]),
  ];
}

/** This process's LibEnv: its LD_LIBRARY_PATH, the loader cache, the usual CUDA folders. */
export function systemLibEnv(env: NodeJS.ProcessEnv = process.env): LibEnv {
  return {
    ldLibraryPath: (env.LD_LIBRARY_PATH ?? "").split(":").filter(Boolean),
    cache: ldconfigCache(),
    defaultDirs: DEFAULT_DIRS,
    offPathDirs: [...new Set(offPathPatterns(env).flatMap(expandGlob))],
  };
}

function exists(p: string): boolean {
  try {
    fs.statSync(p);
    return true;
  } catch {
    return false;
  }
}

/** A driver stub (linking only) is never the driver. */
const usable = (p: string) => !p.split(path.sep).includes("stubs");

/** The loader's order for a library dlopened by a file without RUNPATH: LD_LIBRARY_PATH, its cache, the default folders. */
function loaderPaths(soname: string, env: LibEnv, runpath: string[]): string[] {
  const dirs = [...runpath, ...env.ldLibraryPath];
  return [...dirs.map((d) => path.join(d, soname)).filter(exists), ...(env.cache.get(soname) ?? []).filter(exists), ...env.defaultDirs.map((d) => path.join(d, soname)).filter(exists)].filter(usable);
}

/** Files named `<base>.<n>` with another major n, in the loader's folders. */
function otherMajors(soname: string, env: LibEnv, runpath: string[]): string[] {
  const [base, major] = splitSoname(soname);
  if (major === null) return [];
  const found = new Set<string>();
  for (const [name, paths] of env.cache) {
    const [b, m] = splitSoname(name);
    if (b === base && m !== null && m !== major) for (const p of paths) if (usable(p)) found.add(p);
  }
  for (const d of [...runpath, ...env.ldLibraryPath, ...env.defaultDirs]) {
    let names: string[] = [];
    try {
      names = fs.readdirSync(d);
    } catch {
      continue;
    }
    for (const n of names) {
      const [b, m] = splitSoname(n);
      if (b === base && m !== null && m !== major && usable(path.join(d, n))) found.add(path.join(d, n));
    }
  }
  return [...found].sort();
}

/** Locate each library as the loader would, and where it is otherwise. `runpath`: the provider's own, $ORIGIN expanded. */
export function checkLibraries(libs: { soname: string; what: string; role: LibRole; required: boolean }[], env: LibEnv, runpath: string[] = []): LibCheck[] {
  return libs.map((l) => {
    const p = loaderPaths(l.soname, env, runpath)[0] ?? null;
    let file: string | null = null;
    if (p) {
      try {
        const real = path.basename(fs.realpathSync(p));
        file = real !== l.soname ? real : null;
      } catch {
        file = null;
      }
    }
    const offPath = p ? null : (env.offPathDirs.map((d) => path.join(d, l.soname)).find((f) => exists(f) && usable(f)) ?? null);
    return { ...l, path: p, file, offPath, otherVersions: p ? [] : otherMajors(l.soname, env, runpath) };
  });
}

/** onnxruntime-node's installed package: its version and the folder of its native libraries (null when it cannot be resolved). */
export function ortInstall(): { version: string; binDir: string; root: string } | null {
  try {
    const require = createRequire(import.meta.url);
    const pj = require.resolve("onnxruntime-node/package.json");
    const pkg = JSON.parse(fs.readFileSync(pj, "utf8")) as { version: string; binary?: { napi_versions?: number[] } };
    const napi = pkg.binary?.napi_versions?.[0] ?? 6;
    const root = path.dirname(pj);
    return { version: pkg.version, root, binDir: path.join(root, "bin", `napi-v${napi}`, process.platform, process.arch) };
  } catch {
    return null;
  }
}

export interface ProviderStatus {
  dir: string;
  files: { name: string; present: boolean }[];
  installed: boolean;
  /** What `sdc setup cuda` recorded, when it installed these files. */
  source: string | null;
  /** DT_NEEDED of the installed provider (PACKAGE_PROVIDER_NEEDED before it is installed). */
  needed: string[];
  /** The provider file could not be read as an x86-64 library. */
  problem: string | null;
}

export function providerStatus(binDir: string): ProviderStatus {
  const files = PROVIDER_FILES.map((name) => ({ name, present: exists(path.join(binDir, name)) }));
  const installed = files.every((f) => f.present);
  let source: string | null = null;
  try {
    const s = JSON.parse(fs.readFileSync(path.join(binDir, STAMP_FILE), "utf8")) as { package?: string; version?: string };
    if (s.package && s.version) source = `${s.package}@${s.version}`;
  } catch {
    source = null;
  }
  let needed = PACKAGE_PROVIDER_NEEDED;
  let problem: string | null = null;
  if (files[0]!.present) {
    try {
      const elf = readElfDynamic(path.join(binDir, PROVIDER_FILES[0]));
      if (process.arch === "x64" && elf.machine !== 62) problem = `${PROVIDER_FILES[0]} is not built for x86-64 (ELF machine ${elf.machine})`;
      needed = elf.needed;
    } catch (e) {
      problem = `${PROVIDER_FILES[0]} cannot be read as a shared library: ${(e as Error).message}`;
    }
  }
  return { dir: binDir, files, installed, source, needed, problem };
}

/** The provider's RUNPATH with $ORIGIN expanded to its folder. */
export function providerRunpath(binDir: string): string[] {
  try {
    return readElfDynamic(path.join(binDir, PROVIDER_FILES[0])).runpath.map((r) => r.replace(/\$(ORIGIN|\{ORIGIN\})/g, binDir));
  } catch {
    return [];
  }
}

/** The NVIDIA kernel driver as the system shows it: its version and device nodes. */
export function nvidiaDriver(): { version: string | null; devices: string[] } {
  let version: string | null = null;
  try {
    const m = /Kernel Module\s+(?:for \S+\s+)?([\d.]+)/.exec(fs.readFileSync("/proc/driver/nvidia/version", "utf8"));
    version = m ? m[1]! : null;
  } catch {
    version = null;
  }
  let devices: string[] = [];
  try {
    devices = fs.readdirSync("/dev").filter((n) => /^nvidia\d+$/.test(n) || n === "dxg").map((n) => `/dev/${n}`);
  } catch {
    devices = [];
  }
  return { version, devices };
}
