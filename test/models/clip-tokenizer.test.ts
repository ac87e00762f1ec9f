// CLIP's BPE tokenizer against transformers' slow CLIPTokenizer (with ftfy) outputs in
// ../shared/golden/clip_text_mini/tokens.json: every prompt's cleaned text, BPE tokens, ids and model
// input, from OpenAI's merges file and from a vocab.json + merges.txt folder built from it.
import { describe, it, expect, beforeAll } from 'vitest';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { ClipTokenizer, gunzip, loadClipTokenizer, parseMerges, TokenizerError } from '../../src/models/clip/tokenizer.js';
import { cleanText, fixText, unescapeHtml, whitespaceClean } from '../../src/models/clip/text-clean.js';
import { readSafetensors } from '../../src/check/files.js';
import { dirCaseFiles } from '../../src/check/files-node.js';
import { goldenFiles } from '../helpers/golden.js';

interface Prompt {
  index: number;
  prompt: string;
  bpe_ids: number[];
  bpe_tokens: string[];
  cleaned_text_hf: string;
  input_ids: number[];
  eos_position: number;
  truncated: boolean;
  without_ftfy_differs?: { bpe_ids: number[]; input_ids: number[] };
}

const files = goldenFiles('clip_text_mini');
let tokens: { bos: number; eos: number; pad: number; context_length: number; prompts: Prompt[] };
let gz: Uint8Array;
let tok: ClipTokenizer;

beforeAll(async () => {
  tokens = JSON.parse(await files.text('tokens.json'));
  gz = await files.bytes('bpe_simple_vocab_16e6.txt.gz');
  tok = await ClipTokenizer.fromBpeGzip(gz);
});

