// Parameter gradients of SILO's Readout-Guidance operator (AggregationNetwork, readout.ts) for training:
// the gradients of sum(cotangent * output) with respect to every parameter the sampler's forward uses,
// by state-dict name, in the layout the model holds them:
//   output_head.{0,2,4}.{weight,bias}; per bottleneck block (shared by the groups of every timestep, so
//   their contributions add) conv1/conv2/conv3/shortcut weights and their GroupNorm affines;
//   mixing_weights: the softmax logits, d logit = softmax' applied to g_i = sum(dAgg * relu(v_i)) (the
//   block output before its mixing weight); sigma_emb_linear and sigma_emb_norm through the sigma map,
//   which enters every group's input and the head.
// The blocks' emb_layers never run in the sampler's forward (emb is None), so they get no gradient here.
// As readout-vjp.ts, the forward is re-run per group; f32 only.

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
import { softmaxBackward } from '../../engine/ops/softmax-backward.js';
import type { Conv2d, GroupNorm } from '../layers.js';
import type { AggregationNetwork, BottleneckBlock } from './readout.js';
import type { ParamGrads } from './cnn-vjp.js';

export interface ReadoutGrads {
  output: Tensor;
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

function convGrads(rec: Recorder, conv: Conv2d, name: string, x: Tensor, gradOut: Tensor, params: ParamGrads, needX = true): Tensor | undefined {
  const hasBias = !!conv.bias;
  const g = conv2dBackward(rec, x, conv.weight, gradOut, { padding: conv.opts.padding, needs: { x: needX, weight: true, bias: hasBias } });
  accumulate(rec, params, `${name}.weight`, g.gradWeight!);
  if (hasBias) accumulate(rec, params, `${name}.bias`, g.gradBias!);
  return g.gradX;
}

function normGrads(rec: Recorder, norm: GroupNorm, name: string, x: Tensor, gradOut: Tensor, params: ParamGrads): Tensor {
  const g = groupNormBackward(rec, x, gradOut, norm.groups, norm.weight, norm.bias, { eps: norm.eps });
  accumulate(rec, params, `${name}.norm.weight`, g.dWeight!);
  accumulate(rec, params, `${name}.norm.bias`, g.dBias!);
  return g.dx;
}

/**
 * One group's block: its parameter gradients (added into params under `prefix`), the gradient of its input
 * x, and sum(g * relu(v)) (v the pre-activation before the mixing weight) into slot `slot` of `mixDots`.
 */
function bottleneckGrads(rec: Recorder, block: BottleneckBlock, prefix: string, x: Tensor, weight: number, g: Tensor, params: ParamGrads, mixDots: Tensor, slot: number): Tensor {
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
    const unweighted = add(rec, n3, s, { act: 'relu' });
    reduceTensor(rec, mul(rec, g, unweighted), 'sum', { op: 'mixing_grad', into: { tensor: mixDots, slot } });
    const t = add(rec, n3, s, { ca: weight, cb: weight });
    const du = unaryBackward(rec, t, g, { act: 'relu', scale: weight, op: 'relu_mix' });
    const dh2 = convGrads(rec, block.conv3.conv, `${prefix}.conv3`, h2, normGrads(rec, block.conv3.norm, `${prefix}.conv3`, a3, du, params), params)!;
    const dh1 = convGrads(rec, block.conv2.conv, `${prefix}.conv2`, h1, normGrads(rec, block.conv2.norm, `${prefix}.conv2`, a2, reluBackward(rec, n2, dh2), params), params)!;
    const dx = convGrads(rec, block.conv1.conv, `${prefix}.conv1`, x, normGrads(rec, block.conv1.norm, `${prefix}.conv1`, a1, reluBackward(rec, n1, dh1), params), params)!;
    const dsc = as ? convGrads(rec, block.shortcut!.conv, `${prefix}.shortcut`, x, normGrads(rec, block.shortcut!.norm, `${prefix}.shortcut`, as, du, params), params)! : du;
    return add(rec, dx, dsc);
  });
}

/**
 * The output of `model` for (features, sigmaEmb, mask) and the gradients of sum(cotangent * output) with
 * respect to its parameters (arguments as AggregationNetwork.forward; cotangent shaped like the output).
 */
