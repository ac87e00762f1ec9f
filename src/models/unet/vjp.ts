// Vector-Jacobian product of UNet2DConditionModel with respect to its input sample (f32):
//   sampleVjp: d/d sample of sum(gradEps * unet(sample, t, encoder_hidden_states).eps)
// (DPS-style guidance through the denoiser). The timestep and the text context are constants: no
// gradient flows into them, so a ResNet's time_emb_proj(silu(temb)) is a per-channel bias (identity
// backward) and cross-attention only needs dQ.
// As in the VAE's VJP (../vae/vjp.ts) there is no tape: the UNet is flattened into a chain of stages
// (conv_in, resnets, transformers, samplers, head). The forward keeps each stage's input; the backward
// re-runs a stage's internals from its input and applies the backward ops. The skip connections are the
// one addition: a down stage may leave its output on the skip stack, an up ResNet concatenates one back
// onto its input, and in the backward the skip's share of the concat gradient is added to the gradient
// of the stage that produced it.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { add, scale, silu } from '../../engine/ops/elementwise.js';
import { matmul, transposeLast2 } from '../../engine/ops/matmul.js';
import { concatChannels } from '../../engine/ops/layout.js';
import { upsampleNearest2x } from '../../engine/ops/resample.js';
import { conv2dBackward } from '../../engine/ops/conv2d-backward.js';
import { groupNormBackward, layerNormBackward } from '../../engine/ops/norm-backward.js';
import { matmulBackward } from '../../engine/ops/matmul-backward.js';
import { attentionBackward } from '../../engine/ops/attention-backward.js';
import { gegluBackward } from '../../engine/ops/elementwise-backward.js';
import { upsampleNearest2xBackward } from '../../engine/ops/resample-backward.js';
import { concatChannelsBackward } from '../../engine/ops/layout-backward.js';
import type { Conv2d, GroupNorm, LayerNorm } from '../layers.js';
import type { ResnetBlock2D } from '../resnet.js';
import type { Timestep } from './embeddings.js';
import type { Attention, BasicTransformerBlock, FeedForward, Transformer2DModel } from './transformer.js';
import type { Downsample2D, Upsample2D } from './blocks.js';
import type { UNet2DConditionModel } from './unet.js';

/**
 * One link of the chain. `pushSkip`: its output is also a skip for the up path. `popSkip`: its input is
 * concat(previous output, the last pushed skip) along channels.
 */
interface Stage {
  name: string;
  forward(rec: Recorder, x: Tensor): Tensor;
  vjp(rec: Recorder, x: Tensor, gradOut: Tensor): Tensor;
  pushSkip?: boolean;
  popSkip?: boolean;
}

/** The constants every stage closes over: silu(temb) [T, temb] and the text context [N, L, D]. */
interface Consts {
  tembSilu: Tensor;
  context: Tensor;
}

function convGradX(rec: Recorder, conv: Conv2d, x: Tensor, g: Tensor): Tensor {
  const o = conv.opts;
  return conv2dBackward(rec, x, conv.weight, g, { stride: o.stride, padding: o.padding, groups: o.groups, needs: { x: true, weight: false } }).gradX!;
}

function groupNormGradX(rec: Recorder, norm: GroupNorm, x: Tensor, g: Tensor, act: 'silu' | 'none'): Tensor {
  return groupNormBackward(rec, x, g, norm.groups, norm.weight, norm.bias, { eps: norm.eps, act }).dx;
}

function layerNormGradX(rec: Recorder, norm: LayerNorm, x: Tensor, g: Tensor): Tensor {
  return layerNormBackward(rec, x, g, norm.shape, norm.weight, norm.bias, { eps: norm.eps }).dx;
}

/** dx of y = x W^T + b: dy W (W [out, in] shared by every batch). */
function linearGradX(rec: Recorder, weight: Tensor, g: Tensor): Tensor {
  return matmul(rec, g, weight, { op: 'linear_grad_x' });
}

