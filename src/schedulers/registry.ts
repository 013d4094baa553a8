/**
 * The scheduler registry: one line per scheduler sdc implements. Everything else that names
 * schedulers or their options (the config language's `scheduler.type` values and option keys, the
 * lookup by name) is read from here, so adding a scheduler is its file plus a line below.
 * Imports nothing from the config layer, which builds on it.
 */
import { UserError } from "../util/errors.js";
import { DDIMScheduler, ddimDefinition } from "./ddim.js";
import { DDPMScheduler, ddpmDefinition } from "./ddpm.js";
import { DPMSolverMultistepScheduler, dpmSolverMultistepDefinition } from "./dpm-solver-multistep.js";
import { EulerAncestralDiscreteScheduler, eulerAncestralDefinition } from "./euler-ancestral.js";
import { EulerDiscreteScheduler, eulerDefinition } from "./euler.js";
import { HeunDiscreteScheduler, heunDefinition } from "./heun.js";
import { LCMScheduler, lcmDefinition } from "./lcm.js";
import { LMSDiscreteScheduler, lmsDefinition } from "./lms.js";
import type { OptionsOf, SchedulerDefinition } from "./options.js";
import { PNDMScheduler, pndmDefinition } from "./pndm.js";
import type { Scheduler } from "./types.js";
import { UniPCMultistepScheduler, unipcDefinition } from "./unipc.js";

type Options = Record<string, unknown>;

interface Entry<C, N extends string, S extends string> {
  definition: SchedulerDefinition<C, N, S>;
  create: (config: Options, overrides: Options) => Scheduler;
}

const entry = <C, N extends string, S extends string>(
  definition: SchedulerDefinition<C, N, S>,
  Class: new (config: Options, overrides: Options) => Scheduler,
): Entry<C, N, S> => ({ definition, create: (c, o) => new Class(c, o) });

const REGISTRY = [
  entry(ddpmDefinition, DDPMScheduler),
  entry(ddimDefinition, DDIMScheduler),
  entry(pndmDefinition, PNDMScheduler),
  entry(lmsDefinition, LMSDiscreteScheduler),
  entry(eulerDefinition, EulerDiscreteScheduler),
  entry(eulerAncestralDefinition, EulerAncestralDiscreteScheduler),
  entry(heunDefinition, HeunDiscreteScheduler),
  entry(dpmSolverMultistepDefinition, DPMSolverMultistepScheduler),
  entry(unipcDefinition, UniPCMultistepScheduler),
  entry(lcmDefinition, LCMScheduler),
] as const;

type Registered = (typeof REGISTRY)[number]["definition"];
/** sdc's short names, e.g. "euler", "dpm-solver++". */
export type SchedulerShortName = Registered["shortName"];
/** diffusers class names sdc implements, e.g. "EulerDiscreteScheduler". */
export type SchedulerClassName = Registered["className"];

type AnyOptions = OptionsOf<Registered>;
/** Every option key of any registered scheduler. */
export type SchedulerOptionKey = AnyOptions extends infer U ? (U extends unknown ? keyof U : never) : never;
/** The values an option takes in the schedulers that have it. */
export type SchedulerOptionValue<K extends PropertyKey> = AnyOptions extends infer U ? (U extends unknown ? (K extends keyof U ? U[K] : never) : never) : never;

/** Every scheduler's definition: names and option schemas, in the registry's order. */
export const SCHEDULER_DEFINITIONS: readonly SchedulerDefinition<unknown>[] = REGISTRY.map((e) => e.definition as SchedulerDefinition<unknown>);
/** diffusers class names sdc implements, e.g. "EulerDiscreteScheduler". */
export const SCHEDULER_CLASS_NAMES: readonly SchedulerClassName[] = REGISTRY.map((e) => e.definition.className);
/** sdc's short names, e.g. "euler", "dpm-solver++". */
export const SCHEDULER_SHORT_NAMES: readonly SchedulerShortName[] = REGISTRY.map((e) => e.definition.shortName);
/** Short names (as users write them) → diffusers scheduler class names (`_class_name`). */
export const SCHEDULER_TYPES = Object.fromEntries(REGISTRY.map((e) => [e.definition.shortName, e.definition.className])) as {
  readonly [D in Registered as D["shortName"]]: D["className"];
};

/** The diffusers class name for a `scheduler.type` (short name or class name, exactly), or undefined. */
export function schedulerClassName(type: string): SchedulerClassName | undefined {
  return REGISTRY.find((e) => e.definition.shortName === type || e.definition.className === type)?.definition.className;
}

function lookup(type: string): (typeof REGISTRY)[number] {
  const t = type.trim().toLowerCase();
  const e = REGISTRY.find((x) => x.definition.className.toLowerCase() === t || x.definition.shortName === t);
  if (!e)
    throw new UserError({
      subject: "scheduler",
      message: `unknown scheduler ${JSON.stringify(type)}`,
      hint: `use one of ${SCHEDULER_SHORT_NAMES.join(", ")} or a diffusers class name (${SCHEDULER_CLASS_NAMES.join(", ")})`,
    });
  return e;
}

/** The option schema and names of one scheduler type (for config validation and docs). */
export function schedulerDefinition(type: string): SchedulerDefinition<unknown> {
  return lookup(type).definition as SchedulerDefinition<unknown>;
}

/**
 * A scheduler by diffusers class name or short name.
 * - `config`: a scheduler_config.json's contents (possibly written for another class; its foreign keys
 *   are ignored, as diffusers' from_config ignores them);
 * - `overrides`: options the user set, which must all be options of this scheduler.
 * Unknown types and bad or unsupported option values are UserErrors that list what is allowed.
 */
export function createScheduler(type: string, config: Options = {}, overrides: Options = {}): Scheduler {
  return lookup(type).create(config, overrides);
}
