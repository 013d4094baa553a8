#!/usr/bin/env node
/**
 * Builds a text-to-image data set from Twemoji: a Hugging Face imagefolder (PNG files and
 * metadata.jsonl with file_name, text and captions), plus held-out prompts for measuring prompt
 * adherence. See README.md next to this file for the filter rules and the licences.
 *
 *   node examples/emoji/make-dataset.mjs OUT_DIR [--size 32|64] [--limit N] [--seed S]
 *
 * Inputs: the devDependencies emoji-datasource-twitter (Twemoji 64px PNGs, CC-BY 4.0, and
 * emoji.json, MIT) and emojilib (keywords, MIT). The output is the same bytes on every run.
 */
import * as fs from "node:fs";
import { createRequire } from "node:module";
import * as path from "node:path";
import sharp from "sharp";
import { COLOURS, dominantOpaqueColour } from "./colour.mjs";

const require = createRequire(import.meta.url);

// ---------------------------------------------------------------------------------------------
// Options

function usage(msg) {
  if (msg) console.error(`make-dataset: ${msg}`);
  console.error("usage: node examples/emoji/make-dataset.mjs OUT_DIR [--size 32|64] [--limit N] [--seed S]");
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { out: undefined, size: 64, limit: undefined, seed: 0 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--size") {
      opts.size = Number(value());
      if (opts.size !== 32 && opts.size !== 64) usage("--size is 32 or 64");
    } else if (a === "--limit") {
      opts.limit = Number(value());
      if (!Number.isInteger(opts.limit) || opts.limit < 1) usage("--limit is a positive integer");
    } else if (a === "--seed") {
      opts.seed = Number(value());
      if (!Number.isInteger(opts.seed) || opts.seed < 0) usage("--seed is a non-negative integer");
    } else if (a === "-h" || a === "--help") usage();
    else if (a.startsWith("-")) usage(`unknown option ${a}`);
    else if (opts.out === undefined) opts.out = a;
    else usage(`unexpected argument ${a}`);
  }
  if (opts.out === undefined) usage("the output folder is missing");
  return opts;
}

// ---------------------------------------------------------------------------------------------
// Inputs

function loadInputs() {
  let twitterDir, emojiList, keywords;
  try {
    twitterDir = path.dirname(require.resolve("emoji-datasource-twitter/package.json"));
    emojiList = JSON.parse(fs.readFileSync(path.join(twitterDir, "emoji.json"), "utf8"));
    keywords = JSON.parse(fs.readFileSync(require.resolve("emojilib"), "utf8"));
  } catch (e) {
    console.error(
      `make-dataset: the emoji data packages are not installed (${e.message.split("\n")[0]}).\n` +
        "They are devDependencies of sdc: run `npm install` (or `npm install --save-dev emoji-datasource-twitter emojilib`).",
    );
    process.exit(3);
  }
  return { imageDir: path.join(twitterDir, "img", "twitter", "64"), emojiList, keywords };
}

// ---------------------------------------------------------------------------------------------
// Deterministic randomness: FNV-1a of a string, mulberry32.