function resnetStage(name: string, r: ResnetBlock2D, k: Consts, skip: Pick<Stage, 'pushSkip' | 'popSkip'> = {}): Stage {
  return {
    name,
    ...skip,
    forward: (rec, x) => r.forward(rec, x, k.tembSilu).out,
    vjp: (rec, x, gradOut) => {
      const g = r.outputScaleFactor !== 1 ? scale(rec, gradOut, 1 / r.outputScaleFactor) : gradOut;
      const s1 = r.norm1.forward(rec, x, 'silu');
      let h = r.conv1.forward(rec, s1);
      if (r.timeEmbProj) {
        // A constant per-channel bias: it shifts norm2's input (needed to recompute it), no gradient.
        const t = r.timeEmbProj.forward(rec, k.tembSilu);
        h = add(rec, h, t.reshape([t.shape[0]!, t.shape[1]!, 1, 1]));
      }
      const s2 = r.norm2.forward(rec, h, 'silu');
      const ds2 = convGradX(rec, r.conv2, s2, g);
      s2.dispose();
      const dh = groupNormGradX(rec, r.norm2, h, ds2, 'silu');
      h.dispose();
      ds2.dispose();
      const ds1 = convGradX(rec, r.conv1, s1, dh);
      s1.dispose();
      dh.dispose();
      const dx = groupNormGradX(rec, r.norm1, x, ds1, 'silu');
      const short = r.convShortcut ? convGradX(rec, r.convShortcut, x, g) : g;
      return add(rec, dx, short);
    },
  };
}

/** d query (and, for self-attention, d context = d query input) of Attention given d out. */
function attentionGrad(rec: Recorder, a: Attention, x: Tensor, context: Tensor | undefined, g: Tensor): Tensor {
  const ctx = context ?? x;
  const q = a.toQ.forward(rec, x);
  const kk = a.toK.forward(rec, ctx);
  const v = a.toV.forward(rec, ctx);
  const dO = linearGradX(rec, a.toOut.weight, g);
  const { dq, dk, dv } = attentionBackward(rec, q, kk, v, dO, { heads: a.heads });
  dO.dispose();
  const dx = linearGradX(rec, a.toQ.weight, dq);
  if (context) return dx; // k, v come from the constant text context
  return add(rec, add(rec, dx, linearGradX(rec, a.toK.weight, dk)), linearGradX(rec, a.toV.weight, dv));
}

function feedForwardGrad(rec: Recorder, ff: FeedForward, x: Tensor, g: Tensor): Tensor {
  const p = ff.proj.forward(rec, x);
  const dGated = linearGradX(rec, ff.out.weight, g);
  const dp = gegluBackward(rec, p, dGated);
  return linearGradX(rec, ff.proj.weight, dp);
}

