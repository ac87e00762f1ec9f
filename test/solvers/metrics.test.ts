// Image metrics against independent CPU computations: a direct (non-separable) 2-D SSIM, hand-computed
// tiny cases, known values (identical images, constant offsets), symmetry; consistencyPsnr on the GPU.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { psnr, psnrY, ssim, msSsim, consistencyPsnr, unitFromSigned, MS_SSIM_WEIGHTS } from '../../src/solvers/metrics.js';
import { BlurOperator, InpaintingOperator } from '../../src/solvers/degradations/index.js';
import { runProgram } from '../../src/engine/recorder.js';
import { getEngine, randomData } from '../helpers/engine.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

/** A smooth test image in [0, 1] with structure at several scales, [C, H, W]. */
function smoothImage(c: number, h: number, w: number, seed: number): Float32Array {
  const noise = randomData(c * h * w, seed, -0.05, 0.05);
  return Float32Array.from(noise, (v, i) => {
    const x = i % w;
    const y = Math.floor(i / w) % h;
    const ch = Math.floor(i / (h * w));
    return 0.5 + 0.2 * Math.sin(x / 7 + ch) * Math.cos(y / 5) + 0.15 * Math.sin((x + 2 * y) / 23) + v;
  });
}

/** SSIM / cs of one plane the slow way: the explicit 11x11 window at every valid position. */
function ssimDirect(a: ArrayLike<number>, b: ArrayLike<number>, o: number, h: number, w: number, L = 1): { ssim: number; cs: number } {
  const k = 11;
  const win: number[] = [];
  let tot = 0;
  for (let u = 0; u < k; u++) for (let v = 0; v < k; v++) tot += win[u * k + v] = Math.exp(-((u - 5) ** 2 + (v - 5) ** 2) / (2 * 1.5 * 1.5));
  const c1 = (0.01 * L) ** 2;
  const c2 = (0.03 * L) ** 2;
  let s = 0;
  let cs = 0;
  let count = 0;
  for (let y = 0; y + k <= h; y++)
    for (let x = 0; x + k <= w; x++) {
      let mx = 0, my = 0, xx = 0, yy = 0, xy = 0;
      for (let u = 0; u < k; u++)
        for (let v = 0; v < k; v++) {
          const g = win[u * k + v]! / tot;
          const p = a[o + (y + u) * w + x + v]!;
          const q = b[o + (y + u) * w + x + v]!;
          mx += g * p;
          my += g * q;
          xx += g * p * p;
          yy += g * q * q;
          xy += g * p * q;
        }
      const c = (2 * (xy - mx * my) + c2) / (xx - mx * mx + yy - my * my + c2);
      cs += c;
      s += ((2 * mx * my + c1) / (mx * mx + my * my + c1)) * c;
      count++;
    }
  return { ssim: s / count, cs: cs / count };
}

describe('psnrY (BT.601 luma, SR convention)', () => {
  it('a constant offset d on all channels gives 20 log10(255 / (219 d))', () => {
    const a = smoothImage(3, 9, 7, 1);
    const d = 0.01;
    const b = a.map((v) => v + d);
    expect(psnrY(a, b, [3, 9, 7])).toBeCloseTo(20 * Math.log10(255 / (219 * d)), 4);
    // the same in [0, 255] units
    expect(psnrY(Array.from(a, (v) => 255 * v), Array.from(b, (v) => 255 * v), [1, 3, 9, 7], { range: 255 })).toBeCloseTo(20 * Math.log10(255 / (219 * d)), 4);
    expect(psnrY(a, a, [3, 9, 7])).toBe(Infinity);
  });

  it('weights a red-only error by 65.481 / 255 and crops borders', () => {
    const a = new Float32Array(3 * 5 * 5);
    const b = a.slice();
    b[12] = 0.5; // centre red pixel
    const mse = (65.481 * 0.5) ** 2 / 25;
    expect(psnrY(a, b, [3, 5, 5])).toBeCloseTo(10 * Math.log10(255 ** 2 / mse), 10);
    expect(psnrY(a, b, [3, 5, 5], { crop: 1 })).toBeCloseTo(10 * Math.log10(255 ** 2 / (mse * 25 / 9)), 10);
    b[0] = 1; // a border pixel the crop ignores
    expect(psnrY(a, b, [3, 5, 5], { crop: 1 })).toBeCloseTo(10 * Math.log10(255 ** 2 / (mse * 25 / 9)), 10);
    expect(() => psnrY(a.subarray(0, 50), b.subarray(0, 50), [2, 5, 5])).toThrow(/3 \(RGB\) channels/);
  });
});

