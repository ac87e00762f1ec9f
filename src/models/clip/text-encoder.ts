// CLIP's text transformer with transformers' CLIPTextModel parameter names (text_model.*), as SD
// pipelines run it (no attention_mask; the causal mask only):
//   x = token_embedding[ids] + position_embedding[0:L]
//   per layer (pre-LN):  x += out_proj(attn(q_proj(ln1 x), k_proj(ln1 x), v_proj(ln1 x), causal))
//                        x += fc2(act(fc1(ln2 x)))
//   last_hidden_state = final_layer_norm(x);  pooled_output = last_hidden_state at the end-of-text token.
// Attention scales q by 1/sqrt(head_dim), as CLIPAttention does.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import type { DType } from '../../engine/dtype.js';
import { ArgumentError } from '../../engine/errors.js';
import { add } from '../../engine/ops/elementwise.js';
import { attention } from '../../engine/ops/attention.js';
import { gatherRows } from '../../engine/ops/gather.js';
import { LayerNorm, Linear } from '../layers.js';
import type { WeightLoader } from '../weights.js';
import type { ClipTextConfig } from './config.js';

export interface ClipTextOutput {
  /** [B, L, hidden]: what SD's UNet takes as encoder_hidden_states. */
  lastHiddenState: Tensor;
  /** [B, hidden]: lastHiddenState at each row's end-of-text position. */
  pooledOutput: Tensor;
}

export interface ClipTextForwardOptions {
  /**
   * diffusers' clip_skip: run all but the last `clipSkip` layers, then final_layer_norm (default 0).
   * The pooled output is taken from that state too.
   */
  clipSkip?: number;
}

/**
 * The end-of-text position of each row of ids [B, L]: argmax (the first maximum) when eosTokenId is 2
 * (transformers' legacy rule), else the first occurrence of eosTokenId (0 when there is none).
 */
export function eosPositions(ids: ArrayLike<number>, batch: number, length: number, eosTokenId: number): number[] {
  const out: number[] = [];
  for (let b = 0; b < batch; b++) {
    let pos = 0;
    for (let i = 0; i < length; i++) {
      const v = ids[b * length + i]!;
      if (eosTokenId === 2 ? v > ids[b * length + pos]! : v === eosTokenId) {
        pos = i;
        if (eosTokenId !== 2) break;
      }
    }
    out.push(pos);
  }
  return out;
}

class ClipEncoderLayer {
  readonly layerNorm1: LayerNorm;
  readonly q: Linear;
  readonly k: Linear;
  readonly v: Linear;
  readonly out: Linear;
  readonly layerNorm2: LayerNorm;
  readonly fc1: Linear;
  readonly fc2: Linear;

  constructor(w: WeightLoader, private readonly c: ClipTextConfig) {
    const d = c.hiddenSize;
    this.layerNorm1 = new LayerNorm(w, 'layer_norm1', [d], c.layerNormEps);
    this.q = new Linear(w, 'self_attn.q_proj', d, d);
    this.k = new Linear(w, 'self_attn.k_proj', d, d);
    this.v = new Linear(w, 'self_attn.v_proj', d, d);
    this.out = new Linear(w, 'self_attn.out_proj', d, d);
    this.layerNorm2 = new LayerNorm(w, 'layer_norm2', [d], c.layerNormEps);
    this.fc1 = new Linear(w, 'mlp.fc1', d, c.intermediateSize);
    this.fc2 = new Linear(w, 'mlp.fc2', c.intermediateSize, d);
  }

  get parameters(): Tensor[] {
    const lin = [this.q, this.k, this.v, this.out, this.fc1, this.fc2].flatMap((l) => [l.weight, l.bias!]);
    return [...lin, this.layerNorm1.weight, this.layerNorm1.bias, this.layerNorm2.weight, this.layerNorm2.bias];
  }

  /** x [B, L, D] -> [B, L, D]. */
  forward(rec: Recorder, x: Tensor): Tensor {
    return rec.engine.tidy(() => {
      const h = rec.scope('self_attn', () => {
        const n = this.layerNorm1.forward(rec, x);
        const a = attention(rec, this.q.forward(rec, n), this.k.forward(rec, n), this.v.forward(rec, n), {
          heads: this.c.numAttentionHeads,
          causal: true,
        });
        return add(rec, x, this.out.forward(rec, a));
      });
      return rec.scope('mlp', () => {
        const m = this.fc1.forward(rec, this.layerNorm2.forward(rec, h), this.c.hiddenAct);
        return add(rec, h, this.fc2.forward(rec, m));
      });
    });
  }
}

