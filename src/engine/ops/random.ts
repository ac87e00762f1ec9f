// Seeded random tensors from the counter-based Philox4x32-10 generator (kernels/random.wgsl). The
// same (seed, offset) gives the same element i on every adapter and in uniformCPU / normalCPU
// (src/engine/random.ts): uniforms bit for bit, normals to f32 rounding of log/sin/cos.

import source from '../../../kernels/random.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import type { DType } from '../dtype.js';
import { shapeSize, shapeString } from '../dtype.js';
import { assertArg } from '../errors.js';
import { splitU64, STREAM_NORMAL, STREAM_UNIFORM, type U64 } from '../random.js';
import { grid1d, workgroupSize } from './grid.js';
import { isStepValue, type StepValue } from '../step-value.js';

export interface RandomOptions {
  /** Selects an independent stream for the same seed (e.g. the sampling step); default 0. A StepValue follows a captured program's replays. */
  offset?: U64 | StepValue;
  /** Storage dtype of the result (default f32). */
  dtype?: DType;
  /** Tensor name (default the op name). */
  name?: string;
  /** An exact-size buffer (long-lived results such as generated weights; see BufferPool). */
  exact?: boolean;
}

export interface NormalOptions extends RandomOptions {
  mean?: number;
  std?: number;
}

type Entry = 'uniform_fill' | 'normal_fill' | 'bits_fill';

function fill(rec: Recorder, entry: Entry, op: string, shape: readonly number[], seed: U64, stream: number, opts: NormalOptions, firstBlock = 0): Tensor {
  const engine = rec.engine;
  assertArg(shape.every((d) => Number.isInteger(d) && d >= 0), `${op}: invalid shape ${shapeString(shape)}`);
  const n = shapeSize(shape);
  assertArg(n < 2 ** 32, `${op}: ${n} elements exceed one draw's 2^32 limit`);
  const key = splitU64(seed, `${op}: seed`);
  const offset = opts.offset ?? 0;
  const ctr = splitU64(isStepValue(offset) ? offset.value : offset, `${op}: offset`);
  const dtype = entry === 'bits_fill' ? 'f32' : (opts.dtype ?? 'f32');
  const wg = workgroupSize(engine);
  const k = engine.kernel({ family: 'random', source, entry, dtype, consts: { WG: wg, BITS: dtype === 'f16' ? 11 : 24 } });
  const out = engine.empty(shape, dtype, opts.name ?? op, { exact: opts.exact });
  const g = grid1d(engine, Math.ceil(n / 4), wg);
  rec.dispatch(k, {
    op,
    bindings: { [entry === 'bits_fill' ? 'rbits' : 'rout']: out },
    uniforms: {
      n,
      row: g.row,
      first_block: firstBlock,
      stream_id: stream,
      key,
      ctr,
      mean: opts.mean ?? 0,
      std_dev: opts.std ?? 1,
    },
    dynamic: isStepValue(offset) ? { ctr: (p) => splitU64(offset.at(p), `${op}: offset`) } : undefined,
    workgroups: g.workgroups,
  });
  return out;
}

/**
 * Uniform [0, 1) values: 24 random mantissa bits in f32 (11 in f16, so no value rounds up to 1).
 * Equal bit for bit to uniformCPU(size, seed, offset) (f16: uniformCPU(..., 11)).
 */
export function randomUniform(rec: Recorder, shape: readonly number[], seed: U64, opts: RandomOptions = {}): Tensor {
  return fill(rec, 'uniform_fill', 'random_uniform', shape, seed, STREAM_UNIFORM, opts);
}

/** Normal(mean, std) values by Box-Muller; matches normalCPU to f32 rounding of log/sin/cos. */
export function randomNormal(rec: Recorder, shape: readonly number[], seed: U64, opts: NormalOptions = {}): Tensor {
  assertArg(Number.isFinite(opts.mean ?? 0) && Number.isFinite(opts.std ?? 1), `random_normal: mean and std must be finite`);
  return fill(rec, 'normal_fill', 'random_normal', shape, seed, STREAM_NORMAL, opts);
}

/**
 * Raw Philox u32 words of a stream, stored in a tensor's buffer (labelled f32: read the bytes with
 * engine.readBytes and view them as Uint32Array). `firstBlock` is counter word 0 of element 0.
 */
export function randomBits(
  rec: Recorder,
  n: number,
  seed: U64,
  opts: { offset?: U64; stream?: number; firstBlock?: number; name?: string } = {},
): Tensor {
  const stream = opts.stream ?? STREAM_UNIFORM;
  const first = opts.firstBlock ?? 0;
  assertArg(Number.isInteger(stream) && stream >= 0 && stream < 2 ** 32, `random_bits: stream must be a u32, got ${stream}`);
  assertArg(Number.isInteger(first) && first >= 0 && first + Math.ceil(n / 4) <= 2 ** 32, `random_bits: firstBlock ${first} out of range`);
  return fill(rec, 'bits_fill', 'random_bits', [n], seed, stream, { offset: opts.offset, name: opts.name }, first);
}
