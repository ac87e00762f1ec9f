// diffusers' Transformer2DModel (continuous input) with BasicTransformerBlock, Attention and a GEGLU
// FeedForward, as SD-1.x's UNet uses them:
//   h = GroupNorm(x, eps 1e-6); tokens = proj_in(h) as [N, H*W, inner]   (conv 1x1, or Linear after the permute)
//   per block: t += attn1(norm1(t)); t += attn2(norm2(t), context); t += ff(norm3(t)) (each residual added
//   in the output projection's epilogue)
//   out = proj_out(tokens) back in NCHW + x
// The 1x1 conv proj_in is one matmul that reads x [N, C, H*W] transposed, so it lands in token layout.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { add, geglu } from '../../engine/ops/elementwise.js';
import { attention } from '../../engine/ops/attention.js';
import { linear, matmul, transposeLast2 } from '../../engine/ops/matmul.js';
import { GroupNorm, LayerNorm, Linear } from '../layers.js';
import type { WeightLoader } from '../weights.js';

/** An Attention's projections of its input and context. */
export interface Qkv {
  q: Tensor;
  k: Tensor;
  v: Tensor;
}

/**
 * to_k / to_v of the text context, per recording: the context is the same tensor for the whole step, so
 * the VJP's recomputed forward reuses the forward's projections (two matmuls and their weight transposes
 * per cross-attention block fewer). The memo owns them until the recording ends; callers get views.
 */
const contextMemo = new WeakMap<Recorder, Map<Linear, { context: Tensor; out: Tensor }>>();

function projectContext(rec: Recorder, lin: Linear, context: Tensor): Tensor {
  let byLinear = contextMemo.get(rec);
  if (!byLinear) {
    const m = new Map<Linear, { context: Tensor; out: Tensor }>();
    contextMemo.set(rec, (byLinear = m));
    rec.onEnd(() => {
      for (const e of m.values()) e.out.dispose();
      contextMemo.delete(rec);
    });
  }
  let hit = byLinear.get(lin);
  if (hit?.context !== context) {
    hit?.out.dispose(); // another context in the same recording (later reuse is ordered after its reads)
    hit = { context, out: rec.engine.keep(lin.forward(rec, context)) };
    byLinear.set(lin, hit);
  }
  return hit.out.reshape(hit.out.shape);
}

/** Multi-head attention: to_q/to_k/to_v without bias, to_out.0 with bias; scale 1/sqrt(head dim). */
export class Attention {
  readonly toQ: Linear;
  readonly toK: Linear;
  readonly toV: Linear;
  readonly toOut: Linear;
  constructor(w: WeightLoader, readonly queryDim: number, readonly heads: number, contextDim = queryDim) {
    this.toQ = new Linear(w, 'to_q', queryDim, queryDim, false);
    this.toK = new Linear(w, 'to_k', contextDim, queryDim, false);
    this.toV = new Linear(w, 'to_v', contextDim, queryDim, false);
    this.toOut = new Linear(w, 'to_out.0', queryDim, queryDim);
  }
  /**
   * x [N, L, queryDim], context [N, Lc, contextDim] (self-attention when omitted) -> [N, L, queryDim],
   * plus `residual` when given (added by the output projection's kernel).
   */
  forward(rec: Recorder, x: Tensor, context: Tensor = x, residual?: Tensor): Tensor {
    return rec.engine.tidy(() => this.attend(rec, this.project(rec, x, context), residual));
  }
  /**
   * The projections q = to_q(x), k = to_k(context), v = to_v(context) (the caller owns them; the VJP keeps
   * them). A cross-attention's k and v are computed once per recording (projectContext).
   */
  project(rec: Recorder, x: Tensor, context: Tensor = x): Qkv {
    if (context === x) return { q: this.toQ.forward(rec, x), k: this.toK.forward(rec, x), v: this.toV.forward(rec, x) };
    return { q: this.toQ.forward(rec, x), k: projectContext(rec, this.toK, context), v: projectContext(rec, this.toV, context) };
  }
  /** to_out(attention(q, k, v)) (+ residual) from the projections. */
  attend(rec: Recorder, p: Qkv, residual?: Tensor): Tensor {
    return rec.engine.tidy(() => this.toOut.forward(rec, attention(rec, p.q, p.k, p.v, { heads: this.heads }), undefined, residual));
  }
}

/** FeedForward with activation_fn "geglu", mult 4: net.0.proj (dim -> 2 * 4dim), GEGLU, net.2 (4dim -> dim). */
export class FeedForward {
  readonly proj: Linear;
  readonly out: Linear;
  constructor(w: WeightLoader, dim: number, mult = 4) {
    const inner = dim * mult;
    this.proj = new Linear(w, 'net.0.proj', dim, 2 * inner);
    this.out = new Linear(w, 'net.2', inner, dim);
  }
  /** x -> net.2(geglu(net.0.proj(x))) (+ residual, added by net.2's kernel). */
  forward(rec: Recorder, x: Tensor, residual?: Tensor): Tensor {
    // GEGLU: chunk(2, -1) gives (hidden, gate); out = hidden * gelu(gate), the engine's geglu order.
    return rec.engine.tidy(() => this.out.forward(rec, geglu(rec, this.proj.forward(rec, x)), undefined, residual));
  }
}

