// Image-space degradations: the `degradations` golden case (SILO's blur, SR x4 Resizer + bicubic AA
// upsampling, box inpainting) through its CaseRunner, and each operator against direct CPU
// computations on small awkward shapes (odd sizes, batch 2, one channel).
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import { normalCPU } from '../../src/engine/random.js';
import { runDegradations } from '../../src/check/degradations.js';
import { detectKind } from '../../src/check/registry.js';
import {
  BlurOperator,
  InpaintingOperator,
  SuperResolutionOperator,
  addMeasurementNoise,
  bicubicAAMatrix,
  centerBox,
  cubicKernel,
  gaussianBlurKernel,
  gaussianKernel1d,
  randomBox,
  resizerMatrix,
} from '../../src/solvers/degradations/index.js';
import { getEngine, randomData, expectClose } from '../helpers/engine.js';
import { expectAllPass, goldenFiles, goldenManifest } from '../helpers/golden.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

describe('degradations golden case', () => {
  it('is detected and every tensor passes (blur, sr4, inpaint)', async () => {
    const files = goldenFiles('degradations');
    const manifest = goldenManifest('degradations');
    expect(await detectKind(files, manifest)).toBe('degradations');
    const items = await runDegradations(engine, files, manifest, {});
    expect(items.map((i) => i.name)).toEqual(
      expect.arrayContaining(['blur.kernel_f64', 'blur.kernel', 'blur.output', 'sr4.resize_matrix_h', 'sr4.output', 'sr4.upsampled_bicubic_aa', 'inpaint.mask']),
    );
    expectAllPass(items, 'degradations');
  });
});

/** Direct 2-D correlation with torch-style reflect indexing, f64. */
function blurRef(x: Float32Array, shape: number[], k: ArrayLike<number>, size: number): Float32Array {
  const [n, c, h, w] = shape as [number, number, number, number];
  const r = (size - 1) / 2;
  const refl = (i: number, len: number) => (i < 0 ? -i : i >= len ? 2 * (len - 1) - i : i);
  const out = new Float32Array(x.length);
  for (let p = 0; p < n * c; p++)
    for (let y = 0; y < h; y++)
      for (let xx = 0; xx < w; xx++) {
        let s = 0;
        for (let u = 0; u < size; u++) {
          for (let v = 0; v < size; v++) {
            const kv = k[u * size + v]!;
            if (kv !== 0) s += kv * x[(p * h + refl(y + u - r, h)) * w + refl(xx + v - r, w)]!;
          }
        }
        out[(p * h + y) * w + xx] = s;
      }
  return out;
}

/** y[p] = Mh x[p] Mw^T, f64. */
function separableRef(x: Float32Array, n: number, h: number, w: number, mh: ArrayLike<number>, oh: number, mw: ArrayLike<number>, ow: number): Float32Array {
  const out = new Float32Array(n * oh * ow);
  for (let p = 0; p < n; p++)
    for (let i = 0; i < oh; i++)
      for (let j = 0; j < ow; j++) {
        let s = 0;
        for (let a = 0; a < h; a++) {
          const mha = mh[i * h + a]!;
          if (mha === 0) continue;
          for (let b = 0; b < w; b++) s += mha * mw[j * w + b]! * x[(p * h + a) * w + b]!;
        }
        out[(p * oh + i) * ow + j] = s;
      }
  return out;
}

async function run(fn: Parameters<typeof runProgram>[2]) {
  const { result } = await runProgram(engine, 'degradation test', fn);
  const t = result as import('../../src/engine/tensor.js').Tensor;
  const data = await t.read();
  const shape = t.shape.slice();
  t.dispose();
  return { data, shape };
}

