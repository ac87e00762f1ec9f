// regressionLoss (kernels/loss.wgsl): F.l1_loss / F.mse_loss (mean) and their gradients against a CPU
// reference, on a size that is not a multiple of the workgroup, with exact ties (torch's sign(0) = 0) and
// a clamped target; NaN kept (never clamped into a finite value); and the refusals.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import { regressionLoss, type LossKind } from '../src/engine/ops/loss.js';
import { getEngine, randomData, expectClose } from './helpers/engine.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

function lossRef(out: Float32Array, target: Float32Array, kind: LossKind, lo: number, hi: number) {
  const n = out.length;
  let sum = 0;
  const grad = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const d = out[i]! - Math.min(hi, Math.max(lo, target[i]!));
    sum += kind === 'l1' ? Math.abs(d) : d * d;
    grad[i] = kind === 'l1' ? Math.sign(d) / n : (2 * d) / n;
  }
  return { loss: sum / n, grad };
}

describe('regressionLoss', () => {
  const n = 3 * 1031;
  const out = randomData(n, 1, -6, 6);
  const target = randomData(n, 2, -6, 6);
  // Exact ties: equal values, and outputs at the clamp bound over a target beyond it.
  for (let i = 0; i < n; i += 7) target[i] = out[i]!;
  for (let i = 3; i < n; i += 29) {
    out[i] = 4;
    target[i] = 5.5;
  }
  for (const kind of ['l1', 'mse'] as const) {
    for (const clamp of [undefined, [-4, 4]] as const) {
      it(`${kind}${clamp ? ', target clamped to [-4, 4]' : ''}: mean loss and gradient`, async () => {
        const [lo, hi] = clamp ?? [-Infinity, Infinity];
        const ref = lossRef(out, target, kind, lo, hi);
        const to = engine.tensor(out, [3, 1031], 'f32', 'out');
        const tt = engine.tensor(target, [3, 1031], 'f32', 'target');
        try {
          const { result } = await runProgram(engine, 'loss', (rec) => regressionLoss(rec, to, tt, { kind, clamp: clamp ? [clamp[0], clamp[1]] : undefined }));
          expect(Math.abs((await result.loss.read())[0]! - ref.loss)).toBeLessThan(1e-5 * ref.loss);
          const g = await result.grad.read();
          expectClose(g, ref.grad, { atol: 1e-12, rtol: 1e-6 }, 'grad');
          if (kind === 'l1') expect(g.filter((v) => v === 0).length).toBe(ref.grad.filter((v) => v === 0).length);
          result.loss.dispose();
          result.grad.dispose();
        } finally {
          to.dispose();
          tt.dispose();
        }
      });
    }
  }

  for (const kind of ['l1', 'mse'] as const) {
    it(`${kind}: a NaN in the output or the target gives a NaN loss and NaN gradients there, even through the clamp`, async () => {
      const o = randomData(300, 3, -2, 2);
      const t = randomData(300, 4, -2, 2);
      t[17] = NaN; // clamp(NaN) in WGSL may return a bound: it must not
      o[251] = NaN;
      const to = engine.tensor(o, [300], 'f32', 'out');
      const tt = engine.tensor(t, [300], 'f32', 'target');
      try {
        const { result } = await runProgram(engine, 'loss nan', (rec) => regressionLoss(rec, to, tt, { kind, clamp: [-4, 4] }));
        expect((await result.loss.read())[0]).toBeNaN();
        const g = await result.grad.read();
        expect([...g.keys()].filter((i) => Number.isNaN(g[i]!))).toEqual([17, 251]);
        result.loss.dispose();
        result.grad.dispose();
      } finally {
        to.dispose();
        tt.dispose();
      }
    });
  }

  it('refuses mismatched shapes, non-f32 tensors and an empty clamp range', () => {
    const a = engine.zeros([2, 3], 'f32', 'out');
    const b = engine.zeros([3, 2], 'f32', 'target');
    const rec = { engine } as never;
    try {
      expect(() => regressionLoss(rec, a, b)).toThrow(/l1_loss: output \[2, 3\] and target \[3, 2\] differ in shape/);
      expect(() => regressionLoss(rec, a, a, { kind: 'mse', clamp: [4, -4] })).toThrow(/mse_loss: clamp range \[4, -4\] is empty/);
      expect(() => regressionLoss(rec, a, a, { kind: 'huber' as never })).toThrow(/kind must be 'l1' or 'mse'/);
    } finally {
      a.dispose();
      b.dispose();
    }
  });
});
