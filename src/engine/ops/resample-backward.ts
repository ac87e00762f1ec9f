// Reverse-mode (vector-Jacobian product) ops for the NCHW resampling ops, in gather form (one thread
// per input element summing the outputs that read it: no atomics, deterministic).
// f32 storage only: gradients are accumulated in f32 and an f16 copy would lose too much.

import source from '../../../kernels/resample.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeString } from '../dtype.js';
import { grid1d, workgroupSize } from './grid.js';

function checkGrad(op: string, gradOut: Tensor, inShape: readonly number[], outShape: readonly number[]): void {
  assertArg(gradOut.dtype === 'f32', `${op}: backward ops take f32 tensors, gradOut is ${gradOut.dtype}`);
  assertArg(inShape.length === 4, `${op}: input shape ${shapeString(inShape)} is not NCHW`);
  assertArg(
    gradOut.shape.length === 4 && gradOut.shape.every((d, i) => d === outShape[i]),
    `${op}: gradOut ${shapeString(gradOut.shape)} must be ${shapeString(outShape)} for input ${shapeString(inShape)}`,
  );
}

/** Gradient of upsampleNearest2x for input shape [N, C, H, W]: each input sums its 2x2 children. */
export function upsampleNearest2xBackward(rec: Recorder, gradOut: Tensor, inShape: readonly number[]): Tensor {
  const op = 'upsample_nearest2x_backward';
  const [n, c, h, w] = inShape as [number, number, number, number];
  checkGrad(op, gradOut, inShape, [n, c, 2 * h, 2 * w]);
  const engine = rec.engine;
  const out = engine.empty(inShape, 'f32', op);
  if (out.size === 0) return out;
  const wg = workgroupSize(engine);
  const k = engine.kernel({ family: 'resample', source, entry: 'upsample_nearest2x_backward', dtype: 'f32', consts: { WG: wg } });
  const g = grid1d(engine, out.size, wg);
  rec.dispatch(k, { op, bindings: { nbg: gradOut, nbout: out }, uniforms: { n: out.size, row: g.row, ih: h, iw: w }, workgroups: g.workgroups });
  return out;
}

/** Gradient of resizeBilinear(x, outH, outW) for x of shape inShape [N, C, H, W]; gradOut is [N, C, outH, outW]. */
export function resizeBilinearBackward(rec: Recorder, gradOut: Tensor, inShape: readonly number[]): Tensor {
  const op = 'resize_bilinear_backward';
  assertArg(gradOut.rank === 4, `${op}: gradOut ${shapeString(gradOut.shape)} is not NCHW`);
  const [n, c, h, w] = inShape as [number, number, number, number];
  const [oh, ow] = [gradOut.shape[2]!, gradOut.shape[3]!];
  checkGrad(op, gradOut, inShape, [n, c, oh, ow]);
  assertArg(h > 0 && w > 0 && oh > 0 && ow > 0, `${op}: empty spatial dims (input ${shapeString(inShape)}, gradOut ${shapeString(gradOut.shape)})`);
  const engine = rec.engine;
  const out = engine.empty(inShape, 'f32', op);
  if (out.size === 0) return out;
  const wg = workgroupSize(engine);
  const k = engine.kernel({ family: 'resample', source, entry: 'resize_bilinear_backward', dtype: 'f32', consts: { WG: wg } });
  const g = grid1d(engine, out.size, wg);
  rec.dispatch(k, {
    op,
    bindings: { bbg: gradOut, bbout: out },
    // The same f32 scales as the forward, so the recomputed taps and weights match it exactly.
    uniforms: { n: out.size, row: g.row, ih: h, iw: w, oh, ow, sh: Math.fround(h / oh), sw: Math.fround(w / ow) },
    workgroups: g.workgroups,
  });
  return out;
}