describe('Gaussian blur', () => {
  it('builds scipy gaussian_filter(delta) kernels: sum 1, symmetric, support +-int(4 std + 0.5)', () => {
    const g = gaussianKernel1d(3);
    expect(g.length).toBe(25);
    expect(g.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 14);
    const k = gaussianBlurKernel(61, 3);
    expect(k.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 14);
    expect(k[30 * 61 + 30]).toBeCloseTo(g[12]! * g[12]!, 16);
    expect(k[30 * 61 + 17]).toBe(0); // 13 px from the centre
    expect(k[17 * 61 + 30]).toBe(0);
    expect(k[18 * 61 + 42]).toBeGreaterThan(0);
    expect(() => gaussianBlurKernel(21, 3)).toThrow(/needs a 25x25 support/);
  });

  // Sums of <= 625 f32 products of values in [-1, 1] against an f64 sum: a few f32 ulps.
  const TOL = { atol: 2e-6, rtol: 0 };
  const cases: Array<[string, number[], { size?: number; std?: number }]> = [
    ['SILO kernel on [2, 3, 29, 17] (smaller than the 61 px kernel; pad = support radius 12)', [2, 3, 29, 17], {}],
    ['11x11 std 1 (support 9x9) on [1, 1, 9, 13]', [1, 1, 9, 13], { size: 11, std: 1 }],
  ];
  for (const [what, shape, o] of cases) {
    it(what, async () => {
      const x = randomData(shape.reduce((a, b) => a * b, 1), 11);
      const op = new BlurOperator(engine, o);
      const tx = engine.tensor(x, shape);
      const { data, shape: outShape } = await run((rec) => op.apply(rec, tx));
      expect(outShape).toEqual(shape);
      expectClose(data, blurRef(x, shape, op.kernel, op.size), TOL, what);
      tx.dispose();
      op.dispose();
    });
  }

  it('takes an explicit (non-Gaussian) kernel', async () => {
    const size = 5;
    const k = randomData(size * size, 3, 0, 1);
    k[0] = 0.5; // a corner tap: the support is the whole 5x5
    const shape = [1, 2, 6, 7];
    const x = randomData(84, 4);
    const op = new BlurOperator(engine, { size, kernel: k });
    const tx = engine.tensor(x, shape);
    const { data } = await run((rec) => op.apply(rec, tx));
    expectClose(data, blurRef(x, shape, op.kernel, size), TOL, 'explicit kernel');
    tx.dispose();
    op.dispose();
  });
});

