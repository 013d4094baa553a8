/**
 * `sdc watch` through the CLI, in process: flags reach the API, Ctrl-C (SIGINT) stops the watcher
 * and exits 0, and the printed lines (for a person, or one JSON event per line) say what changed,
 * what was rebuilt and how long it took, and show invalid edits located like `sdc validate` does.
 */
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type Api, main } from "../../src/cli/main.js";
import * as lib from "../../src/index.js";
import { MODEL, tempProject, write } from "./helpers.js";

const PIPE = (steps: number) => `version: 1\nname: p\nmodel:\n  from: ${JSON.stringify(MODEL)}\nscheduler:\n  steps: ${steps}\n`;

/** main() with captured output; `until` waits for a printed line (60 s at most). */
function sdc(argv: string[], cwd: string, api?: Partial<Api>) {
  const lines: string[] = [];
  const waiters: (() => void)[] = [];
  const push = (t: string) => {
    lines.push(...t.replace(/\n$/, "").split("\n"));
    for (const w of waiters.splice(0)) w();
  };
  const code = main(argv, { stdout: push, stderr: push, cwd }, { ...lib, ...api });
  const until = async (pred: (line: string) => boolean, from = 0): Promise<number> => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const i = lines.findIndex((l, k) => k >= from && pred(l));
      if (i >= 0) return i;
      if (Date.now() > deadline) throw new Error(`no such line; got:\n${lines.join("\n")}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 1000);
        waiters.push(() => (clearTimeout(t), r()));
      });
    }
  };
  return { code, lines, until };
}

afterEach(() => {
  // a test that failed before its SIGINT must not leave the watcher running
  process.emit("SIGINT");
});

describe("sdc watch", () => {
  it("hands flags and an abort signal to the API; SIGINT aborts it and exits 0; the handlers are removed", async () => {
    const before = process.listenerCount("SIGINT");
    let seen: lib.WatchOptions | undefined;
    const api: Partial<Api> = {
      watch: (_file, opts = {}) => {
        seen = opts;
        return new Promise<void>((resolve) => opts.signal!.addEventListener("abort", () => resolve()));
      },
    };
    const r = sdc(["watch", "p.yaml", "--run", "--json", "--steps", "5"], "/", api);
    await new Promise((res) => setImmediate(res));
    expect(seen).toMatchObject({ run: true, json: true, steps: "5", cwd: "/" });
    expect(seen!.signal!.aborted).toBe(false);
    expect(process.listenerCount("SIGINT")).toBe(before + 1);
    process.emit("SIGINT");
    expect(await r.code).toBe(0);
    expect(seen!.signal!.aborted).toBe(true);
    expect(process.listenerCount("SIGINT")).toBe(before);
    expect(process.listenerCount("SIGTERM")).toBe(0);
  });

  it("prints what changed, what was rebuilt and how long it took; an invalid edit located; stops on SIGINT", async () => {
    const dir = tempProject({ "p.yaml": PIPE(20) });
    const r = sdc(["watch", "p.yaml"], dir);
    let i = await r.until((l) => l.includes("plan ready"));
    write(dir, "p.yaml", PIPE(20).replace("steps: 20", "stpes: 20"));
    i = await r.until((l) => l.includes("problem"), i + 1);
    write(dir, "p.yaml", PIPE(12));
    i = await r.until((l) => l.includes("plan ready"), i + 1);
    process.emit("SIGINT");
    expect(await r.code).toBe(0);
    const text = r.lines
      .join("\n")
      .replace(/^\[\d\d:\d\d:\d\d\] /gm, "[time] ")
      .replace(/\d+\.\d\d s/g, "N s")
      .replace(/built (\w+): .*$/gm, "built $1: …");
    expect(text.split(MODEL).join("<model>")).toMatchInlineSnapshot(`
      "[time] watching p.yaml and 8 model files in <model>
        built text_encoder: …
        built unet: …
        built vae_decoder: …
        built vae_encoder: …
      [time] plan ready (N s): rebuilt text_encoder, unet, vae_decoder, vae_encoder → compiled/p
      [time] changed: p.yaml
      [time] p.yaml:6:3: unknown key "stpes" in scheduler
        6 |   stpes: 20
          |   ^^^^^
        hint: did you mean "steps"?
      1 problem; keeping the last good plan in compiled/p. Save again to retry.
      [time] changed: p.yaml
      [time] plan ready (N s after the save, compile N s): plan only, no graph rebuilt → compiled/p
      [time] stopped watching"
    `);
  });

  it("--json prints one JSON event per line", async () => {
    const dir = tempProject({ "p.yaml": PIPE(20) });
    const r = sdc(["watch", "p.yaml", "--json"], dir);
    let i = await r.until((l) => l.includes('"compiled"'));
    write(dir, "p.yaml", PIPE(13));
    i = await r.until((l) => l.includes('"compiled"'), i + 1);
    process.emit("SIGINT");
    expect(await r.code).toBe(0);
    const events = r.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(events.map((e) => e.type)).toEqual(["watching", "log", "log", "log", "log", "compiled", "change", "compiled", "closed"]);
    const last = events[7]!;
    expect(last).toMatchObject({ changed: [{ file: "p.yaml", kind: "change" }], dir: path.join("compiled", "p"), rebuilt: [], upToDate: false });
    expect(last.seconds).toBeGreaterThan(0);
    expect(last.compileSeconds).toBeGreaterThan(0);
    expect(last).not.toHaveProperty("result"); // the plan stays in plan.json
  });
});
