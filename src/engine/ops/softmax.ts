// Stable softmax over the last dimension (of scale * x). Short rows get one thread each; longer rows
// one workgroup each on GPUs, so attention rows of thousands of keys are spread over a workgroup's
// threads. CPU adapters always take one thread per row: there, workgroup barriers cost more than the
// parallelism inside a row gains (SwiftShader, 65536 rows of 77: 0.4 s per-thread vs 8 s
// per-workgroup, 4096 x 4096: 0.36 s vs 4-11 s; lavapipe 4096 x 4096: 0.16 s vs 0.32 s).

import source from '../../../kernels/softmax.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeString } from '../dtype.js';
import { laneIncludes } from './lanes.js';
import { grid1d, workgroupSize } from './grid.js';

/** Rows up to this length are handled by one thread each. */
export const SOFTMAX_THREAD_MAX_COLS = 64;

export interface SoftmaxOptions {
  /** Multiplies the logits before the softmax (e.g. 1/sqrt(head_dim)). Default 1. */
  scale?: number;
  /** Force a layout (tests and tuning): one thread per row, or one workgroup per row. */
  layout?: 'auto' | 'thread' | 'group';
}

export function softmax(rec: Recorder, x: Tensor, opts: SoftmaxOptions = {}): Tensor {
  const engine = rec.engine;
  assertArg(x.rank >= 1, `softmax: input of shape ${shapeString(x.shape)} needs at least one dimension`);
  const scale = opts.scale ?? 1;
  assertArg(Number.isFinite(scale), `softmax: scale must be finite, got ${scale}`);
  const cols = x.shape[x.rank - 1]!;
  const rows = cols === 0 ? 0 : x.size / cols;
  const out = engine.empty(x.shape, x.dtype, 'softmax');
  if (rows === 0) return out;
  const layout = opts.layout ?? 'auto';
  const perThread = layout === 'thread' || (layout === 'auto' && (cols <= SOFTMAX_THREAD_MAX_COLS || engine.info.software));
  // Two workgroup sizes only: each variant is a pipeline, and barrier pipelines compile slowly on SwiftShader.
  const wg = perThread ? workgroupSize(engine, 64) : workgroupSize(engine, cols <= 1024 ? 64 : 256);
  const k = engine.kernel({ family: 'softmax', source, ...laneIncludes(engine), entry: perThread ? 'softmax_thread' : 'softmax_group', dtype: x.dtype, consts: { WG: wg } });
  if (perThread) {
    const g = grid1d(engine, rows, wg);
    rec.dispatch(k, { op: 'softmax', bindings: { sx: x, sout: out }, uniforms: { rows, cols, row: g.row, scale }, workgroups: g.workgroups });
  } else {
    const maxDim = engine.limits.maxComputeWorkgroupsPerDimension;
    const wx = Math.min(rows, maxDim);
    rec.dispatch(k, {
      op: 'softmax',
      bindings: { sx: x, sout: out },
      uniforms: { rows, cols, row: 0, scale },
      workgroups: [wx, Math.ceil(rows / wx)],
    });
  }
  return out;
}
