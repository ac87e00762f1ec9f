// The region family (crop / paste / blend for tiled VAE passes), the diagonal Gaussian posterior, and
// conv2d's padEnd (diffusers' Downsample2D asymmetric padding), against CPU references on odd shapes.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import { blendEdge, cropRect, pasteRect } from '../src/engine/ops/region.js';
import { diagonalGaussian, gaussianSample } from '../src/engine/ops/gaussian.js';
import { conv2d } from '../src/engine/ops/conv2d.js';
import { getEngine, randomData, expectClose } from './helpers/engine.js';
import { blendHRef, blendVRef, cropRef, type Arr4 } from './ref/region.js';
import { conv2dRef } from './ref/conv2d.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

const EXACT = { atol: 0, rtol: 0 };
// One f32 lerp of values in [-1, 1]; the reference is f64: a few ulps.
const LERP = { atol: 3e-7, rtol: 1e-6 };

function arr(shape: [number, number, number, number], seed: number): Arr4 {
  return { data: randomData(shape.reduce((a, b) => a * b, 1), seed), shape };
}

describe('cropRect / pasteRect', () => {
  it('crops a 3x5 rectangle at (2, 4) of [2, 3, 7, 11] and pastes it into [2, 3, 6, 9] at (1, 3)', async () => {
    const x = arr([2, 3, 7, 11], 1);
    const dst = arr([2, 3, 6, 9], 2);
    const tx = engine.tensor(x.data, x.shape);
    const td = engine.tensor(dst.data, dst.shape);
    const { result } = await runProgram(engine, 'crop', (rec) => {
      const c = cropRect(rec, tx, { y: 2, x: 4, h: 3, w: 5 });
      pasteRect(rec, c, { y: 0, x: 0, h: 3, w: 5 }, td, 1, 3);
      return c;
    });
    const crop = cropRef(x, 2, 4, 3, 5);
    expect(result.shape).toEqual([2, 3, 3, 5]);
    expectClose(await result.read(), crop.data, EXACT, 'crop');
    const want = dst.data.slice();
    for (let p = 0; p < 6; p++) for (let y = 0; y < 3; y++) for (let xx = 0; xx < 5; xx++) want[(p * 6 + 1 + y) * 9 + 3 + xx] = crop.data[(p * 3 + y) * 5 + xx]!;
    expectClose(await td.read(), want, EXACT, 'paste');
    for (const t of [tx, td, result]) t.dispose();
  });

  it('rejects a rectangle outside the tensor, naming both', async () => {
    const tx = engine.tensor(new Float32Array(2 * 4 * 4), [1, 2, 4, 4]);
    await expect(runProgram(engine, 'bad crop', (rec) => cropRect(rec, tx, { y: 2, x: 0, h: 3, w: 4 }))).rejects.toThrow(/3x4 at \(2, 0\) does not fit in \[1, 2, 4, 4\]/);
    tx.dispose();
  });
});

describe('blendEdge (diffusers blend_v / blend_h, in place)', () => {
  // [a shape, b shape, extent]; the extent is clamped to both sizes as diffusers does.
  const cases: Array<['vertical' | 'horizontal', [number, number, number, number], [number, number, number, number], number]> = [
    ['vertical', [2, 3, 9, 7], [2, 3, 6, 7], 4],
    ['vertical', [1, 2, 9, 5], [1, 2, 3, 5], 4], // b shorter than the extent (a bottom edge tile)
    ['horizontal', [2, 3, 5, 9], [2, 3, 5, 8], 3],
    ['horizontal', [1, 1, 4, 2], [1, 1, 4, 6], 5], // a narrower than the extent
  ];
  for (const [dir, as, bs, e] of cases) {
    it(`${dir}: a ${JSON.stringify(as)}, b ${JSON.stringify(bs)}, extent ${e}`, async () => {
      const a = arr(as, 10);
      const b = arr(bs, 11);
      const ta = engine.tensor(a.data, a.shape);
      const tb = engine.tensor(b.data, b.shape);
      await runProgram(engine, 'blend', (rec) => blendEdge(rec, ta, tb, e, dir));
      (dir === 'vertical' ? blendVRef : blendHRef)(a, b, e);
      expectClose(await tb.read(), b.data, LERP, `blend ${dir}`);
      ta.dispose();
      tb.dispose();
    });
  }
});

