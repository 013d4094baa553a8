// Reading a result's `parameters` text (the PNG chunk sdc writes in AUTOMATIC1111's format) back
// into the form's settings, for "reuse these settings". The reading rules are the library's
// (src/image/image.ts parseParameters: the last line holds "Key: value" pairs, values with ',' ':'
// or a newline JSON-quoted); the browser tests check this reader against that one.

const PARAM_RE = /\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)/g;

/** `{ prompt, negativePrompt, params: { Steps, Sampler, "CFG scale", Seed, Size, "Size-1", "Size-2", ... } }`. */
export function parseParameters(text) {
  const lines = text.trim().split("\n");
  let last = lines.pop() ?? "";
  if ([...last.matchAll(PARAM_RE)].length < 3) {
    lines.push(last);
    last = "";
  }
  let prompt = "";
  let negativePrompt = "";
  let inNegative = false;
  for (let line of lines) {
    line = line.trim();
    if (line.startsWith("Negative prompt:")) {
      inNegative = true;
      line = line.slice(16).trim();
    }
    if (inNegative) negativePrompt += (negativePrompt === "" ? "" : "\n") + line;
    else prompt += (prompt === "" ? "" : "\n") + line;
  }
  const params = {};
  for (const m of last.matchAll(PARAM_RE)) {
    let v = m[2];
    if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) {
      try {
        v = JSON.parse(v);
      } catch {
        // left quoted, as the UI leaves it
      }
    }
    params[m[1]] = v;
    const size = /^(\d+)x(\d+)$/.exec(v);
    if (size) {
      params[`${m[1]}-1`] = size[1];
      params[`${m[1]}-2`] = size[2];
    }
  }
  return { prompt, negativePrompt, params };
}

/**
 * The settings one result was made with, as form values: what its parameters text says (prompt,
 * negative prompt, steps, guidance, seed, size, strength), the rest (the scheduler: the text holds
 * the UI's sampler name, not sdc's) from its job's settings.
 */
export function settingsFromResult(parameters, jobSettings) {
  const p = parseParameters(parameters);
  const out = { ...jobSettings, prompt: p.prompt, negative_prompt: p.negativePrompt };
  const num = (k) => (p.params[k] !== undefined && p.params[k] !== "" && Number.isFinite(Number(p.params[k])) ? Number(p.params[k]) : undefined);
  const set = (key, v) => {
    if (v !== undefined) out[key] = v;
  };
  set("steps", num("Steps"));
  set("guidance", num("CFG scale"));
  set("seed", num("Seed"));
  set("width", num("Size-1"));
  set("height", num("Size-2"));
  set("strength", num("Denoising strength"));
  return out;
}
