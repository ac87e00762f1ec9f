// Reverse passes of models without an autograd tape: a model is flattened into a chain of stages
// (convs, resnets, attention, samplers, heads). The forward keeps only each stage's input; the backward
// walks the chain in reverse and each stage re-runs its own internals from its input before applying the
// backward ops (per-stage checkpointing: peak memory is the stage inputs plus one stage's internals).
// Skip connections (the UNet's): a stage may leave its output on a skip stack (pushSkip) and a later
// stage concatenates the last skip onto its input (popSkip); the skip's share of that stage's input
// gradient is added to the gradient of the stage that produced it.
// Kept internals: with chainForward's `keep`, a stage that can (forwardKeep: a resnet keeps norm2's input)
// also keeps one internal tensor, so its VJP skips the costly part of re-running its internals (a resnet:
// norm1 and conv1, a third of a step's convolution work in reuse mode) for about one more activation.
// Taps (SILO's readout features): a stage may expose an internal tensor (a resnet's hidden conv2 output);
// chainForward can return those, and chainBackward adds an extra cotangent at that internal point. The
// forward (chainForward) and the reverse walk (chainBackward) are separate calls so a caller can read a
// pass's output and taps, compute their cotangents, and differentiate the same recorded pass.

import type { Recorder } from '../engine/recorder.js';
import type { Tensor } from '../engine/tensor.js';
import { assertArg } from '../engine/errors.js';
import { shapeString } from '../engine/dtype.js';
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
  /**
   * gradTap: an extra cotangent for the stage's tap (only for stages with forwardTap). kept: the internal
   * forwardKeep returned (the caller owns it), when the pass kept internals.
   */
  vjp(rec: Recorder, x: Tensor, gradOut: Tensor, gradTap?: Tensor, kept?: Tensor): Tensor;
  /** Stages with a tap: the forward that also returns the tapped internal tensor (the caller owns both). */
  forwardTap?(rec: Recorder, x: Tensor): { out: Tensor; tap: Tensor };
  /** The forward that also returns the internal its vjp can use (and the tap when asked); the caller owns all. */
  forwardKeep?(rec: Recorder, x: Tensor, tap: boolean): { out: Tensor; kept: Tensor; tap?: Tensor };
  pushSkip?: boolean;
  popSkip?: boolean;
}

/** dx of a Conv2d layer (weight gradient not computed); padEnd as the forward used it. */
export function convGradX(rec: Recorder, conv: Conv2d, x: Tensor, g: Tensor, padEnd?: number): Tensor {
  const o = conv.opts;
  return conv2dBackward(rec, x, conv.weight, g, { stride: o.stride, padding: o.padding, groups: o.groups, padEnd, needs: { x: true, weight: false } }).gradX!;
}

/** dx of a GroupNorm (+ SiLU) for g, plus `acc` when given (a residual's gradient, added in the same kernel). */
export function groupNormGradX(rec: Recorder, norm: GroupNorm, x: Tensor, g: Tensor, act: 'silu' | 'none', acc?: Tensor): Tensor {
  return groupNormBackward(rec, x, g, norm.groups, norm.weight, norm.bias, { eps: norm.eps, act, paramGrads: false, accumulate: acc }).dx;
}

/**
 * A ResnetBlock2D. tembSilu = silu(temb) when the block has a time embedding: a constant per-channel bias
 * (needed to recompute norm2's input, identity in the backward). Its tap is the hidden branch
 * h2 = conv2(...) of out = (shortcut(x) + h2) / s: d h2 = gradOut / s + gradTap, d shortcut = gradOut / s.
 */
