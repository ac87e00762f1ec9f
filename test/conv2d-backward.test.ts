import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import { conv2dBackward, convTranspose2dBackward } from '../src/engine/ops/conv2d-backward.js';
import { getEngine, randomData, expectClose } from './helpers/engine.js';
import { conv2dBackwardRef, convTranspose2dBackwardRef, type ConvBackwardRefOptions } from './ref/conv2d-backward.js';
import { conv2dRef, convTranspose2dRef } from './ref/conv2d.js';
import { dot } from './ref/elementwise-backward.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

// f32 accumulation of at most a few hundred O(1) products per gradient element vs f64.
const TOL = { atol: 2e-5, rtol: 1e-5 };

const size = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);

interface ConvCase {
  x: [number, number, number, number];
  w: [number, number, number, number];
  stride?: [number, number];
  padding?: [number, number];
  padEnd?: [number, number];
  groups?: number;
}

const CONV_CASES: ConvCase[] = [
  { x: [1, 1, 1, 1], w: [1, 1, 1, 1] },
  { x: [2, 3, 7, 6], w: [5, 3, 3, 3], padding: [1, 1] },
  { x: [2, 3, 9, 7], w: [4, 3, 3, 3], stride: [2, 2], padding: [1, 1] },
  { x: [1, 4, 8, 8], w: [4, 4, 3, 3], stride: [2, 2], padEnd: [1, 1] },
  { x: [2, 4, 5, 7], w: [6, 2, 3, 1], groups: 2, padding: [1, 0] },
  { x: [2, 6, 7, 5], w: [6, 1, 3, 3], groups: 6, padding: [1, 1], stride: [2, 1] },
  { x: [1, 10, 5, 5], w: [11, 10, 1, 1] },
  { x: [1, 2, 6, 6], w: [3, 2, 4, 4], stride: [2, 2], padding: [2, 1] },
  // 288 taps: two workgroups along taps; 20 output channels: tiles of 8, 8 and a partial 4.
  { x: [2, 32, 17, 15], w: [20, 32, 3, 3], padding: [1, 1] },
  // 3x3 / stride 1 / padding 1 with W % 8 == 0: the input gradient runs conv3x3_px8 with flipped taps.
  { x: [2, 11, 5, 16], w: [6, 11, 3, 3], padding: [1, 1] },
];

const convOut = (c: ConvCase) => {
  const [sy, sx] = c.stride ?? [1, 1];
  const [py, px] = c.padding ?? [0, 0];
  const [ey, ex] = c.padEnd ?? [0, 0];
  return [c.x[0], c.w[0], Math.floor((c.x[2] + 2 * py + ey - c.w[2]) / sy) + 1, Math.floor((c.x[3] + 2 * px + ex - c.w[3]) / sx) + 1];
};

