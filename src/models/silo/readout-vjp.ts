// Reverse pass of SILO's Readout-Guidance operator (readout.ts), for sum(cotangent * output):
// - the gradient with respect to each readout feature at its native resolution, through the bilinear
//   resize, the concatenation with the sigma map, the bottleneck blocks and the output head (SILO
//   back-propagates ||w - w_hat|| this way into the UNet; the sigma map and the mask are constants there);
// - for training, the gradient of every parameter the sampler's forward uses, by state-dict name in the
//   layout the model holds it: output_head.{0,2,4}; per bottleneck block (shared by the groups of every
//   timestep, so their contributions add) conv1/conv2/conv3/shortcut and their GroupNorm affines;
//   mixing_weights, the softmax logits (softmax backward of g_i = sum(dAgg * relu(v_i)), v_i the block's
//   pre-activation before its mixing weight); sigma_emb_linear and sigma_emb_norm through the sigma map,
//   which enters every group's input and the head. The blocks' emb_layers never run in the sampler's
//   forward (emb is None), so they get no gradient.
// f32 only: the backward ops take f32 tensors.
//
// Memory: the head's activations are kept for its backward, then each group's block is re-run and
// differentiated on its own (only one group's activations live at a time); the forward pass is run once
// more for the aggregate the head reads.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { add, mul, relu, scale, unary } from '../../engine/ops/elementwise.js';
import { reluBackward, siluBackward, unaryBackward } from '../../engine/ops/elementwise-backward.js';
import { concatChannels } from '../../engine/ops/layout.js';
import { concatChannelsBackward } from '../../engine/ops/layout-backward.js';
import { conv2dBackward } from '../../engine/ops/conv2d-backward.js';
import { groupNormBackward, layerNormBackward } from '../../engine/ops/norm-backward.js';
import { matmulBackward } from '../../engine/ops/matmul-backward.js';
import { reduceTensor } from '../../engine/ops/reduce.js';
import { resizeBilinearBackward } from '../../engine/ops/resample-backward.js';
import { softmaxBackward } from '../../engine/ops/softmax-backward.js';
import type { Conv2d, GroupNorm } from '../layers.js';
import type { AggregationNetwork, BottleneckBlock } from './readout.js';
import type { ParamGrads } from './cnn-vjp.js';

export interface ReadoutVjp {
  /** The operator's output (as AggregationNetwork.forward), B x outputHeadChannels x 64 x 64. */
  output: Tensor;
  /** d sum(cotangent * output) / d features[i], each of features[i]'s shape. */
  gradFeatures: Tensor[];
}

export interface ReadoutGrads {
  output: Tensor;
  /** Parameter gradients by state-dict name, in the layout the model holds each parameter. */
  params: ParamGrads;
}

/**
 * Adds `g` into params[name] (blocks shared between groups receive several contributions). The sums are
 * kept past the per-group tidy() frames they are made in: the caller owns them.
 */
function accumulate(rec: Recorder, params: ParamGrads, name: string, g: Tensor): void {
  const prev = params[name];
  if (!prev) params[name] = rec.engine.keep(g);
  else {
    params[name] = rec.engine.keep(add(rec, prev, g));
    prev.dispose();
    g.dispose();
  }
}

/** dx of a conv (stride 1, 'same' padding as in the forward); with `params`, its weight (and bias) gradients too. */
function convBackward(rec: Recorder, conv: Conv2d, name: string, x: Tensor, gradOut: Tensor, params?: ParamGrads, needX = true): Tensor | undefined {
  const bias = !!params && !!conv.bias;
  const g = conv2dBackward(rec, x, conv.weight, gradOut, { padding: conv.opts.padding, needs: { x: needX, weight: !!params, bias } });
  if (params) {
    accumulate(rec, params, `${name}.weight`, g.gradWeight!);
    if (bias) accumulate(rec, params, `${name}.bias`, g.gradBias!);
  }
  return g.gradX;
}

/** dx of a conv's GroupNorm (`<name>.norm`); with `params`, its affine gradients too. */
function normBackward(rec: Recorder, norm: GroupNorm, name: string, x: Tensor, gradOut: Tensor, params?: ParamGrads): Tensor {
  const g = groupNormBackward(rec, x, gradOut, norm.groups, norm.weight, norm.bias, { eps: norm.eps, paramGrads: !!params });
  if (params) {
    accumulate(rec, params, `${name}.norm.weight`, g.dWeight!);
    accumulate(rec, params, `${name}.norm.bias`, g.dBias!);
  }
  return g.dx;
}