export class BasicTransformerBlock {
  readonly norm1: LayerNorm;
  readonly attn1: Attention;
  readonly norm2: LayerNorm;
  readonly attn2: Attention;
  readonly norm3: LayerNorm;
  readonly ff: FeedForward;
  constructor(w: WeightLoader, dim: number, heads: number, crossAttentionDim: number) {
    this.norm1 = new LayerNorm(w, 'norm1', [dim]);
    this.attn1 = new Attention(w.scope('attn1.'), dim, heads);
    this.norm2 = new LayerNorm(w, 'norm2', [dim]);
    this.attn2 = new Attention(w.scope('attn2.'), dim, heads, crossAttentionDim);
    this.norm3 = new LayerNorm(w, 'norm3', [dim]);
    this.ff = new FeedForward(w.scope('ff.'), dim);
  }
  /** x [N, L, dim], context [N, Lc, crossAttentionDim]. */
  forward(rec: Recorder, x: Tensor, context: Tensor): Tensor {
    return rec.engine.tidy(() => {
      // Each residual is added by the output projection's kernel (no dispatch of its own).
      const h1 = rec.scope('attn1', () => {
        const n = this.norm1.forward(rec, x);
        return this.attn1.forward(rec, n, n, x);
      });
      const h2 = rec.scope('attn2', () => this.attn2.forward(rec, this.norm2.forward(rec, h1), context, h1));
      return rec.scope('ff', () => this.ff.forward(rec, this.norm3.forward(rec, h2), h2));
    });
  }
}

export interface Transformer2DOptions {
  heads: number;
  crossAttentionDim: number;
  groups: number;
  layers?: number;
  useLinearProjection?: boolean;
}

export class Transformer2DModel {
  readonly norm: GroupNorm;
  /**
   * proj_in / proj_out weights: [C, C] (Linear) or [C, C, 1, 1] (conv 1x1), as stored ([out, in]) or, where
   * the loader holds nn.Linear weights [in, out] (`projTransposed`), transposed like them.
   */
  readonly projInWeight: Tensor;
  readonly projInBias: Tensor;
  readonly projOutWeight: Tensor;
  readonly projOutBias: Tensor;
  readonly projTransposed: boolean;
  readonly blocks: BasicTransformerBlock[] = [];

  constructor(w: WeightLoader, readonly channels: number, readonly opts: Transformer2DOptions) {
    const c = channels;
    this.norm = new GroupNorm(w, 'norm', opts.groups, c, 1e-6);
    this.projTransposed = w.linearLayout === 'in_out';
    const proj = (name: string) => {
      const weight = w.get(`${name}.weight`, opts.useLinearProjection ? [c, c] : [c, c, 1, 1], undefined, { transpose: this.projTransposed });
      return { weight, bias: w.get(`${name}.bias`, [c]) };
    };
    const pin = proj('proj_in');
    this.projInWeight = pin.weight;
    this.projInBias = pin.bias;
    for (let i = 0; i < (opts.layers ?? 1); i++) {
      this.blocks.push(new BasicTransformerBlock(w.scope(`transformer_blocks.${i}.`), c, opts.heads, opts.crossAttentionDim));
    }
    const pout = proj('proj_out');
    this.projOutWeight = pout.weight;
    this.projOutBias = pout.bias;
  }

  /** x [N, C, H, W], context [N, Lc, crossAttentionDim] -> [N, C, H, W]. */
  forward(rec: Recorder, x: Tensor, context: Tensor): Tensor {
    assertArg(
      x.rank === 4 && x.shape[1] === this.channels,
      `Transformer2DModel: input ${shapeString(x.shape)} must be [N, ${this.channels}, H, W]`,
    );
    assertArg(
      context.rank === 3 && context.shape[0] === x.shape[0] && context.shape[2] === this.opts.crossAttentionDim,
      `Transformer2DModel: encoder_hidden_states ${shapeString(context.shape)} must be [${x.shape[0]}, L, ${this.opts.crossAttentionDim}]`,
    );
    const [n, c, h, w] = x.shape as [number, number, number, number];
    return rec.engine.tidy(() => {
      const normed = this.norm.forward(rec, x).reshape([n, c, h * w]);
      // Conv 1x1 or permute + Linear: the same product x^T W^T + b, read straight into [N, H*W, C].
      // (Matrix views are made here, inside tidy: a view held by the module would keep the weight's
      // buffer alive after the loader disposes the weights.)
      let t = matmul(rec, normed, this.projInWeight.reshape([c, c]), { transA: true, transB: !this.projTransposed, bias: this.projInBias, op: 'proj_in' });
      this.blocks.forEach((b, i) => {
        const next = rec.scope(`transformer_blocks.${i}`, () => b.forward(rec, t, context));
        t.dispose(); // recorded reads come first; the buffer can serve the next block
        t = next;
      });
      const out = transposeLast2(rec, linear(rec, t, this.projOutWeight.reshape([c, c]), this.projOutBias, { op: 'proj_out', transposed: this.projTransposed }), 'to_nchw');
      return add(rec, out.reshape([n, c, h, w]), x);
    });
  }
}
