// Reverse pass of SILO's "preserve" LatentDegradationNetwork with respect to its latent input z:
//   vjp_z = d/dz sum(cotangent * model(z, noiseEmb))
// As cnn-vjp.ts: no autograd tape; the forward is re-run keeping what each backward op needs, then the
// backward ops run in reverse and free what they used. Per NoiseConditionedConvBlock that is the input,
// both conv outputs (GroupNorm backward recomputes its statistics, and norm1's fused SiLU its
// pre-activation, from them), the conv2 input and the pre-activation sum of the final SiLU. The noise
// embedding, everything computed from it alone (noise_proj, the gate) and the positional embedding are
// constants here. f32 only (the backward ops are f32).

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { add, mul, scale, unary } from '../../engine/ops/elementwise.js';
import { siluBackward } from '../../engine/ops/elementwise-backward.js';
import { concatChannels, sliceChannels } from '../../engine/ops/layout.js';
import { resizeBilinear } from '../../engine/ops/resample.js';
import { conv2dBackward } from '../../engine/ops/conv2d-backward.js';
import { groupNormBackward } from '../../engine/ops/norm-backward.js';
import type { Conv2d, GroupNorm } from '../layers.js';
import type { NoiseConditionedConvBlock, PreserveDegradationNetwork } from './preserve.js';

interface BlockSaved {
  input: Tensor;
  conv1Out: Tensor;
  conv2In: Tensor;
  conv2Out: Tensor;
  /** h + residual before the block's final SiLU. */
  sum: Tensor;
}

function convBackwardX(rec: Recorder, conv: Conv2d, input: Tensor, gradOut: Tensor): Tensor {
  const needs = { x: true, weight: false, bias: false };
  return conv2dBackward(rec, input, conv.weight, gradOut, { stride: conv.opts.stride, padding: conv.opts.padding, groups: conv.opts.groups, needs }).gradX!;
}

function normBackward(rec: Recorder, norm: GroupNorm, x: Tensor, gradOut: Tensor, act: 'silu' | 'none'): Tensor {
  return groupNormBackward(rec, x, gradOut, norm.groups, norm.weight, norm.bias, { eps: norm.eps, act, paramGrads: false }).dx;
}

/** NoiseConditionedConvBlock.forward, keeping what blockBackward needs (the caller owns `input`). */
function blockForward(rec: Recorder, block: NoiseConditionedConvBlock, input: Tensor, noiseEmb: Tensor): { out: Tensor; saved: BlockSaved } {
  const residual = block.skipConv ? block.skipConv.forward(rec, input) : input;
  const conv1Out = block.conv1.forward(rec, input);
  const p = block.noiseProj.forward(rec, noiseEmb);
  const conv2In = add(rec, block.norm1.forward(rec, conv1Out, 'silu'), p.reshape([p.shape[0]!, block.outChannels, 1, 1]));
  p.dispose();
  const conv2Out = block.conv2.forward(rec, conv2In);
  const h = block.norm2.forward(rec, conv2Out);
  const sum = add(rec, h, residual);
  h.dispose();
  if (residual !== input) residual.dispose();
  return { out: unary(rec, sum, { act: 'silu' }), saved: { input, conv1Out, conv2In, conv2Out, sum } };
}

/** Gradient with respect to the block's input; frees the block's saves except `input`. */
function blockBackward(rec: Recorder, block: NoiseConditionedConvBlock, s: BlockSaved, gradOut: Tensor): Tensor {
  return rec.engine.tidy(() => {
    const gSum = siluBackward(rec, s.sum, gradOut);
    s.sum.dispose();
    const gConv2 = normBackward(rec, block.norm2, s.conv2Out, gSum, 'none');
    s.conv2Out.dispose();
    const gConv2In = convBackwardX(rec, block.conv2, s.conv2In, gConv2);
    s.conv2In.dispose();
    // The noise projection is added after norm1's SiLU and is a constant: the gradient passes unchanged.
    const gConv1 = normBackward(rec, block.norm1, s.conv1Out, gConv2In, 'silu');
    s.conv1Out.dispose();
    const gMain = convBackwardX(rec, block.conv1, s.input, gConv1);
    const gResidual = block.skipConv ? convBackwardX(rec, block.skipConv, s.input, gSum) : gSum;
    return add(rec, gMain, gResidual);
  });
}

/**
 * vjp_z of PreserveDegradationNetwork: z [B, in_channels, H, W] (any H, W), noiseEmb = model.embedNoise
 * [B, noise_embed_dim], cotangent shaped like the output [B, out_channels, H, W].
 */
