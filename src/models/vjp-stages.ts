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
import { add, scale, silu } from '../engine/ops/elementwise.js';
import { concatChannels } from '../engine/ops/layout.js';
import { conv2dBackward } from '../engine/ops/conv2d-backward.js';
import { convOutputSize } from '../engine/ops/conv2d.js';
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
  /** The output's shape for an input of shape `s` (chainTapeBytes walks these without running anything). */
  outShape?(s: readonly number[]): number[];
  /** With forwardKeep: the shape of the internal it keeps, for an input of shape `s`. */
  keptShape?(s: readonly number[]): number[];
}

/** [N, Cout, Ho, Wo] of a Conv2d layer for an input [N, Cin, H, W] (padEnd as its forward uses it). */
export function convOutShape(conv: Conv2d, s: readonly number[], padEnd = 0): number[] {
  const pair = (p: number | [number, number] | undefined, d: number): [number, number] => (p === undefined ? [d, d] : typeof p === 'number' ? [p, p] : p);
  const [kh, kw] = pair(conv.kernel, 0);
  return [s[0]!, conv.outChannels, ...convOutputSize(s[2]!, s[3]!, kh, kw, pair(conv.opts.stride, 1), pair(conv.opts.padding, 0), [padEnd, padEnd])];
}

/** A stage's profile scope: its name as a module path ("down_blocks.0.resnets.1" -> "down_blocks.0/resnets.1"). */
function scopePath(name: string): string {
  return name.replace(/\.(?=[A-Za-z_])/g, '/');
}

/**
 * Records one stage's forward in its profile scope: with its tap when `tap`, keeping its internal when
 * `keep` and the stage can (forwardKeep).
 */