function hash32(s) {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

function rng(seed, key) {
  let a = hash32(`${seed}:${key}`);
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffle(xs, rand) {
  const a = xs.slice();
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

// ---------------------------------------------------------------------------------------------
// Filter: one image per distinct concept

const ZWJ = 0x200d;
const FEMALE = 0x2640;
const MALE = 0x2642;
const RIGHT_ARROW = 0x27a1;
const MAN = 0x1f468;
const WOMAN = 0x1f469;
const PERSON = 0x1f9d1;
/** man, woman, boy, girl, person, child: a ZWJ sequence with two or more of them is a family, couple or kiss. */
const PEOPLE = new Set([MAN, WOMAN, 0x1f466, 0x1f467, PERSON, 0x1f9d2]);
const PEOPLE_HOLDING_HANDS = "1F9D1-200D-1F91D-200D-1F9D1";
/** Single-codepoint gendered forms whose neutral form is another codepoint. */
const GENDERED_ALTERNATES = new Map([
  ["1F474", "1F9D3"], // older man -> older person
  ["1F475", "1F9D3"], // older woman -> older person
  ["1F46B", PEOPLE_HOLDING_HANDS], // woman and man holding hands
  ["1F46C", PEOPLE_HOLDING_HANDS], // men holding hands
  ["1F46D", PEOPLE_HOLDING_HANDS], // women holding hands
  ["1F930", "1FAC4"], // pregnant woman -> pregnant person
  ["1FAC3", "1FAC4"], // pregnant man -> pregnant person
]);

const codepoints = (unified) => unified.split("-").map((h) => parseInt(h, 16));
const key = (cps) => cps.filter((c) => c !== 0xfe0f).map((c) => c.toString(16).toUpperCase()).join("-");

/**
 * Why an emoji is left out (a short reason), or undefined when it is kept. `present` holds the
 * key() of every emoji in the list, to tell whether a variant's base exists.
 */
function dropReason(e, present) {
  const cps = codepoints(e.unified);
  if (e.category === "Flags") return "flag";
  if (e.category === "Component") return "component";
  if (cps.some((c) => c >= 0x1f1e6 && c <= 0x1f1ff)) return "regional indicator";
  if (cps.includes(0x20e3)) return "keycap";
  if (cps.some((c) => c >= 0x1f3fb && c <= 0x1f3ff)) return "skin tone";
  if (cps.includes(ZWJ)) {
    // X-ZWJ-(female|male) sign: the woman/man form of X.
    const g = cps.findIndex((c, i) => i > 0 && cps[i - 1] === ZWJ && (c === FEMALE || c === MALE));
    if (g > 0) {
      const base = cps.slice(0, g - 1).concat(cps.slice(g + 1));
      const rest = key(base).replace(/-200D$/, "");
      if (present.has(rest)) return "gender variant";
    }
    // X-ZWJ-right arrow: X facing right, a mirror image.
    const r = cps.findIndex((c, i) => i > 0 && cps[i - 1] === ZWJ && c === RIGHT_ARROW);
    if (r > 0) {
      const base = key(cps.slice(0, r - 1).concat(cps.slice(r + 1))).replace(/-200D$/, "");
      if (present.has(base)) return "facing right (mirror image)";
    }
    // man/woman-ZWJ-Y: the man/woman form of person-ZWJ-Y.
    if ((cps[0] === MAN || cps[0] === WOMAN) && cps[1] === ZWJ && cps.filter((c) => PEOPLE.has(c)).length === 1) {
      if (present.has(key([PERSON, ...cps.slice(1)]))) return "gender variant";
    }
    if (e.unified !== PEOPLE_HOLDING_HANDS && cps.filter((c) => PEOPLE.has(c)).length >= 2) return "family/couple variant";
  }
  const alt = GENDERED_ALTERNATES.get(e.unified);
  if (alt && present.has(key(codepoints(alt)))) return "gender variant";
  // Half-hour clock faces differ from the hour ones by one hand, a few pixels at 64px.
  if (/^CLOCK FACE .*-THIRTY$/.test(e.name)) return "near-duplicate (half-hour clock)";
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Words


/** The CLDR name (emojilib's first keyword), e.g. "grinning face", else the datasource's name. */
function displayName(e, kws) {
  const n = kws?.[0] ? kws[0].replace(/_/g, " ") : e.name.toLowerCase();
  return n.replace(/\s+/g, " ").trim();
}

/** A colour word in the name ("red apple", "blue heart"), if any. */
function nameColour(name) {
  for (const w of name.split(/[^a-z]+/)) {
    if (w === "gray") return "grey";
    if (COLOURS.includes(w)) return w;
  }
  return undefined;
}

const SUBCATEGORY = {
  "other-symbol": "symbol",
  "av-symbol": "audio & video symbol",
  "place-other": "place",
  "plant-other": "plant",
  "other-object": "object",
  "face-neutral-skeptical": "neutral face",
  "hand-single-finger": "hand",
  "hand-fingers-closed": "hand",
  "hand-fingers-open": "hand",
  "hand-fingers-partial": "hand",
  "hand-prop": "hand",
  "person-symbol": "person",
  "alphanum": "letters & numbers",
  "food-asian": "asian food",
  "food-sweet": "sweets",
  "food-prepared": "food",
  "food-fruit": "fruit",
  "food-vegetable": "vegetable",
  "transport-sign": "sign",
  "transport-ground": "vehicle",
  "transport-air": "aircraft",
  "transport-water": "boat",
  "place-geographic": "landscape",
  "place-map": "map",
  "place-building": "building",
  "place-religious": "religious building",
  "animal-marine": "sea animal",
  "animal-bug": "bug",
  "book-paper": "paper",
  "light & video": "light & video",
  "person-role": "person",
  "person-activity": "person",
  "person-sport": "sport",
  "person-fantasy": "fantasy person",
  "person-resting": "resting person",
  "cat-face": "cat face",
  "monkey-face": "monkey face",
};

/** A phrase for a subcategory: the table above, else "face-smiling" -> "smiling face". */
function subcategoryPhrase(sub) {
  if (SUBCATEGORY[sub]) return SUBCATEGORY[sub];
  const parts = sub.split("-");
  if (parts.length === 2) return `${parts[1]} ${parts[0]}`; // face-smiling -> smiling face, animal-mammal -> mammal animal
  return sub.replace(/-/g, " ");
}

/** Keywords that add something: not the name's own words, not text emoticons, unique. */
function extraKeywords(name, kws) {
  const own = new Set(name.split(/[^a-z0-9]+/));
  const out = [];
  for (const k of (kws ?? []).slice(1)) {
    const w = k.replace(/_/g, " ").toLowerCase().trim();
    if (!/^[a-z][a-z0-9 '&-]*$/.test(w) || own.has(w) || out.includes(w) || w === "emoji") continue;
    out.push(w);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Images

async function renderOne(file, size) {
  const src = sharp(file).ensureAlpha();
  const { data: rgba } = await src.clone().raw().toBuffer({ resolveWithObject: true });
  const resized = size === 64 ? sharp(file) : sharp(file).resize(size, size, { kernel: "lanczos3" });
  const png = await resized
    .flatten({ background: "#ffffff" })
    .removeAlpha()
    .png({ compressionLevel: 9, adaptiveFiltering: false, palette: false })
    .toBuffer();
  return { png, colour: dominantOpaqueColour(rgba) };
}

// ---------------------------------------------------------------------------------------------
// Captions

function captionsFor(c, seed) {
  const rand = rng(seed, c.unified);
  const kws = shuffle(c.keywords, rand).slice(0, 2);
  const cat = c.category.toLowerCase();
  const colour = c.colour ? `, ${c.colour}` : "";
  const out = [
    `${c.name}${colour}, ${cat} emoji`,
    `${c.name} emoji${kws.length ? `, ${kws.join(", ")}` : ""}`,
    `${c.name}, ${c.subcategory}${c.colour ? ` in ${c.colour}` : ""}, twemoji`,
  ];
  return shuffle(out, rand);
}

/** Phrasings never used for training captions (checked), for the held-out prompts. */
const HELD_OUT_TEMPLATES = [
  (c) => (c.colour && !c.name.includes(c.colour) ? `a ${c.colour} ${c.name}` : `a ${c.name}`),
  (c) => `emoji of a ${c.name}`,
  (c) => `a picture of ${c.name}`,
  (c) => `${c.name} icon`,
  (c) => `an illustration showing ${c.name}`,
];

// ---------------------------------------------------------------------------------------------

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const { imageDir, emojiList, keywords } = loadInputs();
  const sorted = emojiList.slice().sort((a, b) => a.sort_order - b.sort_order);
  const present = new Set(sorted.map((e) => key(codepoints(e.unified))));

  const dropped = new Map();
  let kept = [];
  for (const e of sorted) {
    const why = !e.has_img_twitter || !fs.existsSync(path.join(imageDir, e.image)) ? "no Twemoji image" : dropReason(e, present);
    if (why) dropped.set(why, (dropped.get(why) ?? 0) + 1);
    else kept.push(e);
  }
  if (opts.limit !== undefined) {
    // Spread the subset over the whole list so that every category can appear.
    const step = kept.length / Math.min(opts.limit, kept.length);
    kept = Array.from({ length: Math.min(opts.limit, kept.length) }, (_, i) => kept[Math.floor(i * step)]);
  }

  fs.mkdirSync(opts.out, { recursive: true });
  const concepts = [];
  const seenImages = new Map();
  for (const e of kept) {
    const ch = String.fromCodePoint(...codepoints(e.unified));
    const kws = keywords[ch];
    const name = displayName(e, kws);
    const { png, colour: measured } = await renderOne(path.join(imageDir, e.image), opts.size);
    // Identical artwork under two code points (after compositing): keep the first.
    const digest = png.toString("base64");
    if (seenImages.has(digest)) {
      dropped.set("near-duplicate (identical image)", (dropped.get("near-duplicate (identical image)") ?? 0) + 1);
      continue;
    }
    seenImages.set(digest, e.unified);
    const c = {
      unified: e.unified,
      file_name: `${e.unified.toLowerCase()}.png`,
      name,
      category: e.category,
      subcategory: subcategoryPhrase(e.subcategory),
      keywords: extraKeywords(name, kws),
      colour: nameColour(name) ?? measured,
      colour_source: nameColour(name) ? "name" : measured ? "image" : undefined,
    };
    fs.writeFileSync(path.join(opts.out, c.file_name), png);
    concepts.push(c);
  }

  const rows = [];
  const training = new Set();
  for (const c of concepts) {
    const captions = captionsFor(c, opts.seed);
    for (const t of captions) training.add(t);
    rows.push({
      file_name: c.file_name,
      text: captions[0],
      captions,
      name: c.name,
      unified: c.unified,
      category: c.category,
      subcategory: c.subcategory,
      colour: c.colour ?? null,
    });
  }
  fs.writeFileSync(path.join(opts.out, "metadata.jsonl"), rows.map((r) => `${JSON.stringify(r)}\n`).join(""));

  // Held-out prompts: about 250 concepts (those with a known colour first), a new phrasing each.
  const rand = rng(opts.seed, "held-out");
  const target = Math.min(250, concepts.length);
  const coloured = shuffle(concepts.filter((c) => c.colour), rand);
  const others = shuffle(concepts.filter((c) => !c.colour), rand);
  const pick = coloured.concat(others).slice(0, target).sort((a, b) => concepts.indexOf(a) - concepts.indexOf(b));
  const held = [];
  const prompts = new Set();
  for (const c of pick) {
    const order = shuffle(HELD_OUT_TEMPLATES, rand);
    const prompt = order.map((t) => t(c)).find((p) => !training.has(p) && !prompts.has(p));
    if (!prompt) continue;
    prompts.add(prompt);
    held.push({ prompt, file_name: c.file_name, name: c.name, category: c.category, colour: c.colour ?? null, colour_from: c.colour_source ?? null });
  }
  fs.writeFileSync(path.join(opts.out, "held_out_prompts.txt"), held.map((h) => `${h.prompt}\n`).join(""));
  fs.writeFileSync(path.join(opts.out, "held_out.jsonl"), held.map((h) => `${JSON.stringify(h)}\n`).join(""));
  // the held-out prompts with their images, as an imagefolder of its own (train.validation.holdout_dir):
  // the validation loss of captions phrased as no training caption is
  const holdout = path.join(opts.out, "holdout");
  fs.mkdirSync(holdout, { recursive: true });
  for (const h of held) fs.copyFileSync(path.join(opts.out, h.file_name), path.join(holdout, h.file_name));
  fs.writeFileSync(path.join(holdout, "metadata.jsonl"), held.map((h) => `${JSON.stringify({ file_name: h.file_name, text: h.prompt, captions: [h.prompt] })}\n`).join(""));

  const drops = [...dropped].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => `${k} ${v}`).join(", ");
  console.log(`emoji: ${emojiList.length} in emoji.json; dropped: ${drops}`);
  console.log(`wrote ${rows.length} images (${opts.size}x${opts.size}), ${training.size} distinct captions, ${held.length} held-out prompts to ${opts.out}`);
}

await main();
