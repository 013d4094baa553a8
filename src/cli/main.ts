/**
 * The `sdc` command: argument parsing and printing over the library API, nothing else.
 *
 * `main(argv)` returns the exit code instead of exiting, so tests run it in-process with captured
 * output and an injected API. One handler at the top turns errors into exit codes: a UserError (a
 * problem in what the user gave us) prints its located problems and exits 2, usage errors exit 2,
 * anything else is an internal error: exit 1, with the stack trace only under --debug.
 */
import * as path from "node:path";
import { Argument, Command, CommanderError, Option } from "commander";
import * as api from "../index.js";
import { createTrainProgress, type TrainProgress } from "../trainer/report.js";
import type { LoadOptions } from "../index.js";
import { breakProgressLine } from "../runtime/progress.js";
import { startInterruptWatchdog } from "./interrupt.js";
import { fsProblem } from "../util/errors.js";
import { writeFileAtomic } from "../util/fs.js";
import { packageVersion } from "../util/paths.js";
import { startWorker } from "../serve/queue.js";
import { startServer } from "../serve/server.js";

/** A queue URL: redis:// or rediss:// with a host. */
function checkQueueUrl(v: string): string {
  let u: URL | null = null;
  try {
    u = new URL(v);
  } catch {
    // reported below
  }
  if (!u || !/^rediss?:$/.test(u.protocol) || !u.hostname)
    throw new api.UserError({ message: `not a Redis URL: "${v}"`, subject: "--queue", hint: "give redis://host:port (rediss:// for TLS), e.g. redis://127.0.0.1:6379" });
  return v;
}

export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Working directory for relative paths (default: process.cwd()). */
  cwd?: string;
}

export type Api = Pick<typeof api, "loadPipeline" | "preflight" | "compile" | "run" | "trainPipeline" | "watch" | "inspect">;

const defaultIO: CliIO = {
  stdout: (t) => void process.stdout.write(t),
  stderr: (t) => void process.stderr.write(t),
};

interface PipelineFlags {
  set: string[];
  prompt?: string;
  seed?: string;
  steps?: string;
  out?: string;
  json?: boolean;
  debug?: boolean;
}

const collect = (value: string, prev: string[]) => [...prev, value];

const OUT_HELP = "shortcut for --set output.dir=<dir> (relative to the working directory)";

function pipelineOptions(cmd: Command, outHelp: string): Command {
  return cmd
    .option("--set <key=value>", "override a config value, e.g. --set scheduler.steps=20 (repeatable)", collect, [])
    .option("--prompt <text>", "shortcut for --set sample.prompt=<text>")
    .option("--seed <n>", "shortcut for --set sample.seed=<n>")
    .option("--steps <n>", "shortcut for --set scheduler.steps=<n>")
    .option("--out <dir>", outHelp)
    .option("--debug", "print stack traces of internal errors");
}

/** A command on a pipeline file: its own options (`own`), then the options every pipeline command has. */
function pipelineCommand(program: Command, name: string, description: string, own: (cmd: Command) => Command, outHelp = OUT_HELP): Command {
  return pipelineOptions(own(program.command(name).description(description).argument("[pipeline]", "pipeline YAML file", api.DEFAULT_PIPELINE)), outHelp);
}

const COMPILED_HELP = "use this compiled folder instead of compiled/<name> (what `sdc compile --out DIR` wrote; relative to the working directory)";

function loadOptions(flags: PipelineFlags, cwd: string): LoadOptions {
  return {
    overrides: flags.set,
    cwd,
    ...(flags.prompt !== undefined ? { prompt: flags.prompt } : {}),
    ...(flags.seed !== undefined ? { seed: flags.seed } : {}),
    ...(flags.steps !== undefined ? { steps: flags.steps } : {}),
    ...(flags.out !== undefined ? { out: flags.out } : {}),
  };
}

/** The run's input files and strength, taken by `run` and by `validate` (which checks them). */
interface RunInputFlags {
  latents?: string;
  initImage?: string;
  strength?: string;
  promptsFile?: string;
}