describe('super-resolution', () => {
  it('cubic kernel is Keys a = -0.5; Resizer rows sum to 1 and shrink constants to constants', () => {
    expect(cubicKernel(0)).toBe(1);
    expect(cubicKernel(1)).toBe(0);
    expect(cubicKernel(1.5)).toBeCloseTo(-0.0625, 15);
    expect(cubicKernel(-0.5)).toBeCloseTo(0.5625, 15);
    for (const [inLen, outLen, scale] of [[256, 64, 0.25], [13, 4, 0.25], [17, 3, 1 / 8], [5, 10, 2]] as const) {
      const m = resizerMatrix(inLen, outLen, scale);
      for (let o = 0; o < outLen; o++) {
        let s = 0;
        for (let j = 0; j < inLen; j++) s += m[o * inLen + j]!;
        expect(s).toBeCloseTo(1, 12);
      }
    }
    // Upsampling by 2 through bicubic AA: each output row sums to 1; an integer-aligned grid is not
    // interpolating (half-pixel centres), but a constant stays constant.
    const u = bicubicAAMatrix(5, 10);
    for (let o = 0; o < 10; o++) expect(u.slice(o * 5, o * 5 + 5).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
  });

  it('bicubic AA matches the textbook weights away from the border (output 4 of 3 -> 8 upsampling)', () => {
    // scale 0.5: output o = 4 sits at input coordinate 2.25 - 0.5 = 1.75 -> taps 0..2 (3 is out of range)
    const m = bicubicAAMatrix(3, 6);
    const c = 0.5 * (3 + 0.5) - 0.5; // centre 1.25 in pixel-index units for o = 3
    const w = [0, 1, 2].map((j) => {
      const t = Math.abs(j - c);
      return t < 1 ? 1.5 * t ** 3 - 2.5 * t ** 2 + 1 : t < 2 ? -0.5 * t ** 3 + 2.5 * t ** 2 - 4 * t + 2 : 0;
    });
    const s = w.reduce((a, b) => a + b, 0);
    for (let j = 0; j < 3; j++) expect(m[3 * 3 + j]).toBeCloseTo(w[j]! / s, 14);
  });

  // Two f32 matmuls (K <= 29) of values in [-1.3, 1.3] against f64: a few ulps.
  const TOL = { atol: 2e-6, rtol: 0 };
  for (const [shape, factor] of [[[2, 3, 13, 21], 4], [[1, 1, 17, 8], 8], [[1, 2, 4, 4], 4]] as Array<[number[], number]>) {
    it(`x${factor} on [${shape.join(', ')}] and back up`, async () => {
      const [n, c, h, w] = shape as [number, number, number, number];
      const x = randomData(n * c * h * w, h * w);
      const op = new SuperResolutionOperator(engine, h, w, { factor });
      expect([op.outH, op.outW]).toEqual([Math.ceil(h / factor), Math.ceil(w / factor)]);
      const tx = engine.tensor(x, shape);
      const y = await run((rec) => op.apply(rec, tx));
      expect(y.shape).toEqual([n, c, op.outH, op.outW]);
      const mh = resizerMatrix(h, op.outH, 1 / factor);
      const mw = resizerMatrix(w, op.outW, 1 / factor);
      const yRef = separableRef(x, n * c, h, w, mh, op.outH, mw, op.outW);
      expectClose(y.data, yRef, TOL, 'down');
      const ty = engine.tensor(yRef, y.shape);
      const up = await run((rec) => op.upsampleMeasurement(rec, ty));
      expect(up.shape).toEqual(shape);
      const upRef = separableRef(yRef, n * c, op.outH, op.outW, bicubicAAMatrix(op.outH, h), h, bicubicAAMatrix(op.outW, w), w);
      expectClose(up.data, upRef, TOL, 'up');
      for (const t of [tx, ty]) t.dispose();
      op.dispose();
    });
  }

  it('rejects an input of another size, naming both', async () => {
    const op = new SuperResolutionOperator(engine, 8, 8);
    const tx = engine.tensor(new Float32Array(2 * 81), [2, 1, 9, 9]);
    await expect(runProgram(engine, 'bad sr', (rec) => op.apply(rec, tx))).rejects.toThrow(/built for \[N, C, 8, 8\] inputs, got \[2, 1, 9, 9\]/);
    tx.dispose();
    op.dispose();
  });
});

describe('box inpainting', () => {
  it('centred box at 256 is rows/cols [64, 192); random boxes are seeded and inside the margins', () => {
    expect(centerBox(256, 256, 128)).toEqual({ top: 64, left: 64, h: 128, w: 128 });
    expect(centerBox(512, 512, 256)).toEqual({ top: 128, left: 128, h: 256, w: 256 });
    const a = randomBox(256, 256, 128, 128, 7);
    expect(randomBox(256, 256, 128, 128, 7)).toEqual(a);
    const tops = new Set<number>();
    for (let s = 0; s < 50; s++) {
      const b = randomBox(256, 256, 128, 128, s);
      expect(b.top).toBeGreaterThanOrEqual(16);
      expect(b.top).toBeLessThan(256 - 16 - 128);
      expect(b.left).toBeGreaterThanOrEqual(16);
      expect(b.left).toBeLessThan(256 - 16 - 128);
      tops.add(b.top);
    }
    expect(tops.size).toBeGreaterThan(20);
    expect(() => randomBox(64, 64, 40, 40, 1)).toThrow(/leaves no room/);
  });

  it('y = x * mask exactly on [2, 3, 11, 9] with a random box', async () => {
    const shape = [2, 3, 11, 9];
    const op = InpaintingOperator.random(engine, 11, 9, 5, 4, [1, 1]);
    const x = randomData(2 * 3 * 99, 8);
    const tx = engine.tensor(x, shape);
    const { data } = await run((rec) => op.apply(rec, tx));
    const want = Float32Array.from(x, (v, i) => v * op.mask[i % 99]!);
    expectClose(data, want, { atol: 0, rtol: 0 }, 'inpaint');
    let zeros = 0;
    for (const m of op.mask) zeros += m === 0 ? 1 : 0;
    expect(zeros).toBe(16);
    tx.dispose();
    op.dispose();
  });
});

describe('measurement noise', () => {
  it('y + sigma N(0,1) equals y + sigma * normalCPU(seed, offset)', async () => {
    const shape = [1, 3, 5, 7];
    const y = randomData(105, 1);
    const ty = engine.tensor(y, shape);
    const { data } = await run((rec) => addMeasurementNoise(rec, ty, 0.02, 1234, 3));
    const n = normalCPU(105, 1234, 3, 0, 0.02);
    // normals agree to f32 rounding of log/sin/cos (|n| < 6): 0.02 * 6 * 1e-6 plus one add's rounding.
    expectClose(data, Float32Array.from(y, (v, i) => v + n[i]!), { atol: 3e-7, rtol: 0 }, 'noise');
    ty.dispose();
  });
});
