// Golden case clip_text_mini: the CLIP BPE tokenizer (every prompt of tokens.json, ids exact) and a
// small random CLIPTextModel built from the folder's config.json (last_hidden_state, pooled_output) on
// the prompts the manifest's model_prompt_indices names, in that order.

import type { Engine } from '../engine/device.js';
import { SiloError } from '../engine/errors.js';
import { runProgram } from '../engine/recorder.js';
import { ClipTokenizer } from '../models/clip/tokenizer.js';
import { parseClipTextConfig } from '../models/clip/config.js';
import { ClipTextModel } from '../models/clip/text-encoder.js';
import { WeightLoader } from '../models/weights.js';
import type { CaseRunner, CaseOptions } from './case.js';
import type { CheckItem, Tolerance } from './compare.js';
import { readJson, readSafetensors, type CaseFiles } from './files.js';
import { caseError, enforceContract, required } from './contract.js';

interface TokensJson {
  bos?: number;
  eos?: number;
  pad: number;
  context_length: number;
  prompts: Array<{ index: number; prompt: string; input_ids: number[] }>;
}

/**
 * With f16 weights and activations: f16 rounding (2^-11 relative) of O(1) LayerNorm outputs through
 * the two layers gave 3.1e-3 max abs (lavapipe); the bound leaves 3x for other adapters' summation orders.
 */
export const CLIP_F16_TOLERANCE: Tolerance = { atol: 1e-2, rtol: 1e-2 };

function tolerance(manifest: Record<string, unknown>, name: string, fallback: string): Tolerance {
  const all = (manifest['suggested_tolerance'] ?? {}) as Record<string, { atol?: number; rtol?: number }>;
  const t = all[name] ?? all[fallback];
  if (!t) throw new SiloError(`clip_text_mini manifest: no suggested_tolerance for ${name}`);
  return { atol: t.atol ?? 0, rtol: t.rtol ?? 0 };
}

/** The manifest's model_prompt_indices: which prompts of tokens.json the model ran, one per batch row. */
function promptIndices(files: CaseFiles, manifest: Record<string, unknown>, prompts: number, batch: number): number[] {
  const v = required(files, manifest, 'model_prompt_indices');
  const key = 'manifest.json "model_prompt_indices"';
  if (!Array.isArray(v) || !v.every((i) => Number.isInteger(i) && i >= 0 && i < prompts)) {
    throw caseError(files, key, `must be a list of prompt indices in [0, ${prompts}), got ${JSON.stringify(v)}`);
  }
  if (v.length !== batch) throw caseError(files, key, `names ${v.length} prompts, but input.input_ids has ${batch} rows`);
  return v as number[];
}

export const runClipTextMini: CaseRunner = async (engine: Engine, files: CaseFiles, manifest: Record<string, unknown>, opts: CaseOptions) => {
  const f = (manifest['files'] ?? {}) as Record<string, string>;
  const name = (key: string, dflt: string) => f[key] ?? dflt;
  const tokens = await readJson<TokensJson>(files, name('tokens', 'tokens.json'));
  const tokenizer = await ClipTokenizer.fromBpeGzip(await files.bytes(name('bpe', 'bpe_simple_vocab_16e6.txt.gz')), {
    padTokenId: tokens.pad,
    contextLength: tokens.context_length,
  });
  const golden = await readSafetensors(files, name('golden', 'golden.safetensors'));
  const items: CheckItem[] = [];
  for (const [key, ours] of [['bos', tokenizer.bosId], ['eos', tokenizer.eosId]] as const) {
    const stated = tokens[key];
    if (stated !== undefined && stated !== ours) throw caseError(files, `tokens.json "${key}"`, `${stated}, but the vocabulary's ${key} id is ${ours}`);
  }
  tokens.prompts.forEach((p, i) => {
    if (p.index !== undefined && p.index !== i) throw caseError(files, `tokens.json prompts[${i}].index`, `${p.index}: prompts must be listed in index order`);
  });

  enforceContract(files, manifest, golden, {
    runner: 'clip',
    files: ['config', 'weights', 'golden', 'tokens', 'bpe'],
    tensors: ['tokens.input_ids_all', 'input.input_ids', 'last_hidden_state', 'pooled_output'],
    choices: ['model_prompt_indices'],
    described: ['tokenizer', 'model_reference'],
  });

  // Tokenizer: all prompts, and the ones the model ran on (model_prompt_indices, in that order).
  const ours = tokens.prompts.map((p) => tokenizer.call(p.prompt).inputIds);
  items.push({ name: 'tokens.input_ids_all', actual: ours.flat(), expected: golden.getIntegers('tokens.input_ids_all'), tol: { exact: true } });
  const ids = golden.getIntegers('input.input_ids');
  const [B, L] = golden.info('input.input_ids').shape as [number, number];
  const indices = promptIndices(files, manifest, tokens.prompts.length, B);
  items.push({ name: 'input.input_ids', actual: indices.flatMap((i) => ours[i]!), expected: ids, tol: { exact: true } });

  // Text encoder on the golden ids.
  const configName = name('config', 'config.json');
  const config = parseClipTextConfig(await readJson(files, configName), `${files.location}/${configName}`);
  const weights = await readSafetensors(files, name('weights', 'model.safetensors'));
  const dtype = opts.dtype ?? 'f32';
  const model = WeightLoader.build(engine, weights, { dtype }, (w) => new ClipTextModel(w, config));
  try {
    const { result } = await runProgram(engine, 'clip_text_mini', (rec) => model.forward(rec, ids, [B, L]));
    const [hidden, pooled] = [await result.lastHiddenState.read(), await result.pooledOutput.read()];
    result.lastHiddenState.dispose();
    result.pooledOutput.dispose();
    const tol = (n: string) => (dtype === 'f16' ? CLIP_F16_TOLERANCE : tolerance(manifest, n, 'last_hidden_state'));
    items.push({ name: 'last_hidden_state', actual: hidden, expected: golden.getF32('last_hidden_state'), tol: tol('last_hidden_state') });
    items.push({ name: 'pooled_output', actual: pooled, expected: golden.getF32('pooled_output'), tol: tol('pooled_output') });
  } finally {
    model.dispose();
  }
  opts.log?.(`clip_text_mini: ${tokens.prompts.length} prompts tokenised, text encoder ${dtype} on prompts [${indices.join(', ')}] ([${B}, ${L}])`);
  return items;
};
