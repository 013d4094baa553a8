/**
 * Dimensions: concrete numbers or symbolic monomials.
 *
 * Graphs keep batch and spatial sizes symbolic ("batch", "height", "width") so one compiled
 * U-Net serves every image size. A symbolic dimension here is a monomial: a rational coefficient
 * times a product of symbols (`height/8`, `2*batch`, `height*width/64`). That covers everything
 * Stable Diffusion's shapes do (strided convolutions halve, upsampling doubles, attention flattens
 * H×W) while keeping equality a string comparison. A coefficient with a denominator records a
 * divisibility requirement (`height/8` needs height to be a multiple of 8): graphs collect those,
 * and the plan states them so a runner can check image sizes before running.
 *
 * Strided convolutions round: a 3×3 stride-2 conv with padding 1 maps H to ⌈H/2⌉ for every H.
 * Such a rounded quotient is a new atom (`⌈height/2⌉`), nested ones collapse (⌈⌈h/2⌉/2⌉ = ⌈h/4⌉),
 * and an atom compares equal only to itself: a U-Net that upsamples back to its skip connections'
 * sizes then works for any size, as diffusers' does.
 */

export interface SymDim {
  readonly num: number; // coefficient numerator (> 0)
  readonly den: number; // coefficient denominator (> 0), gcd(num, den) = 1
  readonly syms: Readonly<Record<string, number>>; // symbol → exponent (> 0)
  readonly key: string; // canonical text, e.g. "height*width/64"
}

export type Dim = number | SymDim;

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return Math.abs(a);
}

function make(num: number, den: number, syms: Record<string, number>): Dim {
  if (num === 0) return 0;
  const g = gcd(num, den);
  num /= g;
  den /= g;
  const names = Object.keys(syms).filter((s) => syms[s] !== 0).sort();
  if (names.length === 0) {
    if (den !== 1) throw new Error(`dimension ${num}/${den} is not an integer`);
    return num;
  }
  const clean: Record<string, number> = {};
  for (const n of names) {
    if (syms[n]! < 0) throw new Error(`dimension has a symbol in the denominator: ${n}`);
    clean[n] = syms[n]!;
  }
  const body = names.map((n) => (clean[n] === 1 ? n : `${n}^${clean[n]}`)).join("*");
  const key = `${num === 1 ? "" : `${num}*`}${body}${den === 1 ? "" : `/${den}`}`;
  return Object.freeze({ num, den, syms: Object.freeze(clean), key });
}

/** Rounded quotients: atom name → what it stands for. */
const ROUNDED = new Map<string, { base: Dim; div: number; mode: "ceil" | "floor" }>();

/** ⌈d/s⌉ or ⌊d/s⌋: a number for numbers, an exact monomial when s divides its coefficient, else an atom. */
export function dimDivRound(d: Dim, s: number, mode: "ceil" | "floor"): Dim {
  if (typeof d === "number") return mode === "ceil" ? Math.ceil(d / s) : Math.floor(d / s);
  if (s === 1) return d;
  if (d.den === 1 && d.num % s === 0) return make(d.num / s, 1, { ...d.syms });
  let base: Dim = d;
  let div = s;
  const names = Object.keys(d.syms);
  if (d.num === 1 && d.den === 1 && names.length === 1 && d.syms[names[0]!] === 1) {
    const inner = ROUNDED.get(names[0]!);
    if (inner && inner.mode === mode) {
      base = inner.base;
      div = inner.div * s;
    }
  }
  const name = mode === "ceil" ? `⌈${dimStr(base)}/${div}⌉` : `⌊${dimStr(base)}/${div}⌋`;
  ROUNDED.set(name, { base, div, mode });
  return make(1, 1, { [name]: 1 });
}

let opaqueCount = 0;

/**
 * A size known only at run time (the output of a transposed convolution of a symbolic size, a
 * pad by computed amounts). It compares equal only to itself; a Reshape to another value's shape
 * turns it back into that value's dimensions, and onnxruntime checks the element count there.
 */
export function dimOpaque(label: string): SymDim {
  return make(1, 1, { [`?${label}${opaqueCount++}`]: 1 }) as SymDim;
}

export function hasOpaque(shape: readonly Dim[]): boolean {
  return shape.some((d) => typeof d !== "number" && Object.keys(d.syms).some((k) => k.startsWith("?")));
}

export function sym(name: string): SymDim {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`bad symbol name ${name}`);
  return make(1, 1, { [name]: 1 }) as SymDim;
}

export function isSym(d: Dim): d is SymDim {
  return typeof d !== "number";
}

export function dimEq(a: Dim, b: Dim): boolean {
  if (typeof a === "number" || typeof b === "number") return a === b;
  return a.key === b.key;
}

export function dimStr(d: Dim): string {
  return typeof d === "number" ? String(d) : d.key;
}

export function shapeStr(s: readonly Dim[]): string {
  return `[${s.map(dimStr).join(", ")}]`;
}

export function shapeEq(a: readonly Dim[], b: readonly Dim[]): boolean {
  return a.length === b.length && a.every((d, i) => dimEq(d, b[i]!));
}

function parts(d: Dim): { num: number; den: number; syms: Record<string, number> } {
  return typeof d === "number" ? { num: d, den: 1, syms: {} } : { num: d.num, den: d.den, syms: { ...d.syms } };
}

export function dimMul(a: Dim, b: Dim): Dim {
  const x = parts(a);
  const y = parts(b);
  const syms = { ...x.syms };
  for (const [k, v] of Object.entries(y.syms)) syms[k] = (syms[k] ?? 0) + v;
  return make(x.num * y.num, x.den * y.den, syms);
}

/** Exact division; throws when a symbol would end up in the denominator. */
export function dimDiv(a: Dim, b: Dim): Dim {
  const x = parts(a);
  const y = parts(b);
  if (y.num === 0) throw new Error("division by a zero dimension");
  const syms = { ...x.syms };
  for (const [k, v] of Object.entries(y.syms)) {
    syms[k] = (syms[k] ?? 0) - v;
    if (syms[k]! < 0) throw new Error(`cannot divide ${dimStr(a)} by ${dimStr(b)}`);
  }
  return make(x.num * y.den, x.den * y.num, syms);
}

export function dimProd(ds: readonly Dim[]): Dim {
  return ds.reduce<Dim>((acc, d) => dimMul(acc, d), 1);
}

/** a + c for an integer c: only exact when a is a number (or c is 0). */
export function dimAddConst(a: Dim, c: number): Dim | null {
  if (c === 0) return a;
  return typeof a === "number" ? a + c : null;
}

/** Divisibility requirements implied by a dimension: symbol product → multiple of `den`. */
export function dimRequirement(d: Dim): { expr: string; multipleOf: number } | null {
  if (typeof d === "number" || d.den === 1) return null;
  const body = make(1, 1, d.syms as Record<string, number>);
  return { expr: dimStr(body), multipleOf: d.den };
}

/** Evaluate with concrete symbol values (for checks and tests). */
export function dimEval(d: Dim, env: Record<string, number>): number {
  if (typeof d === "number") return d;
  let v = d.num;
  for (const [k, e] of Object.entries(d.syms)) {
    const r = ROUNDED.get(k);
    const x = r ? (r.mode === "ceil" ? Math.ceil : Math.floor)(dimEval(r.base, env) / r.div) : env[k];
    if (x === undefined) throw new Error(`no value for symbol ${k}`);
    v *= x ** e;
  }
  const r = v / d.den;
  if (!Number.isInteger(r)) throw new Error(`${d.key} is not an integer for ${JSON.stringify(env)}`);
  return r;
}
