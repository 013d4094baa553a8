#!/usr/bin/env node
// A seeded dataset of coloured shapes with captions (src/data/shapes.ts), for trying training:
//
//   node scripts/make-shapes.mjs data/shapes --count 500 --size 64 --seed 0 [--layout kohya]
//
// Reads the compiled sources in dist/ (`npm run build` makes them).
import { makeShapes } from "../dist/data/shapes.js";

const args = process.argv.slice(2);
const usage = "usage: node scripts/make-shapes.mjs <dir> [--count N] [--size PX] [--width PX] [--height PX] [--seed N] [--layout imagefolder|kohya]";
const opts = { count: 100 };
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  const value = () => {
    const v = args[++i];
    if (v === undefined) fail(`${a} needs a value`);
    return v;
  };
  const int = () => {
    const v = value();
    if (!/^\d+$/.test(v)) fail(`${a} takes a whole number, got ${v}`);
    return Number(v);
  };
  if (a === "--count") opts.count = int();
  else if (a === "--size") opts.size = int();
  else if (a === "--width") opts.width = int();
  else if (a === "--height") opts.height = int();
  else if (a === "--seed") opts.seed = int();
  else if (a === "--layout") opts.layout = value();
  else if (a === "-h" || a === "--help") {
    console.log(usage);
    process.exit(0);
  } else if (a.startsWith("-") || opts.dir !== undefined) fail(`unexpected argument ${a}`);
  else opts.dir = a;
}
if (opts.dir === undefined) fail("give the output folder");
if (opts.layout !== undefined && opts.layout !== "imagefolder" && opts.layout !== "kohya") fail(`--layout is imagefolder or kohya, got ${opts.layout}`);

const records = await makeShapes(opts);
console.log(`wrote ${records.length} images to ${opts.dir}${opts.layout === "kohya" ? " (with .txt captions)" : " (with metadata.jsonl)"}`);

function fail(message) {
  console.error(`make-shapes: ${message}\n${usage}`);
  process.exit(2);
}
