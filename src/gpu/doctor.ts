/**
 * `sdc doctor`: which execution provider a run would use here, why, and what is missing for CUDA.
 *
 * It decides as src/runtime/session.ts does at run time (device cpu: the CPU; cuda: CUDA or an
 * error; auto: CUDA when its provider is installed, else the CPU with the reason), and looks
 * further than a run does before its first session: the provider's files, the CUDA, cuBLAS and
 * cuDNN libraries that provider loads (./cuda.ts), and the NVIDIA driver. A verdict of CUDA means
 * every file onnxruntime needs was found; the first CUDA session of a run is what confirms it.
 *
 * `ok` is false only when the device asked for cannot be had (a pipeline with `device: cuda`
 * here without CUDA): the CLI then exits 2 with the problems located at `runtime.device`.
 */
import * as path from "node:path";
import type { LoadedPipeline } from "../config/load.js";
import type { Problem } from "../util/errors.js";
import {
  checkLibraries,
  CUDA_PACKAGE,
  nvidiaDriver,
  ORT_VERSION,
  ortInstall,
  providerRunpath,
  providerStatus,
  requiredLibraries,
  SETUP_COMMAND,
  splitSoname,
  systemLibEnv,
  type LibCheck,
  type LibEnv,
  type ProviderStatus,
} from "./cuda.js";

export type Device = "auto" | "cuda" | "cpu";

export interface DoctorReport {
  /** A run would work: false only when the device asked for cannot be had. */
  ok: boolean;
  device: Device;
  /** Where the device was set ("pipelines/x.yaml:12:11"), or why it is what it is. */
  deviceFrom: string;
  /** The execution provider a run would use. */
  ep: "cuda" | "cpu";
  /** Why, in one line. */
  reason: string;
  platform: string;
  onnxruntime: { version: string | null; expected: string; dir: string | null };
  provider: ProviderStatus | null;
  libraries: LibCheck[];
  driver: { version: string | null; devices: string[] };
  /** What to do, most important first. */
  hints: string[];
  /** When !ok: the problems, located at runtime.device. */
  problems: Problem[];
}

export interface DoctorOptions {
  /** Where libraries are looked for (default: this process's). */
  libEnv?: LibEnv;
  /** onnxruntime-node's native folder and version (default: the installed package's). */
  ort?: { version: string; binDir: string } | null;
  platform?: string;
  driver?: { version: string | null; devices: string[] };
  /** Paths as shown (default: as they are). */
  display?: (p: string) => string;
}

/** What would stop CUDA here, first reason first; empty when everything onnxruntime needs was found. */
function cudaBlockers(r: Omit<DoctorReport, "ok" | "ep" | "reason" | "hints" | "problems" | "device" | "deviceFrom">, show: (p: string) => string): { reason: string; hint: string }[] {
  const out: { reason: string; hint: string }[] = [];
  if (r.platform !== "linux/x64") {
    out.push({ reason: `onnxruntime-node has no CUDA provider sdc can install for ${r.platform} (only linux/x64)`, hint: "run on the CPU (runtime.device: cpu)" });
    return out;
  }
  if (!r.onnxruntime.version || !r.onnxruntime.dir) {
    out.push({ reason: "onnxruntime-node is not installed", hint: "run `npm ci` in sdc's folder" });
    return out;
  }
  const p = r.provider!;
  if (!p.installed) {
    const missing = p.files.filter((f) => !f.present).map((f) => f.name);
    out.push({
      reason: "CUDA provider library not installed",
      hint: `run \`${SETUP_COMMAND}\` (it installs ${missing.join(" and ")} from the npm package ${CUDA_PACKAGE.name}@${CUDA_PACKAGE.version} into ${show(p.dir)})`,
    });
  } else if (p.problem) out.push({ reason: p.problem, hint: `reinstall it: \`${SETUP_COMMAND} --force\`` });
  if (r.onnxruntime.version !== ORT_VERSION)
    out.push({ reason: `onnxruntime-node is ${r.onnxruntime.version}, the CUDA provider is built for ${ORT_VERSION}`, hint: `install onnxruntime-node ${ORT_VERSION} (npm ci)` });
  const offPath = new Set<string>();
  for (const l of r.libraries.filter((x) => x.required && !x.path)) {
    if (l.role === "driver") {
      out.push({ reason: "no NVIDIA driver found (libcuda.so.1)", hint: "install the NVIDIA driver (it provides libcuda.so.1), or run on the CPU" });
      continue;
    }
    if (l.offPath) {
      offPath.add(path.dirname(l.offPath));
      out.push({ reason: `${l.soname} (${l.what}) is in ${show(path.dirname(l.offPath))}, which the loader does not search`, hint: "" });
    } else if (l.otherVersions.length) {
      const [, want] = splitSoname(l.soname);
      const have = l.otherVersions.map((f) => path.basename(f)).join(", ");
      out.push({ reason: `${l.soname} (${l.what}) not found; the loader finds ${have}, another major version`, hint: `install the version-${want} library (the provider was built against it)` });
    } else out.push({ reason: `${l.soname} (${l.what}) not found`, hint: installHint(l) });
  }
  if (offPath.size) {
    const hint = `export LD_LIBRARY_PATH=${[...offPath].join(":")}\${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} before running sdc`;
    for (const b of out) if (b.hint === "") b.hint = hint;
  }
  return out;
}

