// Vector-Jacobian product of UNet2DConditionModel with respect to its input sample (f32):
//   sampleVjp: d/d sample of sum(gradEps * unet(sample, t, encoder_hidden_states).eps)
// (DPS-style guidance through the denoiser). The timestep and the text context are constants: no
// gradient flows into them, so a ResNet's time_emb_proj(silu(temb)) is a per-channel bias (identity
// backward) and cross-attention only needs dQ.
// The UNet is flattened into a chain of stages (conv_in, resnets, transformers, samplers, head) run by
// ../vjp-stages.ts; down stages push skips that the up ResNets concatenate back.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { scale, silu } from '../../engine/ops/elementwise.js';
import { matmul, transposeLast2 } from '../../engine/ops/matmul.js';
import { upsampleNearest2x } from '../../engine/ops/resample.js';
import { layerNormBackward } from '../../engine/ops/norm-backward.js';
import { matmulBackward } from '../../engine/ops/matmul-backward.js';
import { attentionBackward } from '../../engine/ops/attention-backward.js';
import { gegluBackward } from '../../engine/ops/elementwise-backward.js';
import { upsampleNearest2xBackward } from '../../engine/ops/resample-backward.js';
import type { LayerNorm } from '../layers.js';
import type { Timestep } from './embeddings.js';
import type { Attention, BasicTransformerBlock, FeedForward, Qkv, Transformer2DModel } from './transformer.js';
import type { Downsample2D, Upsample2D } from './blocks.js';
import type { UNet2DConditionModel } from './unet.js';
import { chainVjp, convGradX, groupNormGradX, resnetStage, type Stage } from '../vjp-stages.js';

/** The constants every stage closes over: silu(temb) [T, temb] and the text context [N, L, D]. */
export interface Consts {
  tembSilu: Tensor;
  context: Tensor;
}

/** dx of a LayerNorm for g, plus `acc` (the residual connection's gradient, added in the same kernel). */
function layerNormGradX(rec: Recorder, norm: LayerNorm, x: Tensor, g: Tensor, acc: Tensor): Tensor {
  return layerNormBackward(rec, x, g, norm.shape, norm.weight, norm.bias, { eps: norm.eps, paramGrads: false, accumulate: acc }).dx;
}

