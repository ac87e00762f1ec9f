// Vector-Jacobian product of the VAE mid-block attention (VaeAttention) with respect to its input x, f32.
// Two paths, chosen like the forward's (VaeAttention.explicitScores):
//   flash (head dim <= MAX_HEAD_DIM): the flash attention backward kernel, scores never stored;
//   explicit scores (larger head dims: SD's VAE has one head of 512): per head and per query chunk
//   (the forward's chunking rule, so every [N, rows, L] block fits one storage binding)
//     S = Q K^T / sqrt(d), P = softmax(S), dP = dO V^T, dS = softmax_backward(P, dP),
//     dQ = dS K / sqrt(d), dK^T += Q^T dS / sqrt(d), dV^T += dO^T P   (summed over the chunks).
// Both then go back through the q / k / v projections and the group norm, plus the residual.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { add, scale } from '../../engine/ops/elementwise.js';
import { attention } from '../../engine/ops/attention.js';
import { matmul, transposeLast2 } from '../../engine/ops/matmul.js';
import { matmulBackward } from '../../engine/ops/matmul-backward.js';
import { attentionBackward } from '../../engine/ops/attention-backward.js';
import { softmax } from '../../engine/ops/softmax.js';
import { softmaxBackward } from '../../engine/ops/softmax-backward.js';
import { concatChannels } from '../../engine/ops/layout.js';
import { groupNormGradX } from '../vjp-stages.js';
import { channelsHead, joinQueryChunks, joinTokenHeads, queryChunk, tokensHead, type VaeAttention } from './attention.js';

/** Gradient of a projection's input tokensT [N, C, L] from the gradient of its token-layout output [N, L, C]. */
function tokensGrad(rec: Recorder, p: VaeAttention['q'], tokensT: Tensor, d: Tensor): Tensor {
  // The projection is matmul(tokensT, W, transA, transB): its gradient lands in tokensT's layout.
  return matmulBackward(rec, tokensT, p.matrix(), d, { transA: true, transB: true, needs: { a: true, b: false } }).gradA!;
}

/** d/dx of sum(gradOut * a.forward(x)) for x [N, C, H, W] (f32). */
export function vaeAttentionVjp(rec: Recorder, a: VaeAttention, x: Tensor, gradOut: Tensor): Tensor {
  return rec.engine.tidy(() => {
    const [n, c, hh, ww] = x.shape as [number, number, number, number];
    const hw = hh * ww;
    const g = (a.rescale !== 1 ? scale(rec, gradOut, 1 / a.rescale) : gradOut).reshape([n, c, hw]);
    const tokensT = a.groupNorm.forward(rec, x).reshape([n, c, hw]);
    const dT = a.explicitScores ? explicitGrad(rec, a, tokensT, g) : flashGrad(rec, a, tokensT, g);
    return groupNormGradX(rec, a.groupNorm, x, dT.reshape([n, c, hh, ww]), 'none', g.reshape([n, c, hh, ww]));
  });
}

/** The flash path: the gradient of tokensT [N, C, L] for the output gradient g [N, C, L]. */
function flashGrad(rec: Recorder, a: VaeAttention, tokensT: Tensor, g: Tensor): Tensor {
  const q = a.q.tokens(rec, tokensT, 'to_q');
  const k = a.k.tokens(rec, tokensT, 'to_k');
  const v = a.v.tokens(rec, tokensT, 'to_v');
  const att = attention(rec, q, k, v, { heads: a.heads });
  // o = Wo att^T + b ([N, C, HW]): d att from matmul(Wo, att, transB).
  const dAtt = matmulBackward(rec, a.out.matrix(), att, g, { transB: true, needs: { a: false, b: true } }).gradB!;
  att.dispose();
  const { dq, dk, dv } = attentionBackward(rec, q, k, v, dAtt, { heads: a.heads });
  return add(rec, add(rec, tokensGrad(rec, a.q, tokensT, dq), tokensGrad(rec, a.k, tokensT, dk)), tokensGrad(rec, a.v, tokensT, dv));
}