export function preserveNetworkVjp(rec: Recorder, model: PreserveDegradationNetwork, z: Tensor, noiseEmb: Tensor, cotangent: Tensor): Tensor {
  const c = model.config;
  const what = 'LatentDegradationNetwork vjp';
  assertArg(z.rank === 4 && z.shape[1] === c.inChannels, `${what}: z must be [B, ${c.inChannels}, H, W], got ${shapeString(z.shape)}`);
  const [b, , h, wd] = z.shape as [number, number, number, number];
  // The output mixes in skip_scale * z: the forward only runs with out_channels == in_channels.
  const outShape = [b, c.outChannels, h, wd];
  assertArg(
    cotangent.rank === 4 && cotangent.shape.every((d, i) => d === outShape[i]),
    `${what}: cotangent must have the output's shape ${shapeString(outShape)}, got ${shapeString(cotangent.shape)}`,
  );
  assertArg(
    noiseEmb.rank === 2 && noiseEmb.shape[0] === b && noiseEmb.shape[1] === c.noiseEmbedDim,
    `${what}: noise embedding must be [${b}, ${c.noiseEmbedDim}] (embedNoise), got ${shapeString(noiseEmb.shape)}`,
  );
  assertArg(
    z.dtype === 'f32' && cotangent.dtype === 'f32' && noiseEmb.dtype === 'f32' && model.dtype === 'f32',
    `${what}: backward ops take f32 tensors, got z ${z.dtype}, cotangent ${cotangent.dtype}, noise embedding ${noiseEmb.dtype}, weights ${model.dtype}`,
  );
  const engine = rec.engine;
  return rec.scope('silo_preserve_vjp', () =>
    engine.tidy(() => {
      // Forward with saves.
      const projIn = model.initialProj.forward(rec, z);
      let pos = model.positionalEmbedding.reshape([1, c.posEmbedChannels, c.posSize, c.posSize]);
      if (h !== c.posSize || wd !== c.posSize) pos = resizeBilinear(rec, pos, h, wd);
      if (b > 1) pos = add(rec, pos, engine.zeros([b, 1, 1, 1], z.dtype));
      const initialIn = concatChannels(rec, [z, pos]);
      let x = model.initialConv.forward(rec, initialIn);
      const skips: Tensor[] = [];
      const downSaved: BlockSaved[] = [];
      for (const block of model.blocks) {
        skips.push(x);
        const r = blockForward(rec, block, x, noiseEmb);
        downSaved.push(r.saved);
        x = r.out;
      }
      const bott = blockForward(rec, model.bottleneck, x, noiseEmb);
      x = bott.out;
      const upSaved: BlockSaved[] = [];
      model.upBlocks.forEach((block, i) => {
        const input = i > 0 ? concatChannels(rec, [x, skips[skips.length - i - 1]!]) : x;
        const r = blockForward(rec, block, input, noiseEmb);
        upSaved.push(r.saved);
        x = r.out;
      });
      const gate = model.identityGate.forward(rec, noiseEmb, 'sigmoid').reshape([b, 1, 1, 1]);

      // Backward of out = (1 - g) final_conv(x) + g silu(initial_proj(z)) + skip_scale z; g is per batch item.
      let g = convBackwardX(rec, model.finalConv, x, mul(rec, cotangent, scale(rec, gate, -1, 1)));
      // Gradients reaching each skip from the up path, summed with the down path's below.
      const skipGrads: (Tensor | undefined)[] = skips.map(() => undefined);
      for (let i = model.upBlocks.length - 1; i >= 0; i--) {
        const block = model.upBlocks[i]!;
        const gIn = blockBackward(rec, block, upSaved[i]!, g);
        if (i > 0) {
          const main = block.inChannels - skips[skips.length - i - 1]!.shape[1]!;
          skipGrads[skips.length - i - 1] = sliceChannels(rec, gIn, main, block.inChannels - main);
          g = sliceChannels(rec, gIn, 0, main);
          upSaved[i]!.input.dispose(); // the concatenation
        } else {
          g = gIn;
        }
      }
      g = blockBackward(rec, model.bottleneck, bott.saved, g);
      for (let i = model.blocks.length - 1; i >= 0; i--) {
        // Block i's input is skips[i]: it also fed an up block (all but the last).
        g = blockBackward(rec, model.blocks[i]!, downSaved[i]!, g);
        const gSkip = skipGrads[i];
        if (gSkip) g = add(rec, g, gSkip);
      }
      const gInitial = sliceChannels(rec, convBackwardX(rec, model.initialConv, initialIn, g), 0, c.inChannels);
      const gProj = convBackwardX(rec, model.initialProj, z, siluBackward(rec, projIn, mul(rec, cotangent, gate)));
      return add(rec, add(rec, gInitial, gProj), mul(rec, cotangent, model.skipScale));
    }),
  );
}