function runInputFlags(cmd: Command): Command {
  return cmd
    .option("--latents <file>", "initial latents (.safetensors, tensor 'latents' [batch, 4, h, w]) instead of seeded noise (relative to the working directory)")
    .option("--init-image <file>", "img2img: start from this image (shortcut for --set sample.init_image=<file>; relative to the working directory)")
    .option("--prompts-file <file>", "prompts from a text file, one per line (shortcut for --set sample.prompts_file=<file>; relative to the working directory)")
    .option("--strength <x>", "img2img strength in (0, 1] (shortcut for --set sample.strength=<x>)");
}

/** Command-line paths are relative to the working directory (the config layer resolves them). */
function runLoadOptions(flags: PipelineFlags & RunInputFlags, cwd: string): LoadOptions {
  return {
    ...loadOptions(flags, cwd),
    ...(flags.latents !== undefined ? { latents: flags.latents } : {}),
    ...(flags.initImage !== undefined ? { initImage: flags.initImage } : {}),
    ...(flags.strength !== undefined ? { strength: flags.strength } : {}),
    ...(flags.promptsFile !== undefined ? { promptsFile: flags.promptsFile } : {}),
  };
}

const json = (v: unknown) => `${JSON.stringify(v, (_k, x) => (x === -Infinity ? "-Infinity" : x), 2)}\n`;