const label = (c: object) => JSON.stringify(c).replace(/"/g, '');

/** Zero rows / columns appended after the end of an NCHW tensor (F.pad(x, (0, ex, 0, ey))). */
function padEnd(x: ArrayLike<number>, shape: number[], ey: number, ex: number): { data: Float32Array; shape: number[] } {
  const [n, c, h, w] = shape as [number, number, number, number];
  const H = h + ey;
  const W = w + ex;
  const out = new Float32Array(n * c * H * W);
  for (let p = 0; p < n * c; p++) {
    for (let y = 0; y < h; y++) for (let xx = 0; xx < w; xx++) out[(p * H + y) * W + xx] = x[(p * h + y) * w + xx]!;
  }
  return { data: out, shape: [n, c, H, W] };
}

describe('conv2d backward', () => {
  for (const c of CONV_CASES) {
    it(label(c), async () => {
      const xd = randomData(size(c.x), size(c.x));
      const wd = randomData(size(c.w), size(c.w) + 1);
      const gShape = convOut(c);
      const gd = randomData(size(gShape), 3);
      const x = engine.tensor(xd, c.x);
      const w = engine.tensor(wd, c.w);
      const g = engine.tensor(gd, gShape);
      const { result } = await runProgram(engine, 'convb', (rec) =>
        conv2dBackward(rec, x, w, g, { stride: c.stride, padding: c.padding, padEnd: c.padEnd, groups: c.groups, needs: { bias: true } }),
      );
      const ref = conv2dBackwardRef(xd, c.x, wd, c.w, gd, c);
      expect(result.gradX!.shape).toEqual(c.x);
      expect(result.gradWeight!.shape).toEqual(c.w);
      expectClose(await result.gradX!.read(), ref.gradX, TOL, 'gradX');
      expectClose(await result.gradWeight!.read(), ref.gradW, TOL, 'gradWeight');
      expectClose(await result.gradBias!.read(), ref.gradB, TOL, 'gradBias');
      for (const t of [x, w, g, result.gradX!, result.gradWeight!, result.gradBias!]) t.dispose();
    });
  }

  it('reference VJP is the adjoint of the forward reference (<v, J u> = <J^T v, u>)', () => {
    // conv2d is linear in x and in w, so J u along x is conv2dRef(u, w) and along w conv2dRef(x, u):
    // exact up to the forward's f32 output rounding (~1e-7 relative). padEnd pads the input explicitly.
    for (const c of CONV_CASES) {
      const [ey, ex] = c.padEnd ?? [0, 0];
      const opts = { stride: c.stride, padding: c.padding, groups: c.groups };
      const fwd = (xv: ArrayLike<number>, wv: ArrayLike<number>, bias: ArrayLike<number> | null) => {
        const p = padEnd(xv, c.x, ey, ex);
        return conv2dRef(p.data, p.shape, wv, c.w, bias, opts).out;
      };
      const xd = randomData(size(c.x), 1);
      const wd = randomData(size(c.w), 2);
      const v = randomData(size(convOut(c)), 3);
      const ux = randomData(size(c.x), 4);
      const uw = randomData(size(c.w), 5);
      const ub = randomData(c.w[0], 6);
      const ref = conv2dBackwardRef(xd, c.x, wd, c.w, v, c);
      const tol = (t: number) => 1e-5 * (1 + Math.abs(t));
      const jx = dot(v, fwd(ux, wd, null));
      const jw = dot(v, fwd(xd, uw, null));
      const jb = dot(v, fwd(new Float32Array(xd.length), wd, ub));
      expect(Math.abs(jx - dot(ref.gradX, ux)), `${label(c)} x`).toBeLessThan(tol(jx));
      expect(Math.abs(jw - dot(ref.gradW, uw)), `${label(c)} w`).toBeLessThan(tol(jw));
      expect(Math.abs(jb - dot(ref.gradB, ub)), `${label(c)} bias`).toBeLessThan(tol(jb));
    }
  });
});

interface ConvTCase {
  x: [number, number, number, number];
  w: [number, number, number, number];
  stride?: [number, number];
  padding?: [number, number];
  outputPadding?: [number, number];
  groups?: number;
}

const CONVT_CASES: ConvTCase[] = [
  { x: [1, 1, 1, 1], w: [1, 1, 1, 1] },
  { x: [2, 3, 5, 4], w: [3, 4, 3, 3], padding: [1, 1] },
  { x: [2, 3, 4, 5], w: [3, 2, 4, 4], stride: [2, 2], padding: [1, 1] },
  { x: [1, 4, 3, 5], w: [4, 3, 3, 3], stride: [2, 2], padding: [1, 1], outputPadding: [1, 1] },
  { x: [2, 4, 5, 3], w: [4, 3, 3, 2], groups: 2, stride: [1, 2] },
  { x: [1, 5, 4, 4], w: [5, 1, 3, 3], groups: 5, stride: [2, 2], padding: [1, 1], outputPadding: [1, 0] },
];

const convTOut = (c: ConvTCase) => {
  const [sy, sx] = c.stride ?? [1, 1];
  const [py, px] = c.padding ?? [0, 0];
  const [oy, ox] = c.outputPadding ?? [0, 0];
  return [c.x[0], c.w[1] * (c.groups ?? 1), (c.x[2] - 1) * sy - 2 * py + c.w[2] + oy, (c.x[3] - 1) * sx - 2 * px + c.w[3] + ox];
};

describe('conv_transpose2d backward', () => {
  for (const c of CONVT_CASES) {
    it(label(c), async () => {
      const xd = randomData(size(c.x), size(c.x) + 5);
      const wd = randomData(size(c.w), size(c.w) + 6);
      const gShape = convTOut(c);
      const gd = randomData(size(gShape), 8);
      const x = engine.tensor(xd, c.x);
      const w = engine.tensor(wd, c.w);
      const g = engine.tensor(gd, gShape);
      const { result } = await runProgram(engine, 'convtb', (rec) =>
        convTranspose2dBackward(rec, x, w, g, {
          stride: c.stride,
          padding: c.padding,
          outputPadding: c.outputPadding,
          groups: c.groups,
          needs: { bias: true },
        }),
      );
      const ref = convTranspose2dBackwardRef(xd, c.x, wd, c.w, gd, c as ConvBackwardRefOptions);
      expect(result.gradX!.shape).toEqual(c.x);
      expect(result.gradWeight!.shape).toEqual(c.w);
      expectClose(await result.gradX!.read(), ref.gradX, TOL, 'gradX');
      expectClose(await result.gradWeight!.read(), ref.gradW, TOL, 'gradWeight');
      expectClose(await result.gradBias!.read(), ref.gradB, TOL, 'gradBias');
      for (const t of [x, w, g, result.gradX!, result.gradWeight!, result.gradBias!]) t.dispose();
    });
  }

  it('reference VJP is the adjoint of the forward reference', () => {
    for (const c of CONVT_CASES) {
      const opts = { stride: c.stride, padding: c.padding, outputPadding: c.outputPadding, groups: c.groups };
      const xd = randomData(size(c.x), 1);
      const wd = randomData(size(c.w), 2);
      const v = randomData(size(convTOut(c)), 3);
      const ux = randomData(size(c.x), 4);
      const uw = randomData(size(c.w), 5);
      const cout = c.w[1] * (c.groups ?? 1);
      const ub = randomData(cout, 6);
      const ref = convTranspose2dBackwardRef(xd, c.x, wd, c.w, v, c as ConvBackwardRefOptions);
      const tol = (t: number) => 1e-5 * (1 + Math.abs(t));
      const jx = dot(v, convTranspose2dRef(ux, c.x, wd, c.w, null, opts).out);
      const jw = dot(v, convTranspose2dRef(xd, c.x, uw, c.w, null, opts).out);
      const jb = dot(v, convTranspose2dRef(new Float32Array(xd.length), c.x, wd, c.w, ub, opts).out);
      expect(Math.abs(jx - dot(ref.gradX, ux)), `${label(c)} x`).toBeLessThan(tol(jx));
      expect(Math.abs(jw - dot(ref.gradW, uw)), `${label(c)} w`).toBeLessThan(tol(jw));
      expect(Math.abs(jb - dot(ref.gradB, ub)), `${label(c)} bias`).toBeLessThan(tol(jb));
    }
  });
});
