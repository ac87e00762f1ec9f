// Whole-tensor reductions to a scalar tensor of shape [1] (f32, any input dtype): sum, mean, L2 norm,
// max |x| and the count of NaN/Inf elements, plus `checkFinite`, an async guard built on the count.
// Each reduction is a chain of dispatches: the input to partials, partials to fewer partials, until
// one workgroup writes the result. Partial tensors are released as soon as their last reader is
// recorded; commands of a program run in order, so a later op that reuses the buffer is safe.

import source from '../../../kernels/reduce.wgsl';
import type { Engine } from '../device.js';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { runProgram } from '../recorder.js';
import { bytesPerElement, shapeString } from '../dtype.js';
import { SiloError, assertArg } from '../errors.js';

/** A tensor holds NaN or Inf where finite values are required. */
export class NonFiniteError extends SiloError {}
import { workgroupSize } from './grid.js';

/**
 * Elements each thread folds (in blocks of 16) before the workgroup tree. Large, because workgroup
 * barriers are what costs on CPU adapters: 16M elements leave 256 partials for a second stage.
 */
const PER = 256;

export type ReduceKind = 'sum' | 'l2' | 'maxabs' | 'count';
const OP_CODE: Record<ReduceKind, number> = { sum: 0, l2: 1, maxabs: 2, count: 0 };

/** Up to 65535 x 65535 workgroups; the kernel skips the tail past `groups`. */
function groupGrid(engine: Engine, groups: number): [number, number] {
  const maxDim = engine.limits.maxComputeWorkgroupsPerDimension;
  if (groups <= maxDim) return [groups, 1];
  return [maxDim, Math.ceil(groups / maxDim)];
}

/** Elements reduced by one workgroup of the first stage (partials per workgroup in later stages). */
export function reduceChunk(engine: Engine, per = PER): number {
  return workgroupSize(engine) * per;
}

export interface ReduceOptions {
  /** Elements per thread (tests lower it to exercise several partial stages on small inputs). */
  per?: number;
  /** Multiplier applied to a sum at the end (the mean passes 1 / n). */
  scale?: number;
  op?: string;
  /** Write the result into element `slot` of this f32 tensor instead of a new [1] tensor (which is then returned). */
  into?: { tensor: Tensor; slot: number };
  /** Reduce only these bytes of x's buffer (offset aligned to minStorageBufferOffsetAlignment): for tensors larger than one binding. */
  range?: { offset: number; bytes: number };
}

/** The reduction machinery behind sum/mean/l2Norm/maxAbs/nonFiniteCount. */
export function reduceTensor(rec: Recorder, x: Tensor, kind: ReduceKind, opts: ReduceOptions = {}): Tensor {
  const engine = rec.engine;
  const per = opts.per ?? PER;
  assertArg(Number.isInteger(per) && per >= 1, `reduce: elements per thread must be a positive integer, got ${per}`);
  const op = opts.op ?? kind;
  const scale = opts.scale ?? 1;
  const wg = workgroupSize(engine);
  const chunk = wg * per;
  const consts = { WG: wg, PER: per, OP: OP_CODE[kind], F16: x.dtype === 'f16' };
  const range = opts.range;
  let n = range ? range.bytes / bytesPerElement(x.dtype) : x.size;
  let groups = Math.max(1, Math.ceil(n / chunk));
  // The count reads raw bits (array<u32>), so it never needs an f16 pipeline.
  const first = engine.kernel({
    family: 'reduce',
    source,
    entry: kind === 'count' ? 'count_nonfinite' : 'reduce_input',
    dtype: kind === 'count' ? 'f32' : x.dtype,
    consts,
  });
  const into = opts.into;
  if (into) {
    assertArg(into.tensor.dtype === 'f32' && Number.isInteger(into.slot) && into.slot >= 0 && into.slot < into.tensor.size,
      `reduce: slot ${into.slot} is outside the f32 output ${shapeString(into.tensor.shape)} ${into.tensor.dtype}`);
  }
  const slot = into?.slot ?? 0;
  const result = into?.tensor ?? engine.empty([1], 'f32', op);
  let out = groups === 1 ? result : engine.empty([2 * groups], 'f32', `${op}:partials`);
  rec.dispatch(first, {
    op,
    bindings: { [kind === 'count' ? 'rbits' : 'rx']: range ? { buffer: x.buffer, offset: range.offset, size: Math.ceil(range.bytes / 4) * 4, tensor: x } : x, rout: out },
    uniforms: { n, groups, finish: groups === 1 ? 1 : 0, scale, slot },
    workgroups: groupGrid(engine, groups),
  });
  if (groups === 1) return result;
  const next = engine.kernel({ family: 'reduce', source, entry: 'reduce_partials', dtype: 'f32', consts: { ...consts, F16: false } });
  while (groups > 1) {
    const partials = out;
    n = groups;
    groups = Math.ceil(n / chunk);
    out = groups === 1 ? result : engine.empty([2 * groups], 'f32', `${op}:partials`);
    rec.dispatch(next, {
      op,
      bindings: { rpart: partials, rout: out },
      uniforms: { n, groups, finish: groups === 1 ? 1 : 0, scale, slot },
      workgroups: groupGrid(engine, groups),
    });
    partials.dispose();
  }
  return result;
}

