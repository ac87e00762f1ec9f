// The measurement residual every guided sampler differentiates: r = ||target - estimate||_2 over the
// whole tensor (the norm, not its square, as DPS and SILO use it) and dr/d estimate = (estimate - target) / r.
// The norm stays on the GPU as a [1] tensor, so the division needs no read-back.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { clamp, div, sub } from '../../engine/ops/elementwise.js';
import { l2Norm } from '../../engine/ops/reduce.js';

/** The smallest norm divided by: a zero residual has gradient 0 instead of NaN. */
const NORM_FLOOR = 1e-30;

export interface Residual {
  /** ||target - estimate||_2, shape [1]. */
  norm: Tensor;
  /** d norm / d estimate, shaped like the estimate. */
  grad: Tensor;
}

export function residualNorm(rec: Recorder, target: Tensor, estimate: Tensor, what = 'residual'): Residual {
  assertArg(
    target.rank === estimate.rank && target.shape.every((d, i) => d === estimate.shape[i]),
    `${what}: the measurement ${shapeString(target.shape)} and its estimate ${shapeString(estimate.shape)} differ in shape`,
  );
  return rec.engine.tidy(() => {
    const diff = sub(rec, estimate, target, { op: `${what}/diff` });
    const norm = l2Norm(rec, diff);
    const safe = clamp(rec, norm, NORM_FLOOR, 3e38);
    const grad = div(rec, diff, safe, { op: `${what}/grad` });
    return { norm, grad };
  });
}
