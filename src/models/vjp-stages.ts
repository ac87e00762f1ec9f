// Reverse passes of models without an autograd tape: a model is flattened into a chain of stages
// (convs, resnets, attention, samplers, heads). The forward keeps only each stage's input; the backward
// walks the chain in reverse and each stage re-runs its own internals from its input before applying the
// backward ops (per-stage checkpointing: peak memory is the stage inputs plus one stage's internals).
// Skip connections (the UNet's): a stage may leave its output on a skip stack (pushSkip) and a later
// stage concatenates the last skip onto its input (popSkip); the skip's share of that stage's input
// gradient is added to the gradient of the stage that produced it.

import type { Recorder } from '../engine/recorder.js';
import type { Tensor } from '../engine/tensor.js';
import { assertArg } from '../engine/errors.js';
import { add, scale } from '../engine/ops/elementwise.js';
import { concatChannels } from '../engine/ops/layout.js';
import { conv2dBackward } from '../engine/ops/conv2d-backward.js';
import { groupNormBackward } from '../engine/ops/norm-backward.js';
import { concatChannelsBackward } from '../engine/ops/layout-backward.js';
import type { Conv2d, GroupNorm } from './layers.js';
import type { ResnetBlock2D } from './resnet.js';

/**
 * One link of the chain. `pushSkip`: its output is also a skip for the up path. `popSkip`: its input is
 * concat(previous output, the last pushed skip) along channels.
 */
export interface Stage {
  name: string;
  forward(rec: Recorder, x: Tensor): Tensor;
  vjp(rec: Recorder, x: Tensor, gradOut: Tensor): Tensor;
  pushSkip?: boolean;
  popSkip?: boolean;
}

/** dx of a Conv2d layer (weight gradient not computed); padEnd as the forward used it. */
export function convGradX(rec: Recorder, conv: Conv2d, x: Tensor, g: Tensor, padEnd?: number): Tensor {
  const o = conv.opts;
  return conv2dBackward(rec, x, conv.weight, g, { stride: o.stride, padding: o.padding, groups: o.groups, padEnd, needs: { x: true, weight: false } }).gradX!;
}

export function groupNormGradX(rec: Recorder, norm: GroupNorm, x: Tensor, g: Tensor, act: 'silu' | 'none'): Tensor {
  return groupNormBackward(rec, x, g, norm.groups, norm.weight, norm.bias, { eps: norm.eps, act }).dx;
}

/**
 * A ResnetBlock2D. tembSilu = silu(temb) when the block has a time embedding: a constant per-channel bias
 * (needed to recompute norm2's input, identity in the backward).
 */
export function resnetStage(name: string, r: ResnetBlock2D, tembSilu?: Tensor, skip: Pick<Stage, 'pushSkip' | 'popSkip'> = {}): Stage {
  assertArg(!r.timeEmbProj || tembSilu, `${name}: this resnet needs silu(temb) for its VJP`);
  return {
    name,
    ...skip,
    forward: (rec, x) => r.forward(rec, x, tembSilu).out,
    vjp: (rec, x, gradOut) => {
      const g = r.outputScaleFactor !== 1 ? scale(rec, gradOut, 1 / r.outputScaleFactor) : gradOut;
      const s1 = r.norm1.forward(rec, x, 'silu');
      let h = r.conv1.forward(rec, s1);
      if (r.timeEmbProj) {
        // A constant per-channel bias: it shifts norm2's input (needed to recompute it), no gradient.
        const t = r.timeEmbProj.forward(rec, tembSilu!);
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

/** Forward keeping each stage's input (a popSkip stage's is its concat), then the reverse walk: the gradient of x. */
export function chainVjp(rec: Recorder, stages: Stage[], x: Tensor, gradOut: Tensor): Tensor {
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
        assertArg(skip !== undefined, `chainVjp: ${st.name} found no skip`);
        input = concatChannels(rec, [h, skip.t]);
        skipFrom.set(i, { producer: skip.producer, channels: [h.shape[1]!, skip.t.shape[1]!] });
        h.dispose(); // an up path tensor: nothing else holds it (recorded reads come first)
      }
      inputs.push(input);
      if (i === stages.length - 1) return;
      h = rec.scope(st.name, () => engine.tidy(() => st.forward(rec, input)));
      if (st.pushSkip) stack.push({ producer: i, t: h });
    });
    assertArg(stack.length === 0, `chainVjp: ${stack.length} skips left unused`);

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
    assertArg(skipGrads.size === 0, 'chainVjp: a skip gradient found no producer');
    return g;
  });
}