describe('CLIP tokenizer vs transformers CLIPTokenizer (golden tokens.json)', () => {
  it('vocabulary from bpe_simple_vocab_16e6.txt.gz: 49408 ids, specials 49406/49407', () => {
    expect(tokens.prompts.length).toBe(17);
    expect(tok.vocab.size).toBe(49408);
    expect([tok.bosId, tok.eosId, tok.padId, tok.contextLength]).toEqual([tokens.bos, tokens.eos, tokens.pad, tokens.context_length]);
    expect(tok.vocab.get('!')).toBe(0);
    expect(tok.vocab.get('a</w>')).toBe(320);
  });

  it('every prompt: cleaned text, BPE tokens, ids, input_ids, eos position, truncation', () => {
    for (const p of tokens.prompts) {
      const what = `prompt ${p.index} ${JSON.stringify(p.prompt.slice(0, 40))}`;
      expect(cleanText(p.prompt), what).toBe(p.cleaned_text_hf);
      expect(tok.tokenize(p.prompt), what).toEqual(p.bpe_tokens);
      expect(tok.encode(p.prompt), what).toEqual(p.bpe_ids);
      const e = tok.call(p.prompt);
      expect(e.inputIds, what).toEqual(p.input_ids);
      expect([e.eosPosition, e.truncated, e.numTokens], what).toEqual([p.eos_position, p.truncated, p.bpe_ids.length]);
    }
  });

  it('tokens.input_ids_all and input.input_ids of golden.safetensors', async () => {
    const golden = await readSafetensors(files, 'golden.safetensors');
    const batch = tok.callBatch(tokens.prompts.map((p) => p.prompt));
    expect(batch.shape).toEqual(golden.info('tokens.input_ids_all').shape);
    expect(Array.from(batch.inputIds)).toEqual(golden.getIntegers('tokens.input_ids_all'));
    expect(Array.from(tok.callBatch(tokens.prompts.slice(0, 2).map((p) => p.prompt)).inputIds)).toEqual(golden.getIntegers('input.input_ids'));
  });

  it('without the ftfy subset, the flagged prompts give the ids a port without ftfy gives', async () => {
    const plain = await ClipTokenizer.fromBpeGzip(gz, { fixText: false });
    const flagged = tokens.prompts.filter((p) => p.without_ftfy_differs);
    expect(flagged.map((p) => p.index)).toEqual([11, 13, 14]); // curly quotes, HTML entities, ligature/full-width
    for (const p of flagged) {
      expect(plain.encode(p.prompt), `prompt ${p.index}`).toEqual(p.without_ftfy_differs!.bpe_ids);
      expect(plain.call(p.prompt).inputIds, `prompt ${p.index}`).toEqual(p.without_ftfy_differs!.input_ids);
    }
  });

  it('truncation keeps 75 content tokens; untruncated and unpadded calls', () => {
    const long = tokens.prompts.find((p) => p.truncated)!;
    expect(long.bpe_ids.length).toBe(84);
    const full = tok.call(long.prompt, { truncate: false });
    expect(full.inputIds.length).toBe(86);
    expect(full.inputIds.slice(1, -1)).toEqual(long.bpe_ids);
    const short = tok.call('a cat', { pad: false });
    expect(short.inputIds).toEqual([49406, 320, 2368, 49407]);
  });

  it('special tokens in the text stay single tokens; decode inverts encode up to spaces', () => {
    expect(tok.encode('a <|endoftext|> B<|startoftext|>')).toEqual([320, 49407, 321, 49406]);
    // Decoding puts a space after every word end, so it restores text of letters and spaces exactly.
    const words = tokens.prompts.filter((q) => /^[\p{L} ]*$/u.test(q.cleaned_text_hf));
    expect(words.length).toBeGreaterThanOrEqual(6);
    for (const p of words) expect(tok.decode(tok.call(p.prompt).inputIds)).toBe(p.cleaned_text_hf);
    expect(tok.decode(tok.encode('Hello, world!'))).toBe('hello , world !');
  });

  it('vocab.json + merges.txt (a diffusers tokenizer/ folder built from the .gz), with its pad token', async () => {
    const merges = parseMerges(new TextDecoder().decode(await gunzip(gz)), 'gz');
    expect(merges.length).toBe(48894);
    const dir = mkdtempSync(join(tmpdir(), 'clip-tok-'));
    try {
      writeFileSync(join(dir, 'vocab.json'), JSON.stringify(Object.fromEntries(tok.vocab)));
      // merges.txt has more lines than CLIP uses (transformers cuts at 48894) and ends with a newline.
      writeFileSync(join(dir, 'merges.txt'), ['#version: 0.2', ...merges.map((m) => m.join(' ')), 'x y', ''].join('\n'));
      const folder = await loadClipTokenizer(dirCaseFiles(dir));
      expect(folder.padId).toBe(49407);
      for (const p of tokens.prompts) expect(folder.call(p.prompt).inputIds, `prompt ${p.index}`).toEqual(p.input_ids);
      // SD-2.x's tokenizer pads with "!" (id 0); special_tokens_map.json says so.
      writeFileSync(join(dir, 'special_tokens_map.json'), JSON.stringify({ pad_token: { content: '!' } }));
      writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 77, pad_token: '<|endoftext|>' }));
      const sd2 = await loadClipTokenizer(dirCaseFiles(dir));
      expect(sd2.call('a cat').inputIds).toEqual([49406, 320, 2368, 49407, ...new Array(73).fill(0)]);
      writeFileSync(join(dir, 'merges.txt'), '#version: 0.2\nab\n');
      await expect(loadClipTokenizer(dirCaseFiles(dir))).rejects.toThrow(/merges\.txt: line 2 is not a merge "a b": "ab"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const empty = mkdtempSync(join(tmpdir(), 'clip-tok-'));
    try {
      await expect(loadClipTokenizer(dirCaseFiles(empty))).rejects.toThrow(TokenizerError);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});

describe('text clean-up (the ftfy.fix_text subset)', () => {
  it('HTML entities: named, all-caps, numeric, unknown; not after a line with "<"; repeated to a fixed point', () => {
    expect(unescapeHtml('a&amp;b &lt;3 &eacute;&EACUTE; &SZLIG; &#65;&#x1F600;&#x80; &bogus; &#12ab;')).toBe('a&b <3 éÉ SS A😀€ &bogus; &#12ab;');
    expect(fixText('&amp;lt;')).toBe('<');
    expect(fixText('&amp;\n<b>&amp;</b>\n&amp;')).toBe('&\n<b>&amp;</b>\n&amp;');
  });

  it('quotes, ligatures, widths, C1 controls, line breaks, control characters, NFC', () => {
    expect(fixText('“a” ‘b’ ʼc')).toBe('"a" \'b\' \'c');
    expect(fixText('ﬁne ﬂuﬀy')).toBe('fine fluffy');
    expect(fixText('ＬＯＵＤ　ＮＯＩＳＥ ｶﾞ')).toBe('LOUD NOISE ガ');
    expect(fixText('a\u0085b\u0096c')).toBe('a…b–c');
    expect(fixText('a\r\nb\rc\u2028d')).toBe('a\nb\nc\nd');
    expect(fixText('a\x00b\ufeffc\x1b[31md\x7f')).toBe('abcd');
    expect(fixText('e\u0301')).toBe('é');
    expect(fixText('… — ™')).toBe('… — ™'); // untouched: not NFKC
  });

  it('whitespace clean-up and lower-casing as transformers', () => {
    expect(whitespaceClean('  a \t\n b\u00a0\u3000c  ')).toBe('a b c');
    expect(cleanText('  MiXeD\u2003CaSe ')).toBe('mixed case');
  });
});

describe('gunzip (the shared bounded inflate helper)', () => {
  it('a corrupt or lying .gz is a TokenizerError, not a raw stream error', async () => {
    await expect(gunzip(new TextEncoder().encode('not a gzip file at all'))).rejects.toThrow(/bpe merges \.gz: not a gzip file/);
    const gz = new Uint8Array(gzipSync(new TextEncoder().encode('#version: 0.2\na b\n'.repeat(50))));
    const bad = gz.slice();
    bad[12]! ^= 0xff;
    await expect(gunzip(bad)).rejects.toBeInstanceOf(TokenizerError);
    const liar = gz.slice();
    new DataView(liar.buffer).setUint32(liar.length - 4, 0x7fffffff, true);
    await expect(gunzip(liar)).rejects.toThrow(/bpe merges \.gz: gzip trailer declares 2147483647 bytes/);
  });
});
