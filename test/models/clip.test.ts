// CLIPTextModel: the golden case clip_text_mini (transformers names, OpenAI reference run in f64) in
// f32 and f16, a CPU reference on another config (gelu, L < max positions, eos rule, clip skip),
// weight-loading errors and argument checks.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import { parseSafetensors, f32Entry, serializeSafetensors, type SafetensorsEntry } from '../../src/formats/safetensors.js';
import { WeightLoader, WeightError } from '../../src/models/weights.js';
import { parseClipTextConfig, ClipConfigError, type ClipTextConfig } from '../../src/models/clip/config.js';
import { ClipTextModel, eosPositions } from '../../src/models/clip/text-encoder.js';
import { runClipTextMini, CLIP_F16_TOLERANCE } from '../../src/check/clip.js';
import { readSafetensors } from '../../src/check/files.js';
import { getEngine, randomData, expectClose } from '../helpers/engine.js';
import { goldenFiles, goldenManifest, expectAllPass } from '../helpers/golden.js';
import { layerNormRef } from '../ref/norm.js';
import { matmulRef } from '../ref/matmul.js';
import { attentionRef } from '../ref/attention.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

type Weights = Record<string, Float32Array>;

/** Random CLIPTextModel weights for `c` (transformers names), as values and as a safetensors file. */
function randomWeights(c: ClipTextConfig, seed: number): { w: Weights; shapes: Record<string, number[]> } {
  const d = c.hiddenSize;
  const shapes: Record<string, number[]> = {
    'text_model.embeddings.token_embedding.weight': [c.vocabSize, d],
    'text_model.embeddings.position_embedding.weight': [c.maxPositionEmbeddings, d],
    'text_model.final_layer_norm.weight': [d],
    'text_model.final_layer_norm.bias': [d],
  };
  for (let i = 0; i < c.numHiddenLayers; i++) {
    const p = `text_model.encoder.layers.${i}.`;
    for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) Object.assign(shapes, { [`${p}self_attn.${n}.weight`]: [d, d], [`${p}self_attn.${n}.bias`]: [d] });
    for (const n of ['layer_norm1', 'layer_norm2']) Object.assign(shapes, { [`${p}${n}.weight`]: [d], [`${p}${n}.bias`]: [d] });
    Object.assign(shapes, {
      [`${p}mlp.fc1.weight`]: [c.intermediateSize, d], [`${p}mlp.fc1.bias`]: [c.intermediateSize],
      [`${p}mlp.fc2.weight`]: [d, c.intermediateSize], [`${p}mlp.fc2.bias`]: [d],
    });
  }
  const w: Weights = {};
  Object.entries(shapes).forEach(([name, shape], i) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const norm = name.includes('norm') && name.endsWith('weight');
    const scale = shape.length === 2 && !name.includes('embedding') ? 1 / Math.sqrt(shape[1]!) : 1;
    w[name] = randomData(n, seed * 1000 + i, norm ? 0.8 : -scale, norm ? 1.2 : scale);
  });
  return { w, shapes };
}

function toFile(w: Weights, shapes: Record<string, number[]>, name: string, extra: Record<string, SafetensorsEntry> = {}) {
  const entries = Object.fromEntries(Object.entries(w).map(([k, v]) => [k, f32Entry(v, shapes[k]!)]));
  return parseSafetensors(serializeSafetensors({ ...entries, ...extra }), name);
}

/** CPU (f64-accumulating) CLIPTextModel forward from the engine's op references. */
function clipRef(c: ClipTextConfig, w: Weights, ids: number[], B: number, L: number, layers = c.numHiddenLayers) {
  const d = c.hiddenSize;
  const g = (n: string) => w[`text_model.${n}`]!;
  const lin = (x: Float32Array, n: string, inF: number, outF: number, act?: string) =>
    matmulRef(x, [B * L, inF], g(`${n}.weight`), [outF, inF], { transB: true, bias: g(`${n}.bias`), act }).out;
  let x = new Float32Array(B * L * d);
  for (let r = 0; r < B * L; r++) {
    for (let k = 0; k < d; k++) x[r * d + k] = g('embeddings.token_embedding.weight')[ids[r]! * d + k]! + g('embeddings.position_embedding.weight')[(r % L) * d + k]!;
  }
  const act = { quick_gelu: 'quick_gelu', gelu: 'gelu', gelu_tanh: 'gelu_tanh' }[c.hiddenAct as string]!;
  for (let i = 0; i < layers; i++) {
    const p = `encoder.layers.${i}.`;
    const n1 = layerNormRef(x, d, g(`${p}layer_norm1.weight`), g(`${p}layer_norm1.bias`), c.layerNormEps);
    const [q, k, v] = ['q_proj', 'k_proj', 'v_proj'].map((n) => lin(n1, `${p}self_attn.${n}`, d, d));
    const heads = c.numAttentionHeads;
    const a = attentionRef(q!, k!, v!, { B, lq: L, lk: L, heads, D: d / heads, causal: true });
    const o = lin(a, `${p}self_attn.out_proj`, d, d);
    x = x.map((t, j) => t + o[j]!);
    const n2 = layerNormRef(x, d, g(`${p}layer_norm2.weight`), g(`${p}layer_norm2.bias`), c.layerNormEps);
    const m = lin(lin(n2, `${p}mlp.fc1`, d, c.intermediateSize, act), `${p}mlp.fc2`, c.intermediateSize, d);
    x = x.map((t, j) => t + m[j]!);
  }
  return layerNormRef(x, d, g('final_layer_norm.weight'), g('final_layer_norm.bias'), c.layerNormEps);
}