/** t1 = x + attn1(norm1 x); t2 = t1 + attn2(norm2 t1, ctx); out = t2 + ff(norm3 t2). */
function blockGrad(rec: Recorder, b: BasicTransformerBlock, x: Tensor, context: Tensor, g: Tensor): Tensor {
  const engine = rec.engine;
  const n1 = b.norm1.forward(rec, x);
  const t1 = add(rec, x, b.attn1.forward(rec, n1));
  const n2 = b.norm2.forward(rec, t1);
  const t2 = add(rec, t1, b.attn2.forward(rec, n2, context));
  const g2 = engine.tidy(() => add(rec, g, layerNormGradX(rec, b.norm3, t2, feedForwardGrad(rec, b.ff, b.norm3.forward(rec, t2), g))));
  const g1 = engine.tidy(() => add(rec, g2, layerNormGradX(rec, b.norm2, t1, attentionGrad(rec, b.attn2, n2, context, g2))));
  return engine.tidy(() => add(rec, g1, layerNormGradX(rec, b.norm1, x, attentionGrad(rec, b.attn1, n1, undefined, g1))));
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
      const dx = groupNormGradX(rec, tr.norm, x, dNormed.reshape([n, c, hh, ww]), 'none');
      return add(rec, dx, gradOut);
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

function unetStages(m: UNet2DConditionModel, k: Consts): Stage[] {
  const s: Stage[] = [{ name: 'conv_in', pushSkip: true, forward: (rec, x) => m.convIn.forward(rec, x), vjp: (rec, x, g) => convGradX(rec, m.convIn, x, g) }];
  m.downBlocks.forEach((b, i) => {
    const p = `down_blocks.${i}`;
    b.resnets.forEach((r, j) => {
      s.push(resnetStage(`${p}.resnets.${j}`, r, k, { pushSkip: !b.crossAttention }));
      if (b.crossAttention) s.push({ ...transformerStage(`${p}.attentions.${j}`, b.attentions[j]!, k), pushSkip: true });
    });
    if (b.downsampler) s.push(downsampleStage(`${p}.downsamplers.0`, b.downsampler));
  });
  const mid = m.midBlock;
  s.push(resnetStage('mid_block.resnets.0', mid.resnets[0]!, k));
  mid.attentions.forEach((a, i) => {
    s.push(transformerStage(`mid_block.attentions.${i}`, a, k), resnetStage(`mid_block.resnets.${i + 1}`, mid.resnets[i + 1]!, k));
  });
  m.upBlocks.forEach((b, i) => {
    const p = `up_blocks.${i}`;
    b.resnets.forEach((r, j) => {
      s.push(resnetStage(`${p}.resnets.${j}`, r, k, { popSkip: true }));
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

/** Forward keeping each stage's input (an up ResNet's is its concat), then the reverse walk. */
function chainVjp(rec: Recorder, stages: Stage[], x: Tensor, gradOut: Tensor): Tensor {
  const engine = rec.engine;
  return engine.tidy(() => {
    const inputs: Tensor[] = [];
    /** Stage index whose output each up ResNet concatenated, and the widths of its two parts. */
    const skipFrom = new Map<number, { producer: number; channels: [number, number] }>();
    const stack: { producer: number; t: Tensor }[] = [];
    let h = x;
    stages.forEach((st, i) => {
      let input = h;
      if (st.popSkip) {
        const skip = stack.pop();
        assertArg(skip !== undefined, `UNet sampleVjp: ${st.name} found no skip`);
        input = concatChannels(rec, [h, skip.t]);
        skipFrom.set(i, { producer: skip.producer, channels: [h.shape[1]!, skip.t.shape[1]!] });
        h.dispose(); // an up path tensor: nothing else holds it (recorded reads come first)
      }
      inputs.push(input);
      if (i === stages.length - 1) return;
      h = rec.scope(st.name, () => engine.tidy(() => st.forward(rec, input)));
      if (st.pushSkip) stack.push({ producer: i, t: h });
    });
    assertArg(stack.length === 0, `UNet sampleVjp: ${stack.length} skips left unused`);

    const skipGrads = new Map<number, Tensor>();
    let g = gradOut;
    for (let i = stages.length - 1; i >= 0; i--) {
      const st = stages[i]!;
      const fromSkip = skipGrads.get(i);
      if (fromSkip) {
        const sum = add(rec, g, fromSkip);
        fromSkip.dispose();
        skipGrads.delete(i);
        if (g !== gradOut) g.dispose();
        g = sum;
      }
      let gi = rec.scope(`${st.name}/vjp`, () => engine.tidy(() => st.vjp(rec, inputs[i]!, g)));
      if (g !== gradOut) g.dispose();
      if (inputs[i] !== x) inputs[i]!.dispose();
      const cat = skipFrom.get(i);
      if (cat) {
        const [dh, dSkip] = concatChannelsBackward(rec, gi, cat.channels) as [Tensor, Tensor];
        gi.dispose();
        const prev = skipGrads.get(cat.producer);
        skipGrads.set(cat.producer, prev ? add(rec, prev, dSkip) : dSkip);
        if (prev) {
          prev.dispose();
          dSkip.dispose();
        }
        gi = dh;
      }
      g = gi;
    }
    assertArg(skipGrads.size === 0, 'UNet sampleVjp: a skip gradient found no producer');
    return g;
  });
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
