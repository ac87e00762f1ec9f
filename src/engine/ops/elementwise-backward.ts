// Reverse-mode (vector-Jacobian product) kernels for the elementwise ops: unary activations / clamp /
// scale, broadcasting add / sub / scaleAdd / mul (gradients summed over the broadcast dims), GEGLU,
// and sumToShape, the broadcast reduction they share with matmul and conv bias gradients.
// f32 storage only: gradients are accumulated in f32 and an f16 copy would lose too much.

import { dynamicUniforms, scalarValue } from '../step-value.js';
import source from '../../../kernels/elementwise.wgsl';
import activations from '../../../kernels/activations.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeString } from '../dtype.js';
import { activationCode, broadcastShapes, type UnaryOptions } from './elementwise.js';
import { grid1d, workgroupSize } from './grid.js';

function checkF32(name: string, ...ts: Tensor[]): void {
  for (const t of ts) assertArg(t.dtype === 'f32', `${name}: backward ops take f32 tensors, got ${t.dtype} ${shapeString(t.shape)}`);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Gradient of unary(x, opts) (act(scale * x + shift), then clamp to [min, max]) with respect to x:
 * gradOut * act'(scale x + shift) * scale, zero where the clamp cut the value off (bounds inclusive,
 * as torch.clamp). ReLU / leaky-ReLU take the x > 0 branch at 0, as PyTorch.
 */
export function unaryBackward(rec: Recorder, x: Tensor, gradOut: Tensor, opts: UnaryOptions = {}): Tensor {
  const engine = rec.engine;
  const name = `${opts.op ?? opts.act ?? 'unary'}_backward`;
  checkF32(name, x, gradOut);
  assertArg(sameShape(x.shape, gradOut.shape), `${name}: x ${shapeString(x.shape)} and gradOut ${shapeString(gradOut.shape)} differ`);
  const wg = workgroupSize(engine);
  const k = engine.kernel({
    family: 'elementwise',
    source,
    includes: [activations],
    entry: 'unary_backward',
    dtype: 'f32',
    consts: { WG: wg, ACT: activationCode(opts.act), BOP: 0 },
  });
  const out = engine.empty(x.shape, 'f32', name);
  const g = grid1d(engine, x.size, wg);
  rec.dispatch(k, {
    op: name,
    bindings: { ubx: x, ubg: gradOut, ubout: out },
    uniforms: {
      n: x.size,
      row: g.row,
      scale: scalarValue(opts.scale ?? 1),
      shift: scalarValue(opts.shift ?? 0),
      alpha: opts.alpha ?? 0.01,
      lo: opts.min ?? -3.4e38,
      hi: opts.max ?? 3.4e38,
    },
    dynamic: dynamicUniforms({ scale: opts.scale, shift: opts.shift }),
    workgroups: g.workgroups,
  });
  return out;
}

export const siluBackward = (rec: Recorder, x: Tensor, gradOut: Tensor) => unaryBackward(rec, x, gradOut, { act: 'silu' });
export const geluBackward = (rec: Recorder, x: Tensor, gradOut: Tensor, approximate: 'none' | 'tanh' = 'none') =>
  unaryBackward(rec, x, gradOut, { act: approximate === 'tanh' ? 'gelu_tanh' : 'gelu' });
export const quickGeluBackward = (rec: Recorder, x: Tensor, gradOut: Tensor) => unaryBackward(rec, x, gradOut, { act: 'quick_gelu' });
export const reluBackward = (rec: Recorder, x: Tensor, gradOut: Tensor) => unaryBackward(rec, x, gradOut, { act: 'relu' });
export const leakyReluBackward = (rec: Recorder, x: Tensor, gradOut: Tensor, alpha = 0.01) =>
  unaryBackward(rec, x, gradOut, { act: 'leaky_relu', alpha });
export const sigmoidBackward = (rec: Recorder, x: Tensor, gradOut: Tensor) => unaryBackward(rec, x, gradOut, { act: 'sigmoid' });
export const clampBackward = (rec: Recorder, x: Tensor, gradOut: Tensor, min: number, max: number) =>
  unaryBackward(rec, x, gradOut, { min, max, op: 'clamp' });