export function aggregationGrads(rec: Recorder, model: AggregationNetwork, features: Tensor[], sigmaEmb: Tensor | undefined, cotangent: Tensor, mask?: Tensor): ReadoutGrads {
  const b = model.check(features, sigmaEmb, mask);
  const c = model.config;
  const n = c.latentSize;
  const outC = model.head ? c.outputHeadChannels : c.projectionDim;
  const want = [b, outC, n, n];
  assertArg(
    cotangent.rank === 4 && cotangent.dtype === 'f32' && cotangent.shape.every((d, i) => d === want[i]),
    `aggregationGrads: cotangent must be f32 shaped like the output ${shapeString(want)}, got ${cotangent.dtype} ${shapeString(cotangent.shape)}`,
  );
  const engine = rec.engine;
  const params: ParamGrads = {};
  return rec.scope('silo_rg_grads', () =>
    engine.tidy((): ReadoutGrads => {
      // The sigma map, keeping the Linear's output for the LayerNorm's backward.
      let sigmaMap: Tensor | undefined;
      let lin: Tensor | undefined;
      if (sigmaEmb) {
        lin = model.sigmaEmbLinear!.forward(rec, sigmaEmb).reshape([b, 1, n, n]);
        sigmaMap = model.sigmaEmbNorm!.forward(rec, lin);
      }
      const input = (i: number): Tensor => {
        const r = model.resizeFeature(rec, features[i]!);
        return sigmaMap ? concatChannels(rec, [r, sigmaMap]) : r;
      };
      const blockOf = (i: number) => model.bottlenecks[i % model.bottlenecks.length]!;

      let agg: Tensor | undefined;
      for (let i = 0; i < model.groups; i++) {
        const sum = engine.tidy(() => {
          const term = blockOf(i).forward(rec, input(i), model.mixing[i]!);
          return agg ? add(rec, agg, term) : term;
        });
        agg?.dispose();
        agg = sum;
      }

      const dSigmaParts: Tensor[] = [];
      let output = agg!;
      let dAgg = cotangent;
      if (model.head) {
        const h = model.head;
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
          output = scale(rec, unary(rec, y, { act: 'sigmoid', scale: 2 }), 2, -1);
          g = unaryBackward(rec, y, scale(rec, cotangent, 2), { act: 'sigmoid', scale: 2 });
        }
        const dp2 = siluBackward(rec, p2, convGrads(rec, h.conv4, 'output_head.4', y2, g, params)!);
        const dp0 = siluBackward(rec, p0, convGrads(rec, h.conv2, 'output_head.2', y1, dp2, params)!);
        const dhx = convGrads(rec, h.conv0, 'output_head.0', hx, dp0, params)!;
        const split = parts.length > 1 ? concatChannelsBackward(rec, dhx, parts.map((t) => t.shape[1]!)) : [dhx];
        dAgg = split[0]!;
        if (sigmaMap) dSigmaParts.push(split[1]!);
      }

      const mixDots = engine.zeros([model.groups], 'f32', 'mixing_dots');
      features.forEach((f, i) => {
        const li = i % model.bottlenecks.length;
        const dx = bottleneckGrads(rec, blockOf(i), `bottleneck_layers.${li}`, input(i), model.mixing[i]!, dAgg, params, mixDots, i);
        if (sigmaMap) dSigmaParts.push(concatChannelsBackward(rec, dx, [f.shape[1]!, 1])[1]!);
      });
      // Softmax backward over the logits: d logit_j = w_j (g_j - sum_k w_k g_k).
      const w = engine.tensor(model.mixing, [model.groups], 'f32', 'mixing_softmax');
      params['mixing_weights'] = softmaxBackward(rec, w, mixDots);

      if (sigmaEmb && lin) {
        let dSigma = dSigmaParts[0]!;
        for (const p of dSigmaParts.slice(1)) dSigma = add(rec, dSigma, p);
        const ln = layerNormBackward(rec, lin, dSigma, [1, n, n], model.sigmaEmbNorm!.weight, model.sigmaEmbNorm!.bias, { eps: model.sigmaEmbNorm!.eps });
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