export async function main(argv: string[], io: CliIO = defaultIO, impl: Api = api): Promise<number> {
  const cwd = io.cwd ?? process.cwd();
  const debug = argv.includes("--debug");
  const wantsJson = argv.includes("--json");
  const out = (t: string) => io.stdout(t.endsWith("\n") ? t : `${t}\n`);
  const err = (t: string) => io.stderr(t.endsWith("\n") ? t : `${t}\n`);
  const show = (file: string) => api.displayPath(path.resolve(cwd, file), cwd);

  let exitCode = 0;
  const program = new Command()
    .name("sdc")
    .description("Declarative pipeline compiler and runner for Stable Diffusion 1.x/2.x on ONNX Runtime.")
    .version(packageVersion(), "-V, --version")
    .addOption(new Option("--debug", "print stack traces of internal errors"))
    .exitOverride()
    .configureOutput({ writeOut: (t) => io.stdout(t), writeErr: (t) => io.stderr(t) })
    .showHelpAfterError("(run sdc --help for usage)");

  pipelineCommand(program, "validate", "check a pipeline file, its model and what a run would read and write; print a summary (or the resolved config with --json)", (cmd) =>
    runInputFlags(cmd).option("--compiled <dir>", COMPILED_HELP).option("--json", "print the resolved config and model as JSON"),
  ).action(async (file: string, flags: PipelineFlags & RunInputFlags & { compiled?: string }) => {
    const p = await impl.loadPipeline(file, runLoadOptions(flags, cwd));
    // everything `sdc run` would find only later: init image, latents, writable folders, CUDA
    const notes = await impl.preflight(p, { cwd, ...(flags.compiled !== undefined ? { compiledDir: path.resolve(cwd, flags.compiled) } : {}) });
    if (flags.json) {
      out(json({ ok: true, file: p.file, name: p.name, sources: p.sources, config: p.config, model: p.model, notes }));
      return;
    }
    for (const n of notes) err(`note: ${n}`);
    const c = p.config;
    const m = p.model;
    const from = m.path ? `${m.kind === "diffusers" ? "diffusers folder" : "single file"} ${show(m.path)}` : "inline architecture";
    out(
      [
        `${show(file)}: ok`,
        `  name       ${p.name}`,
        `  model      ${from}${m.variant ? ` (variant ${m.variant})` : ""}${m.lora.length ? `, ${m.lora.length} LoRA` : ""}`,
        `  scheduler  ${String(m.schedulerConfig._class_name)}, ${c.scheduler.steps} steps`,
        `  image      ${c.sample.width}×${c.sample.height}, batch ${c.sample.batch}, seed ${c.sample.seed}`,
        ...(c.train ? [`  train      ${c.train.target}`] : []),
      ].join("\n"),
    );
  });

  pipelineCommand(
    program,
    "compile",
    "compile a pipeline to ONNX graphs + plan.json (compiled/<name>, or --out DIR)",
    (cmd) =>
      cmd
        .option("--force", "rewrite every graph, even unchanged ones")
        .option("--json", "print the result as JSON"),
    "write the compiled folder here instead of compiled/<name> (relative to the working directory); run it with sdc run --compiled <dir>",
  ).action(async (file: string, flags: PipelineFlags & { force?: boolean }) => {
    // --out is where the compiled folder goes (compile writes no images)
    const p = await impl.loadPipeline(file, loadOptions({ ...flags, out: undefined }, cwd));
    const outDir = flags.out !== undefined ? path.resolve(cwd, flags.out) : undefined;
    const r = await impl.compile(p, { force: flags.force === true, cwd, ...(outDir !== undefined ? { outDir } : {}), log: flags.json ? undefined : (l) => err(l) });
    out(flags.json ? json({ dir: r.dir, rebuilt: r.rebuilt, reused: r.reused, upToDate: r.upToDate, seconds: r.seconds, summary: r.summary }) : r.summary);
  });

  pipelineCommand(program, "run", "run a pipeline (generate images, or train), compiling it first when needed", (cmd) =>
    runInputFlags(cmd)
      .option("--compiled <dir>", COMPILED_HELP)
      .option("--recompile", "recompile even when the compiled pipeline is up to date")
      .option("--resume [checkpoint]", "training: continue from a checkpoint folder (default: the latest one)")
      .option("--force-resume", "training: resume even though training settings changed (they are listed)")
      .option("--json", "print the result as JSON"),
  ).action(async (file: string, flags: PipelineFlags & RunInputFlags & { compiled?: string; recompile?: boolean; resume?: string | boolean; forceResume?: boolean }) => {
    const opts = runLoadOptions(flags, cwd);
    const compiled = flags.compiled !== undefined ? { compiledDir: path.resolve(cwd, flags.compiled) } : {};
    const p = await impl.loadPipeline(file, opts);
    // Ctrl-C stops between denoising steps; a second Ctrl-C quits at once. A step that is still
    // running a second after the first Ctrl-C is abandoned by the watchdog (./interrupt.ts).
    const ac = new AbortController();
    const watchdog = startInterruptWatchdog({ force: process.env.SDC_INTERRUPT_WATCHDOG === "1" });
    // the training report draws its own bar: a note goes above it
    let trainNote: ((line: string) => void) | null = null;
    const onSigint = () => {
      if (ac.signal.aborted) process.exit(130);
      ac.abort();
      const msg = `stopping after the current step (Ctrl-C again to quit now${watchdog ? "; a step still running in a second is abandoned" : ""})`;
      if (trainNote) return trainNote(msg);
      breakProgressLine(); // not glued onto the sampling bar's line
      err(msg);
    };
    process.on("SIGINT", onSigint);
    try {
      if (p.config.train) {
        const resume = typeof flags.resume === "string" ? path.resolve(cwd, flags.resume) : flags.resume ? "latest" : null;
        let progress: TrainProgress | null = null;
        const r = await impl.trainPipeline(p, {
          recompile: flags.recompile === true,
          cwd,
          ...compiled,
          signal: ac.signal,
          resume,
          forceResume: flags.forceResume === true,
          loadOptions: opts,
          log: (l) => (progress ? progress.note(l) : flags.json ? undefined : err(l)),
          onStep: (s) => {
            watchdog?.progress(s.step, s.total, "training step");
            progress ??= createTrainProgress({ total: s.total, startStep: s.step - 1, json: flags.json === true, ...(flags.json ? { stream: { write: (t: string) => void out(t) } } : {}) });
            if (!flags.json) trainNote = (l) => progress?.note(l);
            progress.step(s);
          },
          onEvent: (ev) => progress?.event(ev),
        });
        (progress as TrainProgress | null)?.stop();
        out(flags.json ? `${JSON.stringify({ event: "result", ...r })}\n` : `${r.stopped ? "stopped" : "trained"} ${r.steps} steps; ${r.exported.length ? `wrote ${r.exported.map((f) => path.relative(cwd, f)).join(", ")}` : `last checkpoint ${r.checkpoints.at(-1) ?? "none"}`}`);
        if (r.stopped) exitCode = 130;
        return;
      }
      const r = await impl.run(p, {
        recompile: flags.recompile === true,
        cwd,
        ...compiled,
        signal: ac.signal,
        log: flags.json ? undefined : (l) => err(l),
        progress: !flags.json,
        ...(watchdog ? { onStep: (step: number, total: number) => watchdog.progress(step, total, "denoising step") } : {}),
      });
      out(flags.json ? json(r) : r.summary);
      if (r.cancelled) exitCode = 130;
    } finally {
      watchdog?.standDown();
      process.off("SIGINT", onSigint);
    }
  });

  pipelineCommand(program, "watch", "recompile when the pipeline (or a file it extends) changes; with --run, re-run too", (cmd) =>
    cmd
      .option("--run", "re-run the pipeline after each successful compile")
      .option("--json", "print one JSON event per line"),
  ).action(async (file: string, flags: PipelineFlags & { run?: boolean }) => {
    // Ctrl-C (or SIGTERM) stops watching cleanly, exit 0: a compile in progress finishes, a run
    // stops between steps. A second Ctrl-C quits at once.
    const stop = new AbortController();
    const onSignal = () => {
      if (stop.signal.aborted) process.exit(130);
      stop.abort();
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    // with --run, a U-Net call can hold the main thread for seconds: the watchdog ends it a second after Ctrl-C
    const watchdog = flags.run ? startInterruptWatchdog({ force: process.env.SDC_INTERRUPT_WATCHDOG === "1" }) : null;
    try {
      await impl.watch(file, { ...loadOptions(flags, cwd), run: flags.run === true, json: flags.json === true, signal: stop.signal, log: (line) => out(line) });
    } finally {
      watchdog?.standDown();
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    }
  });

  program
    .command("schema")
    .description("print the JSON Schema of pipeline files (editors use it through the $schema modeline)")
    .option("--out <file>", `write it to a file instead, e.g. ${api.PIPELINE_SCHEMA_FILE}`)
    .option("--plan", `the schema of compiled plans (plan.json) instead, e.g. for ${api.PLAN_SCHEMA_FILE}`)
    .option("--debug", "print stack traces of internal errors")
    .action((flags: { out?: string; plan?: boolean }) => {
      const text = flags.plan ? api.planJsonSchemaText() : api.pipelineJsonSchemaText();
      if (flags.out) {
        try {
          writeFileAtomic(path.resolve(cwd, flags.out), text);
        } catch (e) {
          const p = fsProblem(e, { subject: `--out ${flags.out}`, display: (f) => show(f) });
          throw p ? new api.UserError(p) : e;
        }
        out(`wrote ${show(flags.out)}`);
      } else io.stdout(text);
    });

  program
    .command("inspect")
    .description("print a compiled plan: graphs, parameter counts, sizes")
    .argument("[target]", "compiled folder, plan.json, or pipeline YAML file", api.DEFAULT_PIPELINE)
    .option("--json", "print the plan as JSON")
    .option("--debug", "print stack traces of internal errors")
    .action(async (target: string, flags: { json?: boolean }) => {
      const r = await impl.inspect(target, { cwd });
      out(flags.json ? json(r.plan) : r.summary);
    });

  program
    .command("doctor")
    .description("which execution provider a run would use (CUDA or CPU) and why, and what CUDA still needs here")
    .argument("[pipeline]", "pipeline YAML file whose runtime.device to check (default: a run with device auto)")
    .option("--json", "print the report as JSON")
    .option("--debug", "print stack traces of internal errors")
    .action(async (file: string | undefined, flags: { json?: boolean }) => {
      const p = file !== undefined ? await impl.loadPipeline(file, { cwd }) : null;
      const r = api.doctor(p, { display: show });
      if (flags.json) out(json(r));
      else {
        out(api.formatDoctor(r, show));
        if (!r.ok) err(`\n${api.renderProblems(r.problems)}\n\n${r.problems.length} problem${r.problems.length === 1 ? "" : "s"} found.`);
      }
      if (!r.ok) exitCode = 2;
    });

  program
    .command("setup")
    .description(`install an optional part: cuda = onnxruntime's CUDA provider (from the npm package ${api.CUDA_PACKAGE.name}), then check the CUDA libraries`)
    .addArgument(new Argument("<what>", "what to set up").choices(["cuda"]))
    .option("--from <file>", "install from this tarball (what `npm pack` of the package wrote, e.g. on a connected machine) instead of fetching it")
    .option("--force", "reinstall even when the provider is installed")
    .option("--remove", "remove the provider sdc installed")
    .option("--json", "print the result as JSON")
    .option("--debug", "print stack traces of internal errors")
    .action((_what: string, flags: { from?: string; force?: boolean; remove?: boolean; json?: boolean }) => {
      const r = api.setupCuda({
        ...(flags.from !== undefined ? { from: path.resolve(cwd, flags.from) } : {}),
        force: flags.force === true,
        remove: flags.remove === true,
        display: show,
        log: flags.json ? undefined : (l) => err(l),
      });
      if (flags.remove) {
        out(flags.json ? json({ setup: r }) : r.action === "removed" ? `removed the CUDA provider from ${show(r.dir)}` : `no CUDA provider was installed in ${show(r.dir)}`);
        return;
      }
      const d = api.doctor(null, { display: show });
      if (flags.json) out(json({ setup: r, doctor: d }));
      else {
        out(`${r.action === "installed" ? "installed" : "already installed:"} ${r.source}'s CUDA provider in ${show(r.dir)}`);
        out(api.formatDoctor(d, show));
      }
      // the provider is in place; CUDA still cannot run until the libraries the report names are found
      if (d.ep !== "cuda") exitCode = 2;
    });

  const intFlag = (flag: string, v: string, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new api.UserError({ message: `expected a whole number from ${min} to ${max}, got "${v}"`, subject: flag });
    return n;
  };
  /** Until SIGINT or SIGTERM (the long-running commands stop cleanly on either). */
  const untilStopped = () =>
    new Promise<void>((resolve) => {
      const stop = () => {
        process.off("SIGINT", stop);
        process.off("SIGTERM", stop);
        resolve();
      };
      process.on("SIGINT", stop);
      process.on("SIGTERM", stop);
    });

  program
    .command("serve")
    .description("serve pipelines over HTTP: a web page and a JSON API; jobs run in this process, or on sdc workers with --queue")
    .argument("[pipelines...]", "pipeline files to serve (default: pipelines/*.yaml)")
    .option("--host <host>", "address to listen on (another than loopback needs --token or --insecure)", "127.0.0.1")
    .option("--port <n>", "port (0: any free one)", "7860")
    .option("--token <secret>", "clients must send Authorization: Bearer <secret> or ?token=<secret> (default: $SDC_TOKEN)")
    .option("--insecure", "listen on a non-loopback host without a token")
    .option("--queue <url>", "redis://host:port: queue jobs in Redis for `sdc worker`s instead of running them here")
    .option("--results <dir>", "results folder (default out/serve)")
    .option("--cache <dir>", "compiled folders of jobs run here, one per build hash (default compiled/serve)")
    .option("--preview-every <n>", "preview the latents every n denoising steps (0: never)", "5")
    .option("--json", "print the server's address as JSON")
    .option("--debug", "print stack traces of internal errors")
    .action(async (files: string[], flags: { host: string; port: string; token?: string; insecure?: boolean; queue?: string; results?: string; cache?: string; previewEvery: string; json?: boolean }) => {
      const token = flags.token ?? process.env.SDC_TOKEN ?? undefined;
      const s = await startServer({
        cwd,
        pipelines: files,
        host: flags.host,
        port: intFlag("--port", flags.port, 0, 65535),
        ...(token ? { token } : {}),
        insecure: flags.insecure === true,
        ...(flags.queue ? { queue: checkQueueUrl(flags.queue) } : {}),
        ...(flags.results ? { resultsDir: flags.results } : {}),
        ...(flags.cache ? { cacheDir: flags.cache } : {}),
        previewEvery: intFlag("--preview-every", flags.previewEvery, 0),
        log: (line) => err(line),
      });
      const where = flags.queue ? `jobs go to ${flags.queue} (start workers with: sdc worker --queue ${flags.queue})` : "jobs run in this process";
      out(flags.json ? JSON.stringify({ url: s.url, port: s.port, queue: flags.queue ?? null }) : `sdc serve: ${s.url}${token ? "?token=…" : ""}  (${where}; Ctrl-C stops)`);
      await untilStopped();
      await s.close();
    });

  program
    .command("worker")
    .description("run jobs from a queue (sdc serve --queue): any number of workers on any number of machines share one queue")
    .requiredOption("--queue <url>", "redis://host:port of the queue")
    .option("--results <dir>", "results folder, the server's (default out/serve: run workers in the project folder, or share the folder)")
    .option("--cache <dir>", "this worker's compiled folders, one per build hash (default compiled/serve)")
    .option("--preview-every <n>", "preview the latents every n denoising steps (0: never)", "5")
    .option("--concurrency <n>", "jobs at once (default 1: one run uses every core)", "1")
    .option("--lock-duration <ms>", "how long a job stays with a worker that stopped answering before another takes it (longer than any compile, which holds the worker's event loop)", "120000")
    .option("--stalled-interval <ms>", "how often stalled jobs are looked for", "30000")
    .option("--json", "print one JSON line per job")
    .option("--debug", "print stack traces of internal errors")
    .action(async (flags: { queue: string; results?: string; cache?: string; previewEvery: string; concurrency: string; lockDuration: string; stalledInterval: string; json?: boolean }) => {
      const w = await startWorker({
        url: checkQueueUrl(flags.queue),
        cwd,
        resultsDir: path.resolve(cwd, flags.results ?? path.join("out", "serve")),
        cacheDir: path.resolve(cwd, flags.cache ?? path.join("compiled", "serve")),
        previewEvery: intFlag("--preview-every", flags.previewEvery, 0),
        concurrency: intFlag("--concurrency", flags.concurrency, 1),
        lockDuration: intFlag("--lock-duration", flags.lockDuration, 100),
        stalledInterval: intFlag("--stalled-interval", flags.stalledInterval, 100),
        onOutcome: (id, outcome) => out(flags.json ? JSON.stringify({ job: id, outcome }) : `job ${id}: ${outcome}`),
        ...(flags.json ? {} : { log: (line: string) => err(line) }),
      });
      out(flags.json ? JSON.stringify({ worker: w.id, queue: flags.queue }) : `sdc worker ${w.id}: taking jobs from ${flags.queue} (Ctrl-C stops)`);
      await untilStopped();
      await w.close();
    });

  try {
    await program.parseAsync(argv, { from: "user" });
    return exitCode;
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help, -V and `sdc help [command]` asked for what they print; a bare `sdc` is a usage error (help on stderr)
      if (e.code === "commander.helpDisplayed" || e.code === "commander.version" || (e.code === "commander.help" && e.exitCode === 0)) return 0;
      return 2; // usage error; commander has printed it
    }
    if (api.isUserError(e)) {
      if (wantsJson) out(json({ ok: false, problems: e.problems }));
      else {
        const n = e.problems.length;
        err(`${api.renderProblems(e.problems)}\n\n${n} problem${n === 1 ? "" : "s"} found.`);
      }
      return 2;
    }
    // a filesystem error on a path the user gave (an output folder on a read-only disk, a file where a
    // folder belongs, a full disk) is theirs to fix: named, with a hint, exit 2
    const fsp = fsProblem(e, { display: (f) => show(f) });
    if (fsp) {
      if (wantsJson) out(json({ ok: false, problems: [fsp] }));
      else err(`${api.renderProblems([fsp])}\n\n1 problem found.`);
      return 2;
    }
    const error = e instanceof Error ? e : new Error(String(e));
    err(`sdc: internal error: ${error.message}`);
    err(debug && error.stack ? error.stack : "(run with --debug for the stack trace)");
    return 1;
  }
}
