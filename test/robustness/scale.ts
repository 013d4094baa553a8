/**
 * How hard the robustness suite pushes: 1 in `npm test` (minutes in all), more for a soak
 * (`npm run soak` sets SDC_SOAK_SCALE=10: 200 kills each, 2,000 watch saves, ten times the fuzz
 * inputs). Counts and timeouts scale with it.
 */
export const SCALE = Math.max(1, Math.floor(Number(process.env.SDC_SOAK_SCALE ?? "1")) || 1);
