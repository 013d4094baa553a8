/**
 * Symbolic dimensions as plan.json writes them ("batch", "2*height", "⌈height/2⌉*⌈width/2⌉/3"),
 * evaluated for concrete sizes: what a runtime needs to shape the inputs it makes itself (a random
 * mask shaped like an activation). The grammar is the IR's dimension text: a product of factors —
 * integers, symbols (with ^exponent), ⌈x/k⌉ and ⌊x/k⌋ of such a product — over an optional /den.
 */
export function evalDim(text: string | number, env: Readonly<Record<string, number>>): number {
  if (typeof text === "number") return text;
  let i = 0;
  const fail = (why: string): never => {
    throw new Error(`dimension "${text}": ${why} at ${i}`);
  };
  const int = (): number => {
    const m = /^\d+/.exec(text.slice(i));
    if (!m) fail("a number expected");
    i += m![0].length;
    return Number(m![0]);
  };
  const product = (stop: string): number => {
    let v = factor();
    while (text[i] === "*") {
      i++;
      v *= factor();
    }
    if (text[i] === "/" && stop === "") {
      i++;
      const den = int();
      if (v % den !== 0) fail(`${v} is not divisible by ${den}`);
      v /= den;
    }
    return v;
  };
  const factor = (): number => {
    const c = text[i];
    if (c === "⌈" || c === "⌊") {
      i++;
      const inner = product("/");
      if (text[i] !== "/") fail("'/' expected");
      i++;
      const k = int();
      const close = c === "⌈" ? "⌉" : "⌋";
      if (text[i] !== close) fail(`'${close}' expected`);
      i++;
      return c === "⌈" ? Math.ceil(inner / k) : Math.floor(inner / k);
    }
    if (c !== undefined && /\d/.test(c)) return int();
    const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(text.slice(i));
    if (!m) fail("a symbol expected");
    i += m![0].length;
    const v = env[m![0]];
    if (v === undefined) fail(`no size for ${m![0]}`);
    if (text[i] === "^") {
      i++;
      return v! ** int();
    }
    return v!;
  };
  const v = product("");
  if (i !== text.length) fail("unexpected text");
  return v;
}