export function resnetStage(name: string, r: ResnetBlock2D, tembSilu?: Tensor, skip: Pick<Stage, 'pushSkip' | 'popSkip'> = {}): Stage {
  assertArg(!r.timeEmbProj || tembSilu, `${name}: this resnet needs silu(temb) for its VJP`);
  return {
    name,
    ...skip,
    forward: (rec, x) => r.forward(rec, x, tembSilu).out,
    forwardTap: (rec, x) => {
      const { out, hidden } = r.forward(rec, x, tembSilu, true);
      return { out, tap: hidden! };
    },
    forwardKeep: (rec, x, tap) => {
      const { out, hidden, pre } = r.forward(rec, x, tembSilu, tap, true);
      return { out, kept: pre!, tap: hidden };
    },
    vjp: (rec, x, gradOut, gradTap, kept) => {
      const g = r.outputScaleFactor !== 1 ? scale(rec, gradOut, 1 / r.outputScaleFactor) : gradOut;
      assertArg(
        !gradTap || (gradTap.rank === g.rank && gradTap.shape.every((d, i) => d === g.shape[i])),
        `${name}: the hidden-branch gradient ${gradTap ? shapeString(gradTap.shape) : ''} must have the block output's shape ${shapeString(g.shape)}`,
      );
      const gHidden = gradTap ? add(rec, g, gradTap) : g;
      // norm2's input h: kept by the forward, or rebuilt (norm1, conv1, the time embedding).
      let h = kept;
      if (!h) {
        const s1 = r.norm1.forward(rec, x, 'silu');
        h = r.conv1.forward(rec, s1);
        s1.dispose();
        if (r.timeEmbProj) {
          // A constant per-channel bias: it shifts norm2's input (needed to recompute it), no gradient.
          const t = r.timeEmbProj.forward(rec, tembSilu!);
          h = add(rec, h, t.reshape([t.shape[0]!, t.shape[1]!, 1, 1]));
        }
      }
      // A convolution's input gradient needs only its input's shape: h stands for silu(norm2(h)), x for
      // silu(norm1(x)).
      const ds2 = convGradX(rec, r.conv2, h, gHidden);
      if (gHidden !== g) gHidden.dispose();
      const dh = groupNormGradX(rec, r.norm2, h, ds2, 'silu');
      if (h !== kept) h.dispose();
      ds2.dispose();
      const ds1 = convGradX(rec, r.conv1, x, dh);
      dh.dispose();
      // dx = norm1's input gradient + the shortcut's, summed by the norm's kernel.
      const short = r.convShortcut ? convGradX(rec, r.convShortcut, x, g) : g;
      const dx = groupNormGradX(rec, r.norm1, x, ds1, 'silu', short);
      ds1.dispose();
      if (short !== g) short.dispose();
      return dx;
    },
  };
}

/**
 * A recorded forward pass through a chain (a plain object: return it from a tidy() to keep it): each
 * stage's input (a popSkip stage's is its concat), owned by the tape until chainBackward consumes them.
 */
export interface ChainTape {
  stages: Stage[];
  x: Tensor;
  inputs: Tensor[];
  /** Per stage index: the internal its forwardKeep returned (passes recorded with `keep`). */
  kept: Array<Tensor | undefined>;
  /** For each popSkip stage index: the stage whose output it concatenated, and the widths of the two parts. */
  skipFrom: Record<number, { producer: number; channels: [number, number] }>;
}

export interface ChainForward {
  tape: ChainTape;
  /** The chain's output (with `output`); the caller owns it. */
  out?: Tensor;
  /** The taps of the stages named in `taps`, in that order; the caller owns them. */
  taps: Tensor[];
}

/**
 * Runs the chain forward keeping each stage's input. The last stage is run only with `output` (a VJP alone
 * needs only its input); `taps` names stages whose tapped tensor (forwardTap) is returned too. `stopAt`:
 * keep stage stopAt's input and stop there (for a backward that starts inside the chain, with no output
 * gradient); skips pushed for later stages are left unused. `keep`: stages with forwardKeep also keep
 * their internal for the VJP (more memory, less recomputation).
 */
export function chainForward(
  rec: Recorder,
  stages: Stage[],
  x: Tensor,
  opts: { output?: boolean; taps?: readonly string[]; stopAt?: number; keep?: boolean } = {},
): ChainForward {
  const engine = rec.engine;
  const stopAt = opts.stopAt ?? stages.length - 1;
  assertArg(Number.isInteger(stopAt) && stopAt >= 0 && stopAt < stages.length, `chainForward: stopAt ${stopAt} is not a stage index (0..${stages.length - 1})`);
  assertArg(!opts.output || stopAt === stages.length - 1, 'chainForward: no output when stopping early');
  const tapIndex = new Map<string, number>((opts.taps ?? []).map((n, i) => [n, i]));
  for (const n of tapIndex.keys()) {
    const i = stages.findIndex((s) => s.name === n);
    assertArg(i >= 0 && stages[i]!.forwardTap !== undefined, `chainForward: no stage "${n}" with a tap`);
    assertArg(i < stopAt || opts.output, `chainForward: tap "${n}" is not run (the pass stops at stage ${stopAt})`);
  }
  return engine.tidy(() => {
    const inputs: Tensor[] = [];
    const kept: ChainTape['kept'] = [];
    const skipFrom: ChainTape['skipFrom'] = {};
    const taps: Tensor[] = new Array<Tensor>(tapIndex.size);
    const stack: { producer: number; t: Tensor }[] = [];
    let h = x;
    let out: Tensor | undefined;
    for (const [i, st] of stages.slice(0, stopAt + 1).entries()) {
      let input = h;
      if (st.popSkip) {
        const skip = stack.pop();
        assertArg(skip !== undefined, `chainForward: ${st.name} found no skip`);
        input = concatChannels(rec, [h, skip.t]);
        skipFrom[i] = { producer: skip.producer, channels: [h.shape[1]!, skip.t.shape[1]!] };
        h.dispose(); // an up path tensor: nothing else holds it (recorded reads come first)
      }
      inputs.push(input);
      const last = i === stages.length - 1;
      if (i === stopAt && !opts.output) break;
      const ti = tapIndex.get(st.name);
      if (opts.keep && st.forwardKeep) {
        const r = rec.scope(st.name, () => engine.tidy(() => st.forwardKeep!(rec, input, ti !== undefined)));
        kept[i] = r.kept;
        if (ti !== undefined) taps[ti] = r.tap!;
        h = r.out;
      } else if (ti === undefined) h = rec.scope(st.name, () => engine.tidy(() => st.forward(rec, input)));
      else {
        const r = rec.scope(st.name, () => engine.tidy(() => st.forwardTap!(rec, input)));
        taps[ti] = r.tap;
        h = r.out;
      }
      if (last) out = h;
      else if (st.pushSkip) stack.push({ producer: i, t: h });
    }
    // A left-over skip is also the input of the stage after its producer: the tape owns it.
    assertArg(stack.length === 0 || stopAt < stages.length - 1, `chainForward: ${stack.length} skips left unused`);
    return { tape: { stages, x, inputs, kept, skipFrom }, out, taps };
  });
}

