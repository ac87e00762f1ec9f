// The reverse pass of Transformer2DModel for the UNet's stage chain (./stages.ts): d input of a
// Transformer2DModel given d output, with the text context constant (cross-attention needs only dQ).
// The block internals are recomputed from the stage input, keeping each attention's projections.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { matmul, transposeLast2 } from '../../engine/ops/matmul.js';
import { layerNormBackward } from '../../engine/ops/norm-backward.js';
import { matmulBackward } from '../../engine/ops/matmul-backward.js';
import { attentionBackward } from '../../engine/ops/attention-backward.js';
import { gegluBackward } from '../../engine/ops/elementwise-backward.js';
import type { LayerNorm } from '../layers.js';
import type { Attention, BasicTransformerBlock, FeedForward, Qkv, Transformer2DModel } from './transformer.js';
import { groupNormGradX, type Stage } from '../vjp-stages.js';

/** dx of a LayerNorm for g, plus `acc` (the residual connection's gradient, added in the same kernel). */
function layerNormGradX(rec: Recorder, norm: LayerNorm, x: Tensor, g: Tensor, acc: Tensor): Tensor {
  return layerNormBackward(rec, x, g, norm.shape, norm.weight, norm.bias, { eps: norm.eps, paramGrads: false, accumulate: acc }).dx;
}

/** dx of y = x W^T + b: dy W (W [out, in], or held [in, out] when `transposed`), shared by every batch. */
function linearGradX(rec: Recorder, weight: Tensor, g: Tensor, transposed: boolean): Tensor {
  return matmul(rec, g, weight, { op: 'linear_grad_x', transB: transposed });
}

/**
 * d query input of Attention given d out, from the projections the recomputed forward made (for
 * self-attention the query input is also the context, so dk and dv flow into it too).
 */
function attentionGrad(rec: Recorder, a: Attention, p: Qkv, selfAttention: boolean, g: Tensor): Tensor {
  const dO = a.toOut.gradX(rec, g);
  const { dq, dk, dv } = attentionBackward(rec, p.q, p.k, p.v, dO, { heads: a.heads });
  dO.dispose();
  const dx = a.toQ.gradX(rec, dq);
  if (!selfAttention) return dx; // k, v come from the constant text context
  // dx + dk W_k + dv W_v, each sum in the next product's epilogue.
  return rec.engine.tidy(() => a.toV.gradX(rec, dv, a.toK.gradX(rec, dk, dx)));
}

function feedForwardGrad(rec: Recorder, ff: FeedForward, x: Tensor, g: Tensor): Tensor {
  const p = ff.proj.forward(rec, x);
  const dGated = ff.out.gradX(rec, g);
  const dp = gegluBackward(rec, p, dGated);
  return ff.proj.gradX(rec, dp);
}

/**
 * t1 = x + attn1(norm1 x); t2 = t1 + attn2(norm2 t1, ctx); out = t2 + ff(norm3 t2). The recomputed
 * forward keeps both attentions' projections for their backward (not computing them twice).
 */
function blockGrad(rec: Recorder, b: BasicTransformerBlock, x: Tensor, context: Tensor, g: Tensor): Tensor {
  const engine = rec.engine;
  const n1 = b.norm1.forward(rec, x);
  const p1 = b.attn1.project(rec, n1);
  n1.dispose();
  const t1 = b.attn1.attend(rec, p1, x);
  const n2 = b.norm2.forward(rec, t1);
  const p2 = b.attn2.project(rec, n2, context);
  n2.dispose();
  const t2 = b.attn2.attend(rec, p2, t1);
  // Each residual's gradient is added by the norm backward's kernel.
  const g2 = engine.tidy(() => layerNormGradX(rec, b.norm3, t2, feedForwardGrad(rec, b.ff, b.norm3.forward(rec, t2), g), g));
  t2.dispose();
  const g1 = engine.tidy(() => layerNormGradX(rec, b.norm2, t1, attentionGrad(rec, b.attn2, p2, false, g2), g2));
  for (const t of [p2.q, p2.k, p2.v, t1]) t.dispose();
  return engine.tidy(() => layerNormGradX(rec, b.norm1, x, attentionGrad(rec, b.attn1, p1, true, g1), g1));
}

/** Transformer2DModel (proj_in / proj_out as 1x1 convs or Linears: the same [C, C] matrix either way). */
export function transformerStage(name: string, tr: Transformer2DModel, context: () => Tensor): Stage {
  return {
    name,
    forward: (rec, x) => tr.forward(rec, x, context()),
    outShape: (s) => s.slice(),
    vjp: (rec, x, gradOut) => {
      const [n, c, hh, ww] = x.shape as [number, number, number, number];
      const hw = hh * ww;
      const wIn = tr.projInWeight.reshape([c, c]);
      const wOut = tr.projOutWeight.reshape([c, c]);
      const normed = tr.norm.forward(rec, x).reshape([n, c, hw]);
      // Block inputs in token layout [N, HW, C].
      const tokens = [matmul(rec, normed, wIn, { transA: true, transB: !tr.projTransposed, bias: tr.projInBias, op: 'proj_in' })];
      for (const b of tr.blocks.slice(0, -1)) tokens.push(b.forward(rec, tokens[tokens.length - 1]!, context()));
      // out = transpose(tokens W^T + b) + x: d tokens = transpose(g) W.
      const gT = transposeLast2(rec, gradOut.reshape([n, c, hw]), 'grad_to_tokens');
      let dt = linearGradX(rec, wOut, gT, tr.projTransposed);
      gT.dispose();
      for (let i = tr.blocks.length - 1; i >= 0; i--) {
        const next = rec.scope(`transformer_blocks.${i}/vjp`, () => rec.engine.tidy(() => blockGrad(rec, tr.blocks[i]!, tokens[i]!, context(), dt)));
        dt.dispose();
        tokens[i]!.dispose();
        dt = next;
      }
      const dNormed = matmulBackward(rec, normed, wIn, dt, { transA: true, transB: !tr.projTransposed, needs: { a: true, b: false } }).gradA!;
      return groupNormGradX(rec, tr.norm, x, dNormed.reshape([n, c, hh, ww]), 'none', gradOut);
    },
  };
}