describe('CLIPTextModel vs golden clip_text_mini', () => {
  it('f32: input_ids exact, last_hidden_state and pooled_output within 1e-4', async () => {
    const items = await runClipTextMini(engine, goldenFiles('clip_text_mini'), goldenManifest('clip_text_mini'), {});
    expect(items.map((i) => i.name)).toEqual(['tokens.input_ids_all', 'input.input_ids', 'last_hidden_state', 'pooled_output']);
    expect(items[2]!.tol).toEqual({ atol: 1e-4, rtol: 1e-4 });
    expectAllPass(items, 'clip_text_mini f32');
  });

  it(`f16 weights and activations (needs shader-f16; atol ${CLIP_F16_TOLERANCE.atol}, rtol ${CLIP_F16_TOLERANCE.rtol})`, async (ctx) => {
    if (!engine.hasF16) {
      console.log('SKIP f16 CLIP: this adapter has no shader-f16');
      ctx.skip();
    }
    const items = await runClipTextMini(engine, goldenFiles('clip_text_mini'), goldenManifest('clip_text_mini'), { dtype: 'f16' });
    expect(items[2]!.tol).toEqual(CLIP_F16_TOLERANCE);
    expectAllPass(items, 'clip_text_mini f16');
  });

  it('names the file and tensor for a missing, mis-shaped or unexpected tensor; ignores position_ids', async () => {
    const files = goldenFiles('clip_text_mini');
    const config = parseClipTextConfig(JSON.parse(await files.text('config.json')));
    const golden = await readSafetensors(files, 'model.safetensors');
    const w: Weights = {};
    const shapes: Record<string, number[]> = {};
    for (const n of golden.names()) {
      w[n] = golden.getF32(n);
      shapes[n] = golden.info(n).shape;
    }
    const live = engine.pool.stats.liveBytes;
    const missing = { ...w };
    delete missing['text_model.encoder.layers.1.mlp.fc2.weight'];
    expect(() => WeightLoader.build(engine, toFile(missing, shapes, 'm.safetensors'), {}, (l) => new ClipTextModel(l, config))).toThrow(
      /m\.safetensors: missing tensor "text_model\.encoder\.layers\.1\.mlp\.fc2\.weight" \(expected shape \[48, 192\]\)/,
    );
    expect(() => WeightLoader.build(engine, toFile(w, shapes, 's.safetensors'), {}, (l) => new ClipTextModel(l, { ...config, intermediateSize: 96 }))).toThrow(
      /s\.safetensors: tensor "text_model\.encoder\.layers\.0\.mlp\.fc1\.weight" has shape \[192, 48\], expected \[96, 48\]/,
    );
    const extra = { 'text_model.encoder.layers.2.mlp.fc1.weight': f32Entry([1], [1]) };
    expect(() => WeightLoader.build(engine, toFile(w, shapes, 'x.safetensors', extra), {}, (l) => new ClipTextModel(l, config))).toThrow(WeightError);
    expect(engine.pool.stats.liveBytes).toBe(live); // uploads of failed builds were freed
    // Older transformers saved the position_ids buffer with the weights (SD-1.5's text encoder does).
    const positionIds = { 'text_model.embeddings.position_ids': { dtype: 'I64' as const, shape: [1, 77], data: BigInt64Array.from({ length: 77 }, (_, i) => BigInt(i)) } };
    const model = WeightLoader.build(engine, toFile(w, shapes, 'p.safetensors', positionIds), {}, (l) => new ClipTextModel(l, config));
    model.dispose();
    expect(engine.pool.stats.liveBytes).toBe(live);
  });
});