describe('ssim', () => {
  it('is 1 for identical images and symmetric', () => {
    const a = smoothImage(3, 20, 17, 2);
    const b = smoothImage(3, 20, 17, 3);
    expect(ssim(a, a, [3, 20, 17])).toBeCloseTo(1, 12);
    expect(ssim(a, b, [3, 20, 17])).toBeCloseTo(ssim(b, a, [3, 20, 17]), 14);
    expect(ssim(a, b, [3, 20, 17])).toBeLessThan(1);
  });

  it('matches the direct 11x11-window computation on [2, 2, 13, 16] (f64, to 1e-12)', () => {
    const shape = [2, 2, 13, 16];
    const a = Float32Array.from([...smoothImage(2, 13, 16, 4), ...smoothImage(2, 13, 16, 5)]);
    const b = Float32Array.from(a, (v, i) => v + 0.1 * Math.sin(i * 0.37));
    let want = 0;
    for (let p = 0; p < 4; p++) want += ssimDirect(a, b, p * 13 * 16, 13, 16).ssim;
    expect(ssim(a, b, shape)).toBeCloseTo(want / 4, 12);
    // data range L scales the stabilisers only: [0, 255] images with L = 255 give the same value
    expect(ssim(Array.from(a, (v) => 255 * v), Array.from(b, (v) => 255 * v), shape, { range: 255 })).toBeCloseTo(want / 4, 12);
  });

  it('hand-computed 1x1-window case: only the luminance term (2xy + C1) / (x^2 + y^2 + C1) remains', () => {
    const a = [0.2, 0.8];
    const b = [0.4, 0.8];
    const c1 = 1e-4;
    const want = ((2 * 0.2 * 0.4 + c1) / (0.04 + 0.16 + c1) + 1) / 2;
    expect(ssim(a, b, [1, 1, 2], { window: 1 })).toBeCloseTo(want, 12);
  });

  it('an offset leaves contrast-structure at 1: SSIM = luminance term of the local means', () => {
    // constant images: the window means are the constants everywhere
    const a = new Array<number>(11 * 11).fill(0.3); // f64: no rounding of 0.3
    const b = new Array<number>(11 * 11).fill(0.5);
    expect(ssim(a, b, [1, 11, 11])).toBeCloseTo((2 * 0.15 + 1e-4) / (0.09 + 0.25 + 1e-4), 12);
  });

  it('rejects images smaller than the window', () => {
    expect(() => ssim(new Float32Array(100), new Float32Array(100), [1, 10, 10])).toThrow(/smaller than the 11x11 window/);
  });
});

