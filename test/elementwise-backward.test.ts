import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import * as bw from '../src/engine/ops/elementwise-backward.js';
import { getEngine, randomData, expectClose } from './helpers/engine.js';
import {
  unaryBackwardRef,
  unaryForward64,
  binaryBackwardRef,
  binaryForward64,
  gegluBackwardRef,
  gegluForward64,
  fdDirectional,
  dot,
  type UnaryRefOptions,
} from './ref/elementwise-backward.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

// GPU vs the f64 analytic VJP: f32 arithmetic and the WGSL erfc / exp approximations (~1e-7 relative)
// on O(1) values. Reductions over broadcast dims add rounding ~ (64 + count/64) * 6e-8.
const TOL = { atol: 1e-6, rtol: 1e-5 };
// Central differences in f64 with h = 1e-5 on O(1) data: truncation ~h^2, cancellation ~1e-16/h.
const FD_TOL = 1e-7;

const ACTS = ['relu', 'silu', 'gelu', 'gelu_tanh', 'quick_gelu', 'leaky_relu', 'sigmoid'] as const;

describe('unary backward', () => {
  for (const act of ACTS) {
    it(`${act} on 1, 7 and 1031 elements`, async () => {
      for (const n of [1, 7, 1031]) {
        const xd = randomData(n, 3 + n, -6, 6);
        const gd = randomData(n, 5 + n);
        const x = engine.tensor(xd, [n]);
        const g = engine.tensor(gd, [n]);
        const { result } = await runProgram(engine, act, (rec) => bw.unaryBackward(rec, x, g, { act, alpha: 0.2 }));
        expectClose(await result.read(), unaryBackwardRef(xd, gd, { act, alpha: 0.2 }), TOL, `${act} n=${n}`);
        x.dispose();
        g.dispose();
        result.dispose();
      }
    });
  }

  it('clamp, scale-shift with activation, and named wrappers', async () => {
    const xd = randomData(301, 7, -3, 3);
    const gd = randomData(301, 8);
    const x = engine.tensor(xd, [7, 43]);
    const g = engine.tensor(gd, [7, 43]);
    const { result } = await runProgram(engine, 'clamp', (rec) => ({
      clamp: bw.clampBackward(rec, x, g, -1, 0.5),
      scale: bw.scaleBackward(rec, x, g, 2.5),
      mixed: bw.unaryBackward(rec, x, g, { act: 'silu', scale: -1.5, shift: 0.25, min: -0.2, max: 1 }),
      silu: bw.siluBackward(rec, x, g),
      geluTanh: bw.geluBackward(rec, x, g, 'tanh'),
    }));
    expectClose(await result.clamp.read(), unaryBackwardRef(xd, gd, { min: -1, max: 0.5 }), TOL, 'clamp');
    expectClose(await result.scale.read(), unaryBackwardRef(xd, gd, { scale: 2.5 }), TOL, 'scale');
    const mixed: UnaryRefOptions = { act: 'silu', scale: -1.5, shift: 0.25, min: -0.2, max: 1 };
    expectClose(await result.mixed.read(), unaryBackwardRef(xd, gd, mixed), TOL, 'silu+scale+clamp');
    expectClose(await result.silu.read(), unaryBackwardRef(xd, gd, { act: 'silu' }), TOL, 'siluBackward');
    expectClose(await result.geluTanh.read(), unaryBackwardRef(xd, gd, { act: 'gelu_tanh' }), TOL, 'geluBackward tanh');
  });

  it('extreme inputs give finite gradients', async () => {
    const xd = new Float32Array([-1e4, -100, -20, -1e-3, 0, 1e-3, 20, 100, 1e4]);
    const gd = new Float32Array(xd.length).fill(1);
    const x = engine.tensor(xd, [xd.length]);
    const g = engine.tensor(gd, [xd.length]);
    for (const act of ACTS) {
      const { result } = await runProgram(engine, act, (rec) => bw.unaryBackward(rec, x, g, { act }));
      const out = await result.read();
      expect(out.every(Number.isFinite), `${act}: ${Array.from(out).join(', ')}`).toBe(true);
      expectClose(out, unaryBackwardRef(xd, gd, { act }), TOL, `${act} extremes`);
    }
  });

  it('reference derivatives match per-element central differences (f64)', () => {
    // Points away from the kinks of relu / leaky-relu / clamp.
    const xd = Array.from(randomData(64, 21, -5, 5)).filter((v) => Math.abs(v) > 1e-3 && Math.abs(v - 0.5) > 1e-3 && Math.abs(v + 1) > 1e-3);
    const h = 1e-5;
    const opts: UnaryRefOptions[] = [...ACTS.map((act) => ({ act, alpha: 0.2 })), { min: -1, max: 0.5 }, { act: 'gelu', scale: 1.7, shift: -0.3 }];
    for (const o of opts) {
      const ones = new Float64Array(xd.length).fill(1);
      const analytic = unaryBackwardRef(xd, ones, o);
      const fp = unaryForward64(xd.map((v) => v + h), o);
      const fm = unaryForward64(xd.map((v) => v - h), o);
      const fd = fp.map((p, i) => (p - fm[i]!) / (2 * h));
      expectClose(analytic, fd, { atol: FD_TOL, rtol: FD_TOL }, `FD ${JSON.stringify(o)}`);
    }
  });
});