/** Sum of all elements, accumulated in f32 in near-pairwise order. */
export const sum = (rec: Recorder, x: Tensor): Tensor => reduceTensor(rec, x, 'sum');

/** Mean of all elements (NaN for an empty tensor, as in PyTorch). */
export const mean = (rec: Recorder, x: Tensor): Tensor => reduceTensor(rec, x, 'sum', { op: 'mean', scale: x.size ? 1 / x.size : NaN });

/** sqrt(sum x^2), computed with a running scale so large or tiny values neither overflow nor underflow. */
export const l2Norm = (rec: Recorder, x: Tensor): Tensor => reduceTensor(rec, x, 'l2', { op: 'l2_norm' });

/** max |x| (0 for an empty tensor). */
export const maxAbs = (rec: Recorder, x: Tensor): Tensor => reduceTensor(rec, x, 'maxabs', { op: 'max_abs' });

/** Number of NaN and +-Inf elements, detected from the bit pattern (exponent bits all ones). */
export const nonFiniteCount = (rec: Recorder, x: Tensor): Tensor => reduceTensor(rec, x, 'count', { op: 'nonfinite_count' });

/** nonFiniteCount(x) written into element `slot` of the f32 tensor `counts` (one buffer, one read-back for many tensors). */
export const nonFiniteCountInto = (rec: Recorder, x: Tensor, counts: Tensor, slot: number): void => {
  const engine = rec.engine;
  const max = engine.limits.maxStorageBufferBindingSize;
  if (x.byteLength <= max) {
    reduceTensor(rec, x, 'count', { op: 'nonfinite_count', into: { tensor: counts, slot } });
    return;
  }
  // Larger than one binding (SD-1.5's f32 token embedding is 151 MB; browsers may allow 128 MiB):
  // count aligned ranges of the buffer, then add the counts up.
  const align = Math.max(4, engine.limits.minStorageBufferOffsetAlignment);
  const step = Math.floor(max / align) * align;
  const ranges = Math.ceil(x.byteLength / step);
  const parts = engine.empty([ranges], 'f32', 'nonfinite_count:ranges');
  for (let r = 0; r < ranges; r++) {
    const offset = r * step;
    reduceTensor(rec, x, 'count', { op: 'nonfinite_count', into: { tensor: parts, slot: r }, range: { offset, bytes: Math.min(step, x.byteLength - offset) } });
  }
  reduceTensor(rec, parts, 'sum', { op: 'nonfinite_count', into: { tensor: counts, slot } });
  parts.dispose();
};

/** Runs nonFiniteCount as its own program and throws, naming `what`, if any element is NaN or Inf. */
export async function checkFinite(engine: Engine, x: Tensor, what: string): Promise<void> {
  // A SiloError (NonFiniteError) so callers and users see a named failure, not a bare Error.
  const { result } = await runProgram(engine, `check_finite:${what}`, (rec) => nonFiniteCount(rec, x));
  let count: number;
  try {
    count = (await result.read())[0]!;
  } finally {
    result.dispose();
  }
  if (count !== 0) {
    throw new NonFiniteError(`${what}: ${count} of ${x.size} elements of ${shapeString(x.shape)} ${x.dtype} are NaN or Inf`);
  }
}
