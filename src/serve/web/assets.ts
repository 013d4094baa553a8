/**
 * Where the files of `sdc serve`'s web page are: the server asks `webAsset(urlPath)` for `/` and
 * `/static/...` and sends the file it names with its content type, or 404 when it names none.
 *
 * The page is plain ES modules with no build step: its own files sit beside this module in the
 * source tree (tsc copies no .js/.html/.css into dist/, so a built sdc reads them from src/serve/web
 * too), and its UI library (preact, its hooks, htm: 17 KB together) is served straight from
 * node_modules under `/static/vendor/`, named by the page's import map. Nothing comes from a CDN.
 */
import * as fs from "node:fs";
import { createRequire } from "node:module";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));

/** The page's folder: this module's own folder when run from src (vitest), src/serve/web from dist. */
export const WEB_DIR = fs.existsSync(path.join(here, "index.html"))
  ? here
  : path.resolve(here, "..", "..", "..", "src", "serve", "web");

const require = createRequire(import.meta.url);

/** `/static/vendor/<name>` → the package file it serves (the only files of node_modules the page can reach). */
const VENDOR: Record<string, string> = {
  "preact.mjs": "preact/dist/preact.mjs",
  "preact-hooks.mjs": "preact/hooks/dist/hooks.mjs",
  "htm.mjs": "htm/dist/htm.mjs",
};

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
};

export interface WebAsset {
  /** Absolute path of the file to send. */
  file: string;
  contentType: string;
}

/**
 * A package file under node_modules, found the way Node finds the package (hoisted or not): from
 * its entry point up to the folder whose package.json names it (htm exports no package.json).
 */
function vendorFile(spec: string): string | undefined {
  const [pkg, ...rest] = spec.split("/");
  let dir: string;
  try {
    dir = path.dirname(require.resolve(pkg!));
  } catch {
    return undefined;
  }
  for (; dir !== path.dirname(dir); dir = path.dirname(dir)) {
    try {
      const json = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")) as { name?: string };
      if (json.name === pkg) return path.join(dir, ...rest);
    } catch {
      // no package.json here: go up
    }
  }
  return undefined;
}

/**
 * The file a request path names (query string already removed), or undefined.
 * `/` and `/index.html` → the page; `/static/vendor/<name>` → a UI library module;
 * `/static/<file>` → a file of the page's folder (never outside it, never this server-side module).
 */
export function webAsset(urlPath: string): WebAsset | undefined {
  let rel: string;
  if (urlPath === "/" || urlPath === "/index.html") rel = "index.html";
  else if (urlPath.startsWith("/static/")) {
    try {
      rel = decodeURIComponent(urlPath.slice("/static/".length));
    } catch {
      return undefined;
    }
  } else return undefined;

  let file: string | undefined;
  if (rel.startsWith("vendor/")) {
    const spec = VENDOR[rel.slice("vendor/".length)];
    file = spec === undefined ? undefined : vendorFile(spec);
  } else {
    const resolved = path.resolve(WEB_DIR, rel);
    const inside = resolved.startsWith(WEB_DIR + path.sep) && !rel.includes("\0");
    file = inside ? resolved : undefined;
  }
  const contentType = file === undefined ? undefined : TYPES[path.extname(file)];
  if (file === undefined || contentType === undefined) return undefined; // .ts/.map and unknown types are not served
  try {
    if (!fs.statSync(file).isFile()) return undefined;
  } catch {
    return undefined;
  }
  return { file, contentType };
}
