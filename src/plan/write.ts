/**
 * Writing plan.json: validated against the schema (a plan the reader would refuse is a bug, not a
 * user error), then written to a temporary sibling and renamed into place.
 */
import * as path from "node:path";
import { writeFileAtomic } from "../util/fs.js";
import { PLAN_FILE, PlanSchema, type Plan } from "./schema.js";

/** Write `<dir>/plan.json`; returns the plan as written (parsed by the schema). */
export function writePlan(dir: string, plan: Plan): Plan {
  const checked = PlanSchema.parse(plan);
  writeFileAtomic(path.join(dir, PLAN_FILE), `${JSON.stringify(checked, null, 2)}\n`);
  return checked;
}
