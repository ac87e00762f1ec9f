// Adjoints A^T g of the image-space degradations (blur incl. non-symmetric motion kernels, SR x4/x8,
// box inpainting, average pooling) against scatter-form CPU references, and the adjoint identity
// <A x, g> == <x, A^T g> with the GPU forward and adjoint on awkward sizes; average pooling against a
// CPU reference and the Latent-DPS golden step (y_hat = avg_pool2d(decoded_x0_hat, 4)).
import { readFileSync } from 'node:fs';
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import type { Tensor } from '../../src/engine/tensor.js';
import { runProgram } from '../../src/engine/recorder.js';
import { parseSafetensors } from '../../src/formats/safetensors.js';
import {
  AvgPoolOperator,
  BlurOperator,
  InpaintingOperator,
  SuperResolutionOperator,
  avgPoolMatrix,
  motionBlurOperator,
  parseBlurKernel,
  resizerMatrix,
  type Degradation,
} from '../../src/solvers/degradations/index.js';
import { getEngine, randomData, expectClose, type Tolerance } from '../helpers/engine.js';
import { goldenDir } from '../helpers/golden.js';
import { avgPoolAdjointRef, avgPoolRef, blurAdjointRef, blurRef, dot64, maskRef, norm64, separableAdjointRef, separableRef } from '../ref/degradations.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
const unitSum = (k: Float32Array) => {
  const s = k.reduce((a, b) => a + b, 0);
  return k.map((v) => v / s);
};

/** Runs A x and A^T g in one program; returns both read back. */
async function forwardAndAdjoint(op: Degradation, x: Float32Array, shape: number[], g: Float32Array, gShape: number[]) {
  const tx = engine.tensor(x, shape);
  const tg = engine.tensor(g, gShape);
  const { result } = await runProgram(engine, `${op.name} adjoint test`, (rec) => [op.apply(rec, tx), op.adjoint(rec, tg, shape)] as [Tensor, Tensor]);
  const [ty, tat] = result;
  expect(ty.shape).toEqual(gShape);
  expect(tat.shape).toEqual(shape);
  const out = { ax: await ty.read(), atg: await tat.read() };
  for (const t of [tx, tg, ty, tat]) t.dispose();
  return out;
}

/**
 * <A x, g> vs <x, A^T g>, both from GPU results, dots in f64. Each GPU element carries f32 rounding
 * of ~1e-6 relative to the sum of |terms| it adds (<= 1 here, kernels and matrices are averaging),
 * so the dots differ by ~1e-6 ||g|| ||A x||-scale; 1e-5 of (||Ax|| ||g|| + ||x|| ||A^T g||) is the bound.
 * A wrong adjoint (an unflipped kernel, a missing fold) misses by ~||Ax|| ||g|| / sqrt(n) >> that.
 */
function expectAdjointIdentity(x: Float32Array, ax: ArrayLike<number>, g: Float32Array, atg: ArrayLike<number>, what: string) {
  const lhs = dot64(ax, g);
  const rhs = dot64(x, atg);
  const bound = 1e-5 * (norm64(ax) * norm64(g) + norm64(x) * norm64(atg));
  expect(Math.abs(lhs - rhs), `${what}: <Ax, g> = ${lhs}, <x, A^T g> = ${rhs}`).toBeLessThanOrEqual(bound);
  // The identity is not vacuous: the dot is far from zero relative to the bound (x and g are drawn in
  // [-0.5, 1], mean 0.25, so <Ax, g> ~ n / 16 rather than a random-sign sum).
  expect(Math.abs(lhs), `${what}: <Ax, g> too small to test`).toBeGreaterThan(100 * bound);
}

/** The CPU references agree with each other (f64): validates the scatter-form adjoints themselves. */
function expectRefIdentity(x: Float32Array, axRef: ArrayLike<number>, g: Float32Array, atgRef: ArrayLike<number>, what: string) {
  const lhs = dot64(axRef, g);
  const rhs = dot64(x, atgRef);
  expect(Math.abs(lhs - rhs), `${what} (CPU references)`).toBeLessThanOrEqual(1e-12 * (norm64(axRef) * norm64(g) + 1));
}