export const scaleBackward = (rec: Recorder, x: Tensor, gradOut: Tensor, s: number) => unaryBackward(rec, x, gradOut, { scale: s, op: 'scale' });

/** Row-major element strides of `shape` broadcast to `out` (right-aligned): 0 on broadcast dims. */
function stridesIn(shape: readonly number[], out: readonly number[]): number[] {
  const strides = new Array<number>(out.length).fill(0);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[out.length - shape.length + i] = shape[i] === 1 ? 0 : s;
    s *= shape[i]!;
  }
  return strides;
}

interface Dim {
  kept: number;
  reduced: number;
  os: number;
  bs: number;
}

/**
 * The dims of the reduction from gradOut (shape `out`) to `target`, size-1 output dims dropped and
 * neighbours of the same kind merged when both gradOut's and the other operand's strides allow it.
 */
function reductionDims(out: readonly number[], target: readonly number[], other: readonly number[] | null): Dim[] {
  const os = stridesIn(out, out);
  const bs = other ? stridesIn(other, out) : new Array<number>(out.length).fill(0);
  const t = [...new Array<number>(out.length - target.length).fill(1), ...target];
  const dims: Dim[] = [];
  for (let i = 0; i < out.length; i++) {
    const e = out[i]!;
    if (e === 1) continue;
    const keep = t[i] !== 1;
    const cur: Dim = { kept: keep ? e : 1, reduced: keep ? 1 : e, os: os[i]!, bs: bs[i]! };
    const prev = dims[dims.length - 1];
    // prev is the outer dim: mergeable if its strides continue the inner one's.
    if (prev && (prev.kept > 1) === keep && prev.os === cur.os * e && prev.bs === cur.bs * e) {
      prev.kept *= cur.kept;
      prev.reduced *= cur.reduced;
      prev.os = cur.os;
      prev.bs = cur.bs;
    } else {
      dims.push(cur);
    }
  }
  if (dims.length === 0) dims.push({ kept: 1, reduced: 1, os: 0, bs: 0 });
  return dims;
}

const pad8 = (v: number[], fill: number) => [...new Array<number>(8 - v.length).fill(fill), ...v];

/**
 * coef * sum of gradOut (times `other` broadcast, when given: the mul gradient) over the dims where
 * `target` is broadcast, giving a tensor of shape `target`. target must broadcast to gradOut's shape.
 */
export function sumToShape(
  rec: Recorder,
  gradOut: Tensor,
  target: readonly number[],
  opts: { coef?: number; other?: Tensor; op?: string } = {},
): Tensor {
  const engine = rec.engine;
  const name = opts.op ?? 'sum_to_shape';
  checkF32(name, gradOut, ...(opts.other ? [opts.other] : []));
  const out = gradOut.shape;
  assertArg(target.length <= out.length, `${name}: target ${shapeString(target)} has more dims than gradOut ${shapeString(out)}`);
  assertArg(
    sameShape(broadcastShapes(target, out, name), out),
    `${name}: target ${shapeString(target)} does not broadcast to gradOut ${shapeString(out)}`,
  );
  if (opts.other) {
    assertArg(sameShape(broadcastShapes(opts.other.shape, out, name), out), `${name}: other ${shapeString(opts.other.shape)} does not broadcast to ${shapeString(out)}`);
  }
  assertArg(out.length <= 8, `${name}: rank ${out.length} > 8 is not supported`);
  const dims = reductionDims(out, target, opts.other?.shape ?? null);
  const wg = workgroupSize(engine);
  const k = engine.kernel({
    family: 'elementwise',
    source,
    includes: [activations],
    entry: 'reduce_to',
    dtype: 'f32',
    consts: { WG: wg, ACT: 0, BOP: opts.other ? 1 : 0 },
  });
  const result = engine.empty(target, 'f32', name);
  if (result.size === 0) return result;
  const g = grid1d(engine, result.size, wg);
  rec.dispatch(k, {
    op: name,
    // Without `other` (BOP 0) the dead binding still needs a buffer: gradOut stands in.
    bindings: { rt_g: gradOut, rt_other: opts.other ?? gradOut, rt_out: result },
    uniforms: {
      n: result.size,
      row: g.row,
      rank: dims.length,
      count: dims.reduce((p, d) => p * d.reduced, 1),
      coef: opts.coef ?? 1,
      kd: pad8(dims.map((d) => d.kept), 1),
      rd: pad8(dims.map((d) => d.reduced), 1),
      os: pad8(dims.map((d) => d.os), 0),
      bs: pad8(dims.map((d) => d.bs), 0),
    },
    workgroups: g.workgroups,
  });
  return result;
}

