// Elementwise ops with broadcasting: unary activations, clamp, scale/shift, binary add/sub/mul/div/
// max/min/scale-add with an optional fused activation, and GEGLU.

import source from '../../../kernels/elementwise.wgsl';
import activations from '../../../kernels/activations.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { paramDtype, shapeString } from '../dtype.js';
import { grid1d, workgroupSize } from './grid.js';
import { dynamicUniforms, mapScalar, scalarValue, type Scalar } from '../step-value.js';

export const ACTIVATIONS = {
  none: 0,
  relu: 1,
  silu: 2,
  gelu: 3,
  gelu_tanh: 4,
  quick_gelu: 5,
  leaky_relu: 6,
  sigmoid: 7,
} as const;
export type Activation = keyof typeof ACTIVATIONS;

export function activationCode(act: Activation | undefined): number {
  const code = ACTIVATIONS[act ?? 'none'];
  assertArg(code !== undefined, `unknown activation "${act}"`);
  return code;
}

export const ACTIVATION_WGSL = activations;

export interface UnaryOptions {
  act?: Activation;
  /** Applied before the activation: act(scale * x + shift). */
  scale?: Scalar;
  shift?: Scalar;
  /** Leaky-ReLU slope. */
  alpha?: number;
  /** Clamp applied after the activation. */
  min?: number;
  max?: number;
  op?: string;
}

export function unary(rec: Recorder, x: Tensor, opts: UnaryOptions = {}): Tensor {
  const engine = rec.engine;
  const wg = workgroupSize(engine);
  const k = engine.kernel({
    family: 'elementwise',
    source,
    includes: [activations],
    entry: 'unary',
    dtype: x.dtype,
    consts: { WG: wg, ACT: activationCode(opts.act), BOP: 0 },
  });
  const out = engine.empty(x.shape, x.dtype, opts.op ?? opts.act ?? 'unary');
  const g = grid1d(engine, x.size, wg);
  rec.dispatch(k, {
    op: opts.op ?? opts.act ?? 'unary',
    bindings: { ux: x, uout: out },
    uniforms: {
      n: x.size,
      row: g.row,
      scale: scalarValue(opts.scale ?? 1),
      shift: scalarValue(opts.shift ?? 0),
      alpha: opts.alpha ?? 0.01,
      // Unbounded by default, so an Inf stays Inf (a finite bound would turn it into a plausible number).
      lo: opts.min ?? -Infinity,
      hi: opts.max ?? Infinity,
    },
    dynamic: dynamicUniforms({ scale: opts.scale, shift: opts.shift }),
    workgroups: g.workgroups,
  });
  return out;
}

export const silu = (rec: Recorder, x: Tensor) => unary(rec, x, { act: 'silu' });
export const gelu = (rec: Recorder, x: Tensor, approximate: 'none' | 'tanh' = 'none') =>
  unary(rec, x, { act: approximate === 'tanh' ? 'gelu_tanh' : 'gelu' });
export const quickGelu = (rec: Recorder, x: Tensor) => unary(rec, x, { act: 'quick_gelu' });
export const relu = (rec: Recorder, x: Tensor) => unary(rec, x, { act: 'relu' });
export const leakyRelu = (rec: Recorder, x: Tensor, alpha = 0.01) => unary(rec, x, { act: 'leaky_relu', alpha });
export const clamp = (rec: Recorder, x: Tensor, min: number, max: number) => unary(rec, x, { min, max, op: 'clamp' });
export const scale = (rec: Recorder, x: Tensor, s: Scalar, shift: Scalar = 0) => unary(rec, x, { scale: s, shift, op: 'scale' });
/** A copy into a fresh tensor (also converts nothing: same dtype). */
export const copy = (rec: Recorder, x: Tensor) => unary(rec, x, { op: 'copy' });

const BINARY_OPS = { add: 0, mul: 1, div: 2, max: 3, min: 4 } as const;

/** numpy-style broadcast of two shapes; throws naming both. */
export function broadcastShapes(a: readonly number[], b: readonly number[], what: string): number[] {
  const rank = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    assertArg(da === db || da === 1 || db === 1, `${what}: shapes ${shapeString(a)} and ${shapeString(b)} do not broadcast`);
    out.push(da === 1 ? db : da);
  }
  return out;
}

function broadcastStrides(shape: readonly number[], outShape: readonly number[]): number[] {
  const rank = outShape.length;
  const strides = new Array<number>(rank).fill(0);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    const oi = rank - shape.length + i;
    strides[oi] = shape[i] === 1 ? 0 : s;
    s *= shape[i]!;
  }
  return strides;
}

/**
 * Merges neighbouring dims that both operands traverse contiguously (or both broadcast), so the
 * kernel's per-element index loop runs over as few dims as possible: a same-shape add becomes rank 1.
 */