describe('binary backward with broadcasting', () => {
  const cases: Array<[number[], number[]]> = [
    [[5], [5]],
    [[1], [1]],
    [[2, 3, 7], [7]],
    [[2, 33, 3, 5], [1, 33, 1, 1]],
    [[1, 4, 1], [3, 1, 5]],
    [[2, 1, 3, 1, 2, 1, 3, 2], [1, 2, 1, 3, 1, 2, 1, 1]],
    [[2, 5, 129], [2, 5, 1]],
  ];
  for (const [sa, sb] of cases) {
    it(`${JSON.stringify(sa)} with ${JSON.stringify(sb)}`, async () => {
      const na = sa.reduce((p, d) => p * d, 1);
      const nb = sb.reduce((p, d) => p * d, 1);
      const ad = randomData(na, na, -2, 2);
      const bd = randomData(nb, nb + 1, -2, 2);
      const outShape = binaryShape(sa, sb);
      const no = outShape.reduce((p, d) => p * d, 1);
      const gd = randomData(no, no + 2);
      const a = engine.tensor(ad, sa);
      const b = engine.tensor(bd, sb);
      const g = engine.tensor(gd, outShape);
      const { result } = await runProgram(engine, 'binary', (rec) => ({
        add: bw.addBackward(rec, a, b, g),
        sub: bw.subBackward(rec, a, b, g),
        sa: bw.scaleAddBackward(rec, a, 0.5, b, -2, g),
        mul: bw.mulBackward(rec, a, b, g),
      }));
      const check = async (got: bw.BinaryGrads, ref: { gradA: Float64Array; gradB: Float64Array }, what: string) => {
        expect(got.gradA.shape).toEqual(sa);
        expect(got.gradB.shape).toEqual(sb);
        expectClose(await got.gradA.read(), ref.gradA, TOL, `${what} gradA`);
        expectClose(await got.gradB.read(), ref.gradB, TOL, `${what} gradB`);
      };
      await check(result.add, binaryBackwardRef('scale_add', ad, sa, bd, sb, gd), 'add');
      await check(result.sub, binaryBackwardRef('scale_add', ad, sa, bd, sb, gd, 1, -1), 'sub');
      await check(result.sa, binaryBackwardRef('scale_add', ad, sa, bd, sb, gd, 0.5, -2), 'scaleAdd');
      await check(result.mul, binaryBackwardRef('mul', ad, sa, bd, sb, gd), 'mul');
    });
  }

  it('sumToShape to a per-channel bias and to a scalar', async () => {
    const shape = [2, 9, 5, 7];
    const n = 2 * 9 * 5 * 7;
    const gd = randomData(n, 99);
    const g = engine.tensor(gd, shape);
    const { result } = await runProgram(engine, 'sum', (rec) => [bw.sumToShape(rec, g, [9, 1, 1]), bw.sumToShape(rec, g, [1])]);
    const perC = new Float64Array(9);
    let all = 0;
    gd.forEach((v, i) => {
      perC[Math.floor(i / 35) % 9] += v;
      all += v;
    });
    expectClose(await result[0]!.read(), perC, TOL, 'per-channel');
    expectClose(await result[1]!.read(), [all], { atol: 1e-5, rtol: 1e-5 }, 'scalar');
  });

  it('reference VJP is the adjoint of the f64 forward (<v, J w> = <J^T v, w>)', () => {
    const sa = [2, 1, 3, 4];
    const sb = [3, 1];
    const ad = Float64Array.from(randomData(24, 1));
    const bd = Float64Array.from(randomData(3, 2));
    const outShape = binaryShape(sa, sb);
    const v = Float64Array.from(randomData(outShape.reduce((p, d) => p * d, 1), 3));
    const wa = Float64Array.from(randomData(24, 4));
    const wb = Float64Array.from(randomData(3, 5));
    for (const [kind, ca, cb] of [['scale_add', 0.5, -2], ['mul', 1, 1]] as const) {
      const ref = binaryBackwardRef(kind, ad, sa, bd, sb, v, ca, cb);
      const ja = fdDirectional((x) => binaryForward64(kind, x, sa, bd, sb, ca, cb), ad, wa, v, 1e-3);
      const jb = fdDirectional((x) => binaryForward64(kind, ad, sa, x, sb, ca, cb), bd, wb, v, 1e-3);
      // Bilinear forwards: central differences are exact up to f64 rounding.
      expect(Math.abs(ja - dot(ref.gradA, wa))).toBeLessThan(1e-9);
      expect(Math.abs(jb - dot(ref.gradB, wb))).toBeLessThan(1e-9);
    }
  });
});

