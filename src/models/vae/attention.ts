// The VAE mid-block attention (diffusers' Attention with residual_connection=True, as built by
// UNetMidBlock2D): on x [N, C, H, W]
//   h = GroupNorm(x); tokens = h as [N, HW, C]; q, k, v = to_q/to_k/to_v(tokens)
//   a = softmax(q k^T / sqrt(d)) v per head; out = (to_out.0(a) as [N, C, H, W] + x) / rescale_output_factor
// heads = C / attention_head_dim (1 in every AutoencoderKL: attention_head_dim = C).
//
// Parameter names: diffusers' current to_q / to_k / to_v / to_out.0, or the old SD-1.x names query /
// key / value / proj_attn that diffusers renames on load; each [C, C] weight may also be stored as a
// 1x1 conv kernel [C, C, 1, 1] (LDM-era checkpoints, flattened by diffusers' conv_attn_to_linear).
//
// The NCHW <-> token transposes are folded into the projections: q = (h^T) Wq^T is a matmul with a
// transposed A, and the output projection Wo a^T lands directly in [N, C, HW]. A head dim above the
// flash kernel's register limit (SD's VAE: one head of 512) runs as scores -> softmax -> P V per head,
// in query chunks whose score block fits one storage binding (its VJP: ./attention-vjp.ts).

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { attention, MAX_HEAD_DIM } from '../../engine/ops/attention.js';
import { matmul } from '../../engine/ops/matmul.js';
import { softmax } from '../../engine/ops/softmax.js';
import { add, scale } from '../../engine/ops/elementwise.js';
import { concatChannels, sliceChannels } from '../../engine/ops/layout.js';
import { bytesPerElement, type DType } from '../../engine/dtype.js';
import type { Engine } from '../../engine/device.js';
import { GroupNorm } from '../layers.js';
import { assertArg } from '../../engine/errors.js';
import type { WeightLoader } from '../weights.js';

const NAMES = {
  q: ['to_q', 'query'],
  k: ['to_k', 'key'],
  v: ['to_v', 'value'],
  out: ['to_out.0', 'proj_attn'],
} as const;

export interface VaeAttentionOptions {
  groups: number;
  eps: number;
  /** diffusers' attention_head_dim; default: the channel count (one head). */
  headDim?: number;
  rescaleOutputFactor?: number;
}

/** A [C, C] projection stored as a Linear or a 1x1 conv, under its current or its old name. */
class Projection {
  readonly weight: Tensor;
  readonly bias: Tensor;
  constructor(w: WeightLoader, names: readonly string[], readonly c: number) {
    const name = names.find((n) => w.has(`${n}.weight`)) ?? names[0]!;
    const conv = w.shapeOf(`${name}.weight`)?.length === 4;
    this.weight = w.get(`${name}.weight`, conv ? [c, c, 1, 1] : [c, c]);
    this.bias = w.get(`${name}.bias`, [c]);
  }
  /** The weight as [C, C] (a view, freed by the caller's tidy). */
  matrix(): Tensor {
    return this.weight.rank === 2 ? this.weight : this.weight.reshape([this.c, this.c]);
  }
  /** tokens W^T + b = [N, HW, C] from tokensT [N, C, HW]. */
  tokens(rec: Recorder, tokensT: Tensor, op: string): Tensor {
    return matmul(rec, tokensT, this.matrix(), { transA: true, transB: true, bias: this.bias, op });
  }
  /** (tokens W^T + b)^T = W tokensT + b = [N, C, HW] (channels first). */
  channels(rec: Recorder, xT: Tensor, op: string): Tensor {
    return add(rec, matmul(rec, this.matrix(), xT, { op }), this.bias.reshape([this.c, 1]));
  }
}

export class VaeAttention {
  readonly groupNorm: GroupNorm;
  readonly q: Projection;
  readonly k: Projection;
  readonly v: Projection;
  readonly out: Projection;
  readonly heads: number;
  readonly rescale: number;
  /** Query rows per chunk of the matmul path (tests force small chunks). */
  chunkRows?: number;
  /** Force the matmul path even where the flash kernel applies (tests). */
  forceMatmul = false;

  constructor(w: WeightLoader, readonly channels: number, opts: VaeAttentionOptions) {
    const headDim = opts.headDim ?? channels;
    assertArg(channels % headDim === 0, `VAE attention: head dim ${headDim} does not divide ${channels} channels`);
    this.heads = channels / headDim;
    this.rescale = opts.rescaleOutputFactor ?? 1;
    this.groupNorm = new GroupNorm(w, 'group_norm', opts.groups, channels, opts.eps);
    this.q = new Projection(w, NAMES.q, channels);
    this.k = new Projection(w, NAMES.k, channels);
    this.v = new Projection(w, NAMES.v, channels);
    this.out = new Projection(w, NAMES.out, channels);
  }