describe('msSsim', () => {
  /** Independent MS-SSIM: direct windows, pooling by explicit 2x2 sums (even sizes only). */
  function msSsimDirect(a: Float32Array, b: Float32Array, h: number, w: number): number {
    let x: Float64Array = Float64Array.from(a);
    let y: Float64Array = Float64Array.from(b);
    let v = 1;
    for (let l = 0; l < 5; l++) {
      const r = ssimDirect(x, y, 0, h, w);
      v *= Math.max(l === 4 ? r.ssim : r.cs, 0) ** MS_SSIM_WEIGHTS[l]!;
      if (l < 4) {
        const pool = (z: Float64Array) => {
          const o = new Float64Array((h / 2) * (w / 2));
          for (let i = 0; i < h / 2; i++) for (let j = 0; j < w / 2; j++) o[i * (w / 2) + j] = (z[2 * i * w + 2 * j]! + z[2 * i * w + 2 * j + 1]! + z[(2 * i + 1) * w + 2 * j]! + z[(2 * i + 1) * w + 2 * j + 1]!) / 4;
          return o;
        };
        x = pool(x);
        y = pool(y);
        h /= 2;
        w /= 2;
      }
    }
    return v;
  }

  it('is 1 for identical images, symmetric, and matches a direct computation on 176x192 (to 1e-10)', () => {
    const [h, w] = [176, 192];
    const a = smoothImage(1, h, w, 6);
    const b = Float32Array.from(a, (v, i) => v + 0.08 * Math.sin(i * 0.11) * Math.cos(i * 0.013));
    expect(msSsim(a, a, [1, h, w])).toBeCloseTo(1, 12);
    const got = msSsim(a, b, [1, h, w]);
    expect(got).toBeCloseTo(msSsim(b, a, [1, h, w]), 14);
    expect(got).toBeCloseTo(msSsimDirect(a, b, h, w), 10);
    expect(got).toBeGreaterThan(0);
    expect(got).toBeLessThan(1);
  });

  it('odd sizes (161 x 163) pool with zero padding as torch avg_pool2d(padding = size % 2); needs >= 161 px', () => {
    const a = smoothImage(2, 161, 163, 7);
    const b = Float32Array.from(a, (v, i) => v + 0.05 * Math.sin(i));
    const v = msSsim(a, b, [2, 161, 163]);
    expect(v).toBeGreaterThan(0);
    expect(v).toBeLessThan(1);
    expect(msSsim(a, a, [2, 161, 163])).toBeCloseTo(1, 12);
    expect(() => msSsim(a.subarray(0, 160 * 160), a.subarray(0, 160 * 160), [1, 160, 160])).toThrow(/need H, W >= 161/);
  });
});

describe('consistencyPsnr', () => {
  it('inpainting: changes inside the box are invisible (Infinity); outside they count', async () => {
    const op = InpaintingOperator.centered(engine, 12, 10, 4);
    const gt = randomData(3 * 120, 1);
    const inside = gt.slice();
    inside[5 * 10 + 5] = 0.9; // row 5, col 5: inside the centred 4x4 box at (4, 3)
    const outside = gt.slice();
    outside[0] += 0.2;
    const tg = engine.tensor(gt, [1, 3, 12, 10]);
    const ti = engine.tensor(inside, [1, 3, 12, 10]);
    const to = engine.tensor(outside, [1, 3, 12, 10]);
    expect(await consistencyPsnr(op, ti, tg)).toBe(Infinity);
    expect(await consistencyPsnr(op, to, tg)).toBeCloseTo(10 * Math.log10(4 / (0.04 / 360)), 3);
    for (const t of [tg, ti, to]) t.dispose();
    op.dispose();
  });

  it('blur: equals psnr of the separately blurred images', async () => {
    const op = new BlurOperator(engine, { size: 13, std: 1.5 });
    const a = randomData(2 * 3 * 15 * 14, 2);
    const b = randomData(2 * 3 * 15 * 14, 3);
    const ta = engine.tensor(a, [2, 3, 15, 14]);
    const tb = engine.tensor(b, [2, 3, 15, 14]);
    const { result } = await runProgram(engine, 'blur both', (rec) => [op.apply(rec, ta), op.apply(rec, tb)] as const);
    const want = psnr(await result[0].read(), await result[1].read(), 2);
    expect(await consistencyPsnr(op, ta, tb)).toBeCloseTo(want, 10);
    for (const t of [ta, tb, result[0], result[1]]) t.dispose();
    op.dispose();
  });
});

it('unitFromSigned maps [-1, 1] to [0, 1]', () => {
  expect(Array.from(unitFromSigned([-1, 0, 1]))).toEqual([0, 0.5, 1]);
});