/**
 * d/dx of sum(g * block.forward(x, weight)), where forward = relu(w GN(conv3(...)) + w shortcut(x)): the
 * block is re-run keeping its pre-norm and pre-ReLU activations. With `train`, the block's parameter
 * gradients are added under `prefix` and sum(g * relu(v)) goes into slot `slot` of `mixDots`.
 */
function bottleneckBackward(
  rec: Recorder,
  block: BottleneckBlock,
  prefix: string,
  x: Tensor,
  weight: number,
  g: Tensor,
  train?: { params: ParamGrads; mixDots: Tensor; slot: number },
): Tensor {
  const params = train?.params;
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
    // d / d w_i of sum(g * relu(w_i v)) = sum(g * relu(v)) for w_i > 0.
    if (train) reduceTensor(rec, mul(rec, g, add(rec, n3, s, { act: 'relu' })), 'sum', { op: 'mixing_grad', into: { tensor: train.mixDots, slot: train.slot } });
    // The pre-activation exactly as the forward rounds it (w n3 + w s), so the ReLU mask matches; the
    // folded mixing weight w > 0 scales the gradient reaching both branches: relu'(t) * w * g.
    const t = add(rec, n3, s, { ca: weight, cb: weight });
    const du = unaryBackward(rec, t, g, { act: 'relu', scale: weight, op: 'relu_mix' });
    t.dispose();
    const p = (k: string) => `${prefix}.${k}`;
    const dh2 = convBackward(rec, block.conv3.conv, p('conv3'), h2, normBackward(rec, block.conv3.norm, p('conv3'), a3, du, params), params)!;
    const dh1 = convBackward(rec, block.conv2.conv, p('conv2'), h1, normBackward(rec, block.conv2.norm, p('conv2'), a2, reluBackward(rec, n2, dh2), params), params)!;
    const dx = convBackward(rec, block.conv1.conv, p('conv1'), x, normBackward(rec, block.conv1.norm, p('conv1'), a1, reluBackward(rec, n1, dh1), params), params)!;
    const dsc = as ? convBackward(rec, block.shortcut!.conv, p('shortcut'), x, normBackward(rec, block.shortcut!.norm, p('shortcut'), as, du, params), params)! : du;
    return add(rec, dx, dsc);
  });
}

/**
 * The output of `model` for (features, sigmaEmb, mask) and the vector-Jacobian product of `cotangent`
 * (shaped like the output) with respect to every readout feature. Arguments as AggregationNetwork.forward.
 */
export function aggregationVjp(rec: Recorder, model: AggregationNetwork, features: Tensor[], sigmaEmb: Tensor | undefined, cotangent: Tensor, mask?: Tensor): ReadoutVjp {
  const r = backward(rec, model, features, sigmaEmb, cotangent, mask, false);
  return { output: r.output, gradFeatures: r.gradFeatures! };
}

/**
 * The output of `model` and the gradients of sum(cotangent * output) with respect to its parameters
 * (training); arguments as aggregationVjp.
 */
export function aggregationGrads(rec: Recorder, model: AggregationNetwork, features: Tensor[], sigmaEmb: Tensor | undefined, cotangent: Tensor, mask?: Tensor): ReadoutGrads {
  const r = backward(rec, model, features, sigmaEmb, cotangent, mask, true);
  return { output: r.output, params: r.params! };
}

