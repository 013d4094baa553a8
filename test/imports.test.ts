/**
 * The data flows one way: config → compiler → plan → runtime. Scans the import statements of
 * src/: the runtime imports nothing from the compiler (nor the config, the watcher, the CLI or the
 * composition in src/pipeline.ts), the compiler nothing from the runtime, and the plan, tokenizer
 * and image modules neither of them.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";

const SRC = path.resolve(import.meta.dirname, "..", "src");

/** Every module specifier a source text imports or re-exports (static, side-effect and dynamic imports). */
function specifiers(text: string): string[] {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/(^|[^:"'`])\/\/.*$/gm, "$1");
  const out: string[] = [];
  for (const re of [/\b(?:import|export)\s[^"'`;]*?\sfrom\s*["']([^"']+)["']/g, /\bimport\s*["']([^"']+)["']/g, /\bimport\s*\(\s*["']([^"']+)["']\s*\)/g])
    for (const m of code.matchAll(re)) out.push(m[1]!);
  return out;
}

function filesUnder(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(path.join(dir, e.name)) : e.name.endsWith(".ts") ? [path.join(dir, e.name)] : []));
}

/** Imports from `from` (a folder of src/) that resolve into any of `forbidden` (folders or files of src/): "file → target". */
function violations(from: string, forbidden: string[]): string[] {
  const bad: string[] = [];
  for (const file of filesUnder(path.join(SRC, from))) {
    for (const spec of specifiers(fs.readFileSync(file, "utf8"))) {
      if (!spec.startsWith(".")) continue;
      const target = path.relative(SRC, path.resolve(path.dirname(file), spec)).split(path.sep).join("/").replace(/\.js$/, ".ts");
      if (forbidden.some((f) => target === f || target.startsWith(`${f}/`))) bad.push(`${path.relative(SRC, file)} → ${target}`);
    }
  }
  return bad;
}

const TOP = ["watch", "cli", "pipeline.ts", "index.ts"];

describe("one-way data flow between src/ modules", () => {
  it("the scanner sees every kind of import", () => {
    const text = `import a from "./a.js";\nimport { b,\n  c } from "../b.js";\nimport type { D } from "./d.js";\nexport { e } from "./e.js";\nexport * from "./f.js";\nimport "./g.js";\nconst h = await import("./h.js");\n// import { x } from "./commented.js";\n/* import y from "./block.js"; */\n`;
    expect(specifiers(text)).toEqual(["./a.js", "../b.js", "./d.js", "./e.js", "./f.js", "./g.js", "./h.js"]);
  });

  it("the runtime imports nothing from the compiler, the config or the layers above it", () => {
    expect(violations("runtime", ["compiler", "config", ...TOP])).toEqual([]);
  });

  it("the compiler imports nothing from the runtime or the layers above it", () => {
    expect(violations("compiler", ["runtime", ...TOP])).toEqual([]);
  });

  it("the plan, tokenizer and image modules import neither the compiler nor the runtime", () => {
    for (const m of ["plan", "tokenizer", "image"]) expect([m, violations(m, ["compiler", "runtime", ...TOP])]).toEqual([m, []]);
  });

  it("and the check would notice: the watcher does use both", () => {
    expect(violations("watch", ["compiler"]).length).toBeGreaterThan(0);
    expect(violations("watch", ["pipeline.ts"]).length).toBeGreaterThan(0);
  });
});
