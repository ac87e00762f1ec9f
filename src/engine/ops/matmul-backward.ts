// Reverse-mode kernels for matmul / linear. Every gradient is itself a matmul on the forward kernels
// (dA = dC B^T, dB = A^T dC, with the transposes folded into transA / transB), followed by a sum over
// the batch dims an operand was broadcast along; dBias sums dC over all rows. f32 gradients; an operand may
// be f16 parameters (mixed precision).
// The fused activation is not differentiated here: callers apply unaryBackward to the pre-activation.

import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeString } from '../dtype.js';
import { matmul } from './matmul.js';
import { sumToShape } from './elementwise-backward.js';
import { broadcastShapes } from './elementwise.js';

export interface MatmulBackwardOptions {
  transA?: boolean;
  transB?: boolean;
  /** The forward's scale: C = scale * A B (+ bias). */
  scale?: number;
  /** Which gradients to compute (default: a and b; bias only when asked). */
  needs?: { a?: boolean; b?: boolean; bias?: boolean };
  op?: string;
}

export interface MatmulGrads {
  /** Shaped like a (stored layout, so [..., K, M] with transA). */
  gradA?: Tensor;
  /** Shaped like b (stored layout). */
  gradB?: Tensor;
  /** [N]. */
  gradBias?: Tensor;
}

const product = (d: readonly number[]) => d.reduce((p, e) => p * e, 1);

/** A full-batch gradient [...batch, R, C] summed down to the operand's own shape. */
function reduceBatch(rec: Recorder, full: Tensor, shape: readonly number[], op: string): Tensor {
  if (full.shape.length === shape.length && full.shape.every((d, i) => d === shape[i])) return full;
  const r = sumToShape(rec, full, shape, { op });
  full.dispose();
  return r;
}

/**
 * Gradients of C = scale * op(A) op(B) + bias (matmul's layouts and batch broadcasting) given dC.
 * Operands whose batch dims were broadcast get their gradient summed over those dims.
 */
export function matmulBackward(rec: Recorder, a: Tensor, b: Tensor, gradOut: Tensor, opts: MatmulBackwardOptions = {}): MatmulGrads {
  const name = opts.op ?? 'matmul_backward';
  const tA = opts.transA ?? false;
  const tB = opts.transB ?? false;
  const scale = opts.scale ?? 1;
  const needs = { a: true, b: true, bias: false, ...opts.needs };
  assertArg(gradOut.dtype === 'f32', `${name}: gradOut must be f32, got ${gradOut.dtype} ${shapeString(gradOut.shape)}`);
  // An operand may hold f16 parameters (mixed precision); the gradients are f32 either way.
  for (const t of [a, b]) assertArg(t.dtype === 'f32' || t.dtype === 'f16', `${name}: operands must be f32 or f16 parameters, got ${t.dtype} ${shapeString(t.shape)}`);
  assertArg(a.rank >= 2 && b.rank >= 2, `${name}: operands need rank >= 2`);
  const [ar, ac] = a.shape.slice(-2) as [number, number];
  const [br, bc] = b.shape.slice(-2) as [number, number];
  const M = tA ? ac : ar;
  const K = tA ? ar : ac;
  const N = tB ? br : bc;
  assertArg((tB ? bc : br) === K, `${name}: inner dimensions differ`);
  const batchA = a.shape.slice(0, -2);
  const batchB = b.shape.slice(0, -2);
  const batch = broadcastShapes(batchA, batchB, name);
  const expect = [...batch, M, N];
  assertArg(
    gradOut.rank === expect.length && gradOut.shape.every((d, i) => d === expect[i]),
    `${name}: gradOut ${shapeString(gradOut.shape)} is not the product's shape ${shapeString(expect)}`,
  );
  const grads: MatmulGrads = {};

  if (needs.a) {
    // dA = dC op(B)^T; stored transposed (transA): dA^T = op(B) dC^T.
    const full = tA
      ? matmul(rec, b, gradOut, { transA: tB, transB: true, scale, op: `${name}/a` })
      : matmul(rec, gradOut, b, { transB: !tB, scale, op: `${name}/a` });
    grads.gradA = reduceBatch(rec, full, a.shape, `${name}/a_sum`);
  }

  if (needs.b) {
    // dB = op(A)^T dC; stored transposed (transB): dB^T = dC^T op(A).
    const foldRows = !tA && !tB && batchB.every((d) => d === 1) && batchA.length > 0 && product(batchA) === product(batch);
    if (foldRows) {
      // b shared by every batch and a row-major: one [K, rows] x [rows, N] product over all rows, no
      // batch sum afterwards (the nn.Linear-style weight gradient).
      const a2 = a.reshape([product(batchA) * M, K]);
      const g2 = gradOut.reshape([product(batchA) * M, N]);
      const full = matmul(rec, a2, g2, { transA: true, scale, op: `${name}/b` });
      a2.dispose();
      g2.dispose();
      grads.gradB = full.reshape(b.shape);
      full.dispose();
    } else {
      const full = tB
        ? matmul(rec, gradOut, a, { transA: true, transB: tA, scale, op: `${name}/b` })
        : matmul(rec, a, gradOut, { transA: !tA, scale, op: `${name}/b` });
      grads.gradB = reduceBatch(rec, full, b.shape, `${name}/b_sum`);
    }
  }

  if (needs.bias) grads.gradBias = sumToShape(rec, gradOut, [N], { op: `${name}/bias` });
  return grads;
}

export interface LinearGrads {
  /** Shaped like x. */
  gradX?: Tensor;
  /** [out, in]. */
  gradWeight?: Tensor;
  /** [out]. */
  gradBias?: Tensor;
}

/**
 * Gradients of nn.Linear (y = x W^T + b, x [..., in], W [out, in]) given dy [..., out]:
 * dx = dy W, dW = dy^T x over all leading dims folded into rows, db = sum of dy over rows.
 */
export function linearBackward(
  rec: Recorder,
  x: Tensor,
  weight: Tensor,
  gradOut: Tensor,
  opts: { needs?: { x?: boolean; weight?: boolean; bias?: boolean }; op?: string } = {},
): LinearGrads {
  const name = opts.op ?? 'linear_backward';
  const needs = { x: true, weight: true, bias: false, ...opts.needs };
  assertArg(weight.rank === 2, `${name}: weight must be [out, in], got ${shapeString(weight.shape)}`);
  const [outF, inF] = weight.shape as [number, number];
  assertArg(x.rank >= 1 && x.shape[x.rank - 1] === inF, `${name}: x ${shapeString(x.shape)} does not have ${inF} input features`);
  const expect = [...x.shape.slice(0, -1), outF];
  assertArg(
    gradOut.rank === expect.length && gradOut.shape.every((d, i) => d === expect[i]),
    `${name}: gradOut ${shapeString(gradOut.shape)} should be ${shapeString(expect)}`,
  );
  const rows = x.size / inF;
  const x2 = x.reshape([rows, inF]);
  const g2 = gradOut.reshape([rows, outF]);
  const grads = matmulBackward(rec, x2, weight, g2, { transB: true, needs: { a: needs.x, b: needs.weight, bias: needs.bias }, op: name });
  x2.dispose();
  g2.dispose();
  const result: LinearGrads = { gradWeight: grads.gradB, gradBias: grads.gradBias };
  if (grads.gradA) {
    result.gradX = grads.gradA.reshape(x.shape);
    grads.gradA.dispose();
  }
  return result;
}
