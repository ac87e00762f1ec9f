import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import { matmulBackward, linearBackward } from '../src/engine/ops/matmul-backward.js';
import { getEngine, randomData, expectClose } from './helpers/engine.js';
import { matmulBackwardRef } from './ref/matmul-backward.js';
import { matmulRef } from './ref/matmul.js';
import { dot } from './ref/elementwise-backward.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

// f32 accumulation over K (or rows, or batch) of O(1) products, vs f64: ~sqrt(len) * 6e-8 relative to
// the sum of |terms|; the sums here are at most a few hundred terms.
const TOL = { atol: 2e-5, rtol: 1e-5 };

const size = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);

interface Case {
  a: number[];
  b: number[];
  transA?: boolean;
  transB?: boolean;
  scale?: number;
}

const CASES: Case[] = [
  { a: [1, 1], b: [1, 1] },
  { a: [7, 5], b: [5, 9] },
  { a: [7, 5], b: [5, 12], scale: 0.5 },
  { a: [5, 7], b: [5, 9], transA: true },
  { a: [7, 5], b: [9, 5], transB: true },
  { a: [5, 7], b: [12, 5], transA: true, transB: true },
  { a: [2, 3, 13, 6], b: [6, 11] },
  { a: [2, 3, 13, 6], b: [11, 6], transB: true },
  { a: [13, 6], b: [2, 6, 8] },
  { a: [2, 1, 6, 13], b: [3, 6, 4], transA: true },
  { a: [2, 1, 9, 6], b: [1, 3, 5, 6], transB: true, scale: -1.5 },
  { a: [1, 6, 13], b: [2, 13, 6], transA: true, transB: true },
];

describe('matmul backward', () => {
  for (const c of CASES) {
    const label = `a ${JSON.stringify(c.a)}${c.transA ? 'T' : ''} x b ${JSON.stringify(c.b)}${c.transB ? 'T' : ''}${c.scale ? ` scale ${c.scale}` : ''}`;
    it(label, async () => {
      const ad = randomData(size(c.a), size(c.a) + 1);
      const bd = randomData(size(c.b), size(c.b) + 2);
      const outShape = matmulRef(ad, c.a, bd, c.b, c).shape;
      const gd = randomData(size(outShape), 7);
      const a = engine.tensor(ad, c.a);
      const b = engine.tensor(bd, c.b);
      const g = engine.tensor(gd, outShape);
      const { result } = await runProgram(engine, 'mmb', (rec) =>
        matmulBackward(rec, a, b, g, { transA: c.transA, transB: c.transB, scale: c.scale, needs: { bias: true } }),
      );
      const ref = matmulBackwardRef(ad, c.a, bd, c.b, gd, c);
      expect(result.gradA!.shape).toEqual(c.a);
      expect(result.gradB!.shape).toEqual(c.b);
      expectClose(await result.gradA!.read(), ref.gradA, TOL, `${label} gradA`);
      expectClose(await result.gradB!.read(), ref.gradB, TOL, `${label} gradB`);
      expectClose(await result.gradBias!.read(), ref.gradBias, TOL, `${label} gradBias`);
      for (const t of [a, b, g, result.gradA!, result.gradB!, result.gradBias!]) t.dispose();
    });
  }

  it('reference VJP is the adjoint of the forward reference (<v, J w> = <J^T v, w>)', () => {
    // The product is bilinear: J w along a is exactly matmul(w_a, b) (and along b, matmul(a, w_b)),
    // so the check is exact up to the forward's f32 output rounding (~1e-7 relative).
    for (const c of CASES) {
      const ad = randomData(size(c.a), 11);
      const bd = randomData(size(c.b), 12);
      const wa = randomData(size(c.a), 13);
      const wb = randomData(size(c.b), 14);
      const wbias = randomData(c.transB ? c.b[c.b.length - 2]! : c.b[c.b.length - 1]!, 15);
      const fwd = matmulRef(ad, c.a, bd, c.b, c);
      const v = randomData(fwd.out.length, 16);
      const ref = matmulBackwardRef(ad, c.a, bd, c.b, v, c);
      const ja = dot(v, matmulRef(wa, c.a, bd, c.b, c).out);
      const jb = dot(v, matmulRef(ad, c.a, wb, c.b, c).out);
      // d/dbias along wbias: the forward with zero operands and bias wbias.
      const jbias = dot(v, matmulRef(new Float32Array(ad.length), c.a, bd, c.b, { ...c, bias: wbias }).out);
      const tol = (x: number) => 1e-5 * (1 + Math.abs(x));
      expect(Math.abs(ja - dot(ref.gradA, wa))).toBeLessThan(tol(ja));
      expect(Math.abs(jb - dot(ref.gradB, wb))).toBeLessThan(tol(jb));
      expect(Math.abs(jbias - dot(ref.gradBias, wbias))).toBeLessThan(tol(jbias));
    }
  });
});

describe('linear backward', () => {
  for (const [lead, inF, outF] of [[[1], 1, 1], [[2, 7], 5, 12], [[3], 9, 6], [[], 4, 3]] as const) {
    it(`x [${[...lead, inF]}] weight [${outF}, ${inF}]`, async () => {
      const xShape = [...lead, inF];
      const xd = randomData(size(xShape), 1);
      const wd = randomData(outF * inF, 2);
      const gShape = [...lead, outF];
      const gd = randomData(size(gShape), 3);
      const x = engine.tensor(xd, xShape);
      const w = engine.tensor(wd, [outF, inF]);
      const g = engine.tensor(gd, gShape);
      const { result } = await runProgram(engine, 'lin', (rec) => linearBackward(rec, x, w, g, { needs: { bias: true } }));
      const rows = size(xShape) / inF;
      const ref = matmulBackwardRef(xd, [rows, inF], wd, [outF, inF], gd, { transB: true });
      expect(result.gradX!.shape).toEqual(xShape);
      expect(result.gradWeight!.shape).toEqual([outF, inF]);
      expectClose(await result.gradX!.read(), ref.gradA, TOL, 'gradX');
      expectClose(await result.gradWeight!.read(), ref.gradB, TOL, 'gradWeight');
      expectClose(await result.gradBias!.read(), ref.gradBias, TOL, 'gradBias');
    });
  }
});