function binaryShape(a: number[], b: number[]): number[] {
  const r = Math.max(a.length, b.length);
  const A = [...new Array<number>(r - a.length).fill(1), ...a];
  const B = [...new Array<number>(r - b.length).fill(1), ...b];
  return A.map((d, i) => Math.max(d, B[i]!));
}

describe('geglu backward', () => {
  it('matches the analytic VJP on awkward sizes', async () => {
    for (const [rows, d] of [[1, 1], [3, 5], [77, 33]] as const) {
      const xd = randomData(rows * 2 * d, rows + d, -4, 4);
      const gd = randomData(rows * d, rows * d + 1);
      const x = engine.tensor(xd, [rows, 2 * d]);
      const g = engine.tensor(gd, [rows, d]);
      const { result } = await runProgram(engine, 'geglu', (rec) => bw.gegluBackward(rec, x, g));
      expect(result.shape).toEqual([rows, 2 * d]);
      expectClose(await result.read(), gegluBackwardRef(xd, gd, rows, d), TOL, `geglu ${rows}x${d}`);
    }
  });

  it('reference VJP matches central differences of the f64 forward', () => {
    const rows = 3;
    const d = 4;
    const x = Float64Array.from(randomData(rows * 2 * d, 41, -3, 3));
    const v = Float64Array.from(randomData(rows * d, 42));
    const ref = gegluBackwardRef(x, v, rows, d);
    for (let t = 0; t < 3; t++) {
      const w = Float64Array.from(randomData(rows * 2 * d, 50 + t));
      const fd = fdDirectional((y) => gegluForward64(y, rows, d), x, w, v, 1e-5);
      expect(Math.abs(fd - dot(ref, w))).toBeLessThan(1e-7);
    }
  });
});
