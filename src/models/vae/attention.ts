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
// flash kernel's register limit (SD's VAE: one head of 512) runs as scores -> softmax -> P V in
// query chunks whose score block fits one storage binding.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { attention, MAX_HEAD_DIM } from '../../engine/ops/attention.js';
import { matmul } from '../../engine/ops/matmul.js';
import { softmax } from '../../engine/ops/softmax.js';
import { add, scale } from '../../engine/ops/elementwise.js';
import { concatChannels, sliceChannels } from '../../engine/ops/layout.js';
import { bytesPerElement } from '../../engine/dtype.js';
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

  /** softmax(q k^T / sqrt(d)) v per head -> [N, HW, C]. */
  private core(rec: Recorder, tokensT: Tensor): Tensor {
    const d = this.channels / this.heads;
    const q = this.q.tokens(rec, tokensT, 'to_q');
    const v = this.v.tokens(rec, tokensT, 'to_v');
    if (d <= MAX_HEAD_DIM && !this.forceMatmul) return attention(rec, q, this.k.tokens(rec, tokensT, 'to_k'), v, { heads: this.heads });
    assertArg(this.heads === 1, `VAE attention: ${this.heads} heads of width ${d} (> ${MAX_HEAD_DIM}) are not supported`);
    const engine = rec.engine;
    const kT = this.k.channels(rec, tokensT, 'to_k'); // [N, C, L]: scores = q kT without a transpose
    const [n, l, c] = q.shape as [number, number, number];
    // Rows per chunk: the [N, rows, L] score block must fit one binding; rows divides L.
    const limit = Math.min(engine.limits.maxStorageBufferBindingSize, engine.limits.maxBufferSize);
    let rows = Math.min(this.chunkRows ?? l, Math.max(1, Math.floor(limit / (n * l * bytesPerElement(q.dtype)))), l);
    while (l % rows !== 0) rows--;
    const s = 1 / Math.sqrt(d);
    const block = (qi: Tensor) => matmul(rec, softmax(rec, matmul(rec, qi, kT, { scale: s, op: 'scores' })), v, { op: 'attn_v' });
    if (rows === l) return block(q);
    const chunks = l / rows;
    const q4 = q.reshape([n, chunks, rows, c]);
    const parts: Tensor[] = [];
    for (let i = 0; i < chunks; i++) {
      parts.push(engine.tidy(() => block(sliceChannels(rec, q4, i, 1).reshape([n, rows, c])).reshape([n, 1, rows, c])));
    }
    return concatChannels(rec, parts).reshape([n, l, c]);
  }
}