function runStage(rec: Recorder, st: Stage, input: Tensor, tap: boolean, keep: boolean): { out: Tensor; tap?: Tensor; kept?: Tensor } {
  return rec.scope(scopePath(st.name), () =>
    rec.engine.tidy(() => {
      if (keep && st.forwardKeep) return st.forwardKeep(rec, input, tap);
      if (tap) return st.forwardTap!(rec, input);
      return { out: st.forward(rec, input) };
    }),
  );
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

/** A Conv2d layer on its own (conv_in, quant convs). */
export function convStage(name: string, conv: Conv2d, skip: Pick<Stage, 'pushSkip'> = {}): Stage {
  return {
    name,
    ...skip,
    forward: (rec, x) => conv.forward(rec, x),
    vjp: (rec, x, g) => convGradX(rec, conv, x, g),
    outShape: (s) => convOutShape(conv, s),
  };
}

/**
 * GroupNorm + SiLU then a conv (the UNet's and the VAE's conv_out), as one stage. Its tap is the norm's
 * output before the SiLU (diffusers' conv_norm_out; tapping runs the norm and the SiLU unfused).
 */
export function headStage(name: string, norm: GroupNorm, conv: Conv2d): Stage {
  return {
    name,
    forward: (rec, x) => rec.engine.tidy(() => conv.forward(rec, norm.forward(rec, x, 'silu'))),
    forwardTap: (rec, x) =>
      rec.engine.tidy(() => {
        const tap = norm.forward(rec, x);
        return { out: conv.forward(rec, silu(rec, tap)), tap };
      }),
    vjp: (rec, x, g) => {
      const s = norm.forward(rec, x, 'silu');
      const ds = convGradX(rec, conv, s, g);
      s.dispose();
      return groupNormGradX(rec, norm, x, ds, 'silu');
    },
    outShape: (s) => convOutShape(conv, s),
  };
}

/**
 * A ResnetBlock2D. tembSilu = silu(temb) when the block has a time embedding: a constant per-channel bias
 * (needed to recompute norm2's input, identity in the backward). Its tap is the hidden branch
 * h2 = conv2(...) of out = (shortcut(x) + h2) / s: d h2 = gradOut / s + gradTap, d shortcut = gradOut / s.
 */
export function resnetStage(name: string, r: ResnetBlock2D, tembSilu?: Tensor, skip: Pick<Stage, 'pushSkip' | 'popSkip'> = {}): Stage {
  // Checked when run, not here: a chain built without its constants still gives shapes (chainTapeBytes).
  const temb = () => {
    assertArg(!r.timeEmbProj || tembSilu, `${name}: this resnet needs silu(temb)`);
    return tembSilu;
  };
  return {
    name,
    ...skip,
    forward: (rec, x) => r.forward(rec, x, temb()).out,
    forwardTap: (rec, x) => {
      const { out, hidden } = r.forward(rec, x, temb(), true);
      return { out, tap: hidden! };
    },
    forwardKeep: (rec, x, tap) => {
      const { out, hidden, pre } = r.forward(rec, x, temb(), tap, true);
      return { out, kept: pre!, tap: hidden };
    },
    outShape: ([n, , h, w]) => [n!, r.outChannels, h!, w!],
    keptShape: ([n, , h, w]) => [n!, r.outChannels, h!, w!],
    vjp: (rec, x, gradOut, gradTap, kept) => {
      const g = r.outputScaleFactor !== 1 ? scale(rec, gradOut, 1 / r.outputScaleFactor) : gradOut;
      assertArg(
        !gradTap || (gradTap.rank === g.rank && gradTap.shape.every((d, i) => d === g.shape[i])),
        `${name}: the hidden-branch gradient ${gradTap ? shapeString(gradTap.shape) : ''} must have the block output's shape ${shapeString(g.shape)}`,
      );
      const gHidden = gradTap ? add(rec, g, gradTap) : g;
      // norm2's input h: kept by the forward, or rebuilt (norm1, conv1, the time embedding).
      // (The time embedding is a constant per-channel bias there: it shifts h, and gets no gradient.)
      const h = kept ?? r.norm2Input(rec, x, temb());
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
      const r = runStage(rec, st, input, ti !== undefined, !!opts.keep);
      if (r.kept) kept[i] = r.kept;
      if (ti !== undefined) taps[ti] = r.tap!;
      h = r.out;
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
      let gi = rec.scope(`${scopePath(st.name)}/vjp`, () => engine.tidy(() => st.vjp(rec, inputs[i]!, g, gradTap, kept[i])));
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

/**
 * The module outputs diffusers' golden cases name (conv_in, down_block_i, mid_block, up_block_i), each with
 * the stage whose output it is (the last stage of that module).
 */
export function moduleOutputs(stages: readonly Stage[]): Map<string, string> {
  const last = new Map<string, string>();
  for (const st of stages) {
    const m = /^(conv_in|mid_block|(down|up)_blocks\.\d+)/.exec(st.name);
    if (m) last.set(m[1]!.replace(/_blocks\.(\d+)$/, '_block_$1'), st.name);
  }
  return last;
}

/** What chainRun returns (the caller owns every tensor in it). */
export interface ChainRun {
  out: Tensor;
  /** The taps of the stages named in `taps`, in that order. */
  taps: Tensor[];
  /** The outputs of the stages named in `outputs`, in that order. */
  outputs: Tensor[];
}

/**
 * A plain forward pass through the chain (no tape): each stage input is freed once the stage that reads it
 * is recorded, skips once concatenated. `taps` names stages whose tapped tensor (forwardTap) is returned
 * too, `outputs` stages whose outputs are (module outputs for golden comparisons).
 */
export function chainRun(rec: Recorder, stages: Stage[], x: Tensor, opts: { taps?: readonly string[]; outputs?: readonly string[] } = {}): ChainRun {
  const engine = rec.engine;
  const tapIndex = new Map<string, number>((opts.taps ?? []).map((n, i) => [n, i]));
  const outIndex = new Map<string, number>((opts.outputs ?? []).map((n, i) => [n, i]));
  for (const n of tapIndex.keys()) assertArg(stages.some((s) => s.name === n && s.forwardTap), `chainRun: no stage "${n}" with a tap`);
  for (const n of outIndex.keys()) assertArg(stages.some((s) => s.name === n), `chainRun: no stage "${n}"`);
  return engine.tidy(() => {
    const held = new Set<Tensor>([x]);
    const stack: Tensor[] = [];
    const free = (t: Tensor) => {
      if (!held.has(t) && !stack.includes(t)) t.dispose();
    };
    const taps = new Array<Tensor>(tapIndex.size);
    const outputs = new Array<Tensor>(outIndex.size);
    let h = x;
    for (const st of stages) {
      let input = h;
      if (st.popSkip) {
        const skip = stack.pop();
        assertArg(skip !== undefined, `chainRun: ${st.name} found no skip`);
        input = concatChannels(rec, [h, skip]);
        free(h);
        free(skip);
      }
      const ti = tapIndex.get(st.name);
      const r = runStage(rec, st, input, ti !== undefined, false);
      if (ti !== undefined) {
        taps[ti] = r.tap!;
        held.add(r.tap!);
      }
      h = r.out;
      free(input);
      const oi = outIndex.get(st.name);
      if (oi !== undefined) {
        outputs[oi] = h;
        held.add(h);
      }
      if (st.pushSkip) stack.push(h);
    }
    assertArg(stack.length === 0 || stages[stages.length - 1]!.pushSkip, `chainRun: ${stack.length} skips left unused`);
    return { out: h, taps, outputs };
  });
}

/**
 * Bytes the tape of chainForward(stages, x, { output: true, keep }) holds for an input of `shape`, from
 * the stages' shapes alone: every stage input (a popSkip stage's concat), plus with `keep` each
 * forwardKeep stage's internal. `bytes` per element (4: f32).
 */
export function chainTapeBytes(stages: readonly Stage[], shape: readonly number[], opts: { keep?: boolean; bytes?: number } = {}): number {
  const bytes = opts.bytes ?? 4;
  const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1) * bytes;
  let s = shape.slice();
  let total = 0;
  const stack: number[][] = [];
  for (const st of stages) {
    assertArg(st.outShape !== undefined, `chainTapeBytes: stage ${st.name} gives no output shape`);
    let input = s;
    if (st.popSkip) {
      const skip = stack.pop();
      assertArg(skip !== undefined, `chainTapeBytes: ${st.name} finds no skip`);
      assertArg(
        skip.length === s.length && skip.every((d, i) => i === 1 || d === s[i]),
        `chainTapeBytes: ${st.name} concatenates ${shapeString(s)} and a skip ${shapeString(skip)}`,
      );
      input = [s[0]!, s[1]! + skip[1]!, ...s.slice(2)];
    }
    total += size(input);
    if (opts.keep && st.forwardKeep) {
      assertArg(st.keptShape !== undefined, `chainTapeBytes: stage ${st.name} keeps an internal of no known shape`);
      total += size(st.keptShape(input));
    }
    s = st.outShape(input);
    if (st.pushSkip) stack.push(s);
  }
  return total;
}