describe('diagonalGaussian / gaussianSample', () => {
  it('splits [2, 6, 3, 5] moments, clamps logvar to [-30, 20], std = exp(logvar / 2), sample = mean + std * noise', async () => {
    const shape = [2, 6, 3, 5];
    const m = randomData(180, 21, -3, 3);
    // Values past both clamp bounds.
    m[2 * 15 * 3 + 3 * 15 + 1] = 35;
    m[3 * 15 + 7] = -50;
    const noise = randomData(90, 22, -2, 2);
    const tm = engine.tensor(m, shape);
    const tn = engine.tensor(noise, [2, 3, 3, 5]);
    const { result } = await runProgram(engine, 'posterior', (rec) => {
      const p = diagonalGaussian(rec, tm);
      return { ...p, sample: gaussianSample(rec, p.mean, p.std, tn) };
    });
    const mean = new Float32Array(90);
    const logvar = new Float32Array(90);
    for (let b = 0; b < 2; b++)
      for (let i = 0; i < 45; i++) {
        mean[b * 45 + i] = m[b * 90 + i]!;
        logvar[b * 45 + i] = Math.min(20, Math.max(-30, m[b * 90 + 45 + i]!));
      }
    const std = logvar.map((v) => Math.exp(0.5 * v));
    expect(Math.max(...logvar)).toBe(20);
    expect(Math.min(...logvar)).toBe(-30);
    expectClose(await result.mean.read(), mean, EXACT, 'mean');
    expectClose(await result.logvar.read(), logvar, EXACT, 'logvar');
    expectClose(await result.std.read(), std, { atol: 0, rtol: 2e-6 }, 'std');
    expectClose(await result.sample.read(), mean.map((v, i) => v + std[i]! * noise[i]!), { atol: 1e-6, rtol: 2e-6 }, 'sample');
    for (const t of [tm, tn, result.mean, result.logvar, result.std, result.sample]) t.dispose();
  });
});

describe('conv2d padEnd (F.pad (0, r, 0, b) before the conv)', () => {
  // diffusers' Downsample2D: pad (0, 1, 0, 1), 3x3 stride 2; plus odd sizes, a stride-1 case and padding + padEnd.
  const cases: Array<{ shape: [number, number, number, number]; cout: number; k: number; stride: number; padding: number; end: [number, number] }> = [
    { shape: [1, 5, 8, 8], cout: 6, k: 3, stride: 2, padding: 0, end: [1, 1] },
    { shape: [2, 3, 7, 9], cout: 4, k: 3, stride: 2, padding: 0, end: [1, 1] },
    { shape: [1, 4, 5, 6], cout: 3, k: 3, stride: 1, padding: 1, end: [2, 0] },
  ];
  for (const c of cases) {
    it(`x ${JSON.stringify(c.shape)}, k${c.k} s${c.stride} p${c.padding} padEnd ${c.end.join('x')}`, async () => {
      const [n, cin, h, w] = c.shape;
      const x = randomData(n * cin * h * w, 31);
      const wt = randomData(c.cout * cin * c.k * c.k, 32, -0.3, 0.3);
      const bias = randomData(c.cout, 33);
      const tx = engine.tensor(x, c.shape);
      const tw = engine.tensor(wt, [c.cout, cin, c.k, c.k]);
      const tb = engine.tensor(bias, [c.cout]);
      const { result } = await runProgram(engine, 'conv padEnd', (rec) => conv2d(rec, tx, tw, tb, { stride: c.stride, padding: c.padding, padEnd: c.end }));
      // Reference: pad explicitly on the host, then a plain conv.
      const ph = h + c.end[0];
      const pw = w + c.end[1];
      const padded = new Float32Array(n * cin * ph * pw);
      for (let p = 0; p < n * cin; p++) for (let y = 0; y < h; y++) for (let xx = 0; xx < w; xx++) padded[(p * ph + y) * pw + xx] = x[(p * h + y) * w + xx]!;
      const ref = conv2dRef(padded, [n, cin, ph, pw], wt, [c.cout, cin, c.k, c.k], bias, { stride: [c.stride, c.stride], padding: [c.padding, c.padding] });
      expect(result.shape).toEqual(ref.shape);
      expectClose(await result.read(), ref.out, { atol: 1e-5, rtol: 1e-5 }, 'conv padEnd');
      for (const t of [tx, tw, tb, result]) t.dispose();
    });
  }
});