function backward(
  rec: Recorder,
  model: AggregationNetwork,
  features: Tensor[],
  sigmaEmb: Tensor | undefined,
  cotangent: Tensor,
  mask: Tensor | undefined,
  train: boolean,
): { output: Tensor; gradFeatures?: Tensor[]; params?: ParamGrads } {
  const b = model.check(features, sigmaEmb, mask);
  const c = model.config;
  const n = c.latentSize;
  const outC = model.head ? c.outputHeadChannels : c.projectionDim;
  const expect = [b, outC, n, n];
  const what = train ? 'aggregationGrads' : 'aggregationVjp';
  assertArg(
    cotangent.rank === 4 && cotangent.dtype === 'f32' && cotangent.shape.every((d, i) => d === expect[i]),
    `${what}: cotangent must be f32 shaped like the output ${shapeString(expect)}, got ${cotangent.dtype} ${shapeString(cotangent.shape)}`,
  );
  const engine = rec.engine;
  const params: ParamGrads | undefined = train ? {} : undefined;
  return rec.scope(train ? 'silo_rg_grads' : 'silo_rg_vjp', () =>
    engine.tidy(() => {
      // The sigma map; for training the Linear's output is kept for the LayerNorm's backward.
      let sigmaMap: Tensor | undefined;
      let lin: Tensor | undefined;
      if (sigmaEmb && params) {
        lin = model.sigmaEmbLinear!.forward(rec, sigmaEmb).reshape([b, 1, n, n]);
        sigmaMap = model.sigmaEmbNorm!.forward(rec, lin);
      } else if (sigmaEmb) sigmaMap = model.sigmaMap(rec, sigmaEmb);
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

      // Head forward keeping its pre-activations, then its backward to d agg (and d sigma map).
      const dSigmaParts: Tensor[] = [];
      let output = agg!;
      let dAgg = cotangent;
      if (model.head) {
        rec.scope('output_head', () => {
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
          let g = cotangent;
          output = y;
          if (c.outputHeadAct) {
            // tanh(y) = 2 sigmoid(2y) - 1: d/dy = 2 * sigmoid'(2y) * 2 (unaryBackward applies the inner 2).
            output = scale(rec, unary(rec, y, { act: 'sigmoid', scale: 2 }), 2, -1);
            g = unaryBackward(rec, y, scale(rec, cotangent, 2), { act: 'sigmoid', scale: 2 });
          }
          const dp2 = siluBackward(rec, p2, convBackward(rec, h.conv4, 'output_head.4', y2, g, params)!);
          const dp0 = siluBackward(rec, p0, convBackward(rec, h.conv2, 'output_head.2', y1, dp2, params)!);
          const dhx = convBackward(rec, h.conv0, 'output_head.0', hx, dp0, params)!;
          const split = parts.length > 1 ? concatChannelsBackward(rec, dhx, parts.map((t) => t.shape[1]!)) : [dhx];
          dAgg = split[0]!;
          if (sigmaMap && params) dSigmaParts.push(split[1]!);
        });
      }

      // Each group: d agg / d h_i is the identity (w_i is folded into the block), then back through the
      // block, the concat with the sigma map and the resize.
      const mixDots = params ? engine.zeros([model.groups], 'f32', 'mixing_dots') : undefined;
      const gradFeatures: Tensor[] = [];
      features.forEach((f, i) => {
        const r = rec.scope(`bottleneck_layers.${i}`, () =>
          engine.tidy(() => {
            const prefix = `bottleneck_layers.${i % model.bottlenecks.length}`;
            const dx = bottleneckBackward(rec, blockOf(i), prefix, input(i), model.mixing[i]!, dAgg, params && { params, mixDots: mixDots!, slot: i });
            const split = sigmaMap ? concatChannelsBackward(rec, dx, [f.shape[1]!, 1]) : [dx];
            if (params) return { dSigma: split[1] };
            const resized = f.shape[2] !== n || f.shape[3] !== n;
            return { feature: resized ? resizeBilinearBackward(rec, split[0]!, f.shape) : split[0]! };
          }),
        );
        if (r.feature) gradFeatures.push(r.feature);
        if (r.dSigma) dSigmaParts.push(r.dSigma);
      });
      if (!params) return { output, gradFeatures };

      // The mixing logits: d logit_j = w_j (g_j - sum_k w_k g_k), softmax's backward.
      params['mixing_weights'] = softmaxBackward(rec, engine.tensor(model.mixing, [model.groups], 'f32', 'mixing_softmax'), mixDots!);
      if (sigmaEmb && lin) {
        let dSigma = dSigmaParts[0]!;
        for (const p of dSigmaParts.slice(1)) dSigma = add(rec, dSigma, p);
        const norm = model.sigmaEmbNorm!;
        const ln = layerNormBackward(rec, lin, dSigma, [1, n, n], norm.weight, norm.bias, { eps: norm.eps });
        params['sigma_emb_norm.weight'] = ln.dWeight!;
        params['sigma_emb_norm.bias'] = ln.dBias!;
        const linear = model.sigmaEmbLinear!;
        const g = matmulBackward(rec, sigmaEmb, linear.weight, ln.dx.reshape([b, n * n]), { transB: !linear.transposed, needs: { a: false, b: true, bias: true }, op: 'sigma_emb_linear/backward' });
        params['sigma_emb_linear.weight'] = g.gradB!;
        params['sigma_emb_linear.bias'] = g.gradBias!;
      }
      return { output, params };
    }),
  );
}
