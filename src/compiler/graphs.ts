/**
 * The graphs a Stable Diffusion pipeline compiles to, and the pass pipeline each goes through:
 * build (shape-checked) → lower composites → fold known shapes → DCE → verify → write ONNX.
 */
import * as path from "node:path";
import type { ResolvedModel } from "../config/model.js";
import { Builder, type WeightProvider } from "../ir/builder.js";
import { dimRequirement, sym, type Dim } from "../ir/dims.js";
import type { DType, Graph } from "../ir/graph.js";
import { writeOnnx, type WriteResult } from "../ir/onnx/writer.js";
import { dce } from "../ir/passes/dce.js";
import { foldKnown } from "../ir/passes/fold.js";
import { lowerComposites, type LowerTarget } from "../ir/passes/lower.js";
import { verify } from "../ir/verify.js";
import { buildClipText } from "../models/clip-text.js";
import { tomeLevels, type TomeOptions } from "../models/tome.js";
import { buildUNet, deepCacheCut, type UNetGraphOptions } from "../models/unet.js";
import { buildVaeDecoder, buildVaeEncoder } from "../models/vae.js";
import type { GraphName } from "../plan/schema.js";
import type { Component } from "./weights.js";

export interface GraphJob<N extends string = GraphName> {
  name: N;
  component: Component;
  /** Everything besides weights that the graph depends on (part of its build hash). */
  options: Record<string, unknown>;
  build(b: Builder): void;
}

/** The compiled part of DeepCache (sample.deepcache): where the U-Net is cut. */
export interface DeepCacheGraphOptions {
  branch: number;
  layer?: number;
}

/** The compiled part of token merging (sample.tome), for latents of this size. */
export interface TomeGraphOptions extends TomeOptions {
  latentHeight: number;
  latentWidth: number;
}

/** The U-Net's size and ToMe options: symbolic sizes, or with ToMe the latent size it merges for. */
function unetShape(model: ResolvedModel, tome?: TomeGraphOptions): { dims: UNetGraphOptions; options: Record<string, unknown> } {
  if (!tome) return { dims: { height: sym("height"), width: sym("width"), sequence: sym("sequence") }, options: {} };
  const levels = tomeLevels(model.unet, tome.latentHeight, tome.latentWidth, tome);
  return { dims: { height: tome.latentHeight, width: tome.latentWidth, sequence: sym("sequence"), tome: levels }, options: { tome: { ...tome, levels } } };
}

export function graphJobs(model: ResolvedModel, precision: "fp32" | "fp16", target: LowerTarget, deepcache?: DeepCacheGraphOptions, tome?: TomeGraphOptions): GraphJob[] {
  const { unet, vae, textEncoder: text } = model;
  const clipSkip = text.clip_skip;
  const common = { precision, target };
  const h = sym("height");
  const w = sym("width");
  const cut = deepcache ? deepCacheCut(unet, deepcache.branch, deepcache.layer) : undefined;
  const shape = unetShape(model, tome);
  const unetDims = shape.dims;
  return [
    { name: "text_encoder", component: "text_encoder", options: { ...common, arch: model.textEncoder, clipSkip }, build: (b) => void buildClipText(b, text, { clipSkip }) },
    {
      name: "unet",
      component: "unet",
      // without DeepCache the options (and so the build hash) are what they always were
      options: { ...common, arch: model.unet, ...(cut ? { deepcache: cut } : {}), ...shape.options },
      build: (b) => void buildUNet(b, unet, { ...unetDims, ...(cut ? { deepcache: { mode: "full" as const, cut } } : {}) }),
    },
    { name: "vae_decoder", component: "vae", options: { ...common, arch: model.vae }, build: (b) => void buildVaeDecoder(b, vae, { height: h, width: w }) },
    { name: "vae_encoder", component: "vae", options: { ...common, arch: model.vae }, build: (b) => void buildVaeEncoder(b, vae, { height: h, width: w }) },
  ];
}

/** DeepCache's shallow U-Net (the full one is the `unet` job with the feature as an extra output). */
export function deepCacheJob(model: ResolvedModel, precision: "fp32" | "fp16", target: LowerTarget, deepcache: DeepCacheGraphOptions, tome?: TomeGraphOptions): GraphJob<"unet_shallow"> {
  const cut = deepCacheCut(model.unet, deepcache.branch, deepcache.layer);
  const shape = unetShape(model, tome);
  return {
    name: "unet_shallow",
    component: "unet",
    options: { precision, target, arch: model.unet, deepcache: cut, ...shape.options },
    build: (b) => void buildUNet(b, model.unet, { ...shape.dims, deepcache: { mode: "shallow", cut } }),
  };
}

export interface BuiltGraph {
  graph: Graph;
  write: WriteResult;
  requirements: { dim: string; multipleOf: number }[];
}

/** Build one graph, run the passes and write it into `dir/<name>/model.onnx`. */
export function buildAndWrite(job: GraphJob<string>, weights: WeightProvider, floatType: DType, target: LowerTarget, outDir: string): BuiltGraph {
  const b = new Builder(job.name, weights, floatType);
  job.build(b);
  verify(b.graph);
  // the checker runs after every pass, so a broken rewrite is named where it happened
  lowerComposites(b.graph, target);
  verify(b.graph, { final: true });
  foldKnown(b.graph);
  verify(b.graph, { final: true });
  dce(b.graph);
  verify(b.graph, { final: true });
  const write = writeOnnx(b.graph, { dir: path.join(outDir, job.name), docString: `sdc ${job.name}` });
  return { graph: b.graph, write, requirements: requirements(b.graph) };
}

/** Divisibility each symbolic input dimension needs, from every shape in the graph. */
function requirements(g: Graph): { dim: string; multipleOf: number }[] {
  const req = new Map<string, number>();
  const note = (d: Dim) => {
    const r = dimRequirement(d);
    // products (height*width/64) follow from the single-symbol requirements
    if (r && !r.expr.includes("*")) req.set(r.expr, lcm(req.get(r.expr) ?? 1, r.multipleOf));
  };
  for (const n of g.nodes) for (const v of n.outputs) v.shape.forEach(note);
  return [...req].map(([dim, multipleOf]) => ({ dim, multipleOf })).sort((a, b) => a.dim.localeCompare(b.dim));
}

function lcm(a: number, b: number): number {
  const g = (x: number, y: number): number => (y ? g(y, x % y) : x);
  return (a * b) / g(a, b);
}
