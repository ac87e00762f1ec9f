// Reverse pass of SILO's Readout-Guidance operator (readout.ts): the gradient of sum(cotangent * output)
// with respect to each readout feature at its native resolution, through the bilinear resize, the
// concatenation with the sigma map, the bottleneck blocks and the output head. SILO back-propagates
// ||w - w_hat|| this way into the UNet. The sigma map and the mask are treated as constants (SILO's sampler
// never needs their gradient). f32 only: the backward ops take f32 tensors.
//
// Memory: the head's activations are kept for its backward, then each group's block is re-run and
// differentiated on its own (only one group's activations live at a time); the forward pass is run once
// more for the aggregate the head reads.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { add, relu, scale, unary } from '../../engine/ops/elementwise.js';
import { reluBackward, siluBackward, unaryBackward } from '../../engine/ops/elementwise-backward.js';
import { concatChannels } from '../../engine/ops/layout.js';
import { concatChannelsBackward } from '../../engine/ops/layout-backward.js';
import { conv2dBackward } from '../../engine/ops/conv2d-backward.js';
import { groupNormBackward } from '../../engine/ops/norm-backward.js';
import { resizeBilinearBackward } from '../../engine/ops/resample-backward.js';
import type { Conv2d, GroupNorm } from '../layers.js';
import type { AggregationNetwork, BottleneckBlock } from './readout.js';

export interface ReadoutVjp {
  /** The operator's output (as AggregationNetwork.forward), B x outputHeadChannels x 64 x 64. */
  output: Tensor;
  /** d sum(cotangent * output) / d features[i], each of features[i]'s shape. */
  gradFeatures: Tensor[];
}

/** dx of a bias-free or biased conv (stride 1, 'same' padding as in the forward). */
function convGradX(rec: Recorder, conv: Conv2d, x: Tensor, gradOut: Tensor): Tensor {
  return conv2dBackward(rec, x, conv.weight, gradOut, { padding: conv.opts.padding, needs: { x: true, weight: false } }).gradX!;
}

function normGradX(rec: Recorder, norm: GroupNorm, x: Tensor, gradOut: Tensor): Tensor {
  return groupNormBackward(rec, x, gradOut, norm.groups, norm.weight, norm.bias, { eps: norm.eps, paramGrads: false }).dx;
}

/**
 * d/dx of sum(g * block.forward(x, weight)), where forward = relu(w GN(conv3(...)) + w shortcut(x)):
 * the block is re-run keeping its pre-norm and pre-ReLU activations.
 */
function bottleneckVjp(rec: Recorder, block: BottleneckBlock, x: Tensor, weight: number, g: Tensor): Tensor {
  return rec.engine.tidy(() => {
    const a1 = block.conv1.conv.forward(rec, x);
    const n1 = block.conv1.norm.forward(rec, a1);
    const h1 = relu(rec, n1);
    const a2 = block.conv2.conv.forward(rec, h1);
    const n2 = block.conv2.norm.forward(rec, a2);
    const h2 = relu(rec, n2);
    const a3 = block.conv3.conv.forward(rec, h2);
    const n3 = block.conv3.norm.forward(rec, a3);
    const as = block.shortcut ? block.shortcut.conv.forward(rec, x) : undefined;
    const s = as ? block.shortcut!.norm.forward(rec, as) : x;
    // The pre-activation exactly as the forward rounds it (w n3 + w s), so the ReLU mask matches; the
    // folded mixing weight w > 0 scales the gradient reaching both branches: relu'(t) * w * g.
    const t = add(rec, n3, s, { ca: weight, cb: weight });
    const du = unaryBackward(rec, t, g, { act: 'relu', scale: weight, op: 'relu_mix' });
    t.dispose();
    const dh2 = convGradX(rec, block.conv3.conv, h2, normGradX(rec, block.conv3.norm, a3, du));
    const dh1 = convGradX(rec, block.conv2.conv, h1, normGradX(rec, block.conv2.norm, a2, reluBackward(rec, n2, dh2)));
    const dx = convGradX(rec, block.conv1.conv, x, normGradX(rec, block.conv1.norm, a1, reluBackward(rec, n1, dh1)));
    const dsc = as ? convGradX(rec, block.shortcut!.conv, x, normGradX(rec, block.shortcut!.norm, as, du)) : du;
    return add(rec, dx, dsc);
  });
}