/** The explicit-scores path: the gradient of tokensT [N, C, L] for the output gradient g [N, C, L]. */
function explicitGrad(rec: Recorder, a: VaeAttention, tokensT: Tensor, g: Tensor): Tensor {
  const engine = rec.engine;
  const [n, , l] = tokensT.shape as [number, number, number];
  const heads = a.heads;
  const s = 1 / Math.sqrt(a.headDim);
  // Queries and the output gradient in token layout (chunked along queries); keys and values channels
  // first, as the forward's scores = q kT needs them and dP = dO vT too.
  const q = a.q.tokens(rec, tokensT, 'to_q'); // [N, L, C]
  const kT = a.k.channels(rec, tokensT, 'to_k'); // [N, C, L]
  const vT = a.v.channels(rec, tokensT, 'to_v'); // [N, C, L]
  // o = Wo att^T + b: d att = g^T Wo ([N, L, C]).
  const dO = matmul(rec, g, a.out.matrix(), { transA: true, op: 'to_out/grad' });
  const rows = a.queryChunkRows(engine, n, l, 'f32');
  const dq: Tensor[] = [];
  const dkT: Tensor[] = [];
  const dvT: Tensor[] = [];
  for (let h = 0; h < heads; h++) {
    const r = engine.tidy(() => {
      const qh = tokensHead(rec, q, heads, h); // [N, L, d]
      const dOh = tokensHead(rec, dO, heads, h); // [N, L, d]
      const kTh = channelsHead(rec, kT, heads, h); // [N, d, L]
      const vTh = channelsHead(rec, vT, heads, h); // [N, d, L]
      const kh = transposeLast2(rec, kTh, 'attn_k_tokens'); // [N, L, d] for dQ = dS K
      const dqChunks: Tensor[] = [];
      let dk: Tensor | undefined;
      let dv: Tensor | undefined;
      for (let i = 0; i < l / rows; i++) {
        const step = engine.tidy(() => {
          const qi = queryChunk(rec, qh, rows, i); // [N, rows, d]
          const dOi = queryChunk(rec, dOh, rows, i);
          const p = softmax(rec, matmul(rec, qi, kTh, { scale: s, op: 'scores' })); // [N, rows, L]
          const dP = matmul(rec, dOi, vTh, { op: 'attn_dp' });
          const dS = softmaxBackward(rec, p, dP);
          dP.dispose(); // at most three [N, rows, L] blocks live at once (P, dP, dS)
          const dkNew = matmul(rec, qi, dS, { transA: true, scale: s, op: 'attn_dk' }); // [N, d, L]
          const dvNew = matmul(rec, dOi, p, { transA: true, op: 'attn_dv' }); // [N, d, L]
          return {
            dq: matmul(rec, dS, kh, { scale: s, op: 'attn_dq' }), // [N, rows, d]
            dk: dk ? add(rec, dk, dkNew) : dkNew,
            dv: dv ? add(rec, dv, dvNew) : dvNew,
          };
        });
        // The previous partial sums have been read by the adds just recorded.
        dk?.dispose();
        dv?.dispose();
        dqChunks.push(step.dq);
        dk = step.dk;
        dv = step.dv;
      }
      return { dq: joinQueryChunks(rec, dqChunks), dk: dk!, dv: dv! };
    });
    dq.push(r.dq);
    dkT.push(r.dk);
    dvT.push(r.dv);
  }
  // kT = Wk tokensT + b (and vT likewise): d tokensT = Wk^T dkT, no transposes.
  const dK = heads === 1 ? dkT[0]! : concatChannels(rec, dkT);
  const dV = heads === 1 ? dvT[0]! : concatChannels(rec, dvT);
  const fromK = matmul(rec, a.k.matrix(), dK, { transA: true, op: 'to_k/grad' });
  const fromV = matmul(rec, a.v.matrix(), dV, { transA: true, op: 'to_v/grad' });
  return add(rec, add(rec, tokensGrad(rec, a.q, tokensT, joinTokenHeads(rec, dq)), fromK), fromV);
}