describe('CLIPTextModel vs CPU reference (other configs)', () => {
  const raw = {
    model_type: 'clip_text_model', hidden_size: 24, num_hidden_layers: 3, num_attention_heads: 3, intermediate_size: 40,
    max_position_embeddings: 12, vocab_size: 50, hidden_act: 'gelu', layer_norm_eps: 1e-6, eos_token_id: 49,
  };

  it('gelu, 3 heads of 8, batch 3 of 9 tokens (< max positions), eos pooled at the first eos id, clip skip', async () => {
    const c = parseClipTextConfig(raw);
    const { w, shapes } = randomWeights(c, 5);
    const [B, L] = [3, 9];
    // Row 0 has its eos at 4 and a larger id after it; row 2 has no eos (pools at 0, as transformers' argmax of zeros).
    const ids = [
      10, 3, 7, 1, 49, 49, 49, 49, 49,
      0, 49, 20, 30, 40, 45, 46, 47, 48,
      5, 6, 7, 8, 9, 10, 11, 12, 13,
    ];
    ids[5] = 48; // after the eos: ignored by the first-eos rule
    expect(eosPositions(ids, B, L, 49)).toEqual([4, 1, 0]);
    expect(eosPositions(ids, B, L, 2)).toEqual([4, 1, 8]); // legacy rule: argmax, first maximum
    const model = WeightLoader.build(engine, toFile(w, shapes, 'r.safetensors'), {}, (l) => new ClipTextModel(l, c));
    try {
      const { result, report } = await runProgram(engine, 'clip-ref', (rec) => [model.forward(rec, ids, [B, L]), model.forward(rec, ids, [B, L], { clipSkip: 1 })]);
      expect(report.ops['text_encoder/embeddings/gather_rows']?.dispatches).toBe(4);
      const tol = { atol: 2e-5, rtol: 1e-4 };
      for (const [k, layers] of [[0, 3], [1, 2]] as const) {
        const ref = clipRef(c, w, ids, B, L, layers);
        const out = result[k]!;
        expect(out.lastHiddenState.shape).toEqual([B, L, 24]);
        expectClose(await out.lastHiddenState.read(), ref, tol, `last_hidden_state (${layers} layers)`);
        const pooled = [4, 1, 0].flatMap((p, b) => Array.from(ref.subarray((b * L + p) * 24, (b * L + p + 1) * 24)));
        expectClose(await out.pooledOutput.read(), pooled, tol, `pooled_output (${layers} layers)`);
      }
    } finally {
      model.dispose();
    }
  });

  it('rejects bad ids, lengths, clip skip and configs with the offending value', async () => {
    const c = parseClipTextConfig(raw);
    const { w, shapes } = randomWeights(c, 6);
    const model = WeightLoader.build(engine, toFile(w, shapes, 'r.safetensors'), {}, (l) => new ClipTextModel(l, c));
    const run = (ids: number[], shape: [number, number], clipSkip?: number) => runProgram(engine, 'bad', (rec) => model.forward(rec, ids, shape, { clipSkip }));
    await expect(run([1, 2, 50], [1, 3])).rejects.toThrow(/token id 50 at \[0, 2\] is outside the vocabulary \[0, 50\)/);
    await expect(run(new Array(13).fill(1), [1, 13])).rejects.toThrow(/sequence length 13 exceeds max_position_embeddings 12/);
    await expect(run([1, 2], [1, 3])).rejects.toThrow(/2 ids do not fill shape \[1, 3\]/);
    await expect(run([1, 2], [1, 2], 3)).rejects.toThrow(/clipSkip must be an integer in \[0, 2\]/);
    expect(engine.activeRecorder).toBeNull();
    model.dispose();
    expect(() => parseClipTextConfig({ ...raw, hidden_act: 'relu' }, 'cfg.json')).toThrow(/cfg\.json: hidden_act "relu" is not supported/);
    expect(() => parseClipTextConfig({ ...raw, num_attention_heads: 5 })).toThrow(/hidden_size 24 is not divisible by num_attention_heads 5/);
    expect(() => parseClipTextConfig({ ...raw, hidden_size: 0 })).toThrow(ClipConfigError);
    // A full CLIPConfig: its text_config is used.
    expect(parseClipTextConfig({ model_type: 'clip', text_config: raw }).hiddenSize).toBe(24);
  });
});