/** An npy v1 file of a float32 C-order matrix (header written by hand, padded to 64 bytes). */
function npyF32(data: ArrayLike<number>, rows: number, cols: number): Uint8Array {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${rows}, ${cols}), }`;
  while ((10 + header.length + 1) % 64 !== 0) header += ' ';
  header += '\n';
  const bytes = new Uint8Array(10 + header.length + 4 * rows * cols);
  bytes.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, header.length & 0xff, header.length >> 8]);
  for (let i = 0; i < header.length; i++) bytes[10 + i] = header.charCodeAt(i);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < rows * cols; i++) view.setFloat32(10 + header.length + 4 * i, data[i]!, true);
  return bytes;
}

// Blur adjoint: the transposed conv sums up to 625 (Gaussian support 25x25) f32 products of |g| <= 1
// with taps summing to 1, then the reflect fold adds up to 4 such sums: a few f32 ulps of ~4.
const BLUR_TOL: Tolerance = { atol: 5e-6, rtol: 0 };

describe('blur adjoint (conv-transpose + reflect-pad fold)', () => {
  // A 9x9 motion-like kernel: a random streak, non-symmetric, zero outside a 7x9 band, saved as .npy.
  const motion = new Float32Array(81);
  {
    const r = randomData(81, 31, 0, 1);
    for (let i = 0; i < 9; i++) motion[(1 + Math.floor((i * 6) / 8)) * 9 + i] = 0.2 + r[i]!;
    motion[2 * 9 + 7] = 0.9; // a strong off-centre tap
  }
  const cases: Array<[string, () => BlurOperator, number[]]> = [
    ['SILO Gaussian 61x61 std 3 on [1, 3, 37, 29]', () => new BlurOperator(engine), [1, 3, 37, 29]],
    ['SILO Gaussian on [2, 3, 40, 40]', () => new BlurOperator(engine), [2, 3, 40, 40]],
    ['motion kernel from .npy on [1, 3, 37, 29]', () => motionBlurOperator(engine, parseBlurKernel(npyF32(motion, 9, 9), 'streak.npy')), [1, 3, 37, 29]],
    ['motion kernel on [2, 1, 5, 6] (pad 4: every row folds)', () => motionBlurOperator(engine, parseBlurKernel(npyF32(motion, 9, 9), 'streak.npy')), [2, 1, 5, 6]],
    ['random 5x5 kernel (corner tap) on [1, 2, 7, 3]', () => new BlurOperator(engine, { size: 5, kernel: unitSum(randomData(25, 3, 0.1, 1)) }), [1, 2, 7, 3]],
    ['1x1 kernel on [1, 1, 1, 4]', () => new BlurOperator(engine, { size: 1, kernel: [0.75] }), [1, 1, 1, 4]],
  ];
  for (const [what, make, shape] of cases) {
    it(what, async () => {
      const op = make();
      const x = randomData(numel(shape), numel(shape) + 1, -0.5, 1);
      const g = randomData(numel(shape), numel(shape) + 2, -0.5, 1);
      const { ax, atg } = await forwardAndAdjoint(op, x, shape, g, shape);
      const atgRef = blurAdjointRef(g, shape, op.kernel, op.size);
      expectRefIdentity(x, blurRef(x, shape, op.kernel, op.size), g, atgRef, what);
      expectClose(atg, atgRef, BLUR_TOL, `${what} A^T g`);
      expectAdjointIdentity(x, ax, g, atg, what);
      op.dispose();
    });
  }

  it('the motion operator from a file is named motion_blur and is not self-adjoint (the flip matters)', async () => {
    const op = motionBlurOperator(engine, parseBlurKernel(npyF32(motion, 9, 9), 'streak.npy'));
    expect(op.name).toBe('motion_blur');
    const shape = [1, 1, 12, 11];
    const g = randomData(132, 5);
    // A^T g differs from A g by far more than the tolerance: a test that passed an unflipped kernel would fail.
    let diff = 0;
    const atgRef = blurAdjointRef(g, shape, op.kernel, op.size);
    const agRef = blurRef(g, shape, op.kernel, op.size);
    for (let i = 0; i < g.length; i++) diff = Math.max(diff, Math.abs(atgRef[i]! - agRef[i]!));
    expect(diff).toBeGreaterThan(0.1);
    op.dispose();
  });

  it('rejects a gradient of another shape, naming both', async () => {
    const op = new BlurOperator(engine, { size: 5, std: 0.5 });
    const tg = engine.tensor(new Float32Array(60), [1, 3, 4, 5]);
    await expect(runProgram(engine, 'bad', (rec) => op.adjoint(rec, tg, [1, 3, 5, 4]))).rejects.toThrow(/gradY \[1, 3, 4, 5\] must have the input's shape \[1, 3, 5, 4\]/);
    tg.dispose();
    op.dispose();
  });
});

// SR adjoint: two f32 matmuls with K <= 10 (the down-sampled axis) of |g| <= 1 against matrices whose
// columns sum to about 1 / factor (a few negative lobes): a few ulps of ~1.
const SR_TOL: Tolerance = { atol: 3e-6, rtol: 0 };

describe('super-resolution adjoint (transposed Resizer matrices)', () => {
  const cases: Array<[number[], number]> = [
    [[1, 3, 37, 29], 4],
    [[2, 3, 40, 40], 8],
    [[1, 1, 17, 8], 8],
  ];
  for (const [shape, factor] of cases) {
    it(`x${factor} on [${shape.join(', ')}]`, async () => {
      const [n, c, h, w] = shape as [number, number, number, number];
      const op = new SuperResolutionOperator(engine, h, w, { factor });
      const gShape = [n, c, op.outH, op.outW];
      const x = randomData(numel(shape), 17 + h, -0.5, 1);
      const g = randomData(numel(gShape), 19 + w, -0.5, 1);
      const { ax, atg } = await forwardAndAdjoint(op, x, shape, g, gShape);
      const mh = resizerMatrix(h, op.outH, 1 / factor);
      const mw = resizerMatrix(w, op.outW, 1 / factor);
      const atgRef = separableAdjointRef(g, n * c, h, w, mh, op.outH, mw, op.outW);
      expectRefIdentity(x, separableRef(x, n * c, h, w, mh, op.outH, mw, op.outW), g, atgRef, 'sr');
      expectClose(atg, atgRef, SR_TOL, `sr${factor} A^T g`);
      expectAdjointIdentity(x, ax, g, atg, `sr${factor}`);
      op.dispose();
    });
  }

  it('rejects an input shape of another size', async () => {
    const op = new SuperResolutionOperator(engine, 16, 16);
    const tg = engine.tensor(new Float32Array(16), [1, 1, 4, 4]);
    await expect(runProgram(engine, 'bad', (rec) => op.adjoint(rec, tg, [1, 1, 17, 16]))).rejects.toThrow(/built for \[N, C, 16, 16\] inputs, got input shape \[1, 1, 17, 16\]/);
    tg.dispose();
    op.dispose();
  });
});

describe('inpainting adjoint (mask multiply, self-adjoint)', () => {
  for (const shape of [[1, 3, 37, 29], [2, 3, 40, 40]]) {
    it(`[${shape.join(', ')}]`, async () => {
      const [, , h, w] = shape as [number, number, number, number];
      const op = InpaintingOperator.random(engine, h, w, 11, 9, [2, 3]);
      const x = randomData(numel(shape), 23, -0.5, 1);
      const g = randomData(numel(shape), 29, -0.5, 1);
      const { ax, atg } = await forwardAndAdjoint(op, x, shape, g, shape);
      // Multiplying by 0 / 1 is exact.
      expectClose(atg, maskRef(g, op.mask), { atol: 0, rtol: 0 }, 'inpaint A^T g');
      expectAdjointIdentity(x, ax, g, atg, 'inpaint');
      op.dispose();
    });
  }
});

// Average pooling as two matmuls with weights 1 / f: each output is a sum of f^2 products of values
// in [-1, 1]; f32 rounding of 1 / f (f = 3) and of the partial sums: ~1e-7 absolute.
const POOL_TOL: Tolerance = { atol: 1e-6, rtol: 0 };

describe('average pooling (F.avg_pool2d)', () => {
  it('pooling matrix: floor(in / f) rows of 1 / f over each window; the trailing remainder unused', () => {
    const m = avgPoolMatrix(7, 3);
    expect(m.length).toBe(14);
    expect(Array.from(m.slice(0, 7))).toEqual([1 / 3, 1 / 3, 1 / 3, 0, 0, 0, 0]);
    expect(Array.from(m.slice(7))).toEqual([0, 0, 0, 1 / 3, 1 / 3, 1 / 3, 0]);
    expect(() => avgPoolMatrix(3, 4)).toThrow(/smaller than the pooling window 4/);
  });

  const cases: Array<[number[], number]> = [
    [[1, 3, 37, 29], 4], // 9x7, one trailing row and one column dropped
    [[2, 3, 40, 40], 3], // 13x13, 1 dropped
    [[2, 1, 4, 7], 4], // a single 1x1 output
    [[1, 2, 5, 5], 1], // identity
  ];
  for (const [shape, f] of cases) {
    it(`avg_pool2d(x, ${f}) on [${shape.join(', ')}] and its adjoint`, async () => {
      const op = new AvgPoolOperator(engine, f);
      const [n, c, h, w] = shape as [number, number, number, number];
      const gShape = [n, c, Math.floor(h / f), Math.floor(w / f)];
      const x = randomData(numel(shape), 37 + f, -0.5, 1);
      const g = randomData(numel(gShape), 41 + f, -0.5, 1);
      const { ax, atg } = await forwardAndAdjoint(op, x, shape, g, gShape);
      expectClose(ax, avgPoolRef(x, shape, f), POOL_TOL, `avgpool${f} forward`);
      const atgRef = avgPoolAdjointRef(g, shape, f);
      expectRefIdentity(x, avgPoolRef(x, shape, f), g, atgRef, 'avgpool');
      expectClose(atg, atgRef, POOL_TOL, `avgpool${f} A^T g`);
      expectAdjointIdentity(x, ax, g, atg, `avgpool${f}`);
      op.dispose();
    });
  }

  it('rejects an input smaller than the window and a gradient of the wrong size', async () => {
    const op = new AvgPoolOperator(engine, 4);
    const tx = engine.tensor(new Float32Array(9), [1, 1, 3, 3]);
    await expect(runProgram(engine, 'bad', (rec) => op.apply(rec, tx))).rejects.toThrow(/3x3 input is smaller than the 4x4 pooling window/);
    const tg = engine.tensor(new Float32Array(4), [1, 1, 2, 2]);
    await expect(runProgram(engine, 'bad', (rec) => op.adjoint(rec, tg, [1, 1, 13, 9]))).rejects.toThrow(/gradY \[1, 1, 2, 2\] must be \[1, 1, 3, 2\] for input \[1, 1, 13, 9\]/);
    for (const t of [tx, tg]) t.dispose();
    op.dispose();
  });

  it('golden dps_step: y_hat = avg_pool2d(decoded_x0_hat, 4) on 1x3x128x128', async () => {
    const st = parseSafetensors(readFileSync(`${goldenDir('dps_step')}/golden.safetensors`), 'dps_step/golden.safetensors');
    const decoded = st.getF32('decoded_x0_hat');
    const yHat = st.getF32('y_hat');
    expect(st.info('decoded_x0_hat').shape).toEqual([1, 3, 128, 128]);
    expect(st.info('y_hat').shape).toEqual([1, 3, 32, 32]);
    const op = new AvgPoolOperator(engine, 4);
    const tx = engine.tensor(decoded, [1, 3, 128, 128]);
    const { result } = await runProgram(engine, 'dps avgpool', (rec) => op.apply(rec, tx));
    expect(result.shape).toEqual([1, 3, 32, 32]);
    const y = await result.read();
    // The golden README's tolerance for dps_step's y_hat (3e-4 / 1e-3).
    expectClose(y, yHat, { atol: 3e-4, rtol: 1e-3 }, 'dps_step y_hat');
    // y_hat was computed in f64 and rounded to f32, from the same stored f32 inputs: our f32 pooling
    // differs by a few ulps of |y| (< 4 here), far inside the README's bound.
    expectClose(y, yHat, { atol: 2e-6, rtol: 0 }, 'dps_step y_hat (tight)');
    for (const t of [tx, result]) t.dispose();
    op.dispose();
  });
});