/** dx of y = x W^T + b: dy W (W [out, in] shared by every batch), plus `acc` when given (in the same kernel). */
function linearGradX(rec: Recorder, weight: Tensor, g: Tensor, acc?: Tensor): Tensor {
  return matmul(rec, g, weight, { op: 'linear_grad_x', residual: acc });
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
function transformerStage(name: string, tr: Transformer2DModel, k: Consts): Stage {
  return {
    name,
    forward: (rec, x) => tr.forward(rec, x, k.context),
    vjp: (rec, x, gradOut) => {
      const [n, c, hh, ww] = x.shape as [number, number, number, number];
      const hw = hh * ww;
      const wIn = tr.projInWeight.reshape([c, c]);
      const wOut = tr.projOutWeight.reshape([c, c]);
      const normed = tr.norm.forward(rec, x).reshape([n, c, hw]);
      // Block inputs in token layout [N, HW, C].
      const tokens = [matmul(rec, normed, wIn, { transA: true, transB: true, bias: tr.projInBias, op: 'proj_in' })];
      for (const b of tr.blocks.slice(0, -1)) tokens.push(b.forward(rec, tokens[tokens.length - 1]!, k.context));
      // out = transpose(tokens W^T + b) + x: d tokens = transpose(g) W.
      const gT = transposeLast2(rec, gradOut.reshape([n, c, hw]), 'grad_to_tokens');
      let dt = linearGradX(rec, wOut, gT);
      gT.dispose();
      for (let i = tr.blocks.length - 1; i >= 0; i--) {
        const next = rec.scope(`transformer_blocks.${i}/vjp`, () => rec.engine.tidy(() => blockGrad(rec, tr.blocks[i]!, tokens[i]!, k.context, dt)));
        dt.dispose();
        tokens[i]!.dispose();
        dt = next;
      }
      const dNormed = matmulBackward(rec, normed, wIn, dt, { transA: true, transB: true, needs: { a: true, b: false } }).gradA!;
      return groupNormGradX(rec, tr.norm, x, dNormed.reshape([n, c, hh, ww]), 'none', gradOut);
    },
  };
}

function downsampleStage(name: string, d: Downsample2D): Stage {
  return { name, pushSkip: true, forward: (rec, x) => d.forward(rec, x), vjp: (rec, x, g) => convGradX(rec, d.conv, x, g) };
}

function upsampleStage(name: string, u: Upsample2D): Stage {
  return {
    name,
    forward: (rec, x) => u.forward(rec, x),
    vjp: (rec, x, g) => {
      const up = upsampleNearest2x(rec, x);
      const dUp = convGradX(rec, u.conv, up, g);
      return upsampleNearest2xBackward(rec, dUp, x.shape);
    },
  };
}

/** The UNet as a chain of stages (input: the possibly centred sample; output: eps). */
export function unetStages(m: UNet2DConditionModel, k: Consts): Stage[] {
  const s: Stage[] = [{ name: 'conv_in', pushSkip: true, forward: (rec, x) => m.convIn.forward(rec, x), vjp: (rec, x, g) => convGradX(rec, m.convIn, x, g) }];
  m.downBlocks.forEach((b, i) => {
    const p = `down_blocks.${i}`;
    b.resnets.forEach((r, j) => {
      s.push(resnetStage(`${p}.resnets.${j}`, r, k.tembSilu, { pushSkip: !b.crossAttention }));
      if (b.crossAttention) s.push({ ...transformerStage(`${p}.attentions.${j}`, b.attentions[j]!, k), pushSkip: true });
    });
    if (b.downsampler) s.push(downsampleStage(`${p}.downsamplers.0`, b.downsampler));
  });
  const mid = m.midBlock;
  s.push(resnetStage('mid_block.resnets.0', mid.resnets[0]!, k.tembSilu));
  mid.attentions.forEach((a, i) => {
    s.push(transformerStage(`mid_block.attentions.${i}`, a, k), resnetStage(`mid_block.resnets.${i + 1}`, mid.resnets[i + 1]!, k.tembSilu));
  });
  m.upBlocks.forEach((b, i) => {
    const p = `up_blocks.${i}`;
    b.resnets.forEach((r, j) => {
      s.push(resnetStage(`${p}.resnets.${j}`, r, k.tembSilu, { popSkip: true }));
      if (b.crossAttention) s.push(transformerStage(`${p}.attentions.${j}`, b.attentions[j]!, k));
    });
    if (b.upsampler) s.push(upsampleStage(`${p}.upsamplers.0`, b.upsampler));
  });
  s.push({
    name: 'conv_out',
    forward: (rec, x) => rec.engine.tidy(() => m.convOut.forward(rec, m.convNormOut.forward(rec, x, 'silu'))),
    vjp: (rec, x, g) => {
      const act = m.convNormOut.forward(rec, x, 'silu');
      const ds = convGradX(rec, m.convOut, act, g);
      act.dispose();
      return groupNormGradX(rec, m.convNormOut, x, ds, 'silu');
    },
  });
  return s;
}


/**
 * d/d sample of sum(gradEps * unet(sample, timestep, encoderHiddenStates).eps) for sample [N, in, H, W]
 * and gradEps [N, out, H, W]; the timestep and the context are held constant. f32 only. Records; does
 * not submit.
 */
export function sampleVjp(
  rec: Recorder,
  unet: UNet2DConditionModel,
  sample: Tensor,
  timestep: Timestep,
  encoderHiddenStates: Tensor,
  gradEps: Tensor,
): Tensor {
  const c = unet.config;
  for (const t of [sample, encoderHiddenStates, gradEps]) {
    assertArg(t.dtype === 'f32', `UNet sampleVjp: f32 only (gradients), got ${t.dtype} ${shapeString(t.shape)}`);
  }
  assertArg(unet.dtype === 'f32', `UNet sampleVjp: the model must be f32, it is ${unet.dtype}`);
  const [n, cin, h, w] = sample.shape as [number, number, number, number];
  const want = [n, c.outChannels, h, w];
  assertArg(
    sample.rank === 4 && cin === c.inChannels && gradEps.rank === 4 && gradEps.shape.every((d, i) => d === want[i]),
    `UNet sampleVjp: sample ${shapeString(sample.shape)} and gradEps ${shapeString(gradEps.shape)} (want ${shapeString(want)}) do not match`,
  );
  assertArg(
    encoderHiddenStates.rank === 3 && encoderHiddenStates.shape[0] === n,
    `UNet sampleVjp: encoder_hidden_states ${shapeString(encoderHiddenStates.shape)} must be [${n}, L, D]`,
  );
  return rec.scope('unet_sample_vjp', () =>
    rec.engine.tidy(() => {
      const k: Consts = { tembSilu: silu(rec, unet.timeEmbedding(rec, timestep)), context: encoderHiddenStates };
      const x = c.centerInputSample ? scale(rec, sample, 2, -1) : sample;
      const dx = chainVjp(rec, unetStages(unet, k), x, gradEps);
      return c.centerInputSample ? scale(rec, dx, 2) : dx;
    }),
  );
}
