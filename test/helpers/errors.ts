/** Test helpers for user errors. */
import { UserError } from "../../src/util/errors.js";

/** The UserError `fn` throws; anything else (or nothing) fails the test. */
export function userError(fn: () => unknown): UserError {
  try {
    fn();
  } catch (e) {
    if (e instanceof UserError) return e;
    throw e;
  }
  throw new Error("expected a UserError, and nothing was thrown");
}