/**
 * The output of `model` for (features, sigmaEmb, mask) and the vector-Jacobian product of `cotangent`
 * (shaped like the output) with respect to every readout feature. Arguments as AggregationNetwork.forward.
 */
export function aggregationVjp(
  rec: Recorder,
  model: AggregationNetwork,
  features: Tensor[],
  sigmaEmb: Tensor | undefined,
  cotangent: Tensor,
  mask?: Tensor,
): ReadoutVjp {
  const b = model.check(features, sigmaEmb, mask);
  const c = model.config;
  const n = c.latentSize;
  const outC = model.head ? c.outputHeadChannels : c.projectionDim;
  const expect = [b, outC, n, n];
  assertArg(
    cotangent.rank === 4 && cotangent.shape.every((d, i) => d === expect[i]),
    `aggregationVjp: cotangent must be shaped like the output ${shapeString(expect)}, got ${shapeString(cotangent.shape)}`,
  );
  const engine = rec.engine;
  return rec.scope('silo_rg_vjp', () =>
    engine.tidy((): ReadoutVjp => {
      const sigmaMap = sigmaEmb ? model.sigmaMap(rec, sigmaEmb) : undefined;
      const input = (i: number): Tensor => {
        const r = model.resizeFeature(rec, features[i]!);
        return sigmaMap ? concatChannels(rec, [r, sigmaMap]) : r;
      };
      const blockOf = (i: number) => model.bottlenecks[i % model.bottlenecks.length]!;

      // Forward: the aggregate, as AggregationNetwork.run.
      let agg: Tensor | undefined;
      for (let i = 0; i < model.groups; i++) {
        const sum = rec.scope(`forward.bottleneck_layers.${i}`, () =>
          engine.tidy(() => {
            const term = blockOf(i).forward(rec, input(i), model.mixing[i]!);
            return agg ? add(rec, agg, term) : term;
          }),
        );
        agg?.dispose();
        agg = sum;
      }

      // Head forward keeping its pre-activations, then its backward to d agg.
      const { output, dAgg } = model.head
        ? rec.scope('output_head', () =>
            engine.tidy(() => {
              const h = model.head!;
              const parts = [agg!];
              if (sigmaMap) parts.push(sigmaMap);
              if (mask) parts.push(mask);
              const hx = parts.length > 1 ? concatChannels(rec, parts) : agg!;
              const p0 = h.conv0.forward(rec, hx);
              const y1 = unary(rec, p0, { act: 'silu' });
              const p2 = h.conv2.forward(rec, y1);
              const y2 = unary(rec, p2, { act: 'silu' });
              const y = h.conv4.forward(rec, y2);
              let out = y;
              let g = cotangent;
              if (c.outputHeadAct) {
                // tanh(y) = 2 sigmoid(2y) - 1: d/dy = 2 * sigmoid'(2y) * 2 (unaryBackward applies the inner 2).
                out = scale(rec, unary(rec, y, { act: 'sigmoid', scale: 2 }), 2, -1);
                g = unaryBackward(rec, y, scale(rec, cotangent, 2), { act: 'sigmoid', scale: 2 });
              }
              const dp2 = siluBackward(rec, p2, convGradX(rec, h.conv4, y2, g));
              const dp0 = siluBackward(rec, p0, convGradX(rec, h.conv2, y1, dp2));
              const dhx = convGradX(rec, h.conv0, hx, dp0);
              const dAgg = parts.length > 1 ? concatChannelsBackward(rec, dhx, parts.map((t) => t.shape[1]!))[0]! : dhx;
              return { output: out, dAgg };
            }),
          )
        : { output: agg!, dAgg: cotangent };
      if (output !== agg) agg!.dispose();

      // Each group: d agg / d h_i is the identity (w_i is folded into the block), then back through the
      // block, the concat with the sigma map and the resize.
      const gradFeatures = features.map((f, i) =>
        rec.scope(`bottleneck_layers.${i}`, () =>
          engine.tidy(() => {
            const x = input(i);
            const dx = bottleneckVjp(rec, blockOf(i), x, model.mixing[i]!, dAgg);
            const dr = sigmaMap ? concatChannelsBackward(rec, dx, [f.shape[1]!, 1])[0]! : dx;
            const resized = f.shape[2] !== n || f.shape[3] !== n;
            return resized ? resizeBilinearBackward(rec, dr, f.shape) : dr;
          }),
        ),
      );
      if (dAgg !== cotangent) dAgg.dispose();
      return { output, gradFeatures };
    }),
  );
}
