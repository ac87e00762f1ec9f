// CLIP's byte-level BPE tokenizer with the semantics of transformers' slow CLIPTokenizer as diffusers'
// Stable Diffusion pipelines call it: tokenizer(prompt, padding="max_length", max_length=77,
// truncation=True). Text is cleaned (text-clean.ts), split with CLIP's regex, each piece's UTF-8 bytes
// are mapped to printable characters (bytes_to_unicode) and merged by rank, the last symbol of a word
// carrying "</w>". Output: [<|startoftext|>] + ids[:75] + [<|endoftext|>], padded to 77.
//
// Vocabularies: a diffusers/transformers tokenizer folder (vocab.json + merges.txt, optionally
// special_tokens_map.json / tokenizer_config.json for the pad token), or OpenAI's
// bpe_simple_vocab_16e6.txt.gz, whose vocabulary follows from the merges: the 256 byte characters,
// the same with "</w>", one entry per merge, then the two special tokens.

import { SiloError } from '../../engine/errors.js';
import { gunzipExact, InflateError } from '../../formats/inflate.js';
import { cleanText, PY_WHITESPACE } from './text-clean.js';

export class TokenizerError extends SiloError {}

export const START_OF_TEXT = '<|startoftext|>';
export const END_OF_TEXT = '<|endoftext|>';
/** Merges CLIP uses: 49152 - 256 - 2 (transformers and OpenAI both cut the merges list there). */
export const CLIP_MERGES = 49152 - 256 - 2;

export interface ClipTokenizerOptions {
  /** Sequence length of the model input (default 77; tokenizer_config's model_max_length). */
  contextLength?: number;
  /** Pad id (default: the <|endoftext|> id, SD-1.x's pad token; SD-2.x pads with "!" = 0). */
  padTokenId?: number;
  /** Apply the ftfy subset before tokenising (default true; false = whitespace clean-up and lower-casing only). */
  fixText?: boolean;
}

export interface ClipEncoding {
  /** contextLength ids (more when truncate is false and the prompt is long). */
  inputIds: number[];
  /** Index of the first <|endoftext|> (the token the pooled output reads). */
  eosPosition: number;
  /** BPE tokens of the text before truncation (no special tokens). */
  numTokens: number;
  truncated: boolean;
}

/** bytes_to_unicode's byte order: printable Latin-1 bytes first, then the rest (the vocabulary's order). */
const isPrintable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
const BYTES = [...Array(256).keys()];
const BYTE_ORDER: number[] = [...BYTES.filter(isPrintable), ...BYTES.filter((b) => !isPrintable(b))];
const PRINTABLE = BYTES.filter(isPrintable).length;

/**
 * GPT-2/CLIP bytes_to_unicode as an array byte -> character: printable bytes map to themselves, the
 * others (controls, space, soft hyphen) to U+0100 onwards in byte order, so no piece has whitespace.
 */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const out = new Array<string>(256);
  BYTE_ORDER.forEach((b, i) => (out[b] = String.fromCharCode(i < PRINTABLE ? b : 256 + i - PRINTABLE)));
  return out;
})();
const CHAR_TO_BYTE = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

// CLIP's pre-tokenisation regex (transformers uses it with regex.IGNORECASE); \s as Python's.
const PIECE_RE = new RegExp(
  `<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^${PY_WHITESPACE}\\p{L}\\p{N}]+`,
  'giu',
);
const SPECIAL_SPLIT_RE = /(<\|startoftext\|>|<\|endoftext\|>)/;

const utf8 = new TextEncoder();
const pairKey = (a: string, b: string) => `${a} ${b}`;

export class ClipTokenizer {
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly contextLength: number;
  private readonly ranks: Map<string, number>;
  private decoder: Map<number, string> | null = null;
  private cache = new Map<string, string[]>();

  constructor(
    readonly vocab: ReadonlyMap<string, number>,
    merges: ReadonlyArray<readonly [string, string]>,
    readonly options: ClipTokenizerOptions = {},
  ) {
    const id = (tok: string) => {
      const v = vocab.get(tok);
      if (v === undefined) throw new TokenizerError(`CLIP vocabulary has no "${tok}" token`);
      return v;
    };
    this.bosId = id(START_OF_TEXT);
    this.eosId = id(END_OF_TEXT);
    this.padId = options.padTokenId ?? this.eosId;
    this.contextLength = options.contextLength ?? 77;
    if (!Number.isInteger(this.contextLength) || this.contextLength < 2) {
      throw new TokenizerError(`contextLength must be an integer >= 2, got ${this.contextLength}`);
    }
    this.ranks = new Map();
    merges.forEach(([a, b], i) => this.ranks.set(pairKey(a, b), i));
    this.resetCache();
  }

