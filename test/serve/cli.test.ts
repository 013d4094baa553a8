/**
 * `sdc serve` and `sdc worker` refuse bad flags with a located error and exit 2 before they start
 * anything (the commands that do start are run as processes by workers.test.ts and the browser tests).
 */
import { describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { project } from "./project.js";

async function sdc(argv: string[], cwd: string) {
  let stdout = "";
  let stderr = "";
  const code = await main(argv, { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t), cwd });
  return { code, stdout, stderr };
}

describe("sdc serve / sdc worker flags", () => {
  const cwd = project();

  it("serve refuses a non-loopback host without a token, a bad port, a bad queue URL and a missing pipeline", async () => {
    const host = await sdc(["serve", "--host", "0.0.0.0"], cwd);
    expect(host.code).toBe(2);
    expect(host.stderr).toContain("--host: --host 0.0.0.0 lets other machines reach the server, and it has no token");
    expect(host.stderr).toContain("hint: add --token <secret>");
    const port = await sdc(["serve", "--port", "http"], cwd);
    expect([port.code, port.stderr]).toEqual([2, expect.stringContaining('--port: expected a whole number from 0 to 65535, got "http"')]);
    const queue = await sdc(["serve", "--queue", "localhost:6379"], cwd);
    expect([queue.code, queue.stderr]).toEqual([2, expect.stringContaining('--queue: not a Redis URL: "localhost:6379"')]);
    const missing = await sdc(["serve", "pipelines/nope.yaml", "--port", "0"], cwd);
    expect([missing.code, missing.stderr]).toEqual([2, expect.stringContaining("pipelines/nope.yaml: cannot read the pipeline file: no such file")]);
    const json = await sdc(["serve", "--host", "0.0.0.0", "--json"], cwd);
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, problems: [{ subject: "--host" }] });
  });

  it("worker needs a Redis URL", async () => {
    expect((await sdc(["worker"], cwd)).code).toBe(2);
    const bad = await sdc(["worker", "--queue", "http://127.0.0.1:6379"], cwd);
    expect([bad.code, bad.stderr]).toEqual([2, expect.stringContaining('--queue: not a Redis URL: "http://127.0.0.1:6379"')]);
    const gone = await sdc(["worker", "--queue", "redis://127.0.0.1:1"], cwd);
    expect([gone.code, gone.stderr]).toEqual([2, expect.stringContaining("--queue: cannot reach Redis at redis://127.0.0.1:1: ")]);
    const served = await sdc(["serve", "--queue", "redis://127.0.0.1:1", "--port", "0"], cwd);
    expect([served.code, served.stderr]).toEqual([2, expect.stringContaining("hint: start redis-server there")]);
    const lock = await sdc(["worker", "--queue", "redis://127.0.0.1:1", "--lock-duration", "5"], cwd);
    expect([lock.code, lock.stderr]).toEqual([2, expect.stringContaining("--lock-duration: expected a whole number from 100")]);
  });
});
