// Reverse-mode (vector-Jacobian product) op for softmax over the last dimension of scale * x, from the
// forward's output y: dx = scale * y * (gradOut - sum(gradOut * y)) per row. Layouts as the forward.
// f32 storage only: gradients are accumulated in f32 and an f16 copy would lose too much.

import source from '../../../kernels/softmax.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeString } from '../dtype.js';
import { laneIncludes } from './lanes.js';
import { grid1d, workgroupSize } from './grid.js';
import { SOFTMAX_THREAD_MAX_COLS, type SoftmaxOptions } from './softmax.js';

/** Gradient with respect to x of y = softmax(x, opts), given y and gradOut (both f32, same shape). */
export function softmaxBackward(rec: Recorder, y: Tensor, gradOut: Tensor, opts: SoftmaxOptions = {}): Tensor {
  const engine = rec.engine;
  const op = 'softmax_backward';
  for (const [what, t] of [['y', y], ['gradOut', gradOut]] as const) {
    assertArg(t.dtype === 'f32', `${op}: backward ops take f32 tensors, ${what} is ${t.dtype}`);
  }
  assertArg(y.rank >= 1, `${op}: y of shape ${shapeString(y.shape)} needs at least one dimension`);
  assertArg(
    gradOut.shape.length === y.shape.length && gradOut.shape.every((d, i) => d === y.shape[i]),
    `${op}: y ${shapeString(y.shape)} and gradOut ${shapeString(gradOut.shape)} differ`,
  );
  const scale = opts.scale ?? 1;
  assertArg(Number.isFinite(scale), `${op}: scale must be finite, got ${scale}`);
  const cols = y.shape[y.rank - 1]!;
  const rows = cols === 0 ? 0 : y.size / cols;
  const out = engine.empty(y.shape, 'f32', op);
  if (rows === 0) return out;
  const layout = opts.layout ?? 'auto';
  const perThread = layout === 'thread' || (layout === 'auto' && (cols <= SOFTMAX_THREAD_MAX_COLS || engine.info.software));
  const wg = perThread ? workgroupSize(engine, 64) : workgroupSize(engine, cols <= 1024 ? 64 : 256);
  const k = engine.kernel({ family: 'softmax', source, ...laneIncludes(engine), entry: perThread ? 'softmax_bw_thread' : 'softmax_bw_group', dtype: 'f32', consts: { WG: wg } });
  if (perThread) {
    const g = grid1d(engine, rows, wg);
    rec.dispatch(k, { op, bindings: { sb_y: y, sb_g: gradOut, sb_out: out }, uniforms: { rows, cols, row: g.row, scale }, workgroups: g.workgroups });
  } else {
    const maxDim = engine.limits.maxComputeWorkgroupsPerDimension;
    const wx = Math.min(rows, maxDim);
    rec.dispatch(k, {
      op,
      bindings: { sbg_y: y, sbg_g: gradOut, sbg_out: out },
      uniforms: { rows, cols, row: 0, scale },
      workgroups: [wx, Math.ceil(rows / wx)],
    });
  }
  return out;
}
