// The adjoint (VJP) of pad2d: folds the gradient of the padded border back onto the input elements
// it was copied from (reflect: mirrored rows / columns; replicate: the edges; zeros: dropped).
// Gather form, f32 storage only (as the other backward ops: gradients are accumulated in f32).

import source from '../../../kernels/pad.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeString } from '../dtype.js';
import { grid1d, workgroupSize } from './grid.js';
import type { Pad4, PadMode } from './pad.js';

const MODES: Record<PadMode, number> = { reflect: 0, replicate: 1, zeros: 2 };

/**
 * Gradient of pad2d(x, pad, mode) for x of shape inShape [N, C, H, W]; gradOut is
 * [N, C, H + top + bottom, W + left + right]. The same limits as the forward (reflect pads < H, W).
 */
export function pad2dBackward(rec: Recorder, gradOut: Tensor, inShape: readonly number[], pad: Pad4, mode: PadMode = 'reflect'): Tensor {
  const op = `pad2d_${mode}_backward`;
  assertArg(mode in MODES, `${op}: unknown mode ${String(mode)}`);
  assertArg(gradOut.dtype === 'f32', `${op}: backward ops take f32 tensors, gradOut is ${gradOut.dtype}`);
  assertArg(inShape.length === 4, `${op}: input shape ${shapeString(inShape)} is not NCHW`);
  const [top, bottom, left, right] = typeof pad === 'number' ? [pad, pad, pad, pad] : pad;
  assertArg([top, bottom, left, right].every((v) => Number.isInteger(v) && v >= 0), `${op}: pads must be integers >= 0, got ${JSON.stringify(pad)}`);
  const [n, c, h, w] = inShape as [number, number, number, number];
  if (mode === 'reflect') {
    assertArg(
      Math.max(top, bottom) < h && Math.max(left, right) < w,
      `${op}: reflect padding (${top}, ${bottom}, ${left}, ${right}) must be smaller than the input ${shapeString(inShape)}'s H and W`,
    );
  }
  if (mode === 'replicate') assertArg(h > 0 && w > 0, `${op}: cannot replicate an empty input ${shapeString(inShape)}`);
  const outH = h + top + bottom;
  const outW = w + left + right;
  const want = [n, c, outH, outW];
  assertArg(
    gradOut.rank === 4 && gradOut.shape.every((d, i) => d === want[i]),
    `${op}: gradOut ${shapeString(gradOut.shape)} must be ${shapeString(want)} for input ${shapeString(inShape)} padded by (${top}, ${bottom}, ${left}, ${right})`,
  );
  const engine = rec.engine;
  const out = engine.empty(inShape, 'f32', op);
  if (out.size === 0) return out;
  const wg = workgroupSize(engine);
  const k = engine.kernel({ family: 'pad', source, entry: 'pad2d_backward', dtype: 'f32', consts: { WG: wg } });
  const g = grid1d(engine, out.size, wg);
  rec.dispatch(k, {
    op,
    bindings: { pad_grad_out: gradOut, pad_grad_in: out },
    uniforms: { n: out.size, row: g.row, h, w, out_h: outH, out_w: outW, top, bottom, left, right, mode: MODES[mode] },
    workgroups: g.workgroups,
  });
  return out;
}
