/**
 * Run TypeScript sources in a plain `node` child process (for tests that must kill or time a real
 * process): `transpileForNode` strips the types of an entry file and of every file it imports by a
 * relative path, into `outDir` with the repository's layout, and returns the entry's .js path.
 * Types are not checked here (the typecheck does that); only relative imports are followed, so the
 * entry may use Node's built-in modules and the packages in node_modules, not path aliases.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import ts from "typescript";
import { REPO } from "./repo.js";

const RELATIVE_IMPORT = /\b(?:from|import)\s*\(?\s*["'](\.{1,2}\/[^"']+)\.js["']/g;

export function transpileForNode(entry: string, outDir: string): string {
  const todo = [path.resolve(entry)];
  const done = new Set<string>();
  while (todo.length) {
    const file = todo.pop()!;
    if (done.has(file)) continue;
    done.add(file);
    const source = fs.readFileSync(file, "utf8");
    for (const m of source.matchAll(RELATIVE_IMPORT)) todo.push(path.resolve(path.dirname(file), `${m[1]}.ts`));
    const { outputText } = ts.transpileModule(source, {
      fileName: file,
      compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
    });
    const out = path.join(outDir, path.relative(REPO, file)).replace(/\.ts$/, ".js");
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(out, outputText);
  }
  fs.writeFileSync(path.join(outDir, "package.json"), '{ "type": "module" }\n');
  return path.join(outDir, path.relative(REPO, path.resolve(entry))).replace(/\.ts$/, ".js");
}
