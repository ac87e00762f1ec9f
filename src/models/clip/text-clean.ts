// Prompt clean-up before CLIP's BPE, as transformers' slow CLIPTokenizer does it (what diffusers' SD
// pipelines use): whitespace_clean(ftfy.fix_text(text)).lower(). ftfy is a Python library; fixText
// below is the part of ftfy 6.1's default fix_text that changes well-formed text:
//   HTML entity unescaping (skipped for a line onwards once a line contains '<', ftfy's "auto" rule),
//   C1 controls read as Windows-1252, Latin ligatures (ﬁ -> fi), full-/half-width forms (ｆ -> f,
//   U+3000 -> space), curly quotes -> straight, line breaks -> \n, lone surrogates -> U+FFFD, terminal
//   escapes and control characters removed, NFC; repeated until nothing changes.
// Not implemented: ftfy's mojibake repair (fix_encoding: "cafÃ©" -> "café"), which needs its
// statistical "badness" heuristics; such text is tokenised as it is.

import { HTML_ENTITIES } from './html-entities.js';

/** Windows-1252 for bytes 0x80-0x9f; the five undefined bytes map to themselves ("sloppy" codec). */
const CP1252_C1 = [
  0x20ac, 0x81, 0x201a, 0x192, 0x201e, 0x2026, 0x2020, 0x2021, 0x2c6, 0x2030, 0x160, 0x2039, 0x152, 0x8d, 0x17d, 0x8f,
  0x90, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014, 0x2dc, 0x2122, 0x161, 0x203a, 0x153, 0x9d, 0x17e, 0x178,
];

// Python's str.isspace() characters, which `\s` matches in transformers' whitespace_clean (JS `\s`
// differs: it has U+FEFF and lacks U+001C-U+001F and U+0085).
export const PY_WHITESPACE = '\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const WHITESPACE_RUN = new RegExp(`[${PY_WHITESPACE}]+`, 'g');
const EDGE_WHITESPACE = new RegExp(`^[${PY_WHITESPACE}]+|[${PY_WHITESPACE}]+$`, 'g');

const HTML_ENTITY_RE = /&#?[0-9A-Za-z]{1,24};/g;

/** Entity name -> text, with ftfy's extra all-caps forms of lower-case names (&EACUTE; -> É). */
const ENTITIES: ReadonlyMap<string, string> = (() => {
  const m = new Map(HTML_ENTITIES);
  for (const [name, ch] of HTML_ENTITIES) {
    const upper = name.toUpperCase();
    if (name === name.toLowerCase() && !HTML_ENTITIES.has(upper)) m.set(upper, ch.toUpperCase());
  }
  return m;
})();

/** Python's html.unescape of one numeric reference &#N; / &#xH; (with HTML5's replacements). */
function numericReference(num: number): string {
  if (num === 0) return '\ufffd';
  if (num === 0x0d) return '\r';
  if (num >= 0x80 && num <= 0x9f) return String.fromCodePoint(CP1252_C1[num - 0x80]!);
  if ((num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff) return '\ufffd';
  const invalid =
    (num >= 0x1 && num <= 0x8) || num === 0xb || (num >= 0xe && num <= 0x1f) || num === 0x7f ||
    (num >= 0xfdd0 && num <= 0xfdef) || (num & 0xfffe) === 0xfffe;
  return invalid ? '' : String.fromCodePoint(num);
}

/** ftfy's unescape_html: named references (case-sensitive, with ';') and numeric ones. */
export function unescapeHtml(text: string): string {
  return text.replace(HTML_ENTITY_RE, (m) => {
    const body = m.slice(1, -1);
    const named = ENTITIES.get(body);
    if (named !== undefined) return named;
    let num: number | null = null;
    if (/^#[0-9]+$/.test(body)) num = Number(body.slice(1));
    else if (/^#[xX][0-9a-fA-F]+$/.test(body)) num = parseInt(body.slice(2), 16);
    return num === null ? m : numericReference(num);
  });
}

const LIGATURES: Record<string, string> = {
  'Ĳ': 'IJ', 'ĳ': 'ij', 'ŉ': 'ʼn', 'Ǳ': 'DZ', 'ǲ': 'Dz', 'ǳ': 'dz', 'Ǆ': 'DŽ', 'ǅ': 'Dž', 'ǆ': 'dž',
  'Ǉ': 'LJ', 'ǈ': 'Lj', 'ǉ': 'lj', 'Ǌ': 'NJ', 'ǋ': 'Nj', 'ǌ': 'nj',
  'ﬀ': 'ff', 'ﬁ': 'fi', 'ﬂ': 'fl', 'ﬃ': 'ffi', 'ﬄ': 'ffl', 'ﬅ': 'ſt', 'ﬆ': 'st',
};
const LIGATURE_RE = new RegExp(`[${Object.keys(LIGATURES).join('')}]`, 'g');

/** U+FF01-U+FFEF -> their NFKC form (the width map ftfy builds the same way), U+3000 -> space. */
const WIDTH_RE = /[\u3000\uff01-\uffef]/g;
const widthForm = (c: string) => (c === '\u3000' ? ' ' : c.normalize('NFKC'));

const CONTROL_RE = /[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]/g;
const TERMINAL_ESCAPE_RE = /\x1b\[((?:\d|;)*)([a-zA-Z])/g;
const LONE_SURROGATE_RE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** One pass of ftfy's fixers, in ftfy's order. */
function fixPass(text: string, unescape: boolean): string {
  let t = unescape ? unescapeHtml(text) : text;
  t = t.replace(/[\x80-\x9f]/g, (c) => String.fromCodePoint(CP1252_C1[c.charCodeAt(0) - 0x80]!));
  t = t.replace(LIGATURE_RE, (c) => LIGATURES[c]!);
  t = t.replace(WIDTH_RE, widthForm);
  t = t.replace(/[\u201c-\u201f]/g, '"').replace(/[\u02bc\u2018-\u201b]/g, "'");
  t = t.replace(/\r\n|[\r\u2028\u2029\x85]/g, '\n');
  t = t.replace(LONE_SURROGATE_RE, '\ufffd');
  t = t.replace(TERMINAL_ESCAPE_RE, '');
  t = t.replace(CONTROL_RE, '');
  return t.normalize('NFC');
}

/** The ftfy.fix_text subset described at the top of this file. */
export function fixText(text: string): string {
  let unescape = true;
  const out: string[] = [];
  // fix_text works line by line; once a line contains '<' (likely HTML), entities stay as they are.
  for (const line of text.split(/(?<=\n)/)) {
    if (line.includes('<')) unescape = false;
    let t = line;
    for (let i = 0; i < 16; i++) {
      const next = fixPass(t, unescape);
      if (next === t) break;
      t = next;
    }
    out.push(t);
  }
  return out.join('');
}

/** transformers' whitespace_clean: runs of whitespace -> one space, stripped. */
export function whitespaceClean(text: string): string {
  return text.replace(WHITESPACE_RUN, ' ').replace(EDGE_WHITESPACE, '');
}

/** The CLIPTokenizer text clean-up: whitespaceClean(fixText(text)).toLowerCase(). */
export function cleanText(text: string, opts: { fixText?: boolean } = {}): string {
  return whitespaceClean(opts.fixText === false ? text : fixText(text)).toLowerCase();
}
