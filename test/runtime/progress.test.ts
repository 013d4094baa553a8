/**
 * Progress when stderr is not a terminal: lines at most every interval and a last one when any was
 * written (a short run stays quiet); nothing when progress is off (`--json`).
 */
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { progressBar } from "../../src/runtime/progress.js";

function sink() {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(String(chunk));
      cb();
    },
  }) as Writable & { isTTY?: boolean };
  stream.isTTY = false;
  return { stream, text: () => chunks.join("") };
}

describe("progress lines without a terminal", () => {
  it("every interval (here: every step), then a last line with the time taken", () => {
    const s = sink();
    const p = progressBar(true, s.stream, 0);
    p.start(3, "txt2img");
    p.tick();
    p.tick();
    p.tick();
    p.stop();
    const lines = s.text().trimEnd().split("\n");
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^txt2img: 1\/3 steps · [\d.]+ it\/s · \d+ s left$/);
    expect(lines[1]).toMatch(/^txt2img: 2\/3 steps · /);
    expect(lines[2]).toMatch(/^txt2img: 3\/3 steps · [\d.]+ it\/s · [\d.]+ s$/);
  });

  it("a run shorter than the interval writes nothing; progress off writes nothing", () => {
    const s = sink();
    const p = progressBar(true, s.stream);
    p.start(20, "txt2img", "U-Net calls (10 steps)");
    for (let i = 0; i < 20; i++) p.tick();
    p.stop();
    const off = progressBar(false, s.stream, 0);
    off.start(2, "x");
    off.tick();
    off.tick();
    off.stop();
    expect(s.text()).toBe("");
  });
});