  forward(rec: Recorder, x: Tensor): Tensor {
    const engine = rec.engine;
    return engine.tidy(() => {
      const [n, c, h, wd] = x.shape as [number, number, number, number];
      const hw = h * wd;
      const tokensT = this.groupNorm.forward(rec, x).reshape([n, c, hw]); // [N, C, HW] = tokens^T
      const a = this.core(rec, tokensT); // [N, HW, C]
      // to_out.0 in channels-first order: Wo a^T + b = [N, C, HW], then the residual.
      const o = matmul(rec, this.out.matrix(), a, { transB: true, op: 'to_out' });
      let y = add(rec, add(rec, o, this.out.bias.reshape([c, 1])), x.reshape([n, c, hw]));
      if (this.rescale !== 1) y = scale(rec, y, 1 / this.rescale);
      return y.reshape([n, c, h, wd]);
    });
  }

  /** Head dim d = C / heads. */
  get headDim(): number {
    return this.channels / this.heads;
  }

  /** Whether this attention runs (and differentiates) with explicit score blocks instead of the flash kernel. */
  get explicitScores(): boolean {
    return this.forceMatmul || this.headDim > MAX_HEAD_DIM;
  }

  /**
   * Query rows per chunk of the explicit path for n batches of l tokens: the largest divisor of l (at most
   * chunkRows when set) whose [n, rows, l] score block fits one storage binding and one buffer.
   */
  queryChunkRows(engine: Engine, n: number, l: number, dtype: DType): number {
    const limit = Math.min(engine.limits.maxStorageBufferBindingSize, engine.limits.maxBufferSize);
    let rows = Math.min(this.chunkRows ?? l, Math.max(1, Math.floor(limit / (n * l * bytesPerElement(dtype)))), l);
    while (l % rows !== 0) rows--;
    return rows;
  }

  /** softmax(q k^T / sqrt(d)) v per head -> [N, HW, C]. */
  private core(rec: Recorder, tokensT: Tensor): Tensor {
    const q = this.q.tokens(rec, tokensT, 'to_q');
    const v = this.v.tokens(rec, tokensT, 'to_v');
    if (!this.explicitScores) return attention(rec, q, this.k.tokens(rec, tokensT, 'to_k'), v, { heads: this.heads });
    const engine = rec.engine;
    const kT = this.k.channels(rec, tokensT, 'to_k'); // [N, C, L]: scores = q kT without a transpose
    const [n, l] = q.shape as [number, number, number];
    const rows = this.queryChunkRows(engine, n, l, q.dtype);
    const s = 1 / Math.sqrt(this.headDim);
    const perHead: Tensor[] = [];
    for (let h = 0; h < this.heads; h++) {
      perHead.push(
        engine.tidy(() => {
          const kTh = channelsHead(rec, kT, this.heads, h);
          const vh = tokensHead(rec, v, this.heads, h);
          const qh = tokensHead(rec, q, this.heads, h);
          const chunks: Tensor[] = [];
          for (let i = 0; i < l / rows; i++) {
            chunks.push(engine.tidy(() => matmul(rec, softmax(rec, matmul(rec, queryChunk(rec, qh, rows, i), kTh, { scale: s, op: 'scores' })), vh, { op: 'attn_v' })));
          }
          return joinQueryChunks(rec, chunks);
        }),
      );
    }
    return joinTokenHeads(rec, perHead);
  }
}

// Layout helpers of the explicit path (shared with its VJP in ./attention-vjp.ts). Heads are interleaved in
// the channel dim (head h = channels [h d, (h + 1) d)); with one head every helper is the identity.

/** Head h of tokens [N, L, C] as [N, L, d] (a copy; x itself for one head). */
export function tokensHead(rec: Recorder, x: Tensor, heads: number, h: number): Tensor {
  if (heads === 1) return x;
  const [n, l, c] = x.shape as [number, number, number];
  const d = c / heads;
  return sliceChannels(rec, x.reshape([n * l, heads, d]), h, 1).reshape([n, l, d]);
}

/** Head h of channels-first [N, C, L] as [N, d, L] (a copy; x itself for one head). */
export function channelsHead(rec: Recorder, x: Tensor, heads: number, h: number): Tensor {
  if (heads === 1) return x;
  const d = x.shape[1]! / heads;
  return sliceChannels(rec, x, h * d, d);
}

/** Per-head tokens [N, L, d] back to [N, L, heads d]. */
export function joinTokenHeads(rec: Recorder, parts: Tensor[]): Tensor {
  if (parts.length === 1) return parts[0]!;
  const [n, l, d] = parts[0]!.shape as [number, number, number];
  return concatChannels(rec, parts.map((p) => p.reshape([n * l, 1, d]))).reshape([n, l, parts.length * d]);
}

/** Query rows [i rows, (i + 1) rows) of x [N, L, d] as [N, rows, d] (a copy; x itself for one chunk). */
export function queryChunk(rec: Recorder, x: Tensor, rows: number, i: number): Tensor {
  const [n, l, d] = x.shape as [number, number, number];
  if (rows === l) return x;
  return sliceChannels(rec, x.reshape([n, l / rows, rows, d]), i, 1).reshape([n, rows, d]);
}

/** Chunks [N, rows, d] (in order) back to [N, L, d]. */
export function joinQueryChunks(rec: Recorder, parts: Tensor[]): Tensor {
  if (parts.length === 1) return parts[0]!;
  const [n, rows, d] = parts[0]!.shape as [number, number, number];
  return concatChannels(rec, parts.map((p) => p.reshape([n, 1, rows, d]))).reshape([n, parts.length * rows, d]);
}