function installHint(l: LibCheck): string {
  const [, major] = splitSoname(l.soname);
  if (l.soname.startsWith("libcudnn")) return `install cuDNN ${major} for CUDA (e.g. pip install nvidia-cudnn-cu13, or the distribution's cudnn${major} package) and make its lib folder visible (LD_LIBRARY_PATH)`;
  return `install the CUDA ${l.what.split(" ")[1] ?? ""} toolkit libraries (e.g. the distribution's CUDA packages, or pip's nvidia-*-cu13 wheels) and make their lib folder visible (LD_LIBRARY_PATH)`;
}

/** Diagnose this machine for a pipeline (its runtime.device) or for a default run (device auto). */
export function doctor(p: LoadedPipeline | null, o: DoctorOptions = {}): DoctorReport {
  const show = o.display ?? ((x: string) => x);
  const platform = o.platform ?? `${process.platform}/${process.arch}`;
  const ort = o.ort === undefined ? ortInstall() : o.ort;
  const provider = ort ? providerStatus(ort.binDir) : null;
  const onLinux = platform === "linux/x64";
  const libEnv = onLinux ? (o.libEnv ?? systemLibEnv()) : null;
  const libraries = provider && libEnv ? checkLibraries(requiredLibraries(provider.needed), libEnv, provider.installed ? providerRunpath(provider.dir) : []) : [];
  const driver = o.driver ?? (onLinux ? nvidiaDriver() : { version: null, devices: [] });
  const base = { platform, onnxruntime: { version: ort?.version ?? null, expected: ORT_VERSION, dir: ort?.binDir ?? null }, provider, libraries, driver };
  const blockers = cudaBlockers(base, show);

  const device: Device = p ? p.config.runtime.device : "auto";
  const where = p ? p.where(["runtime", "device"]) : {};
  const at = where.at ? `${where.at.file}:${where.at.line}:${where.at.col}` : null;
  const deviceFrom = p ? (at ?? `${show(p.file)}, runtime.device`) : "no pipeline given: a run's default";
  const hints = [...new Set(blockers.map((b) => b.hint))];

  if (device === "cpu") return { ok: true, device, deviceFrom, ep: "cpu", reason: "runtime.device is cpu", ...base, hints: [], problems: [] };
  if (blockers.length === 0) {
    const reason = `the CUDA provider and the libraries it loads were found${driver.devices.length ? "" : " (no /dev/nvidia* device node is visible: the first session will tell)"}`;
    return { ok: true, device, deviceFrom, ep: "cuda", reason, ...base, hints: [], problems: [] };
  }
  const reason = blockers[0]!.reason;
  if (device === "auto") return { ok: true, device, deviceFrom, ep: "cpu", reason, ...base, hints, problems: [] };
  const problems: Problem[] = blockers.map((b, i) => ({
    message: i === 0 ? `runtime.device is cuda, but ${b.reason}` : b.reason,
    ...(i === 0 ? where : { subject: p ? show(p.file) : "cuda" }),
    hint: b.hint,
  }));
  problems[0]!.hint = `${problems[0]!.hint}; or set runtime.device: auto (falls back to the CPU) or cpu`;
  return { ok: false, device, deviceFrom, ep: "cpu", reason, ...base, hints, problems };
}

/** The report for a person. */
export function formatDoctor(r: DoctorReport, show: (p: string) => string = (x) => x): string {
  const lines: string[] = [];
  const row = (k: string, v: string) => lines.push(`  ${k.padEnd(18)} ${v}`);
  const first = r.hints[0] && r.device !== "cpu" ? ` (${r.hints[0].replace(/ \(it installs .*\)$/, "")})` : "";
  lines.push(`execution provider: ${r.ep === "cuda" ? "CUDA" : "CPU"}: ${r.reason}${r.ep === "cpu" ? first : ""}`);
  row("device", `${r.device} (${r.deviceFrom})`);
  row("platform", r.platform);
  row("onnxruntime-node", r.onnxruntime.version ? `${r.onnxruntime.version}${r.onnxruntime.version === r.onnxruntime.expected ? "" : ` (sdc pins ${r.onnxruntime.expected})`}` : "not installed");
  if (r.provider) {
    const p = r.provider;
    row("CUDA provider", p.installed ? `installed in ${show(p.dir)}${p.source ? ` (${p.source}, by sdc setup cuda)` : " (installed by hand)"}${p.problem ? `: ${p.problem}` : ""}` : `not installed (${p.files.filter((f) => !f.present).map((f) => f.name).join(", ")} missing)`);
  }
  if (r.libraries.length) {
    lines.push(`  libraries the CUDA provider loads${r.provider?.installed ? "" : ` (as ${CUDA_PACKAGE.name}@${CUDA_PACKAGE.version}'s provider needs them)`}:`);
    for (const l of r.libraries) {
      const state = l.path
        ? `${show(l.path)}${l.file ? ` (${l.file})` : ""}`
        : l.offPath
          ? `not on the loader's path; found ${show(l.offPath)}`
          : l.otherVersions.length
            ? `missing; wrong version found: ${l.otherVersions.map(show).join(", ")}`
            : `missing${l.required ? "" : " (optional)"}`;
      lines.push(`    ${(l.path ? "ok " : l.required ? "-- " : " . ") + l.soname.padEnd(20)} ${l.what.padEnd(22)} ${state}`);
    }
  }
  if (r.platform === "linux/x64") row("NVIDIA driver", r.driver.version ? `${r.driver.version}${r.driver.devices.length ? `, ${r.driver.devices.join(" ")}` : ", no device node"}` : r.driver.devices.length ? r.driver.devices.join(" ") : "none found (/proc/driver/nvidia/version)");
  if (r.hints.length && r.device !== "cpu") {
    lines.push("to run on CUDA:");
    for (const h of r.hints) lines.push(`  - ${h}`);
  }
  return lines.join("\n");
}