/**
 * The reverse walk over a tape (consumes it: its inputs are disposed): the gradient of the chain's input
 * for the cotangent gradOut of its output plus, for each stage named in `inject`, an extra cotangent at
 * that stage's tap. gradOut undefined means a zero output cotangent: the walk then starts at the last
 * injected stage (the stages after it get no gradient).
 */
export function chainBackward(rec: Recorder, tape: ChainTape, gradOut: Tensor | undefined, inject: ReadonlyMap<string, Tensor> = new Map()): Tensor {
  const engine = rec.engine;
  const { stages, x, inputs, kept, skipFrom } = tape;
  let start = stages.length - 1;
  for (const n of inject.keys()) {
    const st = stages.find((s) => s.name === n);
    assertArg(st?.forwardTap !== undefined, `chainBackward: no stage "${n}" with a tap to inject a gradient into`);
  }
  if (!gradOut) {
    const idx = stages.flatMap((s, i) => (inject.has(s.name) ? [i] : []));
    assertArg(idx.length > 0, 'chainBackward: no output gradient and nothing injected');
    start = Math.max(...idx);
    assertArg(start + 1 < inputs.length, `chainBackward: without an output gradient, the tape must hold the input of the stage after ${stages[start]!.name}`);
  } else {
    assertArg(inputs.length === stages.length, 'chainBackward: an output gradient needs a tape of the whole chain (no stopAt)');
  }
  return engine.tidy(() => {
    let g: Tensor;
    if (gradOut) g = gradOut;
    else {
      // Zero cotangent for the output of stage `start` (the next stage's input, less its concatenated skip).
      const next = inputs[start + 1]!;
      const cat = skipFrom[start + 1];
      const shape = next.shape.slice();
      if (cat) shape[1] = cat.channels[0];
      g = engine.zeros(shape, 'f32', 'zero_cotangent');
    }
    for (let i = inputs.length - 1; i > start; i--) {
      if (inputs[i] !== x) inputs[i]!.dispose();
      kept[i]?.dispose();
    }
    const skipGrads = new Map<number, Tensor>();
    for (let i = start; i >= 0; i--) {
      const st = stages[i]!;
      const fromSkip = skipGrads.get(i);
      if (fromSkip) {
        const sum = add(rec, g, fromSkip);
        fromSkip.dispose();
        skipGrads.delete(i);
        if (g !== gradOut) g.dispose();
        g = sum;
      }
      const gradTap = inject.get(st.name);
      let gi = rec.scope(`${st.name}/vjp`, () => engine.tidy(() => st.vjp(rec, inputs[i]!, g, gradTap, kept[i])));
      if (g !== gradOut) g.dispose();
      if (inputs[i] !== x) inputs[i]!.dispose();
      kept[i]?.dispose();
      const cat = skipFrom[i];
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
    assertArg(skipGrads.size === 0, 'chainBackward: a skip gradient found no producer');
    return g;
  });
}

/** Forward keeping each stage's input, then the reverse walk: the gradient of x (optionally with tap cotangents). */
export function chainVjp(rec: Recorder, stages: Stage[], x: Tensor, gradOut: Tensor, inject?: ReadonlyMap<string, Tensor>): Tensor {
  return rec.engine.tidy(() => chainBackward(rec, chainForward(rec, stages, x).tape, gradOut, inject));
}