export function collapseDims(shape: readonly number[], sa: readonly number[], sb: readonly number[]): { dims: number[]; sa: number[]; sb: number[] } {
  const dims: number[] = [];
  const oa: number[] = [];
  const ob: number[] = [];
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i]!;
    if (d === 1) continue; // size-1 dims contribute nothing to any index
    const k = dims.length - 1;
    if (k >= 0 && oa[k] === sa[i]! * d && ob[k] === sb[i]! * d) {
      dims[k] = dims[k]! * d;
      oa[k] = sa[i]!;
      ob[k] = sb[i]!;
    } else {
      dims.push(d);
      oa.push(sa[i]!);
      ob.push(sb[i]!);
    }
  }
  if (!dims.length) return { dims: [1], sa: [0], sb: [0] };
  return { dims, sa: oa, sb: ob };
}

function pad8(v: number[], fill: number): number[] {
  return [...new Array<number>(8 - v.length).fill(fill), ...v];
}

export interface BinaryOptions {
  /** Coefficients for add: ca * a + cb * b. */
  ca?: Scalar;
  cb?: Scalar;
  act?: Activation;
  alpha?: number;
  op?: string;
}

function binary(rec: Recorder, kind: keyof typeof BINARY_OPS, a: Tensor, b: Tensor, opts: BinaryOptions = {}): Tensor {
  const engine = rec.engine;
  const name = opts.op ?? kind;
  // One operand may be f16 parameters (a bias) next to f32 activations: the result is then f32.
  const dtype = a.dtype === b.dtype ? a.dtype : 'f32';
  paramDtype(`${name}: a`, dtype, a.dtype);
  paramDtype(`${name}: b`, dtype, b.dtype);
  const shape = broadcastShapes(a.shape, b.shape, name);
  assertArg(shape.length <= 8, `${name}: rank ${shape.length} > 8 is not supported`);
  const wg = workgroupSize(engine);
  const k = engine.kernel({
    family: 'elementwise',
    source,
    includes: [activations],
    entry: 'binary',
    dtype,
    adtype: a.dtype,
    wdtype: b.dtype,
    consts: { WG: wg, ACT: activationCode(opts.act), BOP: BINARY_OPS[kind] },
  });
  const out = engine.empty(shape, dtype, name);
  const n = out.size;
  const g = grid1d(engine, n, wg);
  const merged = collapseDims(shape, broadcastStrides(a.shape, shape), broadcastStrides(b.shape, shape));
  rec.dispatch(k, {
    op: name,
    bindings: { a, b, o: out },
    uniforms: {
      n,
      row: g.row,
      rank: merged.dims.length,
      ca: scalarValue(opts.ca ?? 1),
      cb: scalarValue(opts.cb ?? 1),
      alpha: opts.alpha ?? 0.01,
      dims: pad8(merged.dims, 1),
      sa: pad8(merged.sa, 0),
      sb: pad8(merged.sb, 0),
    },
    dynamic: dynamicUniforms({ ca: opts.ca, cb: opts.cb }),
    workgroups: g.workgroups,
  });
  return out;
}

export const add = (rec: Recorder, a: Tensor, b: Tensor, opts?: BinaryOptions) => binary(rec, 'add', a, b, opts);
export const sub = (rec: Recorder, a: Tensor, b: Tensor, opts?: BinaryOptions) =>
  binary(rec, 'add', a, b, { ...opts, cb: mapScalar(opts?.cb ?? 1, (c) => -c), op: opts?.op ?? 'sub' });
/** ca * a + cb * b with broadcasting. */
export const scaleAdd = (rec: Recorder, a: Tensor, ca: Scalar, b: Tensor, cb: Scalar, opts?: BinaryOptions) =>
  binary(rec, 'add', a, b, { ...opts, ca, cb, op: opts?.op ?? 'scale_add' });
export const mul = (rec: Recorder, a: Tensor, b: Tensor, opts?: BinaryOptions) => binary(rec, 'mul', a, b, opts);
export const div = (rec: Recorder, a: Tensor, b: Tensor, opts?: BinaryOptions) => binary(rec, 'div', a, b, opts);
export const maximum = (rec: Recorder, a: Tensor, b: Tensor, opts?: BinaryOptions) => binary(rec, 'max', a, b, opts);
export const minimum = (rec: Recorder, a: Tensor, b: Tensor, opts?: BinaryOptions) => binary(rec, 'min', a, b, opts);

/** GEGLU: x [..., 2D] -> x[..., :D] * gelu(x[..., D:]). */
export function geglu(rec: Recorder, x: Tensor): Tensor {
  const engine = rec.engine;
  const last = x.shape[x.shape.length - 1] ?? 0;
  assertArg(last % 2 === 0, `geglu: last dimension of ${shapeString(x.shape)} must be even`);
  const d = last / 2;
  const wg = workgroupSize(engine);
  const k = engine.kernel({ family: 'elementwise', source, includes: [activations], entry: 'geglu', dtype: x.dtype, consts: { WG: wg, ACT: 0, BOP: 0 } });
  const shape = [...x.shape.slice(0, -1), d];
  const out = engine.empty(shape, x.dtype, 'geglu');
  const g = grid1d(engine, out.size, wg);
  rec.dispatch(k, { op: 'geglu', bindings: { gx: x, gout: out }, uniforms: { n: out.size, row: g.row, d }, workgroups: g.workgroups });
  return out;
}
