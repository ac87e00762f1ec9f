// Reverse-mode (vector-Jacobian product) ops for the channel layout ops: concat's gradient is the
// slices of gradOut, a slice's gradient is gradOut placed in its channels of a zero tensor.
// f32 storage only, like the other backward ops.

import source from '../../../kernels/layout.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeSize, shapeString } from '../dtype.js';
import { grid1d, workgroupSize } from './grid.js';
import { sliceChannels } from './layout.js';

/** Gradients of concatChannels for inputs of `channels[i]` channels each: slices of gradOut along dim 1. */
export function concatChannelsBackward(rec: Recorder, gradOut: Tensor, channels: readonly number[]): Tensor[] {
  const op = 'concat_backward';
  assertArg(gradOut.dtype === 'f32', `${op}: backward ops take f32 tensors, gradOut is ${gradOut.dtype}`);
  assertArg(gradOut.rank >= 2, `${op}: gradOut ${shapeString(gradOut.shape)} needs rank >= 2`);
  const total = channels.reduce((s, c) => s + c, 0);
  assertArg(
    channels.every((c) => Number.isInteger(c) && c >= 0) && total === gradOut.shape[1],
    `${op}: channel counts [${channels.join(', ')}] do not add up to the ${gradOut.shape[1]} channels of gradOut ${shapeString(gradOut.shape)}`,
  );
  let off = 0;
  return channels.map((c) => {
    const t = sliceChannels(rec, gradOut, off, c);
    off += c;
    return t;
  });
}

/** Gradient of sliceChannels(x, start, count) for x of shape inShape: zeros except channels [start, start + count). */
export function sliceChannelsBackward(rec: Recorder, gradOut: Tensor, inShape: readonly number[], start: number): Tensor {
  const op = 'slice_backward';
  assertArg(gradOut.dtype === 'f32', `${op}: backward ops take f32 tensors, gradOut is ${gradOut.dtype}`);
  assertArg(inShape.length >= 2 && gradOut.rank === inShape.length, `${op}: gradOut ${shapeString(gradOut.shape)} and input ${shapeString(inShape)} need the same rank >= 2`);
  const count = gradOut.shape[1]!;
  const c = inShape[1]!;
  assertArg(
    gradOut.shape.every((d, i) => i === 1 || d === inShape[i]) && Number.isInteger(start) && start >= 0 && start + count <= c,
    `${op}: gradOut ${shapeString(gradOut.shape)} at channel ${start} does not fit input ${shapeString(inShape)}`,
  );
  const engine = rec.engine;
  const out = engine.empty(inShape, 'f32', op);
  if (out.size === 0) return out;
  const wg = workgroupSize(engine);
  const k = engine.kernel({ family: 'layout', source, entry: 'place_channels', dtype: 'f32', consts: { WG: wg } });
  const g = grid1d(engine, out.size, wg);
  rec.dispatch(k, {
    op,
    bindings: { pl_g: gradOut, pl_out: out },
    uniforms: { n: out.size, row: g.row, inner: shapeSize(inShape.slice(2)), c, start, count },
    workgroups: g.workgroups,
  });
  return out;
}