export interface BinaryGrads {
  gradA: Tensor;
  gradB: Tensor;
}

/** ca * a + cb * b (add: 1, 1; sub: 1, -1; scaleAdd): gradA = ca * gradOut summed to a's shape, etc. */
export function scaleAddBackward(rec: Recorder, a: Tensor, ca: number, b: Tensor, cb: number, gradOut: Tensor, op = 'scale_add_backward'): BinaryGrads {
  checkBroadcast(op, a, b, gradOut);
  return {
    gradA: sumToShape(rec, gradOut, a.shape, { coef: ca, op: `${op}/a` }),
    gradB: sumToShape(rec, gradOut, b.shape, { coef: cb, op: `${op}/b` }),
  };
}

export const addBackward = (rec: Recorder, a: Tensor, b: Tensor, gradOut: Tensor) => scaleAddBackward(rec, a, 1, b, 1, gradOut, 'add_backward');
export const subBackward = (rec: Recorder, a: Tensor, b: Tensor, gradOut: Tensor) => scaleAddBackward(rec, a, 1, b, -1, gradOut, 'sub_backward');

/** a * b: gradA = sum to a's shape of gradOut * b, gradB = sum to b's shape of gradOut * a. */
export function mulBackward(rec: Recorder, a: Tensor, b: Tensor, gradOut: Tensor): BinaryGrads {
  checkBroadcast('mul_backward', a, b, gradOut);
  return {
    gradA: sumToShape(rec, gradOut, a.shape, { other: b, op: 'mul_backward/a' }),
    gradB: sumToShape(rec, gradOut, b.shape, { other: a, op: 'mul_backward/b' }),
  };
}

function checkBroadcast(name: string, a: Tensor, b: Tensor, gradOut: Tensor): void {
  const shape = broadcastShapes(a.shape, b.shape, name);
  assertArg(sameShape(shape, gradOut.shape), `${name}: gradOut ${shapeString(gradOut.shape)} is not the broadcast shape ${shapeString(shape)}`);
}

/** GEGLU (x [..., 2D] -> x[..., :D] * gelu(x[..., D:])): gradient with respect to x, [..., 2D]. */
export function gegluBackward(rec: Recorder, x: Tensor, gradOut: Tensor): Tensor {
  const engine = rec.engine;
  const name = 'geglu_backward';
  checkF32(name, x, gradOut);
  const last = x.shape[x.shape.length - 1] ?? 0;
  assertArg(last % 2 === 0, `${name}: last dimension of ${shapeString(x.shape)} must be even`);
  const d = last / 2;
  assertArg(
    sameShape(gradOut.shape, [...x.shape.slice(0, -1), d]),
    `${name}: gradOut ${shapeString(gradOut.shape)} does not match x ${shapeString(x.shape)} (expected last dim ${d})`,
  );
  const wg = workgroupSize(engine);
  const k = engine.kernel({ family: 'elementwise', source, includes: [activations], entry: 'geglu_backward', dtype: 'f32', consts: { WG: wg, ACT: 0, BOP: 0 } });
  const out = engine.empty(x.shape, 'f32', name);
  if (gradOut.size === 0) return out;
  const g = grid1d(engine, gradOut.size, wg);
  rec.dispatch(k, { op: name, bindings: { gbx: x, gbg: gradOut, gbout: out }, uniforms: { n: gradOut.size, row: g.row, d }, workgroups: g.workgroups });
  return out;
}
