/**
 * DeepCache (Ma et al. 2023, "DeepCache: Accelerating Diffusion Models for Free"): the U-Net's deep
 * features change slowly from one denoising step to the next, so a full U-Net call keeps the up
 * path's hidden state where the shallow part begins, and the calls after it run only the shallow
 * part (conv_in, the first down layers, the matching up layers, conv_out) on that cached state.
 *
 * The compiler emits both graphs (plan.deepcache); which call runs which is this run setting:
 * every `interval`-th call full (the paper's uniform 1:N strategy), or the calls listed in
 * `fullSteps` (a non-uniform schedule). The first call is always full: nothing is cached before it.
 */
import type { Plan } from "../plan/schema.js";
import { UserError } from "../util/errors.js";
import type { FloatTensor, GraphRunner } from "./graphs.js";

export interface DeepCacheSettings {
  /** Every interval-th U-Net call is a full one (1: all of them). */
  interval: number;
  /** The 0-based U-Net calls that are full, instead of interval (must include 0). */
  fullSteps: number[] | null;
}

/** Whether U-Net call `i` (0-based) runs the full U-Net. */
export function isFullCall(s: DeepCacheSettings, i: number): boolean {
  return s.fullSteps ? s.fullSteps.includes(i) : i % s.interval === 0;
}

/** The run's DeepCache settings against the plan: the shallow graph must be compiled. */
export function checkDeepCache(plan: Plan, s: DeepCacheSettings | null): void {
  if (!s) return;
  if (!plan.deepcache)
    throw new UserError({
      message: "sample.deepcache is set but this compiled folder has no shallow U-Net",
      subject: "sample.deepcache",
      hint: "compile the pipeline with sample.deepcache in it (`sdc run` on the pipeline file does), or leave sample.deepcache out",
    });
  if (!Number.isInteger(s.interval) || s.interval < 1)
    throw new UserError({ message: `sample.deepcache.interval ${s.interval} is not a positive whole number`, subject: "sample.deepcache.interval", hint: "use 1 (always the full U-Net) or more" });
  if (s.fullSteps && !s.fullSteps.includes(0))
    throw new UserError({ message: "sample.deepcache.full_steps must include 0: the first U-Net call has nothing cached to reuse", subject: "sample.deepcache.full_steps", hint: "add 0 to the list" });
}

/** Inputs of one U-Net call. */
export type UNetFeeds = Parameters<GraphRunner["run"]>[0];

/**
 * A U-Net runner that alternates: a full call returns out_sample and keeps `feature`; a shallow one
 * feeds the kept feature to the shallow graph. `calls` counts what ran, for reports.
 */
export function deepCacheRunner(unet: GraphRunner, shallow: GraphRunner, feature: string, s: DeepCacheSettings) {
  let call = 0;
  let cached: FloatTensor | null = null;
  const calls = { full: 0, shallow: 0 };
  return {
    calls,
    async run(feeds: UNetFeeds): Promise<FloatTensor> {
      const i = call++;
      if (cached === null || isFullCall(s, i)) {
        const out = await unet.run(feeds, ["out_sample", feature]);
        const f = out[feature];
        if (!f) throw new Error(`internal: the U-Net has no output ${feature}`);
        cached = f;
        calls.full++;
        return out.out_sample!;
      }
      // a batch of another size (the loop never changes it) would silently mix images
      if (cached.dims[0] !== feeds.sample!.dims[0]) throw new Error(`internal: DeepCache feature batch ${cached.dims[0]} vs sample batch ${feeds.sample!.dims[0]}`);
      calls.shallow++;
      const out = await shallow.run({ ...feeds, [feature]: cached }, ["out_sample"]);
      return out.out_sample!;
    },
  };
}