export class ClipTextModel {
  readonly tokenEmbedding: Tensor;
  readonly positionEmbedding: Tensor;
  readonly layers: ClipEncoderLayer[];
  readonly finalLayerNorm: LayerNorm;
  /** The activations' dtype (the weights may be f16 under f32 activations). */
  readonly dtype: DType;

  /** `w` at the checkpoint's root: parameters are read under "text_model.". */
  constructor(w: WeightLoader, readonly config: ClipTextConfig) {
    const t = w.scope('text_model.');
    const d = config.hiddenSize;
    this.dtype = w.activationDtype;
    this.tokenEmbedding = t.get('embeddings.token_embedding.weight', [config.vocabSize, d]);
    this.positionEmbedding = t.get('embeddings.position_embedding.weight', [config.maxPositionEmbeddings, d]);
    this.layers = [];
    for (let i = 0; i < config.numHiddenLayers; i++) this.layers.push(new ClipEncoderLayer(t.scope(`encoder.layers.${i}.`), config));
    this.finalLayerNorm = new LayerNorm(t, 'final_layer_norm', [d], config.layerNormEps);
    // A buffer (not a parameter) that older transformers versions saved with the weights (SD-1.5's text encoder).
    t.ignore((n) => n === 'embeddings.position_ids');
  }

  /**
   * ids: B * L token ids, row-major (e.g. ClipTokenizer.callBatch().inputIds), 1 <= L <= max_position_embeddings.
   * Ids are checked here: the GPU lookup cannot report a bad one.
   */
  forward(rec: Recorder, ids: ArrayLike<number>, shape: readonly [number, number], opts: ClipTextForwardOptions = {}): ClipTextOutput {
    const [B, L] = shape;
    const c = this.config;
    if (!(Number.isInteger(B) && B > 0 && Number.isInteger(L) && L > 0) || ids.length !== B * L) {
      throw new ArgumentError(`ClipTextModel: ${ids.length} ids do not fill shape [${B}, ${L}]`);
    }
    if (L > c.maxPositionEmbeddings) {
      throw new ArgumentError(`ClipTextModel: sequence length ${L} exceeds max_position_embeddings ${c.maxPositionEmbeddings}`);
    }
    for (let i = 0; i < ids.length; i++) {
      const v = ids[i]!;
      if (!Number.isInteger(v) || v < 0 || v >= c.vocabSize) {
        throw new ArgumentError(`ClipTextModel: token id ${v} at [${Math.floor(i / L)}, ${i % L}] is outside the vocabulary [0, ${c.vocabSize})`);
      }
    }
    const skip = opts.clipSkip ?? 0;
    if (!Number.isInteger(skip) || skip < 0 || skip >= c.numHiddenLayers) {
      throw new ArgumentError(`ClipTextModel: clipSkip must be an integer in [0, ${c.numHiddenLayers - 1}], got ${skip}`);
    }
    const engine = rec.engine;
    return rec.scope('text_encoder', () =>
      engine.tidy(() => {
        const idTensor = engine.tensor(Float32Array.from(ids), [B, L], 'f32', 'input_ids');
        const positions = engine.tensor(Float32Array.from({ length: L }, (_, i) => i), [L], 'f32', 'position_ids');
        let x = rec.scope('embeddings', () =>
          add(rec, gatherRows(rec, this.tokenEmbedding, idTensor, { dtype: this.dtype }), gatherRows(rec, this.positionEmbedding, positions, { dtype: this.dtype })),
        );
        this.layers.slice(0, c.numHiddenLayers - skip).forEach((layer, i) => {
          x = rec.scope(`encoder.layers.${i}`, () => layer.forward(rec, x));
        });
        const lastHiddenState = rec.scope('final_layer_norm', () => this.finalLayerNorm.forward(rec, x));
        const rows = eosPositions(ids, B, L, c.eosTokenId).map((p, b) => b * L + p);
        const rowIds = engine.tensor(Float32Array.from(rows), [B], 'f32', 'eos_rows');
        const flat = lastHiddenState.reshape([B * L, c.hiddenSize]);
        const pooledOutput = gatherRows(rec, flat, rowIds, { op: 'pool_eos' });
        return { lastHiddenState, pooledOutput };
      }),
    );
  }

  /** Frees the parameters. */
  dispose(): void {
    const all = [this.tokenEmbedding, this.positionEmbedding, this.finalLayerNorm.weight, this.finalLayerNorm.bias];
    for (const t of [...all, ...this.layers.flatMap((l) => l.parameters)]) t.dispose();
  }
}