  /** The OpenAI vocabulary rule applied to a merges list (first CLIP_MERGES used). */
  static fromMerges(merges: ReadonlyArray<readonly [string, string]>, options?: ClipTokenizerOptions): ClipTokenizer {
    const used = merges.slice(0, CLIP_MERGES);
    const bytes = BYTE_ORDER.map((b) => BYTE_TO_CHAR[b]!);
    const vocab = new Map<string, number>();
    let next = 0;
    const add = (t: string) => vocab.set(t, next++);
    bytes.forEach(add);
    bytes.forEach((c) => add(c + '</w>'));
    for (const [a, b] of used) add(a + b);
    add(START_OF_TEXT);
    add(END_OF_TEXT);
    return new ClipTokenizer(vocab, used, options);
  }

  /** OpenAI's bpe_simple_vocab_16e6.txt (already decompressed). */
  static fromBpeText(text: string, options?: ClipTokenizerOptions): ClipTokenizer {
    return ClipTokenizer.fromMerges(parseMerges(text, 'bpe merges file'), options);
  }

  /** OpenAI's bpe_simple_vocab_16e6.txt.gz. */
  static async fromBpeGzip(bytes: Uint8Array, options?: ClipTokenizerOptions): Promise<ClipTokenizer> {
    return ClipTokenizer.fromBpeText(new TextDecoder().decode(await gunzip(bytes)), options);
  }

  /** A tokenizer folder's vocab.json (object or its text) and merges.txt. */
  static fromVocabAndMerges(vocabJson: string | Record<string, number>, mergesTxt: string, options?: ClipTokenizerOptions): ClipTokenizer {
    const obj = typeof vocabJson === 'string' ? (JSON.parse(vocabJson) as Record<string, number>) : vocabJson;
    const vocab = new Map(Object.entries(obj));
    for (const [t, i] of vocab) {
      if (!Number.isInteger(i)) throw new TokenizerError(`vocab.json: token ${JSON.stringify(t)} has id ${JSON.stringify(i)}`);
    }
    return new ClipTokenizer(vocab, parseMerges(mergesTxt, 'merges.txt'), options);
  }

  /** Empties the BPE cache (keeps the special tokens, which BPE must never split). */
  resetCache(): void {
    this.cache = new Map([
      [START_OF_TEXT, [START_OF_TEXT]],
      [END_OF_TEXT, [END_OF_TEXT]],
    ]);
  }

  /** BPE of one pre-token already mapped to byte characters: its symbols, the last ending in "</w>". */
  bpe(token: string): string[] {
    const hit = this.cache.get(token);
    if (hit) return hit;
    let word = [...token];
    word[word.length - 1] += '</w>';
    while (word.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < word.length; i++) {
        const r = this.ranks.get(pairKey(word[i]!, word[i + 1]!));
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      const first = word[best]!;
      const second = word[best + 1]!;
      // Merge every non-overlapping occurrence of the pair, left to right.
      const merged: string[] = [];
      for (let i = 0; i < word.length; ) {
        if (i + 1 < word.length && word[i] === first && word[i + 1] === second) {
          merged.push(first + second);
          i += 2;
        } else {
          merged.push(word[i++]!);
        }
      }
      word = merged;
    }
    if (this.cache.size > 100_000) this.resetCache();
    this.cache.set(token, word);
    return word;
  }

  /** BPE tokens of a prompt, without special tokens (special tokens written in the text stay single tokens). */
  tokenize(text: string): string[] {
    const out: string[] = [];
    for (const part of text.split(SPECIAL_SPLIT_RE)) {
      if (part === START_OF_TEXT || part === END_OF_TEXT) {
        out.push(part);
        continue;
      }
      const clean = cleanText(part, { fixText: this.options.fixText });
      for (const m of clean.matchAll(PIECE_RE)) {
        const piece = m[0];
        out.push(...this.bpe(Array.from(utf8.encode(piece), (b) => BYTE_TO_CHAR[b]!).join('')));
      }
    }
    return out;
  }

  /** Token ids of a prompt, without special tokens (unknown symbols -> <|endoftext|>, as transformers). */
  encode(text: string): number[] {
    return this.tokenize(text).map((t) => this.vocab.get(t) ?? this.eosId);
  }

  /** The model input for one prompt: specials, truncation to contextLength, padding with padId. */
  call(text: string, opts: { truncate?: boolean; pad?: boolean } = {}): ClipEncoding {
    const ids = this.encode(text);
    const room = this.contextLength - 2;
    const truncated = ids.length > room && opts.truncate !== false;
    const body = truncated ? ids.slice(0, room) : ids;
    const inputIds = [this.bosId, ...body, this.eosId];
    if (opts.pad !== false) while (inputIds.length < this.contextLength) inputIds.push(this.padId);
    return { inputIds, eosPosition: inputIds.indexOf(this.eosId), numTokens: ids.length, truncated };
  }

