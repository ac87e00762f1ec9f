// Batch-dimension plumbing for classifier-free guidance: the unconditional and text branches run as one
// batch-2 UNet call, and their gradients are summed back onto the single latent. Tensors are contiguous
// NCHW, so concatenating along dim 0 is concatenating along dim 1 of a [1, n] view.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { add } from '../../engine/ops/elementwise.js';
import { concatChannels, sliceChannels } from '../../engine/ops/layout.js';

/** torch.cat(parts, dim=0) for parts of equal shape [1, ...]. */
export function concatBatch(rec: Recorder, parts: Tensor[]): Tensor {
  const first = parts[0]!;
  for (const p of parts) {
    assertArg(p.shape[0] === 1 && p.shape.every((d, i) => d === first.shape[i]), `concatBatch: parts must share a [1, ...] shape (got ${parts.map((q) => shapeString(q.shape)).join(', ')})`);
  }
  const views = parts.map((p) => p.reshape([1, p.size]));
  const cat = concatChannels(rec, views);
  for (const v of views) v.dispose();
  const out = cat.reshape([parts.length, ...first.shape.slice(1)]);
  cat.dispose();
  return out;
}

/** x[i:i+1] (a copy) of x [N, ...]. */
export function sliceBatch(rec: Recorder, x: Tensor, i: number): Tensor {
  const n = x.shape[0]!;
  assertArg(i >= 0 && i < n, `sliceBatch: index ${i} outside batch ${n}`);
  const per = x.size / n;
  const view = x.reshape([1, x.size]);
  const part = sliceChannels(rec, view, i * per, per);
  view.dispose();
  const out = part.reshape([1, ...x.shape.slice(1)]);
  part.dispose();
  return out;
}

/** Sum over the batch: [N, ...] -> [1, ...]. */
export function sumBatch(rec: Recorder, x: Tensor): Tensor {
  const n = x.shape[0]!;
  if (n === 1) return x.reshape(x.shape);
  return rec.engine.tidy(() => {
    let acc = sliceBatch(rec, x, 0);
    for (let i = 1; i < n; i++) acc = add(rec, acc, sliceBatch(rec, x, i));
    return acc;
  });
}