  /** Several prompts as one [B, contextLength] batch of ids (row-major). */
  callBatch(texts: string[]): { inputIds: Int32Array; shape: [number, number]; encodings: ClipEncoding[] } {
    const encodings = texts.map((t) => this.call(t));
    const inputIds = new Int32Array(texts.length * this.contextLength);
    encodings.forEach((e, b) => inputIds.set(e.inputIds, b * this.contextLength));
    return { inputIds, shape: [texts.length, this.contextLength], encodings };
  }

  /** Ids back to text (transformers' convert_tokens_to_string; special tokens are dropped). */
  decode(ids: ArrayLike<number>): string {
    if (!this.decoder) {
      this.decoder = new Map();
      for (const [t, i] of this.vocab) this.decoder.set(i, t);
    }
    const chars: string[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (id === this.bosId || id === this.eosId || id === this.padId) continue;
      const tok = this.decoder.get(id);
      if (tok !== undefined) chars.push(tok);
    }
    const bytes: number[] = [];
    for (const c of chars.join('')) {
      const b = CHAR_TO_BYTE.get(c);
      if (b !== undefined) bytes.push(b);
    }
    return new TextDecoder().decode(new Uint8Array(bytes)).replaceAll('</w>', ' ').trim();
  }
}

/** The first `limit` merge lines "a b" after the "#version" header line. */
export function parseMerges(text: string, what: string, limit = CLIP_MERGES): Array<[string, string]> {
  const lines: string[] = [];
  let pos = text.indexOf('\n') + 1;
  while (pos > 0 && pos < text.length && lines.length < limit) {
    const end = text.indexOf('\n', pos);
    const line = text.slice(pos, end < 0 ? text.length : end).replace(/\r$/, '');
    pos = end + 1;
    if (line === '' && (end < 0 || text.slice(pos).trim() === '')) break; // trailing blank lines
    lines.push(line);
  }
  return lines.map((line, i) => {
    const parts = line.split(' ');
    if (parts.length !== 2 || !parts[0] || !parts[1]) {
      throw new TokenizerError(`${what}: line ${i + 2} is not a merge "a b": ${JSON.stringify(line.slice(0, 80))}`);
    }
    return [parts[0], parts[1]];
  });
}

/** gunzip through the shared bounded helper (exact size from the trailer); a bad file is a TokenizerError. */
export async function gunzip(bytes: Uint8Array): Promise<Uint8Array> {
  try {
    return await gunzipExact(bytes);
  } catch (e) {
    if (e instanceof InflateError) throw new TokenizerError(`bpe merges .gz: ${e.message}`);
    throw e;
  }
}

/** What loadClipTokenizer needs to read a folder (CaseFiles and urlCaseFiles fit). */
export interface TokenizerFiles {
  text(name: string): Promise<string>;
  bytes(name: string): Promise<Uint8Array>;
  exists(name: string): Promise<boolean>;
}

/**
 * A tokenizer from a folder: `vocab.json` + `merges.txt` (a diffusers pipeline's tokenizer/ folder,
 * with pad token and model_max_length from special_tokens_map.json / tokenizer_config.json when
 * present), else `bpe_simple_vocab_16e6.txt.gz`. Explicit options win over the folder's files.
 */
export async function loadClipTokenizer(files: TokenizerFiles, options: ClipTokenizerOptions = {}): Promise<ClipTokenizer> {
  if (await files.exists('vocab.json')) {
    const vocab = JSON.parse(await files.text('vocab.json')) as Record<string, number>;
    const opts = { ...options };
    const cfg: Record<string, unknown> = {};
    for (const name of ['tokenizer_config.json', 'special_tokens_map.json']) {
      if (await files.exists(name)) Object.assign(cfg, JSON.parse(await files.text(name)) as Record<string, unknown>);
    }
    const pad = cfg['pad_token'];
    const padText = typeof pad === 'string' ? pad : (pad as { content?: string } | undefined)?.content;
    if (opts.padTokenId === undefined && padText !== undefined) {
      const id = vocab[padText];
      if (id === undefined) throw new TokenizerError(`pad token ${JSON.stringify(padText)} is not in vocab.json`);
      opts.padTokenId = id;
    }
    const maxLen = cfg['model_max_length'];
    if (opts.contextLength === undefined && typeof maxLen === 'number' && maxLen <= 1_000_000) opts.contextLength = maxLen;
    return ClipTokenizer.fromVocabAndMerges(vocab, await files.text('merges.txt'), opts);
  }
  const gz = 'bpe_simple_vocab_16e6.txt.gz';
  if (await files.exists(gz)) return ClipTokenizer.fromBpeGzip(await files.bytes(gz), options);
  throw new TokenizerError(`no CLIP tokenizer files: neither vocab.json + merges.txt nor ${gz}`);
}
